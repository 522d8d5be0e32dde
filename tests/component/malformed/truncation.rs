//! Truncated inputs and flipped bytes.

use super::*;

#[test]
fn truncated_artifacts_are_refused() {
    let mut checker = Checker::new("truncated_artifacts_are_refused");
    let mut rng = Rng(0x5eed_0001);
    for g in goods() {
        let keys = g.keys();
        let end = content_end(&g.bytes);
        let mut offsets: Vec<usize> = (0..end).step_by(512).collect();
        offsets.extend((0..300).map(|_| rng.below(end)));
        offsets.extend([end - 1, 1, 511, 513]);
        offsets.sort_unstable();
        offsets.dedup();
        for cut in offsets {
            checker.reject(
                format!("{} cut at {cut} of {}", g.label, g.bytes.len()),
                &g.bytes[..cut],
                &keys,
                &[],
            );
        }
    }
    checker.finish();
}

/// Offsets inside a member's data whose change the reader must notice. For
/// a compressed payload the gzip header's MTIME/XFL/OS bytes are skipped (no
/// checksum covers them, and they do not change the payload); for an
/// uncompressed payload only the inner tar's headers, file contents and the
/// first end-of-archive block count (padding is not covered).
fn flip_positions(member: &Parsed, compression: Compression, is_data: bool) -> Vec<usize> {
    let len = member.data.len();
    let mut at: Vec<usize> = if !is_data {
        [0, 1, 63, 64, 65, 66, len / 4, len / 2, 3 * len / 4]
            .into_iter()
            .chain([len.saturating_sub(2), len.saturating_sub(1)])
            .collect()
    } else {
        match compression {
            Compression::None => {
                let inner = parse_tar(&member.data);
                let mut at = Vec::new();
                for e in &inner {
                    for off in [0, 99, 100, 124, 130, 148, 150, 156, 257, 263, 345, 511] {
                        at.push(e.header_pos + off);
                    }
                    if !e.data.is_empty() {
                        let n = e.data.len();
                        at.extend([e.data_pos, e.data_pos + n / 2, e.data_pos + n - 1]);
                    }
                }
                let last = inner.last().unwrap();
                at.push(last.data_pos + last.data.len() + padding(last.data.len()));
                at
            }
            Compression::Gzip => [0, 1, 2, 3, 10, 11, len / 3, len / 2, 2 * len / 3]
                .into_iter()
                .chain([len - 9, len - 8, len - 5, len - 1])
                .collect(),
            Compression::Xz | Compression::Zstd => {
                vec![
                    0,
                    1,
                    4,
                    5,
                    6,
                    10,
                    len / 3,
                    len / 2,
                    2 * len / 3,
                    len - 5,
                    len - 1,
                ]
            }
        }
    };
    at.retain(|&p| p < len);
    at.sort_unstable();
    at.dedup();
    at
}

#[test]
fn flipped_bytes_are_refused() {
    let mut checker = Checker::new("flipped_bytes_are_refused");
    for g in goods() {
        let members = parse_tar(&g.bytes);
        let mut key_sets = vec![(g.keys(), "")];
        if g.signer.is_some() {
            key_sets.push((Vec::new(), " (no key)"));
        }
        for m in &members {
            let is_data = m.name.starts_with("data/");
            let expect: &str = match m.name.as_str() {
                "version" => "version",
                "manifest" => "manifest",
                "manifest.sig" => "signature",
                n if n.starts_with("header.tar") => "header.tar",
                _ => "data/0000",
            };
            let mut cases: Vec<(usize, Option<&str>)> = Vec::new();
            for off in [
                0, 50, 100, 110, 124, 129, 135, 148, 153, 156, 257, 262, 300, 511,
            ] {
                cases.push((m.header_pos + off, None));
            }
            for off in flip_positions(m, g.compression, is_data) {
                cases.push((m.data_pos + off, Some(expect)));
            }
            for (keys, note) in &key_sets {
                // Without a key the signature is not checked, so a changed
                // manifest.sig is (rightly) not noticed.
                if keys.is_empty() && m.name == "manifest.sig" {
                    continue;
                }
                for &(pos, expect) in &cases {
                    let mut bytes = g.bytes.clone();
                    bytes[pos] ^= 0xff;
                    let expect: Vec<&str> = expect.into_iter().collect();
                    checker.reject(
                        format!(
                            "{}: {} byte {} flipped{note}",
                            g.label,
                            m.name,
                            pos as i64 - m.data_pos as i64
                        ),
                        &bytes,
                        keys,
                        &expect,
                    );
                }
            }
        }
    }
    checker.finish();
}
