//! Feeds arbitrary bytes, as the body of a server answer, to the parsers of
//! the server's JSON replies (`mender_rs::server::client::fuzz_parse_reply`):
//! the `deployments/next` 200 answer, and the message taken from an error
//! answer (`{"error": ...}` or the start of the body). The update control
//! map inside `next` is then validated as the daemon does
//! (`ControlMap::from_value`). A panic is a crash; so is a broken contract:
//!
//! - an accepted instruction has a non-empty id, artifact name, URI and
//!   device type list, and no `null` control map;
//! - a refused one with an id (reported failed to the server) names that
//!   non-empty id;
//! - reasons and error messages are one line (they go into the log and to
//!   the server): set `FUZZ_LAX_MESSAGES=1` to skip this check, which finds
//!   a known bug at once (see README.md);
//! - parsing is deterministic.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mender_rs::control_map::ControlMap;
use mender_rs::server::client::fuzz_parse_reply;

static LAX_MESSAGES: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("FUZZ_LAX_MESSAGES").is_some_and(|v| v != "0"));

fn one_line(what: &str, message: &str) {
    if !*LAX_MESSAGES {
        assert!(
            !message.contains(['\n', '\r']),
            "multi-line {what}: {message:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let (next, message) = fuzz_parse_reply(data);
    match &next {
        Ok(d) => {
            assert!(!d.id.is_empty(), "accepted with an empty id");
            assert!(
                !d.artifact_name.is_empty(),
                "accepted with no artifact name"
            );
            assert!(!d.uri.is_empty(), "accepted with no URI");
            assert!(
                !d.device_types_compatible.is_empty(),
                "accepted with no device type"
            );
            if let Some(map) = &d.control_map {
                assert!(!map.is_null(), "a null control map kept");
                if let Err(e) = ControlMap::from_value(map) {
                    one_line("control map error", &e.to_string());
                }
            }
        }
        Err((id, reason)) => {
            assert!(!reason.is_empty(), "empty reason");
            if let Some(id) = id {
                assert!(!id.is_empty(), "refused with an empty id");
            }
            one_line("reason", reason);
        }
    }
    one_line("error message", &message);
    let (again, message_again) = fuzz_parse_reply(data);
    assert_eq!(next, again, "not deterministic");
    assert_eq!(message, message_again, "not deterministic");
});
