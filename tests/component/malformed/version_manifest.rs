//! The version member and the manifest's contents.

use super::*;

#[test]
fn version_and_manifest_errors_are_refused() {
    let mut checker = Checker::new("version_and_manifest_errors_are_refused");
    for g in goods() {
        let keys = g.keys();
        let parts = Parts::of(g);
        let label = g.label;

        let versions: &[(&[u8], &[&str])] = &[
            (br#"{"format":"mender","version":1}"#, &["version 1"]),
            (br#"{"format":"mender","version":4}"#, &["version 4"]),
            (br#"{"format":"mender","version":0}"#, &["version 0"]),
            (br#"{"format":"mender","version":2}"#, &["updates"]),
            (br#"{"format":"mender","version":-3}"#, &["version"]),
            (br#"{"format":"mender","version":3.0}"#, &["version"]),
            (br#"{"format":"mender","version":3.5}"#, &["version"]),
            (br#"{"format":"mender","version":"3"}"#, &["version"]),
            (br#"{"format":"mender","version":null}"#, &["version"]),
            (
                br#"{"format":"mender","version":18446744073709551619}"#,
                &["version"],
            ),
            (br#"{"format":"mender"}"#, &["version"]),
            (
                br#"{"format":"Mender","version":3}"#,
                &["version", "Mender"],
            ),
            (br#"{"format":3,"version":3}"#, &["version", "format"]),
            (br#"{"version":3}"#, &["version", "format"]),
            (br#"{"format":"mender","version":3"#, &["version", "JSON"]),
            (br#"{"format":"mender","version":3}}"#, &["version", "JSON"]),
            (
                b"\xef\xbb\xbf{\"format\":\"mender\",\"version\":3}",
                &["version"],
            ),
            (b"[\"mender\",3]", &["version"]),
            (b"null", &["version"]),
            (b"3", &["version"]),
            (b"", &["version"]),
            (b"\xff\xfe", &["version"]),
        ];
        for (content, expect) in versions {
            let mut p = parts.clone();
            p.version = content.to_vec();
            p.reseal();
            checker.reject(
                format!("{label}: version {:?}", String::from_utf8_lossy(content)),
                &p.bytes(),
                &keys,
                expect,
            );
        }
        let mut p = parts.clone();
        p.version = br#"{"format":"mender","version":3}"#.to_vec();
        p.version.resize(5000, b' ');
        p.reseal();
        checker.reject(
            format!("{label}: version of 5000 bytes"),
            &p.bytes(),
            &keys,
            &["version"],
        );

        // Manifest edits; each is re-signed, so only the edit is wrong.
        let text = parts.manifest_text();
        let lines: Vec<&str> = text.lines().collect();
        let version_line = *lines.last().unwrap();
        let header_line = lines[lines.len() - 2];
        let mut edits: Vec<(String, String, Vec<String>)> = vec![
            (
                "uppercase hex".into(),
                text.replacen(&version_line[..64], &version_line[..64].to_uppercase(), 1),
                owned(&["manifest line", "hex"]),
            ),
            (
                "version listed twice".into(),
                format!("{text}{version_line}\n"),
                owned(&["manifest line", "twice", "version"]),
            ),
            (
                "header listed twice".into(),
                format!("{header_line}\n{text}"),
                owned(&["manifest line", "twice"]),
            ),
            (
                "version line missing".into(),
                text.replace(&format!("{version_line}\n"), ""),
                owned(&["version", "manifest"]),
            ),
            (
                "header line missing".into(),
                text.replace(&format!("{header_line}\n"), ""),
                owned(&[&parts.header_name, "manifest"]),
            ),
            (
                "CRLF line ends".into(),
                text.replace('\n', "\r\n"),
                owned(&["manifest line"]),
            ),
            (
                "one space".into(),
                text.replacen("  ", " ", 1),
                owned(&["manifest line"]),
            ),
            (
                "tab".into(),
                text.replacen("  ", "\t", 1),
                owned(&["manifest line"]),
            ),
            (
                "three spaces".into(),
                text.replace(
                    &format!("  {}", parts.header_name),
                    &format!("   {}", parts.header_name),
                ),
                owned(&["manifest line"]),
            ),
            (
                "blank line".into(),
                format!("{text}\n"),
                owned(&["manifest line"]),
            ),
            (
                "blank first line".into(),
                format!("\n{text}"),
                owned(&["manifest line 1"]),
            ),
            ("empty".into(), String::new(), owned(&["manifest"])),
            ("newline only".into(), "\n".into(), owned(&["manifest"])),
            (
                "no final newline, garbage line".into(),
                format!("{text}garbage"),
                owned(&["manifest line"]),
            ),
            (
                "63 hex digits".into(),
                text.replacen(&version_line[..64], &version_line[..63], 1),
                owned(&["manifest line"]),
            ),
            (
                "65 hex digits".into(),
                text.replacen(&version_line[..64], &format!("{}0", &version_line[..64]), 1),
                owned(&["manifest line"]),
            ),
            (
                "./version".into(),
                text.replace("  version\n", "  ./version\n"),
                owned(&["version"]),
            ),
            (
                "version path with a space".into(),
                text.replace("  version\n", "  ver sion\n"),
                owned(&["manifest line"]),
            ),
            (
                "NUL in a path".into(),
                text.replace("  version\n", "  version\0\n"),
                owned(&["manifest line"]),
            ),
            (
                "the payload member itself listed".into(),
                format!("{text}{}  {}\n", hex(&sha256(&parts.data)), parts.data_name),
                owned(&[&parts.data_name]),
            ),
            (
                "version checksum wrong".into(),
                text.replacen(&version_line[..64], &hex(&sha256(b"other")), 1),
                owned(&["version"]),
            ),
            (
                "header checksum wrong".into(),
                text.replacen(&header_line[..64], &hex(&sha256(b"other")), 1),
                owned(&[&parts.header_name]),
            ),
        ];
        let mut with_ghost = parts.clone();
        with_ghost.files.push(("ghost.bin".into(), b"boo".to_vec()));
        edits.push((
            "entry with no file".into(),
            with_ghost.manifest_text(),
            owned(&["ghost.bin", "manifest"]),
        ));
        for (name, data) in &parts.files {
            let line = format!("{}  data/0000/{name}\n", hex(&sha256(data)));
            edits.push((
                format!("{name} not listed"),
                text.replace(&line, ""),
                owned(&[name, "manifest"]),
            ));
            edits.push((
                format!("{name} checksum wrong"),
                text.replace(
                    &line,
                    &format!("{}  data/0000/{name}\n", hex(&sha256(b"x"))),
                ),
                owned(&[name]),
            ));
            edits.push((
                format!("{name} listed twice"),
                format!("{line}{text}"),
                owned(&["manifest line", "twice"]),
            ));
        }
        for (what, manifest, expect) in edits {
            let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
            let mut p = parts.clone();
            p.manifest = manifest.into_bytes();
            p.resign();
            checker.reject(
                format!("{label}: manifest {what}"),
                &p.bytes(),
                &keys,
                &expect,
            );
        }
        let mut p = parts.clone();
        p.manifest = b"\xff\xfe  version\n".to_vec();
        p.resign();
        checker.reject(
            format!("{label}: manifest not UTF-8"),
            &p.bytes(),
            &keys,
            &["manifest", "UTF-8"],
        );
        let mut p = parts.clone();
        p.manifest = text.repeat((4 << 20) / text.len() + 1).into_bytes();
        p.resign();
        checker.reject(
            format!("{label}: manifest over 4 MiB"),
            &p.bytes(),
            &keys,
            &["manifest"],
        );
    }
    checker.finish();
}
