//! Positive control: every good artifact reads back.

use super::*;

#[test]
fn good_artifacts_read_back() {
    for g in goods() {
        let keys = g.keys();
        let (report, rec) = accept(g.label, &g.bytes, &keys);
        assert_eq!(report.header.name, g.name, "{}", g.label);
        assert_eq!(
            report.signature,
            if g.signer.is_some() {
                SignatureState::Verified
            } else {
                SignatureState::None
            },
            "{}",
            g.label
        );
        let scripts: Vec<&str> = report
            .header
            .scripts
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        let mut want_scripts: Vec<&str> = g.scripts.iter().map(String::as_str).collect();
        want_scripts.sort();
        let mut got_scripts = scripts.clone();
        got_scripts.sort();
        assert_eq!(got_scripts, want_scripts, "{}", g.label);
        assert_eq!(rec.headers, 1, "{}", g.label);
        assert_eq!(rec.aborts, 0, "{}", g.label);
        assert!(rec.protocol.is_empty(), "{}: {:?}", g.label, rec.protocol);
        assert_eq!(rec.begins, g.files.len(), "{}", g.label);
        assert_eq!(rec.ends, g.files.len(), "{}", g.label);
        let total: usize = g.files.iter().map(|(_, d)| d.len()).sum();
        assert_eq!(rec.bytes, total as u64, "{}", g.label);
        for ((name, data), (got_name, got_size, got_data)) in g.files.iter().zip(&rec.files) {
            assert_eq!(name, got_name, "{}", g.label);
            assert_eq!(*got_size, data.len() as u64, "{}: {name}", g.label);
            assert!(got_data == data, "{}: content of {name} differs", g.label);
        }
        assert_eq!(report.files.len(), g.files.len(), "{}", g.label);
        for (f, (name, data)) in report.files.iter().zip(&g.files) {
            assert_eq!(&f.name, name);
            assert_eq!(f.size, data.len() as u64);
            assert_eq!(f.sha256, sha256(data));
        }

        if g.signer.is_some() {
            let (report, _) = accept(g.label, &g.bytes, &[]);
            assert_eq!(report.signature, SignatureState::Unverified, "{}", g.label);
        }

        // The surgery helpers must produce artifacts the reader accepts, so
        // that each bad input below is wrong only where the test means it.
        let parts = Parts::of(g);
        assert_eq!(
            String::from_utf8(parts.manifest.clone()).unwrap(),
            parts.manifest_text(),
            "{}: manifest_text() differs from the writer's manifest",
            g.label
        );
        accept(&format!("{} re-tarred", g.label), &parts.bytes(), &keys);
        let mut rebuilt = parts.clone();
        let header = rebuilt.header_entries();
        rebuilt.set_header(&header);
        let data = rebuilt.file_entries();
        rebuilt.set_data(&data);
        rebuilt.reseal();
        let (report, rec) = accept(&format!("{} rebuilt", g.label), &rebuilt.bytes(), &keys);
        assert_eq!(report.header.name, g.name);
        assert_eq!(rec.ends, g.files.len());
    }
}

/// A handler that refuses at some point: the read stops with its error and
/// `abort` is still called exactly once.
#[test]
fn handler_refusals_abort_once() {
    struct Refuse {
        at: &'static str,
        aborts: usize,
    }
    impl ArtifactHandler for Refuse {
        fn header(&mut self, _h: &ArtifactHeader) -> anyhow::Result<()> {
            if self.at == "header" {
                anyhow::bail!("no thanks (header)");
            }
            Ok(())
        }
        fn begin_file(&mut self, _n: &str, _s: u64) -> anyhow::Result<()> {
            if self.at == "begin" {
                anyhow::bail!("no thanks (begin)");
            }
            Ok(())
        }
        fn write(&mut self, _d: &[u8]) -> anyhow::Result<()> {
            if self.at == "write" {
                anyhow::bail!("disk full\nsecond line");
            }
            Ok(())
        }
        fn end_file(&mut self) -> anyhow::Result<()> {
            if self.at == "end" {
                anyhow::bail!("no thanks (end)");
            }
            Ok(())
        }
        fn abort(&mut self, _e: &ArtifactError) {
            self.aborts += 1;
        }
    }
    let mut ran = 0;
    for g in goods() {
        let keys = g.keys();
        for at in ["header", "begin", "write", "end"] {
            if at == "write" && g.files.iter().all(|(_, d)| d.is_empty()) {
                continue;
            }
            let mut handler = Refuse { at, aborts: 0 };
            let options = ReadOptions {
                verify_keys: &keys,
                policy: SignaturePolicy::Enforce,
                ranges: None,
            };
            let result = read_artifact(&g.bytes[..], &options, &mut handler);
            let e = result
                .err()
                .unwrap_or_else(|| panic!("{}: {at}: accepted", g.label));
            assert!(
                matches!(e, ArtifactError::Consumer(_)),
                "{}: {at}: {e}",
                g.label
            );
            assert!(e.to_string().contains("no thanks") || at == "write");
            assert_eq!(handler.aborts, 1, "{}: {at}", g.label);
            ran += 1;
        }
    }
    println!("handler_refusals_abort_once: {ran} refusals");
}
