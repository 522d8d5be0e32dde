//! Control characters from the input must not break the one-line message.

use super::*;

/// Recomputes the checksum of a tar header block after an edit.
fn fix_checksum(h: &mut [u8]) {
    h[148..156].fill(b' ');
    let sum: u32 = h[..512].iter().map(|&b| u32::from(b)).sum();
    put_octal(&mut h[148..155], u64::from(sum));
}

/// A tar whose first header has a size field that is not a number (and
/// holds a newline), with a valid header checksum.
fn tar_with_bad_size_field(entries: &[Entry]) -> Vec<u8> {
    let mut bytes = tar_bytes(entries);
    bytes[124..136].copy_from_slice(b"12\nrm -rf /\0");
    fix_checksum(&mut bytes[..512]);
    bytes
}

#[test]

fn hostile_bytes_keep_messages_on_one_line() {
    let mut checker = Checker::new("hostile_bytes_keep_messages_on_one_line");
    let g = good("rootfs-gzip");
    let parts = Parts::of(g);
    for evil in ["evil\nname", "evil\rname", "a\u{1b}[31mred"] {
        // An unknown outer member, at each stage.
        for at in [0, 1, 2, 3, 4] {
            let mut l = parts.list();
            l.insert(at, (evil.to_string(), b"x".to_vec()));
            checker.reject(
                format!("outer member {evil:?} at {at}"),
                &outer(&l),
                &[],
                &[],
            );
        }
        let mut l = parts.list();
        l.push((format!("data/{evil}"), b"x".to_vec()));
        checker.reject(
            format!("outer member data/{evil:?} last"),
            &outer(&l),
            &[],
            &[],
        );

        // An entry in the header tar.
        for (first, entry) in [
            (false, Entry::file(evil, "x")),
            (true, Entry::file(evil, "x")),
            (false, Entry::special(evil, SYMLINK, "x")),
        ] {
            let mut p = parts.clone();
            let mut entries = p.header_entries();
            if first {
                entries.insert(0, entry.clone());
            } else {
                entries.push(entry.clone());
            }
            p.set_header(&entries);
            p.reseal();
            checker.reject(
                format!(
                    "header entry {evil:?} type {} first {first}",
                    entry.kind as char
                ),
                &p.bytes(),
                &[],
                &[],
            );
        }

        // Entries in the payload tar.
        for entry in [Entry::file(evil, "x"), Entry::special(evil, SYMLINK, "x")] {
            let mut p = parts.clone();
            let mut entries = p.file_entries();
            entries.push(entry.clone());
            p.set_data(&entries);
            p.reseal();
            checker.reject(
                format!("payload entry {evil:?} type {}", entry.kind as char),
                &p.bytes(),
                &[],
                &[],
            );
        }
    }

    // Tar headers with garbage in numeric fields: the tar crate's error
    // quotes the field and the entry's path.
    let mut outer_bytes = tar_with_bad_size_field(&[Entry::file("version", &parts.version[..])]);
    outer_bytes.truncate(outer_bytes.len() - 1024);
    outer_bytes.extend_from_slice(&parts.bytes()[512 + 512..]);
    checker.reject("outer size field with a newline", &outer_bytes, &[], &[]);
    let mut p = parts.clone();
    p.header = compress(p.compression, &tar_with_bad_size_field(&p.header_entries()));
    p.reseal();
    checker.reject("header tar size field with a newline", &p.bytes(), &[], &[]);
    let mut p = parts.clone();
    p.data = compress(p.compression, &tar_with_bad_size_field(&p.file_entries()));
    p.reseal();
    checker.reject(
        "payload tar size field with a newline",
        &p.bytes(),
        &[],
        &[],
    );
    let mut p = parts.clone();
    p.header = compress(p.compression, &text(11, 3000));
    p.reseal();
    checker.reject("header tar of text lines", &p.bytes(), &[], &[]);
    let mut p = parts.clone();
    p.data = compress(p.compression, &noise(13, 4000));
    p.reseal();
    checker.reject("payload tar of random bytes", &p.bytes(), &[], &[]);
    checker.finish();
}
