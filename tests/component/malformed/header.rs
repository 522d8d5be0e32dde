//! The header: its JSON documents and its tar.

use super::*;

/// Sets (or, with the value "<remove>", removes) the field at `path`.
fn set(mut v: Value, path: &[&str], new: Value) -> Value {
    let mut at = &mut v;
    for key in &path[..path.len() - 1] {
        at = match key.parse::<usize>() {
            Ok(i) => &mut at[i],
            Err(_) => &mut at[*key],
        };
    }
    let last = path[path.len() - 1];
    match at {
        Value::Object(o) if new == json!("<remove>") => {
            o.remove(last);
        }
        Value::Object(o) => {
            o.insert(last.to_string(), new);
        }
        Value::Array(a) => a[last.parse::<usize>().unwrap()] = new,
        _ => panic!("cannot set {path:?}"),
    }
    v
}

#[test]
fn header_json_errors_are_refused() {
    let mut checker = Checker::new("header_json_errors_are_refused");
    let remove = || json!("<remove>");
    for g in goods() {
        let keys = g.keys();
        let parts = Parts::of(g);
        let label = g.label;
        let info = parts.header_json("header-info");
        let type_info = parts.header_json("headers/0000/type-info");
        let ptype = info["payloads"][0]["type"].clone();

        let mut docs: Vec<(&str, String, Vec<u8>, Vec<&str>)> = Vec::new();
        let mut doc = |path: &'static str, what: &str, bytes: Vec<u8>, expect: &[&'static str]| {
            docs.push((path, what.to_string(), bytes, expect.to_vec()));
        };
        let j = |v: Value| v.to_string().into_bytes();
        const HI: &str = "header-info";
        const TI: &str = "headers/0000/type-info";
        const MD: &str = "headers/0000/meta-data";

        // header-info
        for (what, bytes) in [
            ("truncated JSON", b"{\"payloads\":[".to_vec()),
            ("not JSON", b"payloads: rootfs".to_vec()),
            ("empty", Vec::new()),
            ("invalid UTF-8", b"{\"payloads\":\"\xff\"}".to_vec()),
            ("a list", b"[]".to_vec()),
            ("a string", b"\"header\"".to_vec()),
            ("null", b"null".to_vec()),
            ("empty object", b"{}".to_vec()),
            (
                "trailing garbage",
                [j(info.clone()), b"x".to_vec()].concat(),
            ),
        ] {
            doc(HI, what, bytes, &[HI]);
        }
        for (what, path, value) in [
            ("payloads missing", vec!["payloads"], remove()),
            (
                "payloads an object",
                vec!["payloads"],
                json!({"type": ptype}),
            ),
            ("payloads a string", vec!["payloads"], json!("rootfs-image")),
            ("payloads empty", vec!["payloads"], json!([])),
            (
                "two payloads",
                vec!["payloads"],
                json!([{"type": ptype}, {"type": ptype}]),
            ),
            (
                "payload a string",
                vec!["payloads", "0"],
                json!("rootfs-image"),
            ),
            (
                "payload type a number",
                vec!["payloads", "0", "type"],
                json!(5),
            ),
            (
                "payload type a list",
                vec!["payloads", "0", "type"],
                json!(["a"]),
            ),
            (
                "payload type empty",
                vec!["payloads", "0", "type"],
                json!(""),
            ),
            (
                "payload type missing",
                vec!["payloads", "0", "type"],
                remove(),
            ),
            (
                "payload type a path",
                vec!["payloads", "0", "type"],
                json!("../../bin/sh"),
            ),
            (
                "payload type with a space",
                vec!["payloads", "0", "type"],
                json!("a b"),
            ),
            (
                "artifact_provides missing",
                vec!["artifact_provides"],
                remove(),
            ),
            (
                "artifact_provides a list",
                vec!["artifact_provides"],
                json!(["x"]),
            ),
            (
                "artifact_name a number",
                vec!["artifact_provides", "artifact_name"],
                json!(5),
            ),
            (
                "artifact_name empty",
                vec!["artifact_provides", "artifact_name"],
                json!(""),
            ),
            (
                "artifact_name missing",
                vec!["artifact_provides", "artifact_name"],
                remove(),
            ),
            (
                "artifact_group a list",
                vec!["artifact_provides", "artifact_group"],
                json!([]),
            ),
            (
                "artifact_depends missing",
                vec!["artifact_depends"],
                remove(),
            ),
            (
                "artifact_depends a string",
                vec!["artifact_depends"],
                json!("x"),
            ),
            (
                "device_type missing",
                vec!["artifact_depends", "device_type"],
                remove(),
            ),
            (
                "device_type a number",
                vec!["artifact_depends", "device_type"],
                json!(5),
            ),
            (
                "device_type empty",
                vec!["artifact_depends", "device_type"],
                json!([]),
            ),
            (
                "device_type with a number",
                vec!["artifact_depends", "device_type"],
                json!(["a", 5]),
            ),
            (
                "device_type an object",
                vec!["artifact_depends", "device_type"],
                json!({"a": 1}),
            ),
            (
                "artifact_depends value an object",
                vec!["artifact_depends", "x"],
                json!({}),
            ),
            // Names, keys and values that would forge show-provides lines.
            (
                "artifact_name with a newline",
                vec!["artifact_provides", "artifact_name"],
                json!("ok\nrootfs-image.version=evil"),
            ),
            (
                "artifact_group with an escape",
                vec!["artifact_provides", "artifact_group"],
                json!("g\u{1b}[2J"),
            ),
            (
                "device_type with a newline",
                vec!["artifact_depends", "device_type"],
                json!(["a\nb"]),
            ),
            (
                "artifact_depends key with '='",
                vec!["artifact_depends", "a=b"],
                json!("x"),
            ),
        ] {
            doc(HI, what, j(set(info.clone(), &path, value)), &[HI]);
        }

        // type-info
        for (what, bytes) in [
            ("truncated JSON", b"{\"type\":".to_vec()),
            ("empty", Vec::new()),
            ("a list", b"[]".to_vec()),
            ("a number", b"7".to_vec()),
            ("invalid UTF-8", b"{\"type\":\"\xc3\x28\"}".to_vec()),
        ] {
            doc(TI, what, bytes, &[TI]);
        }
        for (what, path, value, expect) in [
            ("type a number", vec!["type"], json!(5), TI),
            ("type an object", vec!["type"], json!({}), TI),
            ("type differs", vec!["type"], json!("other-module"), TI),
            (
                "artifact_provides a list",
                vec!["artifact_provides"],
                json!(["a"]),
                TI,
            ),
            (
                "artifact_provides a string",
                vec!["artifact_provides"],
                json!("a"),
                TI,
            ),
            (
                "provides value a number",
                vec!["artifact_provides"],
                json!({"a": 5}),
                TI,
            ),
            (
                "provides value a list",
                vec!["artifact_provides"],
                json!({"a": ["b"]}),
                TI,
            ),
            (
                "artifact_depends a list",
                vec!["artifact_depends"],
                json!(["a"]),
                TI,
            ),
            (
                "depends value an object",
                vec!["artifact_depends"],
                json!({"a": {}}),
                TI,
            ),
            (
                "depends value a number",
                vec!["artifact_depends"],
                json!({"a": 1}),
                TI,
            ),
            (
                "depends value a list with a number",
                vec!["artifact_depends"],
                json!({"a": ["b", 1]}),
                TI,
            ),
            (
                "clears a string",
                vec!["clears_artifact_provides"],
                json!("rootfs-image.*"),
                TI,
            ),
            (
                "clears with a number",
                vec!["clears_artifact_provides"],
                json!(["a", 1]),
                TI,
            ),
            (
                "provides key with a newline",
                vec!["artifact_provides"],
                json!({"x\nartifact_name": "e"}),
                TI,
            ),
            (
                "provides value with a newline",
                vec!["artifact_provides"],
                json!({"a": "1\nartifact_name=evil3"}),
                TI,
            ),
            (
                "provides key with '='",
                vec!["artifact_provides"],
                json!({"a=b": "1"}),
                TI,
            ),
            (
                "provides value with a C1 control",
                vec!["artifact_provides"],
                json!({"a": "x\u{85}y"}),
                TI,
            ),
            (
                "depends key with DEL",
                vec!["artifact_depends"],
                json!({"a\u{7f}": "1"}),
                TI,
            ),
            (
                "clears with a newline",
                vec!["clears_artifact_provides"],
                json!(["a\nb"]),
                TI,
            ),
            (
                "provides artifact_name again",
                vec!["artifact_provides"],
                json!({"artifact_name": "other"}),
                "conflicts",
            ),
            (
                "depends device_type again",
                vec!["artifact_depends"],
                json!({"device_type": "other"}),
                "conflicts",
            ),
        ] {
            doc(TI, what, j(set(type_info.clone(), &path, value)), &[expect]);
        }

        // meta-data
        for (what, bytes) in [
            ("truncated JSON", b"{\"a\":".to_vec()),
            ("a list", b"[1]".to_vec()),
            ("a string", b"\"x\"".to_vec()),
            ("a number", b"1".to_vec()),
            ("null", b"null".to_vec()),
            ("nested list", br#"{"a":[[1]]}"#.to_vec()),
            ("list with object", br#"{"a":[{}]}"#.to_vec()),
            (
                "nested list in an object",
                br#"{"a":{"b":[["c"]]}}"#.to_vec(),
            ),
            (
                "list with object, deep",
                br#"{"a":{"b":{"c":[1,{"d":2}]}}}"#.to_vec(),
            ),
            ("invalid UTF-8", b"{\"a\":\"\xe2\x82\"}".to_vec()),
            ("trailing garbage", b"{\"a\":1} {".to_vec()),
        ] {
            doc(MD, what, bytes, &[MD]);
        }

        for (path, what, bytes, expect) in docs {
            checker.reject(
                format!("{label}: {path} {what}"),
                &parts.with_header_json(path, &bytes),
                &keys,
                &expect,
            );
        }
    }
    checker.finish();
}

#[test]
fn header_tar_errors_are_refused() {
    let mut checker = Checker::new("header_tar_errors_are_refused");
    for g in goods() {
        let keys = g.keys();
        let parts = Parts::of(g);
        let label = g.label;
        let base = parts.header_entries();
        let find = |name: &str| base.iter().find(|e| e.name == name.as_bytes()).unwrap();
        let info = find("header-info").clone();
        let type_info = find("headers/0000/type-info").clone();
        let meta = find("headers/0000/meta-data").clone();
        let script = base
            .iter()
            .find(|e| e.name.starts_with(b"scripts/"))
            .cloned()
            .unwrap_or_else(|| Entry::file("scripts/ArtifactInstall_Enter_01", "#!/bin/sh\n"));
        let with = |extra: Entry| {
            let mut e = base.clone();
            e.push(extra);
            e
        };
        let script_named = |name: &str| Entry::file(format!("scripts/{name}"), "#!/bin/sh\n");

        let cases: Vec<(&str, Vec<Entry>, Vec<&str>)> = vec![
            (
                "type-info first",
                vec![type_info.clone(), info.clone(), meta.clone()],
                vec!["header-info", "first"],
            ),
            (
                "script first",
                vec![script.clone(), info.clone(), type_info.clone()],
                vec!["header-info", "first"],
            ),
            (
                "header-info twice",
                with(info.clone()),
                vec!["header-info", "twice"],
            ),
            (
                "type-info twice",
                with(type_info.clone()),
                vec!["type-info", "twice"],
            ),
            (
                "meta-data twice",
                with(meta.clone()),
                vec!["meta-data", "twice"],
            ),
            (
                "script twice",
                {
                    let mut e = with(script.clone());
                    e.push(script.clone());
                    e
                },
                vec!["scripts/", "twice"],
            ),
            (
                "type-info missing",
                vec![info.clone(), meta.clone()],
                vec!["type-info"],
            ),
            (
                "header-info missing",
                vec![type_info.clone()],
                vec!["header-info"],
            ),
            ("empty header tar", vec![], vec!["header-info"]),
            (
                "unknown entry",
                with(Entry::file("foo", "bar")),
                vec!["foo"],
            ),
            (
                "second payload header",
                with(Entry::file("headers/0001/type-info", "{}")),
                vec!["headers/0001"],
            ),
            (
                "v2 files list in a v3 header",
                with(Entry::file("headers/0000/files", r#"{"files":[]}"#)),
                vec!["headers/0000/files"],
            ),
            (
                "unknown payload header entry",
                with(Entry::file("headers/0000/signatures", "x")),
                vec!["headers/0000/signatures"],
            ),
            (
                "script with a space",
                with(script_named("ArtifactInstall Enter_01")),
                vec!["state script name"],
            ),
            (
                "script with a tab",
                with(script_named("Artifact\tInstall")),
                vec!["state script name"],
            ),
            (
                "script with empty name",
                with(script_named("")),
                vec!["state script name"],
            ),
            (
                "script in a sub-directory",
                with(script_named("sub/ArtifactInstall_Enter_01")),
                vec!["state script name"],
            ),
            (
                "script named ..",
                with(script_named("..")),
                vec!["state script name"],
            ),
            (
                "script named .",
                with(script_named(".")),
                vec!["state script name"],
            ),
            (
                "script escaping",
                with(script_named("../../etc/profile")),
                vec!["state script name"],
            ),
            (
                "script is a symlink",
                with(Entry::special(
                    "scripts/ArtifactCommit_Enter_01",
                    SYMLINK,
                    "/bin/sh",
                )),
                vec!["scripts/ArtifactCommit_Enter_01", "regular"],
            ),
            (
                "script is a hardlink",
                with(Entry::special(
                    "scripts/ArtifactCommit_Enter_01",
                    HARDLINK,
                    "header-info",
                )),
                vec!["scripts/ArtifactCommit_Enter_01", "regular"],
            ),
            (
                "type-info is a directory",
                vec![
                    info.clone(),
                    Entry::special("headers/0000/type-info", DIRECTORY, ""),
                ],
                vec!["type-info"],
            ),
            (
                "header-info is a symlink",
                vec![
                    Entry::special("header-info", SYMLINK, "/etc/passwd"),
                    type_info.clone(),
                ],
                vec!["header-info"],
            ),
            (
                "a device in the header",
                with(Entry::special("headers/0000/dev", CHAR_DEVICE, "")),
                vec!["headers/0000/dev"],
            ),
            (
                "a directory other than scripts/headers",
                with(Entry::special("etc/", DIRECTORY, "")),
                vec!["etc"],
            ),
            (
                "header entry truncated",
                {
                    let mut e = base.clone();
                    e[0].declared_size = Some(e[0].data.len() as u64 + 600);
                    e
                },
                vec![],
            ),
        ];
        for (what, entries, expect) in cases {
            let mut p = parts.clone();
            p.set_header(&entries);
            p.reseal();
            checker.reject(
                format!("{label}: header {what}"),
                &p.bytes(),
                &keys,
                &expect,
            );
        }

        let mut raw = vec![
            ("not a tar", compress(g.compression, &text(11, 3000))),
            ("random bytes", noise(12, 3000)),
            ("empty member", Vec::new()),
        ];
        if g.compression != Compression::None {
            raw.push((
                "uncompressed tar",
                tar_bytes(&[info.clone(), type_info.clone(), meta.clone()]),
            ));
            let other = if g.compression == Compression::Gzip {
                Compression::Zstd
            } else {
                Compression::Gzip
            };
            raw.push((
                "compressed another way",
                compress(other, &decompress(g.compression, &parts.header)),
            ));
            let mut truncated = parts.header.clone();
            truncated.truncate(truncated.len() - 6);
            raw.push(("compressed stream truncated", truncated));
            raw.push((
                "compressed stream with trailing garbage",
                [parts.header.clone(), b"garbage".to_vec()].concat(),
            ));
        }
        for (what, stored) in raw {
            let mut p = parts.clone();
            p.header = stored;
            p.reseal();
            checker.reject_known_multiline(
                format!("{label}: header {what}"),
                &p.bytes(),
                &keys,
                &[&parts.header_name],
            );
        }
    }
    checker.finish();
}
