//! The outer tar: order, duplicates, unknown and missing members.

use super::*;

#[test]
fn member_structure_errors_are_refused() {
    let mut checker = Checker::new("member_structure_errors_are_refused");
    for g in goods() {
        let keys = g.keys();
        let parts = Parts::of(g);
        let list = parts.list();
        let n = list.len();
        let label = g.label;
        let suffix = g.compression.suffix();

        for i in 0..n - 1 {
            let mut l = list.clone();
            l.swap(i, i + 1);
            checker.reject(
                format!("{label}: {} and {} swapped", list[i].0, list[i + 1].0),
                &outer(&l),
                &keys,
                &[],
            );
        }
        let mut reversed = list.clone();
        reversed.reverse();
        checker.reject(format!("{label}: reversed"), &outer(&reversed), &keys, &[]);
        let mut rotated = list.clone();
        rotated.rotate_right(1);
        checker.reject(
            format!("{label}: data first"),
            &outer(&rotated),
            &keys,
            &["version"],
        );

        for i in 0..n {
            let mut l = list.clone();
            l.insert(i + 1, list[i].clone());
            checker.reject(
                format!("{label}: {} twice", list[i].0),
                &outer(&l),
                &keys,
                &[&list[i].0],
            );
        }

        for i in 0..=n {
            let mut l = list.clone();
            l.insert(i, ("unknown.bin".to_string(), b"hello".to_vec()));
            checker.reject(
                format!("{label}: unknown member at {i}"),
                &outer(&l),
                &keys,
                &["unknown.bin"],
            );
        }

        for i in 0..n {
            let mut l = list.clone();
            let (removed, _) = l.remove(i);
            let expect: &[&str] = match removed.as_str() {
                "version" => &["version"],
                "manifest" => &["manifest"],
                "manifest.sig" => &["manifest.sig"],
                n if n.starts_with("data/") => &["data/0000"],
                _ => &["header.tar"],
            };
            checker.reject(
                format!("{label}: {removed} missing"),
                &outer(&l),
                &keys,
                expect,
            );
        }

        let mut l = list.clone();
        l.push((format!("data/0001.tar{suffix}"), parts.data.clone()));
        checker.reject(
            format!("{label}: second payload"),
            &outer(&l),
            &keys,
            &["data/0001"],
        );
        let mut second = parts.clone();
        second.data_name = format!("data/0001.tar{suffix}");
        checker.reject(
            format!("{label}: payload named data/0001"),
            &second.bytes(),
            &keys,
            &["data/0001"],
        );

        // Augmented artifacts: manifest-augment after the signature, and
        // header-augment after the header.
        let after_sig = if parts.sig.is_some() { 3 } else { 2 };
        let mut l = list.clone();
        l.insert(
            after_sig,
            ("manifest-augment".into(), parts.manifest.clone()),
        );
        checker.reject(
            format!("{label}: manifest-augment"),
            &outer(&l),
            &keys,
            &["manifest-augment", "augmented"],
        );
        let mut l = list.clone();
        l.insert(
            after_sig + 1,
            (format!("header-augment.tar{suffix}"), parts.header.clone()),
        );
        checker.reject(
            format!("{label}: header-augment"),
            &outer(&l),
            &keys,
            &["header-augment", "augmented"],
        );
        let mut l = list.clone();
        l.insert(
            after_sig,
            ("manifest-augment".into(), parts.manifest.clone()),
        );
        l.insert(
            after_sig + 2,
            (format!("header-augment.tar{suffix}"), parts.header.clone()),
        );
        checker.reject(
            format!("{label}: both augments"),
            &outer(&l),
            &keys,
            &["augmented"],
        );

        // Wrong member names.
        for data_name in [
            "data/0000.tar.bz2".to_string(),
            "data/0000".to_string(),
            "data/0000.tgz".to_string(),
            "data/0000.tar.gz.sig".to_string(),
            "data/0000.tar.".to_string(),
            "./data/0000.tar".to_string() + suffix,
            "data/0000.TAR".to_string() + suffix,
        ] {
            let mut p = parts.clone();
            p.data_name = data_name.clone();
            checker.reject(
                format!("{label}: payload member named {data_name}"),
                &p.bytes(),
                &keys,
                &[&data_name],
            );
        }
        for header_name in ["header.tar.bz2", "header", "headers.tar", "./header.tar"] {
            let mut p = parts.clone();
            p.header_name = header_name.to_string();
            checker.reject(
                format!("{label}: header member named {header_name}"),
                &p.bytes(),
                &keys,
                &[header_name],
            );
        }
        // The same compressed bytes under another compression's name.
        for other in [
            Compression::None,
            Compression::Gzip,
            Compression::Xz,
            Compression::Zstd,
        ] {
            if other == g.compression {
                continue;
            }
            let mut p = parts.clone();
            p.data_name = format!("data/0000.tar{}", other.suffix());
            checker.reject(
                format!("{label}: payload renamed to {}", p.data_name),
                &p.bytes(),
                &keys,
                &[&p.data_name],
            );
            let mut p = parts.clone();
            p.header_name = format!("header.tar{}", other.suffix());
            checker.reject(
                format!("{label}: header renamed to {}", p.header_name),
                &p.bytes(),
                &keys,
                &[&p.header_name],
            );
        }

        // Non-regular members in the outer tar.
        let mut entries: Vec<Entry> = list.iter().map(|(n, d)| Entry::file(n, &d[..])).collect();
        entries.insert(n - 1, Entry::special("data/", DIRECTORY, ""));
        checker.reject(
            format!("{label}: directory member data/"),
            &tar_bytes(&entries),
            &keys,
            &["data/", "regular"],
        );
        for (kind, what) in [(SYMLINK, "symlink"), (HARDLINK, "hardlink"), (FIFO, "fifo")] {
            let mut entries: Vec<Entry> =
                list.iter().map(|(n, d)| Entry::file(n, &d[..])).collect();
            entries[0] = Entry::special("version", kind, "/etc/passwd");
            checker.reject(
                format!("{label}: version is a {what}"),
                &tar_bytes(&entries),
                &keys,
                &["version"],
            );
        }

        // Sizes in the outer tar headers that lie.
        for i in 0..n {
            let mut entries: Vec<Entry> =
                list.iter().map(|(n, d)| Entry::file(n, &d[..])).collect();
            entries[i].declared_size = Some((8 << 30) - 1);
            let bytes = tar_bytes(&entries);
            checker.reject(
                format!("{label}: {} claims 8 GiB", list[i].0),
                &bytes,
                &keys,
                &[],
            );
            let mut entries: Vec<Entry> =
                list.iter().map(|(n, d)| Entry::file(n, &d[..])).collect();
            // The manifest's last newline is optional, and an uncompressed
            // payload tar ends in zero blocks: losing the last byte of
            // either loses nothing.
            let harmless = list[i].0 == "manifest"
                || (list[i].0.starts_with("data/") && g.compression == Compression::None);
            if entries[i].data.is_empty() || harmless {
                continue;
            }
            entries[i].declared_size = Some(entries[i].data.len() as u64 - 1);
            checker.reject(
                format!("{label}: {} one byte short", list[i].0),
                &tar_bytes(&entries),
                &keys,
                &[],
            );
        }
    }

    // Inputs that are hardly artifacts at all.
    let nothing: &[(&str, Vec<u8>)] = &[
        ("empty input", Vec::new()),
        ("one byte", vec![0]),
        ("end-of-archive only", vec![0; 1024]),
        ("a single zero block", vec![0; 512]),
        ("random bytes", noise(99, 4096)),
        ("text", b"this is not an artifact\n".to_vec()),
        (
            "gzip of an artifact",
            compress(Compression::Gzip, &goods()[0].bytes),
        ),
        (
            "version only",
            outer(&[("version".into(), Parts::of(&goods()[0]).version)]),
        ),
    ];
    for (label, bytes) in nothing {
        checker.reject(label, bytes, &[], &[]);
        checker.reject(
            format!("{label} (with key)"),
            bytes,
            &[Key::EcA.verify()],
            &[],
        );
    }
    checker.finish();
}
