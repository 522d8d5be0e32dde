//! Signatures.

use super::*;

#[test]
fn signature_errors_are_refused() {
    let mut checker = Checker::new("signature_errors_are_refused");
    let signed: Vec<&Good> = goods().iter().filter(|g| g.signer.is_some()).collect();
    for g in &signed {
        let key = g.signer.unwrap();
        let keys = g.keys();
        let parts = Parts::of(g);
        let label = g.label;
        let good_sig = parts.sig.clone().unwrap();

        let bad_sigs: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
            (
                "not base64",
                b"!!!! not base64 !!!!".to_vec(),
                vec!["manifest.sig", "base64"],
            ),
            ("empty", Vec::new(), vec!["manifest.sig", "base64"]),
            ("blank", b" \n ".to_vec(), vec!["manifest.sig", "base64"]),
            (
                "bad padding",
                good_sig[..good_sig.len() - 1].to_vec(),
                vec!["manifest.sig"],
            ),
            (
                "url-safe alphabet",
                b"-_-_".repeat(good_sig.len() / 4),
                vec!["manifest.sig"],
            ),
            (
                "binary signature",
                base64_decode(&good_sig),
                vec!["manifest.sig"],
            ),
            (
                "zeros",
                b"A".repeat(good_sig.len() - 4)
                    .into_iter()
                    .chain(*b"AA==")
                    .collect(),
                vec!["manifest.sig"],
            ),
            (
                "doubled",
                [good_sig.clone(), good_sig.clone()].concat(),
                vec!["manifest.sig"],
            ),
            (
                "of the empty message",
                key.sign(b""),
                vec!["manifest.sig", "verify"],
            ),
            (
                "of the manifest plus a newline",
                key.sign(&[parts.manifest.clone(), b"\n".to_vec()].concat()),
                vec!["manifest.sig", "verify"],
            ),
            (
                "over 64 KiB",
                b"QUFB".repeat(17 << 10),
                vec!["manifest.sig"],
            ),
        ];
        for (what, sig, expect) in bad_sigs {
            let mut p = parts.clone();
            p.sig = Some(sig);
            checker.reject(
                format!("{label}: signature {what}"),
                &p.bytes(),
                &keys,
                &expect,
            );
        }

        for other in [Key::EcA, Key::EcB, Key::Rsa] {
            if other == key {
                continue;
            }
            let mut p = parts.clone();
            p.sig = Some(other.sign(&parts.manifest));
            checker.reject(
                format!("{label}: signed with {other:?}, {key:?} configured"),
                &p.bytes(),
                &keys,
                &["manifest.sig"],
            );
            checker.reject(
                format!("{label}: {other:?} configured instead of {key:?}"),
                &g.bytes,
                &[other.verify()],
                &["manifest.sig"],
            );
        }

        // Another artifact's valid signature (same key).
        for h in &signed {
            if h.label == g.label || h.signer != g.signer {
                continue;
            }
            let mut p = parts.clone();
            p.sig = Parts::of(h).sig;
            checker.reject(
                format!("{label}: signature of {} swapped in", h.label),
                &p.bytes(),
                &keys,
                &["manifest.sig", "verify"],
            );
            // And the other artifact's signed manifest with this payload.
            let mut p = parts.clone();
            let donor = Parts::of(h);
            p.manifest = donor.manifest;
            p.sig = donor.sig;
            checker.reject(
                format!("{label}: signed manifest of {} swapped in", h.label),
                &p.bytes(),
                &keys,
                &[],
            );
        }

        // Changed after signing.
        let mut p = parts.clone();
        p.manifest.extend_from_slice(
            b"0000000000000000000000000000000000000000000000000000000000000000  data/0000/x\n",
        );
        checker.reject(
            format!("{label}: manifest line added after signing"),
            &p.bytes(),
            &keys,
            &["manifest.sig"],
        );
        let mut p = parts.clone();
        p.files[0].1.push(b'!');
        let entries = p.file_entries();
        p.set_data(&entries);
        p.manifest = p.manifest_text().into_bytes();
        checker.reject(
            format!("{label}: payload and manifest changed after signing"),
            &p.bytes(),
            &keys,
            &["manifest.sig"],
        );

        // No signature, or in the wrong place.
        let mut p = parts.clone();
        p.sig = None;
        checker.reject(
            format!("{label}: signature removed"),
            &p.bytes(),
            &keys,
            &["manifest.sig"],
        );
        let mut l = parts.list();
        let sig = l.remove(2);
        l.insert(3, sig.clone());
        checker.reject(
            format!("{label}: signature after the header"),
            &outer(&l),
            &keys,
            &["manifest.sig"],
        );
        let mut l = parts.list();
        l.remove(2);
        l.insert(1, sig);
        checker.reject(
            format!("{label}: signature before the manifest"),
            &outer(&l),
            &keys,
            &["manifest"],
        );
    }

    for g in goods().iter().filter(|g| g.signer.is_none()) {
        for key in [Key::EcA, Key::Rsa] {
            checker.reject(
                format!("{}: unsigned, {key:?} configured", g.label),
                &g.bytes,
                &[key.verify()],
                &["manifest.sig"],
            );
        }
        checker.reject(
            format!("{}: unsigned, two keys configured", g.label),
            &g.bytes,
            &[Key::EcA.verify(), Key::EcB.verify()],
            &["manifest.sig"],
        );
    }
    checker.finish();
}

fn base64_decode(text: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}
