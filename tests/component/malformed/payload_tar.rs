//! The payload tar.

use super::*;

#[test]
fn payload_tar_errors_are_refused() {
    let mut checker = Checker::new("payload_tar_errors_are_refused");
    for g in goods() {
        let keys = g.keys();
        let parts = Parts::of(g);
        let label = g.label;
        let base = parts.file_entries();
        let first = parts.files[0].0.clone();

        // Unsafe names, listed in the manifest where the manifest can list
        // them, so that the name check itself must refuse them.
        let names: &[(&[u8], &str)] = &[
            (b"caf\xe9.bin", "UTF-8"),
            (b"\xff", "UTF-8"),
            (b"a/b", "a/b"),
            (b"../escape", "../escape"),
            (b"../../../../etc/passwd", "etc/passwd"),
            (b"/etc/shadow", "/etc/shadow"),
            (b"./x", "./x"),
            (b"..", ".."),
            (b".", "'.'"),
            (b"a b", "a b"),
            (b"tab\there", "tab"),
            (b"back\\slash", "slash"),
            (b"colon:x", "colon"),
            (b"star*", "star"),
            (b"\xc3\xa4rger", "rger"),
            (b"", "payload file name"),
            (b"dir/", "dir/"),
        ];
        for (name, expect) in names {
            for position in ["first", "last"] {
                let mut p = parts.clone();
                let mut entries = base.clone();
                let entry = Entry::file(name, &b"evil"[..]);
                if position == "first" {
                    entries.insert(0, entry);
                } else {
                    entries.push(entry);
                }
                p.set_data(&entries);
                if let Ok(n) = std::str::from_utf8(name)
                    && !n.is_empty()
                    && !n.contains(char::is_whitespace)
                {
                    p.files.push((n.to_string(), b"evil".to_vec()));
                }
                p.reseal();
                checker.reject(
                    format!(
                        "{label}: payload name {:?} ({position})",
                        String::from_utf8_lossy(name)
                    ),
                    &p.bytes(),
                    &keys,
                    &[expect],
                );
            }
        }

        // Entries that are not regular files.
        let specials = [
            (Entry::special("link", SYMLINK, first.as_str()), "symlink"),
            (
                Entry::special("abs-link", SYMLINK, "/etc/passwd"),
                "symlink",
            ),
            (Entry::special("hard", HARDLINK, first.as_str()), "hardlink"),
            (Entry::special("subdir/", DIRECTORY, ""), "directory"),
            (Entry::special("subdir", DIRECTORY, ""), "directory"),
            (Entry::special("null", CHAR_DEVICE, ""), "char device"),
            (Entry::special("sda", BLOCK_DEVICE, ""), "block device"),
            (Entry::special("pipe", FIFO, ""), "fifo"),
            (Entry::special("contig", b'7', ""), "contiguous file"),
            (Entry::special("sparse", b'S', ""), "GNU sparse file"),
            (Entry::special("volume", b'V', ""), "volume label"),
            (Entry::special("weird", b'Z', ""), "unknown type"),
        ];
        for (entry, what) in specials {
            for position in ["first", "last"] {
                let mut p = parts.clone();
                let mut entries = base.clone();
                let name = entry.name();
                if position == "first" {
                    entries.insert(0, entry.clone());
                } else {
                    entries.push(entry.clone());
                }
                p.set_data(&entries);
                p.files
                    .push((name.trim_end_matches('/').to_string(), Vec::new()));
                p.reseal();
                checker.reject(
                    format!("{label}: {what} {name} in the payload ({position})"),
                    &p.bytes(),
                    &keys,
                    &[name.trim_end_matches('/')],
                );
            }
        }

        // Names from PAX and GNU extension headers count, not the ustar
        // name field.
        let ext_cases: Vec<(&str, Vec<Entry>, &str)> = vec![
            (
                "PAX path ../escape",
                vec![
                    pax_entry(&[("path", "../escape")]),
                    Entry::file("ok.bin", &b"evil"[..]),
                ],
                "../escape",
            ),
            (
                "GNU long name with a slash",
                vec![
                    Entry::special("././@LongLink", b'L', "").with_data(&b"sub/dir/file.bin\0"[..]),
                    Entry::file("ok.bin", &b"evil"[..]),
                ],
                "sub/dir/file.bin",
            ),
            (
                "PAX header describing no entry",
                vec![pax_entry(&[("path", "ok.bin")])],
                "data/0000",
            ),
            (
                "PAX global header",
                vec![pax_entry(&[("comment", "x")]).with_kind(b'g')],
                "data/0000",
            ),
        ];
        for (what, extra, expect) in ext_cases {
            for position in ["first", "last"] {
                let mut p = parts.clone();
                let mut entries = base.clone();
                if position == "first" {
                    entries.splice(0..0, extra.iter().cloned());
                } else {
                    entries.extend(extra.iter().cloned());
                }
                p.set_data(&entries);
                p.files.push(("ok.bin".into(), b"evil".to_vec()));
                p.reseal();
                checker.reject(
                    format!("{label}: {what} in the payload ({position})"),
                    &p.bytes(),
                    &keys,
                    &[expect],
                );
            }
        }

        // Manifest and payload disagree.
        let mut p = parts.clone();
        let mut entries = base.clone();
        entries.push(Entry::file("extra.bin", &b"not in the manifest"[..]));
        p.set_data(&entries);
        p.reseal();
        checker.reject(
            format!("{label}: payload file not in the manifest"),
            &p.bytes(),
            &keys,
            &["extra.bin", "manifest"],
        );

        let mut p = parts.clone();
        let mut entries = base.clone();
        entries.push(entries[0].clone());
        p.set_data(&entries);
        p.reseal();
        checker.reject(
            format!("{label}: payload file twice"),
            &p.bytes(),
            &keys,
            &[&first, "twice"],
        );

        let mut p = parts.clone();
        let mut entries = base.clone();
        entries[0].data.extend_from_slice(b"changed");
        p.set_data(&entries);
        p.reseal();
        checker.reject(
            format!("{label}: payload content changed"),
            &p.bytes(),
            &keys,
            &[&first],
        );

        let mut p = parts.clone();
        p.set_data(&base[1..]);
        p.reseal();
        checker.reject(
            format!("{label}: payload file missing"),
            &p.bytes(),
            &keys,
            &[&first, "manifest"],
        );

        let mut p = parts.clone();
        p.set_data(&[]);
        p.reseal();
        checker.reject(
            format!("{label}: empty payload tar"),
            &p.bytes(),
            &keys,
            &[&first],
        );

        for (what, delta) in [("longer", 700i64), ("shorter", -1)] {
            let mut p = parts.clone();
            let mut entries = base.clone();
            let e = entries.iter_mut().find(|e| !e.data.is_empty()).unwrap();
            e.declared_size = Some((e.data.len() as i64 + delta) as u64);
            p.set_data(&entries);
            p.reseal();
            checker.reject(
                format!("{label}: payload file size in its tar header {what}"),
                &p.bytes(),
                &keys,
                &[],
            );
        }

        let mut stored = vec![
            ("not a tar", compress(g.compression, &noise(13, 4000))),
            ("empty member", Vec::new()),
        ];
        if g.compression != Compression::None {
            stored.push(("random bytes", noise(14, 4000)));
            stored.push(("uncompressed tar", tar_bytes(&base)));
            let other = if g.compression == Compression::Xz {
                Compression::Zstd
            } else {
                Compression::Xz
            };
            stored.push(("compressed another way", compress(other, &tar_bytes(&base))));
            let mut truncated = parts.data.clone();
            truncated.truncate(truncated.len() - 3);
            stored.push(("compressed stream truncated", truncated));
            stored.push((
                "compressed stream with trailing garbage",
                [parts.data.clone(), b"garbage!".to_vec()].concat(),
            ));
        }
        for (what, data) in stored {
            let mut p = parts.clone();
            p.data = data;
            p.reseal();
            checker.reject_known_multiline(
                format!("{label}: payload {what}"),
                &p.bytes(),
                &keys,
                &["data/0000"],
            );
        }
    }
    checker.finish();
}

/// Go's archive/tar (and so mender-artifact) stores the size of a file of
/// 8 GiB or more in a PAX `size` record and writes 0 in the ustar size field.
/// The same layout with a small file must read fine.
#[test]

fn pax_size_records_are_honoured() {
    for g in goods() {
        let mut p = Parts::of(g);
        let mut entries = Vec::new();
        for (name, data) in &p.files {
            entries.push(pax_entry(&[("size", &data.len().to_string())]));
            let mut e = Entry::file(name, &data[..]);
            e.declared_size = Some(0);
            entries.push(e);
        }
        p.set_data(&entries);
        p.reseal();
        let (report, rec) = accept(g.label, &p.bytes(), &g.keys());
        assert_eq!(report.files.len(), g.files.len(), "{}", g.label);
        for ((name, data), (got_name, size, got)) in g.files.iter().zip(&rec.files) {
            assert_eq!(name, got_name);
            assert_eq!(
                *size,
                data.len() as u64,
                "{}: begin_file size of {name}",
                g.label
            );
            assert!(got == data, "{}: content of {name}", g.label);
        }
    }
}
