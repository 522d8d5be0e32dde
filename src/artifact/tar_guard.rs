//! A pass-through reader in front of the `tar` crate that bounds what the
//! crate buffers. The crate reads PAX extended headers and GNU long names
//! and link names whole into memory, whatever size their header declares:
//! inside a compressed data member a few KB of input can declare gigabytes.
//! The guard follows the tar stream's block structure as the bytes pass and
//! fails the read when such an entry is larger than
//! [`MAX_TAR_EXTENSION_SIZE`]. GNU sparse entries (whose extension blocks it
//! would have to follow too) are refused: artifacts carry none.

use std::io::{self, Read};

/// The largest PAX header or GNU long name accepted. Go's archive/tar
/// (mender-artifact) writes PAX records only for long names and large
/// sizes: well under 1 KiB.
pub const MAX_TAR_EXTENSION_SIZE: u64 = 64 << 10;

const BLOCK: usize = 512;

pub struct TarGuard<R> {
    inner: R,
    header: [u8; BLOCK],
    header_len: usize,
    /// Entry data (padding included) still to pass before the next header.
    data_left: u64,
    /// The PAX header being passed (to learn the size it sets), and how
    /// many of its bytes are still to come.
    pax: Option<(Vec<u8>, u64)>,
    /// The size a PAX header set for the next file entry.
    next_size: Option<u64>,
    /// The end-of-archive block was seen: what follows is not parsed.
    done: bool,
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R) -> Self {
        TarGuard {
            inner,
            header: [0; BLOCK],
            header_len: 0,
            data_left: 0,
            pax: None,
            next_size: None,
            done: false,
        }
    }

    fn scan(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() && !self.done {
            if self.data_left > 0 {
                let n = (self.data_left.min(bytes.len() as u64)) as usize;
                if let Some((pax, left)) = &mut self.pax {
                    let take = (*left).min(n as u64) as usize;
                    pax.extend_from_slice(&bytes[..take]);
                    *left -= take as u64;
                }
                self.data_left -= n as u64;
                bytes = &bytes[n..];
                if self.data_left == 0
                    && let Some((pax, _)) = self.pax.take()
                {
                    self.next_size = pax_size(&pax);
                }
                continue;
            }
            let n = (BLOCK - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == BLOCK {
                self.header_len = 0;
                self.on_header()?;
            }
        }
        Ok(())
    }

    fn on_header(&mut self) -> io::Result<()> {
        if self.header.iter().all(|&b| b == 0) {
            // The tar crate stops at the first zero block.
            self.done = true;
            return Ok(());
        }
        let header = tar::Header::from_byte_slice(&self.header);
        let sum: u32 = self.header[..148]
            .iter()
            .chain(&self.header[156..])
            .map(|&b| u32::from(b))
            .sum::<u32>()
            + 8 * 32;
        let Ok(size) = header.entry_size() else {
            // The tar crate reports the bad field.
            self.done = true;
            return Ok(());
        };
        if header.cksum().ok() != Some(sum) {
            // Likewise the checksum mismatch.
            self.done = true;
            return Ok(());
        }
        let kind = header.entry_type();
        let recognized = header.as_ustar().is_some() || header.as_gnu().is_some();
        let extension = kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_global_extensions();
        // A PAX size applies to the next entry that is not itself an
        // extension header (as the tar crate does).
        let size = match self.next_size {
            Some(pax) if !extension => pax,
            _ => size,
        };
        let kept_for_next = recognized
            && (kind.is_pax_local_extensions() || kind.is_gnu_longname() || kind.is_gnu_longlink());
        if !kept_for_next {
            self.next_size = None;
        }
        if extension && size > MAX_TAR_EXTENSION_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a tar extension header (PAX or GNU long name) of {size} bytes, more than the {MAX_TAR_EXTENSION_SIZE} allowed"
                ),
            ));
        }
        if kind.is_gnu_sparse() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a GNU sparse tar entry (not supported in artifacts)",
            ));
        }
        self.data_left = size
            .checked_add(BLOCK as u64 - 1)
            .map(|s| s & !(BLOCK as u64 - 1))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "tar entry size overflow"))?;
        if recognized && kind.is_pax_local_extensions() {
            self.pax = Some((Vec::with_capacity(size as usize), size));
            if size == 0 {
                self.pax = None;
                self.next_size = None;
            }
        }
        Ok(())
    }
}

/// The `size` record of a PAX header, as the tar crate reads it.
fn pax_size(pax: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(pax) {
        let ext = ext.ok()?;
        if ext.key() == Ok("size") {
            return ext.value().ok()?.parse().ok();
        }
    }
    None
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.scan(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(builder: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, data: &[u8]) {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_path(name).unwrap();
        h.set_cksum();
        builder.append(&h, data).unwrap();
    }

    fn read_all(tar_bytes: &[u8]) -> io::Result<Vec<(String, Vec<u8>)>> {
        let mut archive = tar::Archive::new(TarGuard::new(tar_bytes));
        let mut out = Vec::new();
        for e in archive.entries()? {
            let mut e = e?;
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data)?;
            out.push((name, data));
        }
        Ok(out)
    }

    #[test]
    fn passes_ordinary_archives_with_pax_and_long_names() {
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "a", tar::EntryType::Regular, b"hello");
        let long = "d/".repeat(80) + "file";
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, &long, &b"xyz"[..]).unwrap();
        b.append_pax_extensions([("comment", &b"hi"[..])]).unwrap();
        entry(&mut b, "c", tar::EntryType::Regular, &[7u8; 1000]);
        let bytes = b.into_inner().unwrap();
        let got = read_all(&bytes).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].0, long);
        assert_eq!(got[2].1, vec![7u8; 1000]);
    }

    #[test]
    fn pax_size_record_is_followed() {
        // The PAX header says 600 bytes, the ustar field says 0 (as Go
        // writes sizes of 8 GiB and more).
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", &b"600"[..])]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_path("big").unwrap();
        h.set_cksum();
        b.get_mut().extend_from_slice(h.as_bytes());
        b.get_mut().extend_from_slice(&[1u8; 1024]);
        entry(&mut b, "after", tar::EntryType::Regular, b"ok");
        let bytes = b.into_inner().unwrap();
        let got = read_all(&bytes).unwrap();
        assert_eq!(got[0].1.len(), 600);
        assert_eq!(got[1], ("after".to_string(), b"ok".to_vec()));
    }

    #[test]
    fn oversized_extension_headers_are_refused() {
        for kind in [
            tar::EntryType::XHeader,
            tar::EntryType::GNULongName,
            tar::EntryType::GNULongLink,
            tar::EntryType::XGlobalHeader,
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(1 << 30);
            h.set_entry_type(kind);
            h.set_cksum();
            let mut bytes = h.as_bytes().to_vec();
            bytes.extend(std::iter::repeat_n(b'a', 256 << 10));
            let e = read_all(&bytes).unwrap_err();
            assert!(
                e.to_string().contains("more than the 65536 allowed"),
                "{kind:?}: {e}"
            );
        }
    }

    #[test]
    fn trailing_bytes_after_the_end_are_not_parsed() {
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "a", tar::EntryType::Regular, b"x");
        let mut bytes = b.into_inner().unwrap();
        bytes.extend([0xffu8; 4096]);
        let mut guard = TarGuard::new(&bytes[..]);
        io::copy(&mut guard, &mut io::sink()).unwrap();
    }
}
