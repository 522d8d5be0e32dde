//! Compression of artifact members: chosen by the member name's suffix (as the
//! reference reader does) and cross-checked against the stream's magic bytes.

#[cfg(feature = "writer")]
use std::io::Write;
use std::io::{self, Read};

use super::ArtifactError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// The zstd window of the artifacts we write: 2^20 bytes.
#[cfg(feature = "writer")]
const ZSTD_WINDOW_LOG: u32 = 20;

/// The most memory the xz decoder may take. mender-artifact 3.9 writes
/// `--compression lzma` with a 64 MiB dictionary (`xz --list -vv`: 67174456
/// bytes needed to decode); our writer uses 8 MiB. Dictionaries above 64 MiB
/// (the next sizes are 96 MiB and 128 MiB) are refused: a 300 KB artifact
/// may otherwise declare 1 GiB and take that much RAM from the device.
pub const XZ_MEMLIMIT: u64 = 66 << 20;
/// The largest zstd window accepted: 2^26 = 64 MiB, the same ceiling as
/// xz. Our writer uses 1 MiB, `zstd -19` 8 MiB, mender-artifact's zstd
/// levels (klauspost/compress) 8 MiB; `zstd --long` (128 MiB and up) is
/// refused.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 26;

impl Compression {
    /// Parses the names the command line accepts (`lzma` is mender-artifact's
    /// name for xz).
    pub fn from_cli_name(name: &str) -> Option<Compression> {
        match name {
            "none" => Some(Compression::None),
            "gzip" | "gz" => Some(Compression::Gzip),
            "lzma" | "xz" => Some(Compression::Xz),
            "zstd" | "zst" => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }

    /// The suffix appended to `.tar` in member names.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Xz => ".xz",
            Compression::Zstd => ".zst",
        }
    }

    /// Splits `<stem>.tar[.gz|.xz|.zst]` into the compression; None when
    /// `name` is not a tar member of that stem.
    pub fn from_member_name(name: &str, stem: &str) -> Option<Compression> {
        let rest = name.strip_prefix(stem)?.strip_prefix(".tar")?;
        match rest {
            "" => Some(Compression::None),
            ".gz" => Some(Compression::Gzip),
            ".xz" => Some(Compression::Xz),
            ".zst" => Some(Compression::Zstd),
            _ => None,
        }
    }

    fn magic(self) -> &'static [u8] {
        match self {
            Compression::None => &[],
            Compression::Gzip => GZIP_MAGIC,
            Compression::Xz => XZ_MAGIC,
            Compression::Zstd => ZSTD_MAGIC,
        }
    }

    /// Checks that the first bytes of a member agree with its suffix.
    pub fn check_magic(self, member: &str, head: &[u8]) -> Result<(), ArtifactError> {
        let found = [Compression::Gzip, Compression::Xz, Compression::Zstd]
            .into_iter()
            .find(|c| head.starts_with(c.magic()));
        match (self, found) {
            (Compression::None, None) => Ok(()),
            (want, Some(got)) if want == got => Ok(()),
            (Compression::None, Some(got)) => Err(ArtifactError::format(format!(
                "{member}: uncompressed by its name but the content starts with {} magic bytes",
                got.name()
            ))),
            (want, _) => Err(ArtifactError::format(format!(
                "{member}: named as {} but the content does not start with {} magic bytes",
                want.name(),
                want.name()
            ))),
        }
    }

    /// Wraps `input` in a decoder after checking its first bytes against
    /// the magic bytes of the compression its name announces.
    pub fn decoder<'a, R: Read + 'a>(
        self,
        member: &str,
        mut input: R,
    ) -> Result<Box<dyn Read + 'a>, ArtifactError> {
        let mut head = [0u8; 6];
        let got = read_up_to(&mut input, &mut head)
            .map_err(|e| ArtifactError::io(format!("{member}: reading"), e))?;
        self.check_magic(member, &head[..got])?;
        let input = io::Cursor::new(head).take(got as u64).chain(input);
        Ok(match self {
            Compression::None => Box::new(input),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Compression::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(
                    XZ_MEMLIMIT,
                    liblzma::stream::CONCATENATED,
                )
                .map_err(|e| ArtifactError::io(format!("{member}: xz decoder"), e.into()))?;
                Box::new(MemoryLimited {
                    inner: liblzma::read::XzDecoder::new_stream(input, stream),
                    compression: self,
                })
            }
            Compression::Zstd => {
                // A 32 KiB input buffer instead of the crate's 128 KiB: the
                // input is already buffered below, and a device's RAM is
                // better spent on the window.
                let buffered = io::BufReader::with_capacity(32 << 10, input);
                let mut d = zstd::stream::read::Decoder::with_buffer(buffered)
                    .map_err(|e| ArtifactError::io(format!("{member}: zstd decoder"), e))?;
                // Frames made with `zstd --long` may ask for up to 2 GiB of
                // window: refuse rather than exhaust a device.
                d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                    .map_err(|e| ArtifactError::io(format!("{member}: zstd decoder"), e))?;
                Box::new(MemoryLimited {
                    inner: d,
                    compression: self,
                })
            }
        })
    }

    #[cfg(feature = "writer")]
    /// Wraps `out` in an encoder at the level mender-artifact uses (or the
    /// tool's default where it has none).
    pub fn encoder<'a, W: Write + 'a>(self, out: W) -> io::Result<Encoder<'a, W>> {
        Ok(match self {
            Compression::None => Encoder::None(out),
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::default(),
            )),
            Compression::Xz => {
                // Multi-threaded: a 512 MiB image takes minutes on one core.
                // The blocks it cuts also bound the decoder's memory.
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
                let stream = liblzma::stream::MtStreamBuilder::new()
                    .preset(6)
                    .threads(threads)
                    .check(liblzma::stream::Check::Crc64)
                    .encoder()
                    .map_err(io::Error::other)?;
                Encoder::Xz(liblzma::write::XzEncoder::new_stream(out, stream))
            }
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(out, 3)?;
                e.include_checksum(true)?;
                // A 1 MiB window (level 3 alone would pick 2 MiB for a
                // large image) is what the device must hold while it
                // decodes; it costs about 0.6 % of size on a root file
                // system and saves the device 1 MiB of RAM.
                e.window_log(ZSTD_WINDOW_LOG)?;
                Encoder::Zstd(e)
            }
        })
    }
}

#[cfg(feature = "writer")]
/// A compressing writer whose `finish` flushes the trailer and hands back the
/// inner writer.
pub enum Encoder<'a, W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Xz(liblzma::write::XzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'a, W>),
}

#[cfg(feature = "writer")]
impl<W: Write> Encoder<'_, W> {
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

#[cfg(feature = "writer")]
impl<W: Write> Write for Encoder<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Xz(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Xz(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// A decoder whose "needs more memory than allowed" error is replaced by
/// one that says what the limit is (the callers prefix the member name).
struct MemoryLimited<R> {
    inner: R,
    compression: Compression,
}

impl<R: Read> Read for MemoryLimited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            if is_memory_limit_error(self.compression, &e) {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    match self.compression {
                        Compression::Xz => format!(
                            "the xz stream needs more than the {} MiB of memory allowed to decode it (dictionary too large)",
                            XZ_MEMLIMIT >> 20
                        ),
                        _ => format!(
                            "the zstd frame's window is larger than the {} MiB allowed",
                            (1u64 << ZSTD_WINDOW_LOG_MAX) >> 20
                        ),
                    },
                )
            } else {
                e
            }
        })
    }
}

fn is_memory_limit_error(compression: Compression, e: &io::Error) -> bool {
    match compression {
        Compression::Xz => matches!(
            e.get_ref()
                .and_then(|inner| inner.downcast_ref::<liblzma::stream::Error>()),
            Some(liblzma::stream::Error::MemLimit)
        ),
        Compression::Zstd => {
            // The zstd crate reports errors by libzstd's error name.
            let code =
                zstd::zstd_safe::zstd_sys::ZSTD_ErrorCode::ZSTD_error_frameParameter_windowTooLarge
                    as usize;
            let name = zstd::zstd_safe::get_error_name(0usize.wrapping_sub(code));
            e.to_string() == name
        }
        _ => false,
    }
}

/// Reads until `buf` is full or the stream ends; returns the count.
pub(crate) fn read_up_to<R: Read>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
