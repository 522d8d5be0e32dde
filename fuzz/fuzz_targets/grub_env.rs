//! Feeds arbitrary bytes to the GRUB environment block parser, through the
//! public `GrubEnv` read and write of meta-mender's two-copy layout
//! (`mender_grubenv1/env`, `mender_grubenv2/env`, each with its `lock` and
//! `lock.sha256sum`) in a directory of this process under /dev/shm (or the
//! temporary directory). The low two bits of the first byte pick which copy
//! gets the rest of the input as its `env` file (0: both, 1: copy 1, 2:
//! copy 2, 3: copy 1, with copy 2's lock left at `editing=1`); the other
//! copy holds an empty block.
//!
//! A panic is a crash; so is a broken contract:
//!
//! - errors are one line;
//! - an environment that reads fine reads the same again (after the read
//!   repaired a bad copy), and, written with one more variable, reads back
//!   as the same variables plus that one; a refused write (full) changes
//!   nothing.

#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mender_rs::bootenv::{BootEnv, BootEnvError, EnvVars, GrubEnv};

const PROBE: &str = "fuzz_probe";

struct Setup {
    env: GrubEnv,
    dir: PathBuf,
    /// An empty block as `create` writes it.
    empty: Vec<u8>,
    /// Each copy's good `lock` and `lock.sha256sum`.
    locks: Vec<(Vec<u8>, Vec<u8>)>,
    /// A `lock` with `editing=1`, and its checksum line.
    editing: (Vec<u8>, Vec<u8>),
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("mender-rs-fuzz-grub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the fuzz directory");
    let env = GrubEnv::new(dir.clone()).with_lock_file(dir.join("grubenv.lock"));
    env.create(&EnvVars::new())
        .expect("create an empty environment");
    let read = |p: &str| std::fs::read(dir.join(p)).expect("read what create wrote");
    let empty = read("mender_grubenv1/env");
    let locks = ["mender_grubenv1", "mender_grubenv2"]
        .iter()
        .map(|c| {
            (
                read(&format!("{c}/lock")),
                read(&format!("{c}/lock.sha256sum")),
            )
        })
        .collect();
    // What a write cut short leaves: the lock says editing=1.
    env.create(&EnvVars::new()).expect("create again");
    let plan = env
        .planned_write(&[(PROBE, Some("1"))])
        .expect("plan a write");
    let editing = (plan[0].1.clone(), plan[1].1.clone());
    Setup {
        env,
        dir,
        empty,
        locks,
        editing,
    }
});

fn one_line(message: &str) {
    assert!(!message.is_empty(), "empty message");
    assert!(!message.contains('\n'), "multi-line message: {message:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let setup = &*SETUP;
    let write = |p: &str, bytes: &[u8]| {
        std::fs::write(setup.dir.join(p), bytes).expect("write a fuzz file");
    };
    let (first, second): (&[u8], &[u8]) = match selector & 3 {
        0 => (rest, rest),
        2 => (&setup.empty, rest),
        _ => (rest, &setup.empty),
    };
    write("mender_grubenv1/env", first);
    write("mender_grubenv2/env", second);
    for (copy, (lock, sum)) in ["mender_grubenv1", "mender_grubenv2"]
        .iter()
        .zip(&setup.locks)
    {
        write(&format!("{copy}/lock"), lock);
        write(&format!("{copy}/lock.sha256sum"), sum);
    }
    if selector & 3 == 3 {
        write("mender_grubenv2/lock", &setup.editing.0);
        write("mender_grubenv2/lock.sha256sum", &setup.editing.1);
    }

    let env = &setup.env;
    let vars = match env.read() {
        Ok(vars) => vars,
        Err(e) => {
            one_line(&e.to_string());
            return;
        }
    };
    let again = env
        .read()
        .unwrap_or_else(|e| panic!("a second read of an environment that was read: {e}"));
    assert_eq!(vars, again, "a second read gives other variables");

    match env.write(&[(PROBE, Some("1"))]) {
        Ok(()) => {
            let mut expected = vars.clone();
            expected.insert(PROBE.into(), "1".into());
            let after = env
                .read()
                .unwrap_or_else(|e| panic!("the environment we wrote does not read: {e}"));
            assert_eq!(after, expected, "a write changed other variables");
        }
        Err(e @ BootEnvError::Full { .. }) => {
            one_line(&e.to_string());
            let after = env.read().expect("read after a refused write");
            assert_eq!(after, vars, "a refused write changed the environment");
        }
        Err(e) => panic!("unexpected write error: {e}"),
    }
});
