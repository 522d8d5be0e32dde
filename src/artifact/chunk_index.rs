//! The chunk index of a chunked rootfs-image artifact: the key
//! `mender_rs_chunk_index` of `headers/0000/type-info`, base64.
//! docs/artifacts.md ("Chunked rootfs-image artifacts") describes the
//! format byte by byte and why it is there; this file encodes and parses it.
//!
//! Binary rather than JSON: about 16,000 records for a 1 GiB image, 48
//! bytes each, where JSON with hex hashes would take three times as much.
//! The parser checks every field and names the byte offset (in the decoded
//! index) of the first one that is wrong.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::ArtifactError;
use super::chunking::ChunkParams;
use super::compression::Compression;

/// The index's key in `headers/0000/type-info`. Every Mender header parser
/// (mender-artifact's, the 4.x/5.x C++ client's) and the server ignore
/// unknown type-info keys, where they refuse unknown header tar entries.
pub const TYPE_INFO_KEY: &str = "mender_rs_chunk_index";
/// Where the index is, as errors name it.
pub const LOCATION: &str = "headers/0000/type-info: mender_rs_chunk_index";
pub const MAGIC: &[u8; 8] = b"MRCHUNKS";
pub const FORMAT_VERSION: u16 = 1;
/// FastCDC 2020, cut points rounded up to the alignment
/// (src/artifact/chunking.rs).
pub const CHUNKER_FASTCDC2020_4K: u8 = 1;
pub const HASH_SHA256: u8 = 1;
pub const FIXED_SIZE: usize = 64;
pub const RECORD_SIZE: usize = 48;
/// 9 MiB: about 196,000 chunks, 3 GiB of image at 16 KiB chunks, 6 GiB at
/// 32 KiB. Its base64 (12 MiB) and the rest of the header must fit in the
/// whole header (reader::MAX_HEADER_SIZE, 16 MiB).
pub const MAX_INDEX_SIZE: u64 = 9 << 20;
/// The cap of `headers/0000/type-info`: the base64 of the largest index
/// plus the 1 MiB every other header JSON gets. The part besides the index
/// is still held to 1 MiB (src/artifact/header.rs), since provides reach
/// the store.
pub const MAX_TYPE_INFO_SIZE: u64 =
    MAX_INDEX_SIZE.div_ceil(3) * 4 + super::reader::MAX_HEADER_JSON_SIZE;
const _: () = assert!(MAX_TYPE_INFO_SIZE < super::reader::MAX_HEADER_SIZE);

/// One chunk of the image and the frame that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRecord {
    /// Offset of the frame within the data member (`data/0000.tar.*`).
    pub frame_offset: u64,
    pub frame_len: u32,
    /// Uncompressed length of the chunk.
    pub len: u32,
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkIndex {
    pub compression: Compression,
    pub params: ChunkParams,
    /// The payload file's size: the sum of the chunk lengths.
    pub payload_size: u64,
    /// The first frame holds the inner tar header: it starts at 0 and is
    /// this long.
    pub header_frame_len: u32,
    /// The last frame holds the tar padding and end-of-archive blocks.
    pub trailer_frame_offset: u64,
    pub trailer_frame_len: u32,
    pub chunks: Vec<ChunkRecord>,
}

impl ChunkIndex {
    /// The data member's length: everything up to the end of the trailer.
    pub fn data_len(&self) -> u64 {
        self.trailer_frame_offset + u64::from(self.trailer_frame_len)
    }

    /// The encoded size of the index.
    pub fn encoded_len(&self) -> usize {
        FIXED_SIZE + RECORD_SIZE * self.chunks.len()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.push(compression_code(self.compression));
        out.push(HASH_SHA256);
        out.push(CHUNKER_FASTCDC2020_4K);
        out.extend_from_slice(&[0u8; 3]);
        out.extend_from_slice(&self.params.min.to_le_bytes());
        out.extend_from_slice(&self.params.avg.to_le_bytes());
        out.extend_from_slice(&self.params.max.to_le_bytes());
        out.extend_from_slice(&self.payload_size.to_le_bytes());
        out.extend_from_slice(&self.header_frame_len.to_le_bytes());
        out.extend_from_slice(&self.trailer_frame_offset.to_le_bytes());
        out.extend_from_slice(&self.trailer_frame_len.to_le_bytes());
        out.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.params.align.to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
        debug_assert_eq!(out.len(), FIXED_SIZE);
        for c in &self.chunks {
            out.extend_from_slice(&c.frame_offset.to_le_bytes());
            out.extend_from_slice(&c.frame_len.to_le_bytes());
            out.extend_from_slice(&c.len.to_le_bytes());
            out.extend_from_slice(&c.sha256);
        }
        out
    }

    /// The index as the writer puts it in type-info: standard base64, padded.
    pub fn encode_base64(&self) -> String {
        BASE64.encode(self.encode())
    }

    /// Decodes the type-info value and parses the index.
    pub fn parse_base64(text: &str) -> Result<ChunkIndex, ArtifactError> {
        // Bounded by the type-info cap (MAX_TYPE_INFO_SIZE) before this.
        let bytes = BASE64
            .decode(text)
            .map_err(|e| ArtifactError::format(format!("{LOCATION}: not valid base64: {e}")))?;
        ChunkIndex::parse(&bytes)
    }

    /// Parses and checks an index: every frame follows the previous one,
    /// lengths are within the chunker's bounds and sum to the payload size.
    pub fn parse(bytes: &[u8]) -> Result<ChunkIndex, ArtifactError> {
        if bytes.len() as u64 > MAX_INDEX_SIZE {
            return Err(bad(
                0,
                format!(
                    "{} bytes is over the limit of {MAX_INDEX_SIZE}",
                    bytes.len()
                ),
            ));
        }
        let mut r = Fields { bytes, at: 0 };
        if r.take(8)? != MAGIC {
            return Err(bad(0, "not a chunk index (bad magic)".into()));
        }
        let version = r.u16()?;
        if version != FORMAT_VERSION {
            return Err(bad(8, format!("unsupported format version {version}")));
        }
        let compression = match r.u8()? {
            1 => Compression::Gzip,
            2 => Compression::Zstd,
            c => return Err(bad(10, format!("unknown compression code {c}"))),
        };
        let hash = r.u8()?;
        if hash != HASH_SHA256 {
            return Err(bad(11, format!("unknown hash code {hash}")));
        }
        let chunker = r.u8()?;
        if chunker != CHUNKER_FASTCDC2020_4K {
            return Err(bad(12, format!("unknown chunker code {chunker}")));
        }
        if r.take(3)? != [0u8; 3] {
            return Err(bad(13, "reserved bytes are not zero".into()));
        }
        let (min, avg, max) = (r.u32()?, r.u32()?, r.u32()?);
        let payload_size = r.u64()?;
        let header_frame_len = r.u32()?;
        if header_frame_len == 0 || header_frame_len > max_frame_len(512) {
            return Err(bad(36, format!("header frame length {header_frame_len}")));
        }
        let trailer_frame_offset = r.u64()?;
        let trailer_frame_len = r.u32()?;
        if trailer_frame_len == 0 || trailer_frame_len > max_frame_len(512 + 1024) {
            return Err(bad(48, format!("trailer frame length {trailer_frame_len}")));
        }
        let count = r.u32()? as usize;
        let align = r.u32()?;
        if r.take(4)? != [0u8; 4] {
            return Err(bad(60, "reserved bytes are not zero".into()));
        }
        let params = ChunkParams {
            min,
            avg,
            max,
            align,
        };
        params.check().map_err(|e| bad(16, e))?;
        let expected = FIXED_SIZE as u64 + RECORD_SIZE as u64 * count as u64;
        if bytes.len() as u64 != expected {
            return Err(bad(
                52,
                format!(
                    "{count} chunks need {expected} bytes, the index has {}",
                    bytes.len()
                ),
            ));
        }
        let mut chunks = Vec::with_capacity(count);
        let mut next_offset = u64::from(header_frame_len);
        let mut total: u64 = 0;
        for i in 0..count {
            let at = r.at;
            let frame_offset = r.u64()?;
            let frame_len = r.u32()?;
            let len = r.u32()?;
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(r.take(32)?);
            if frame_offset != next_offset {
                return Err(bad(
                    at,
                    format!("chunk {i}: frame offset {frame_offset}, expected {next_offset}"),
                ));
            }
            let last = i + 1 == count;
            if len == 0 || len > params.max || (!last && len < params.min) {
                return Err(bad(
                    at + 12,
                    format!(
                        "chunk {i}: length {len} outside {}..={}",
                        params.min, params.max
                    ),
                ));
            }
            if frame_len == 0 || frame_len > max_frame_len(len) {
                return Err(bad(
                    at + 8,
                    format!("chunk {i}: frame length {frame_len} for {len} bytes"),
                ));
            }
            next_offset += u64::from(frame_len);
            total += u64::from(len);
            chunks.push(ChunkRecord {
                frame_offset,
                frame_len,
                len,
                sha256,
            });
        }
        if total != payload_size {
            return Err(bad(
                28,
                format!("payload size {payload_size}, the chunks add up to {total}"),
            ));
        }
        if trailer_frame_offset != next_offset {
            return Err(bad(
                40,
                format!("trailer frame offset {trailer_frame_offset}, expected {next_offset}"),
            ));
        }
        Ok(ChunkIndex {
            compression,
            params,
            payload_size,
            header_frame_len,
            trailer_frame_offset,
            trailer_frame_len,
            chunks,
        })
    }
}

/// The code of a frame compression in the index.
pub fn compression_code(c: Compression) -> u8 {
    match c {
        Compression::Gzip => 1,
        Compression::Zstd => 2,
        // The writer refuses these (src/cli/artifact_write.rs).
        Compression::None | Compression::Xz => 0,
    }
}

/// The largest frame that `len` bytes may compress to: gzip and zstd both
/// stay under len + len/64 + 1 KiB for stored (incompressible) input.
pub fn max_frame_len(len: u32) -> u32 {
    len.saturating_add(len / 64).saturating_add(1024)
}

fn bad(byte: usize, what: String) -> ArtifactError {
    ArtifactError::format(format!("{LOCATION}: byte {byte}: {what}"))
}

/// Little-endian fields read in order, with the offset for errors.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ArtifactError> {
        let end = self.at + n;
        let slice = self.bytes.get(self.at..end).ok_or_else(|| {
            bad(
                self.at,
                format!("truncated: {} bytes, more expected", self.bytes.len()),
            )
        })?;
        self.at = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, ArtifactError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ArtifactError> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(b))
    }
    fn u32(&mut self) -> Result<u32, ArtifactError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, ArtifactError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChunkIndex {
        let params = ChunkParams::for_average(16 << 10).unwrap();
        let chunks = vec![
            ChunkRecord {
                frame_offset: 40,
                frame_len: 100,
                len: 16 << 10,
                sha256: [1; 32],
            },
            ChunkRecord {
                frame_offset: 140,
                frame_len: 7,
                len: 5,
                sha256: [2; 32],
            },
        ];
        ChunkIndex {
            compression: Compression::Zstd,
            params,
            payload_size: (16 << 10) + 5,
            header_frame_len: 40,
            trailer_frame_offset: 147,
            trailer_frame_len: 20,
            chunks,
        }
    }

    fn error_of(bytes: &[u8]) -> String {
        ChunkIndex::parse(bytes).unwrap_err().to_string()
    }

    #[test]
    fn round_trip() {
        let index = sample();
        let bytes = index.encode();
        assert_eq!(bytes.len(), FIXED_SIZE + 2 * RECORD_SIZE);
        assert_eq!(ChunkIndex::parse(&bytes).unwrap(), index);
        assert_eq!(index.data_len(), 167);
    }

    #[test]
    fn damage_is_refused_naming_the_byte() {
        let good = sample().encode();
        let cases: Vec<(usize, u8, &str)> = vec![
            (0, b'X', "byte 0: not a chunk index"),
            (8, 2, "byte 8: unsupported format version 2"),
            (10, 9, "byte 10: unknown compression code 9"),
            (11, 0, "byte 11: unknown hash code"),
            (12, 7, "byte 12: unknown chunker code"),
            (17, 0, "byte 16: chunk sizes"),
            (28, 1, "byte 28: payload size"),
            (40, 1, "byte 40: trailer frame offset"),
            (64, 41, "byte 64: chunk 0: frame offset 41, expected 40"),
            (64 + 48 + 12, 0, "byte 124: chunk 1: length 0"),
            (64 + 48 + 9, 0xff, "byte 120: chunk 1: frame length"),
        ];
        for (at, value, want) in cases {
            let mut bytes = good.clone();
            bytes[at] = value;
            let e = error_of(&bytes);
            assert!(e.contains(LOCATION) && e.contains(want), "{at}: {e}");
        }
    }

    #[test]
    fn bounds() {
        let good = sample().encode();
        let e = error_of(&good[..good.len() - 1]);
        assert!(e.contains("byte 52: 2 chunks need 160 bytes"), "{e}");
        let e = error_of(&good[..30]);
        assert!(e.contains("byte 28: truncated"), "{e}");
        let huge = vec![0u8; MAX_INDEX_SIZE as usize + 1];
        assert!(error_of(&huge).contains("over the limit"));
        // A count that promises more records than the bytes hold.
        let mut bytes = good.clone();
        bytes[52..56].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(error_of(&bytes).contains("byte 52"));
    }

    #[test]
    fn base64_round_trip_and_errors() {
        let index = sample();
        let text = index.encode_base64();
        assert!(text.ends_with('='), "padded: {text}");
        assert_eq!(ChunkIndex::parse_base64(&text).unwrap(), index);
        let e = ChunkIndex::parse_base64("TVJDSFVOS1M!")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(LOCATION) && e.contains("not valid base64") && e.contains("offset 11"),
            "{e}"
        );
        // Decoded, then checked like the binary index.
        let mut bytes = index.encode();
        bytes[64] ^= 1;
        let e = ChunkIndex::parse_base64(&BASE64.encode(bytes))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("{LOCATION}: byte 64: chunk 0")), "{e}");
        // The largest index fits under the type-info cap.
        let largest = BASE64.encode(vec![0u8; MAX_INDEX_SIZE as usize]);
        assert!((largest.len() as u64) < MAX_TYPE_INFO_SIZE);
    }
}
