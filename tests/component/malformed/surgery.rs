//! Tar, compression and artifact surgery: good artifacts taken apart and put
//! back wrong.

use super::*;

pub(super) const REGULAR: u8 = b'0';
pub(super) const HARDLINK: u8 = b'1';
pub(super) const SYMLINK: u8 = b'2';
pub(super) const CHAR_DEVICE: u8 = b'3';
pub(super) const BLOCK_DEVICE: u8 = b'4';
pub(super) const DIRECTORY: u8 = b'5';
pub(super) const FIFO: u8 = b'6';

/// One entry of a tar archive built byte by byte, so that names, types and
/// sizes can be anything.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) name: Vec<u8>,
    pub(super) kind: u8,
    pub(super) link: Vec<u8>,
    pub(super) data: Vec<u8>,
    /// The size written in the header, when it should lie about `data`.
    pub(super) declared_size: Option<u64>,
}

impl Entry {
    pub(super) fn file(name: impl AsRef<[u8]>, data: impl Into<Vec<u8>>) -> Entry {
        Entry {
            name: name.as_ref().to_vec(),
            kind: REGULAR,
            link: Vec::new(),
            data: data.into(),
            declared_size: None,
        }
    }

    pub(super) fn special(name: impl AsRef<[u8]>, kind: u8, link: impl AsRef<[u8]>) -> Entry {
        Entry {
            name: name.as_ref().to_vec(),
            kind,
            link: link.as_ref().to_vec(),
            data: Vec::new(),
            declared_size: None,
        }
    }

    pub(super) fn name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    pub(super) fn with_data(mut self, data: impl Into<Vec<u8>>) -> Entry {
        self.data = data.into();
        self
    }

    pub(super) fn with_kind(mut self, kind: u8) -> Entry {
        self.kind = kind;
        self
    }
}

/// A PAX extended header ('x') with `records`, applying to the next entry.
pub(super) fn pax_entry(records: &[(&str, &str)]) -> Entry {
    let mut data = Vec::new();
    for (key, value) in records {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        loop {
            let record = format!("{len}{body}");
            if record.len() == len {
                data.extend_from_slice(record.as_bytes());
                break;
            }
            len = record.len();
        }
    }
    Entry::special("PaxHeaders/entry", b'x', "").with_data(data)
}

pub(super) fn put_octal(field: &mut [u8], value: u64) {
    let digits = format!("{value:0width$o}", width = field.len() - 1);
    assert_eq!(digits.len(), field.len() - 1, "{value} does not fit");
    field[..digits.len()].copy_from_slice(digits.as_bytes());
    field[digits.len()] = 0;
}

pub(super) fn tar_header(entry: &Entry) -> [u8; 512] {
    assert!(entry.name.len() <= 100 && entry.link.len() <= 100);
    let mut h = [0u8; 512];
    h[..entry.name.len()].copy_from_slice(&entry.name);
    put_octal(
        &mut h[100..108],
        if entry.kind == DIRECTORY {
            0o755
        } else {
            0o644
        },
    );
    put_octal(&mut h[108..116], 0);
    put_octal(&mut h[116..124], 0);
    let size = entry.declared_size.unwrap_or(entry.data.len() as u64);
    put_octal(&mut h[124..136], size);
    put_octal(&mut h[136..148], 1_700_000_000);
    h[156] = entry.kind;
    h[157..157 + entry.link.len()].copy_from_slice(&entry.link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    put_octal(&mut h[329..337], 0);
    put_octal(&mut h[337..345], 0);
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put_octal(&mut h[148..155], u64::from(sum));
    h
}

pub(super) fn padding(len: usize) -> usize {
    (512 - len % 512) % 512
}

pub(super) fn tar_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&tar_header(e));
        out.extend_from_slice(&e.data);
        out.resize(out.len() + padding(e.data.len()), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// A member (or inner entry) of a tar archive as the `tar` crate sees it.
#[derive(Clone, Debug)]
pub(super) struct Parsed {
    pub(super) name: String,
    pub(super) kind: u8,
    pub(super) data: Vec<u8>,
    pub(super) header_pos: usize,
    pub(super) data_pos: usize,
}

pub(super) fn parse_tar(bytes: &[u8]) -> Vec<Parsed> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let kind = entry.header().entry_type().as_byte();
        let header_pos = entry.raw_header_position() as usize;
        let data_pos = entry.raw_file_position() as usize;
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push(Parsed {
            name,
            kind,
            data,
            header_pos,
            data_pos,
        });
    }
    out
}

pub(super) fn outer(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let entries: Vec<Entry> = members
        .iter()
        .map(|(n, d)| Entry::file(n, &d[..]))
        .collect();
    tar_bytes(&entries)
}

pub(super) fn compress(compression: Compression, data: &[u8]) -> Vec<u8> {
    let mut encoder = compression.encoder(Vec::new()).unwrap();
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

pub(super) fn decompress(compression: Compression, data: &[u8]) -> Vec<u8> {
    let mut decoder = compression.decoder("test", data).unwrap();
    let mut out = Vec::new();
    decoder.read_to_end(&mut out).unwrap();
    out
}

/// A good artifact taken apart, to be edited and put back together.
#[derive(Clone)]
pub(super) struct Parts {
    pub(super) signer: Option<Key>,
    pub(super) compression: Compression,
    pub(super) version: Vec<u8>,
    pub(super) manifest: Vec<u8>,
    pub(super) sig: Option<Vec<u8>>,
    pub(super) header_name: String,
    pub(super) header: Vec<u8>,
    pub(super) data_name: String,
    pub(super) data: Vec<u8>,
    /// The payload files `reseal` lists in the manifest.
    pub(super) files: Vec<(String, Vec<u8>)>,
}

impl Parts {
    pub(super) fn of(good: &Good) -> Parts {
        let members = parse_tar(&good.bytes);
        let find = |name: &str| {
            members
                .iter()
                .find(|m| m.name == name)
                .map(|m| m.data.clone())
        };
        let suffix = good.compression.suffix();
        let header_name = format!("header.tar{suffix}");
        let data_name = format!("data/0000.tar{suffix}");
        Parts {
            signer: good.signer,
            compression: good.compression,
            version: find("version").unwrap(),
            manifest: find("manifest").unwrap(),
            sig: find("manifest.sig"),
            header: find(&header_name).unwrap(),
            data: find(&data_name).unwrap(),
            header_name,
            data_name,
            files: good.files.clone(),
        }
    }

    pub(super) fn list(&self) -> Vec<(String, Vec<u8>)> {
        let mut list = vec![
            ("version".to_string(), self.version.clone()),
            ("manifest".to_string(), self.manifest.clone()),
        ];
        if let Some(sig) = &self.sig {
            list.push(("manifest.sig".to_string(), sig.clone()));
        }
        list.push((self.header_name.clone(), self.header.clone()));
        list.push((self.data_name.clone(), self.data.clone()));
        list
    }

    pub(super) fn bytes(&self) -> Vec<u8> {
        outer(&self.list())
    }

    /// The manifest `write_artifact` would write for the current members.
    pub(super) fn manifest_text(&self) -> String {
        let mut text = String::new();
        for (name, data) in &self.files {
            text += &format!("{}  data/0000/{name}\n", hex(&sha256(data)));
        }
        text += &format!("{}  {}\n", hex(&sha256(&self.header)), self.header_name);
        text += &format!("{}  version\n", hex(&sha256(&self.version)));
        text
    }

    /// Recomputes the manifest from the current members and re-signs it, so
    /// that only the edit under test is wrong.
    pub(super) fn reseal(&mut self) {
        self.manifest = self.manifest_text().into_bytes();
        self.resign();
    }

    /// Signs the current manifest again (when the artifact was signed).
    pub(super) fn resign(&mut self) {
        if let Some(key) = self.signer {
            self.sig = Some(key.sign(&self.manifest));
        }
    }

    pub(super) fn header_entries(&self) -> Vec<Entry> {
        let plain = decompress(self.compression, &self.header);
        parse_tar(&plain)
            .into_iter()
            .map(|p| Entry {
                name: p.name.into_bytes(),
                kind: p.kind,
                link: Vec::new(),
                data: p.data,
                declared_size: None,
            })
            .collect()
    }

    pub(super) fn set_header(&mut self, entries: &[Entry]) {
        self.header = compress(self.compression, &tar_bytes(entries));
    }

    pub(super) fn set_data(&mut self, entries: &[Entry]) {
        self.data = compress(self.compression, &tar_bytes(entries));
    }

    pub(super) fn file_entries(&self) -> Vec<Entry> {
        self.files
            .iter()
            .map(|(n, d)| Entry::file(n, &d[..]))
            .collect()
    }

    /// Replaces the JSON document at `path` in the header and reseals.
    pub(super) fn with_header_json(&self, path: &str, content: &[u8]) -> Vec<u8> {
        let mut parts = self.clone();
        let mut entries = parts.header_entries();
        let entry = entries
            .iter_mut()
            .find(|e| e.name == path.as_bytes())
            .unwrap_or_else(|| panic!("no {path} in the header"));
        entry.data = content.to_vec();
        parts.set_header(&entries);
        parts.reseal();
        parts.bytes()
    }

    pub(super) fn header_json(&self, path: &str) -> Value {
        let entries = self.header_entries();
        let entry = entries.iter().find(|e| e.name == path.as_bytes()).unwrap();
        serde_json::from_slice(&entry.data).unwrap()
    }
}

/// End of the last member's (padded) data: cutting at or after it only
/// removes the end-of-archive blocks, which loses nothing that is checked;
/// the reader accepts that, like `tar` and the reference client.
pub(super) fn content_end(bytes: &[u8]) -> usize {
    let last = parse_tar(bytes).pop().unwrap();
    last.data_pos + last.data.len() + padding(last.data.len())
}
