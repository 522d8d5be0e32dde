//! Feeds arbitrary bytes to the update control map parsers. The first byte
//! picks the parser, the rest is the input:
//!
//! - even: a map document, as the server (`deployments/next`), D-Bus and
//!   `mender-rs control set` give it (`ControlMap::parse`);
//! - odd: the maps file in the data directory
//!   (`mender-rs-control-maps.json`), read by `ControlMapSet::open_at` from
//!   a private directory under /dev/shm (or the temporary directory).
//!
//! A panic is a crash; so is a broken contract:
//!
//! - an error's message is one line and not empty;
//! - an accepted map has a UUID id, a priority in -10..=10, no state whose
//!   three values are all `continue`, no `pause` as `on_map_expire`, and
//!   survives `to_value` → JSON bytes → `parse` unchanged;
//! - an accepted file holds only such maps, and opening it again (after
//!   `open_at` rewrote it for this boot, when its boot id was another one)
//!   gives the same maps;
//! - the merged decision of a set holding the map(s) is never `pause` once
//!   every map expired (a pause cannot outlive its map), and names a
//!   priority level exactly when it is not plain `continue`.

#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mender_rs::config::Config;
use mender_rs::control_map::{
    Action, BootTime, ControlMap, ControlMapSet, MAPS_FILE, MAX_PRIORITY, MIN_PRIORITY, Settings,
    StateKey, validate_id,
};

/// A data directory of this process, so that parallel jobs do not share it.
static DATA_DIR: LazyLock<PathBuf> = LazyLock::new(|| {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("mender-rs-fuzz-control-map-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the fuzz data directory");
    dir
});

static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    Config::from_str("fuzz.conf", "{}", false, &DATA_DIR).expect("the empty configuration")
});

fn check_map(map: &ControlMap) {
    assert!(validate_id(&map.id).is_ok(), "accepted id {:?}", map.id);
    assert!(
        (MIN_PRIORITY..=MAX_PRIORITY).contains(&map.priority),
        "priority {} out of range",
        map.priority
    );
    for (state, rule) in &map.states {
        assert!(
            !rule.is_noop(),
            "{state:?}: a rule that says nothing was kept"
        );
        assert_ne!(
            rule.on_map_expire,
            Action::Pause,
            "{state:?}: on_map_expire pause"
        );
    }
    let value = map.to_value();
    let again = ControlMap::from_value(&value)
        .unwrap_or_else(|e| panic!("to_value of an accepted map is refused: {e}; {value}"));
    assert_eq!(&again, map, "to_value/from_value changed the map");
    let bytes = serde_json::to_vec(&value).expect("serialize a JSON value");
    let again = ControlMap::parse(&bytes)
        .unwrap_or_else(|e| panic!("the JSON of an accepted map is refused: {e}"));
    assert_eq!(&again, map, "JSON round trip changed the map");
}

fn check_decisions(set: &ControlMapSet, now: BootTime) {
    let never = BootTime::from_millis(u64::MAX);
    for state in StateKey::ALL {
        for at in [now, never] {
            let d = set.decision(state, at);
            assert_eq!(
                d.priority.is_some(),
                d.action != Action::Continue,
                "{state:?} at {at:?}: {d:?}"
            );
            if at == never {
                assert_ne!(
                    d.action,
                    Action::Pause,
                    "{state:?}: paused after every map expired"
                );
            }
        }
    }
}

fn check_message(message: &str) {
    assert!(!message.is_empty(), "empty error message");
    assert!(!message.contains('\n'), "multi-line message: {message:?}");
}

fn map_document(data: &[u8]) {
    match ControlMap::parse(data) {
        Ok(map) => {
            check_map(&map);
            assert_eq!(
                ControlMap::parse(data).ok(),
                Some(map.clone()),
                "not deterministic"
            );
            let now = BootTime::from_secs(1000);
            let mut set = ControlMapSet::new(Settings::from_config(&CONFIG));
            set.insert_from_device(map, now)
                .expect("one map into an empty set");
            check_decisions(&set, now);
        }
        Err(e) => {
            check_message(&e.to_string());
            assert_eq!(ControlMap::parse(data).err(), Some(e), "not deterministic");
        }
    }
}

fn maps_file(data: &[u8]) {
    let path = DATA_DIR.join(MAPS_FILE);
    std::fs::write(&path, data).expect("write the maps file");
    let now = BootTime::from_secs(1000);
    match ControlMapSet::open_at(&CONFIG, now) {
        Ok(set) => {
            for active in set.maps() {
                check_map(&active.map);
            }
            let again = ControlMapSet::open_at(&CONFIG, now)
                .unwrap_or_else(|e| panic!("an accepted file is refused when read again: {e}"));
            assert_eq!(
                set.maps(),
                again.maps(),
                "reading the file again changed the maps"
            );
            check_decisions(&set, now);
        }
        Err(e) => check_message(&e.to_string()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector & 1 == 0 {
        map_document(rest);
    } else {
        maps_file(rest);
    }
});
