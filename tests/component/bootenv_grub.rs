//! The GRUB environment backend against GRUB's own `grub-editenv` (package
//! grub-common) and coreutils' `sha256sum`, which are the oracle: these
//! tests fail, not skip, when the tools are missing.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mender_rs::bootenv::grub::{COPY_DIRS, SEARCH_DIRS};
use mender_rs::bootenv::{BootEnv, BootEnvError, EnvVars, GrubEnv};

// ---------------------------------------------------------------- helpers

fn run_in(dir: Option<&Path>, tool: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(tool);
    cmd.args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "{tool} not found: these tests need it as the oracle \
             (apt-get install grub-common coreutils)"
        ),
        Err(e) => panic!("cannot run {tool}: {e}"),
    }
}

fn ok(out: Output, what: &str) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// `grub-editenv FILE ARGS...`; its standard output.
fn editenv(file: &Path, args: &[&str]) -> Vec<u8> {
    let mut all = vec![path_str(file)];
    all.extend_from_slice(args);
    ok(
        run_in(None, "grub-editenv", &all),
        &format!("grub-editenv {all:?}"),
    )
}

/// What `grub-editenv FILE list` prints.
fn list(file: &Path) -> String {
    String::from_utf8(editenv(file, &["list"])).expect("UTF-8 listing")
}

/// What `grub-editenv list` prints for `vars` (values as they are, in
/// file order; ours and grub-editenv's orders agree for these tests).
fn listing(vars: &[(&str, &str)]) -> String {
    vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

fn vars(pairs: &[(&str, &str)]) -> EnvVars {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sets(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A block made by grub-editenv: `create`, then `set` with `pairs`.
fn reference_block(scratch: &Path, pairs: &[(&str, &str)]) -> Vec<u8> {
    let _ = fs::remove_file(scratch);
    editenv(scratch, &["create"]);
    if !pairs.is_empty() {
        let args = sets(pairs);
        let mut all = vec!["set"];
        all.extend(strs(&args));
        editenv(scratch, &all);
    }
    fs::read(scratch).unwrap()
}

/// Writes `lock` (made by grub-editenv) with `editing=<editing>` and its
/// `lock.sha256sum` (made by sha256sum) into `copy`.
fn make_lock(copy: &Path, editing: u8) {
    let lock = copy.join("lock");
    let _ = fs::remove_file(&lock);
    editenv(&lock, &["create"]);
    editenv(&lock, &["set", &format!("editing={editing}")]);
    let sum = ok(run_in(Some(copy), "sha256sum", &["lock"]), "sha256sum lock");
    fs::write(copy.join("lock.sha256sum"), sum).unwrap();
}

/// Checks a copy as grub-mender-grubenv's tools and GRUB do: the checksum
/// holds (`sha256sum -c`), the lock says editing=0, the env lists.
fn assert_valid_copy(copy: &Path) {
    ok(
        run_in(
            Some(copy),
            "sha256sum",
            &["--quiet", "-c", "lock.sha256sum"],
        ),
        &format!("sha256sum -c in {}", copy.display()),
    );
    assert_eq!(
        list(&copy.join("lock")),
        "editing=0\n",
        "{}",
        copy.display()
    );
    list(&copy.join("env"));
}

/// Every file under `dir`, by relative path.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap().to_path_buf();
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    /// The environment directory.
    fn dir(&self) -> PathBuf {
        self.tmp.path().join("grub-mender-grubenv")
    }

    fn copy(&self, n: usize) -> PathBuf {
        self.dir().join(COPY_DIRS[n - 1])
    }

    fn env(&self) -> GrubEnv {
        GrubEnv::new(self.dir()).with_lock_file(self.tmp.path().join("set.lock"))
    }

    fn scratch(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Sets up copy `n` with grub-editenv and sha256sum only.
    fn make_copy(&self, n: usize, pairs: &[(&str, &str)]) {
        let copy = self.copy(n);
        fs::create_dir_all(&copy).unwrap();
        let env = copy.join("env");
        let _ = fs::remove_file(&env);
        editenv(&env, &["create"]);
        if !pairs.is_empty() {
            let args = sets(pairs);
            let mut all = vec!["set"];
            all.extend(strs(&args));
            editenv(&env, &all);
        }
        make_lock(&copy, 0);
    }

    /// Both copies, set up without our code.
    fn make_both(&self, pairs: &[(&str, &str)]) {
        self.make_copy(1, pairs);
        self.make_copy(2, pairs);
    }
}

fn sample() -> Vec<(&'static str, &'static str)> {
    vec![
        ("bootcount", "0"),
        ("mender_boot_part", "2"),
        ("mender_boot_part_hex", "2"),
        ("upgrade_available", "0"),
    ]
}

// ------------------------------------------------------------------ tests

#[test]
fn tools_are_installed() {
    ok(run_in(None, "grub-editenv", &["--version"]), "grub-editenv");
    ok(run_in(None, "sha256sum", &["--version"]), "sha256sum");
}

/// What we create is what grub-editenv makes, byte for byte: env, lock
/// and checksum line; grub-editenv lists it, sha256sum checks it.
#[test]
fn created_by_ours_is_byte_identical_to_grub_editenv() {
    let fx = Fixture::new();
    let env = fx.env();
    env.create(&vars(&sample())).unwrap();
    let reference_env = reference_block(&fx.scratch("ref"), &sample());
    let reference_lock = reference_block(&fx.scratch("lock"), &[("editing", "0")]);
    for n in [1, 2] {
        let copy = fx.copy(n);
        assert_valid_copy(&copy);
        assert_eq!(
            fs::read(copy.join("env")).unwrap(),
            reference_env,
            "copy {n}"
        );
        assert_eq!(
            fs::read(copy.join("lock")).unwrap(),
            reference_lock,
            "copy {n}"
        );
        assert_eq!(list(&copy.join("env")), listing(&sample()));
    }
    let sum = ok(
        run_in(Some(&fx.copy(1)), "sha256sum", &["lock"]),
        "sha256sum",
    );
    assert_eq!(fs::read(fx.copy(1).join("lock.sha256sum")).unwrap(), sum);
    assert_eq!(env.read().unwrap(), vars(&sample()));
}

/// An environment set up with grub-editenv reads with ours; our write
/// gives, in both copies, the bytes grub-editenv's set/unset give.
#[test]
fn written_by_grub_editenv_reads_and_writes_like_grub_editenv() {
    let fx = Fixture::new();
    let mut pairs = sample();
    pairs.push(("extra", "keep me"));
    fx.make_both(&pairs);
    let env = fx.env();
    assert_eq!(env.read().unwrap(), vars(&pairs));

    let reference = fx.scratch("ref");
    fs::copy(fx.copy(1).join("env"), &reference).unwrap();
    editenv(
        &reference,
        &[
            "set",
            "mender_boot_part=3",
            "mender_boot_part_hex=3",
            "upgrade_available=1",
            "new=x",
        ],
    );
    editenv(&reference, &["unset", "extra"]);
    env.write(&[
        ("mender_boot_part", Some("3")),
        ("mender_boot_part_hex", Some("3")),
        ("upgrade_available", Some("1")),
        ("bootcount", Some("0")),
        ("extra", None),
        ("new", Some("x")),
    ])
    .unwrap();
    let expected = fs::read(&reference).unwrap();
    for n in [1, 2] {
        assert_valid_copy(&fx.copy(n));
        assert_eq!(
            fs::read(fx.copy(n).join("env")).unwrap(),
            expected,
            "copy {n}"
        );
    }
    assert_eq!(
        env.read().unwrap(),
        vars(&[
            ("bootcount", "0"),
            ("mender_boot_part", "3"),
            ("mender_boot_part_hex", "3"),
            ("new", "x"),
            ("upgrade_available", "1"),
        ])
    );
}

/// Backslashes and newlines are escaped as grub-editenv does; nothing else
/// is. Both directions, byte for byte.
#[test]
fn escaping_matches_grub_editenv() {
    let odd = [
        ("backslash", "x\\y"),
        ("crlf", "a\r\nb"),
        ("ends_in_backslash", "v\\"),
        ("hash", "#not a comment"),
        ("literal_n", "a\\nb"),
        ("newline", "line1\nline2\n"),
        ("spaces", " lead and trail "),
        ("tab", "a\tb"),
        ("equals", "a=b=c"),
        ("unicode", "ünïcødé"),
    ];
    let mut sorted = odd.to_vec();
    sorted.sort();

    // Ours → grub-editenv.
    let fx = Fixture::new();
    let env = fx.env();
    env.create(&vars(&odd)).unwrap();
    let reference = reference_block(&fx.scratch("ref"), &sorted);
    assert_eq!(fs::read(fx.copy(1).join("env")).unwrap(), reference);
    assert_eq!(fs::read(fx.copy(2).join("env")).unwrap(), reference);
    assert_eq!(list(&fx.copy(1).join("env")), listing(&sorted));
    let text = String::from_utf8_lossy(&reference).into_owned();
    assert!(text.contains("backslash=x\\\\y\n"), "{text}");
    assert!(text.contains("newline=line1\\\nline2\\\n\n"), "{text}");
    assert!(text.contains("crlf=a\r\\\nb\n"), "{text}");
    assert!(text.contains("ends_in_backslash=v\\\\\n"), "{text}");
    assert!(text.contains("tab=a\tb\n"), "{text}");

    // grub-editenv → ours.
    let fx = Fixture::new();
    fx.make_both(&odd);
    assert_eq!(fx.env().read().unwrap(), vars(&odd));

    // A change next to odd values keeps them.
    fx.env().write(&[("new", Some("1"))]).unwrap();
    let mut expected = vars(&odd);
    expected.insert("new".into(), "1".into());
    assert_eq!(fx.env().read().unwrap(), expected);
    let mut listed = odd.to_vec();
    listed.push(("new", "1"));
    assert_eq!(list(&fx.copy(2).join("env")), listing(&listed));
}

#[test]
fn delete_semantics() {
    let fx = Fixture::new();
    fx.make_both(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]);
    let env = fx.env();
    env.write(&[
        ("a", None),
        ("b", Some("")),
        ("nope", None),
        ("c", Some("x")),
        ("c", None),
        ("d", None),
        ("d", Some("5")),
    ])
    .unwrap();
    assert_eq!(env.read().unwrap(), vars(&[("d", "5")]));
    assert_eq!(list(&fx.copy(1).join("env")), "d=5\n");
    assert_eq!(list(&fx.copy(2).join("env")), "d=5\n");
}

/// A batch that changes nothing writes nothing: no file is replaced.
#[test]
fn unchanged_write_writes_nothing() {
    use std::os::unix::fs::MetadataExt;
    let fx = Fixture::new();
    fx.make_both(&sample());
    let inodes = |fx: &Fixture| -> Vec<u64> {
        [1, 2]
            .iter()
            .flat_map(|&n| {
                ["env", "lock", "lock.sha256sum"]
                    .map(|f| fs::metadata(fx.copy(n).join(f)).unwrap().ino())
            })
            .collect()
    };
    let before = (snapshot(&fx.dir()), inodes(&fx));
    fx.env()
        .write(&[
            ("bootcount", Some("0")),
            ("absent", None),
            ("absent", Some("")),
        ])
        .unwrap();
    fx.env().write(&[]).unwrap();
    assert_eq!((snapshot(&fx.dir()), inodes(&fx)), before);
}

fn corrupt_checksum(copy: &Path) {
    let path = copy.join("lock.sha256sum");
    let mut sum = fs::read(&path).unwrap();
    sum[0] = if sum[0] == b'0' { b'1' } else { b'0' };
    fs::write(path, sum).unwrap();
}

/// One bad copy is repaired from the other: env copied, lock editing=0,
/// new checksum; the variables come from the good copy.
#[test]
fn one_bad_copy_is_repaired_from_the_other() {
    type Damage = fn(&Fixture);
    let cases: [(&str, usize, Damage); 8] = [
        ("copy 1 checksum corrupt", 1, |fx| {
            corrupt_checksum(&fx.copy(1))
        }),
        ("copy 2 checksum corrupt", 2, |fx| {
            corrupt_checksum(&fx.copy(2))
        }),
        ("copy 2 env missing", 2, |fx| {
            fs::remove_file(fx.copy(2).join("env")).unwrap()
        }),
        ("copy 1 lock missing", 1, |fx| {
            fs::remove_file(fx.copy(1).join("lock")).unwrap()
        }),
        ("copy 2 checksum missing", 2, |fx| {
            fs::remove_file(fx.copy(2).join("lock.sha256sum")).unwrap()
        }),
        ("copy 1 lock editing=1", 1, |fx| make_lock(&fx.copy(1), 1)),
        ("copy 2 lock editing=1", 2, |fx| make_lock(&fx.copy(2), 1)),
        ("copy 1 env unparsable", 1, |fx| {
            fs::write(fx.copy(1).join("env"), [b'#'; 1024]).unwrap()
        }),
    ];
    let good = [("mender_boot_part", "3"), ("upgrade_available", "1")];
    let stale = [("mender_boot_part", "2"), ("upgrade_available", "0")];
    for (what, bad, damage) in cases {
        for through_write in [false, true] {
            let fx = Fixture::new();
            // The bad copy holds other values, to see which one is used.
            fx.make_copy(bad, &stale);
            fx.make_copy(3 - bad, &good);
            damage(&fx);
            let good_env = fs::read(fx.copy(3 - bad).join("env")).unwrap();
            let env = fx.env();
            let expected = if through_write {
                env.write(&[("upgrade_available", Some("1"))]).unwrap();
                vars(&good)
            } else {
                env.read().unwrap()
            };
            assert_eq!(expected, vars(&good), "{what}");
            for n in [1, 2] {
                assert_valid_copy(&fx.copy(n));
                assert_eq!(
                    fs::read(fx.copy(n).join("env")).unwrap(),
                    good_env,
                    "{what}: copy {n}"
                );
            }
            assert_eq!(env.read().unwrap(), vars(&good), "{what}");
        }
    }
}

/// Two bad copies: an error naming both problems, and nothing written.
#[test]
fn both_copies_bad_is_an_error_and_writes_nothing() {
    let fx = Fixture::new();
    fx.make_both(&sample());
    corrupt_checksum(&fx.copy(1));
    make_lock(&fx.copy(2), 1);
    let before = snapshot(&fx.dir());
    let env = fx.env();
    let err = env.read().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BootEnvError::BothCopiesBad { .. }), "{msg}");
    assert!(
        msg.contains("mender_grubenv1/lock: checksum mismatch"),
        "{msg}"
    );
    assert!(msg.contains("mender_grubenv2/lock: editing=1"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    assert!(matches!(
        env.write(&[("a", Some("1"))]),
        Err(BootEnvError::BothCopiesBad { .. })
    ));
    assert_eq!(snapshot(&fx.dir()), before);

    // Nothing there at all.
    let fx = Fixture::new();
    let msg = fx.env().read().unwrap_err().to_string();
    assert!(msg.contains("mender_grubenv1 is missing"), "{msg}");
    assert!(!fx.dir().exists());
}

/// A boot partition with only one copy is an error, not something to
/// repair: nothing is written and the message says which copy is missing.
#[test]
fn a_missing_copy_directory_is_an_error() {
    for missing in [1, 2] {
        let fx = Fixture::new();
        fx.make_both(&sample());
        fs::remove_dir_all(fx.copy(missing)).unwrap();
        let before = snapshot(&fx.dir());
        let env = fx.env();
        let msg = env.read().unwrap_err().to_string();
        assert!(
            msg.contains(&format!("mender_grubenv{missing} is missing"))
                && msg.contains("only one GRUB environment copy"),
            "{msg}"
        );
        assert!(env.write(&[("upgrade_available", Some("1"))]).is_err());
        assert_eq!(snapshot(&fx.dir()), before);
    }
}

/// What GRUB's boot script makes of the files: if lock2 says editing≠0,
/// env1 is copied to env2; else if lock1 does, env2 to env1; then env1 is
/// loaded. The listing of the env it loads.
fn grub_boot_view(fx: &Fixture) -> String {
    let editing = |n: usize| list(&fx.copy(n).join("lock")) != "editing=0\n";
    let from = if editing(2) {
        1
    } else if editing(1) {
        2
    } else {
        1
    };
    list(&fx.copy(from).join("env"))
}

/// A power cut after each step of a write (done here step by step with
/// grub-editenv and sha256sum, as our write does it): ours and GRUB read
/// the old or the new variables, the same ones, and ours repairs what is
/// left behind.
#[test]
fn power_cut_after_each_step_of_a_write() {
    let old = sample();
    let mut new = sample();
    new[1].1 = "3";
    new[2].1 = "3";
    new[3].1 = "1";
    for stop in 0..=10 {
        let fx = Fixture::new();
        fx.make_both(&old);
        let new_env = {
            let path = fx.scratch("new");
            fs::copy(fx.copy(1).join("env"), &path).unwrap();
            editenv(
                &path,
                &[
                    "set",
                    "mender_boot_part=3",
                    "mender_boot_part_hex=3",
                    "upgrade_available=1",
                ],
            );
            fs::read(path).unwrap()
        };
        // Copy 2, then copy 1: lock editing=1, checksum, env, lock
        // editing=0, checksum.
        let mut step = 0;
        'copies: for n in [2, 1] {
            let copy = fx.copy(n);
            for part in 0..5 {
                if step == stop {
                    break 'copies;
                }
                step += 1;
                match part {
                    0 | 3 => {
                        let lock = copy.join("lock");
                        let sum = fs::read(copy.join("lock.sha256sum")).unwrap();
                        make_lock(&copy, if part == 0 { 1 } else { 0 });
                        // make_lock writes the checksum too: undo that.
                        fs::write(copy.join("lock.sha256sum"), sum).unwrap();
                        assert!(lock.exists());
                    }
                    1 | 4 => {
                        let sum = ok(run_in(Some(&copy), "sha256sum", &["lock"]), "sha256sum");
                        fs::write(copy.join("lock.sha256sum"), sum).unwrap();
                    }
                    _ => fs::write(copy.join("env"), &new_env).unwrap(),
                }
            }
        }
        // Up to copy 2 complete (and copy 1 not yet begun), copy 1 still
        // holds the old values.
        let expected = if stop <= 5 { &old } else { &new };
        assert_eq!(grub_boot_view(&fx), listing(expected), "GRUB, stop {stop}");
        let env = fx.env();
        assert_eq!(env.read().unwrap(), vars(expected), "ours, stop {stop}");
        for n in [1, 2] {
            assert_valid_copy(&fx.copy(n));
        }
        assert_eq!(
            grub_boot_view(&fx),
            listing(expected),
            "GRUB after, stop {stop}"
        );
        // And the next write puts both copies in step.
        env.write(&[("bootcount", Some("1"))]).unwrap();
        let env1 = fs::read(fx.copy(1).join("env")).unwrap();
        assert_eq!(fs::read(fx.copy(2).join("env")).unwrap(), env1);
        assert_eq!(env.read().unwrap()["bootcount"], "1");
    }
}

/// Our own write, cut after each of its file replacements (each one is
/// atomic: a power cut comes between two of them): ours and GRUB read the
/// same variables, the old or the new ones, and ours repairs the rest.
#[test]
fn power_cut_after_each_step_of_our_write() {
    let old = sample();
    let changes = [
        ("mender_boot_part", Some("3")),
        ("mender_boot_part_hex", Some("3")),
        ("upgrade_available", Some("1")),
    ];
    let mut new = sample();
    new[1].1 = "3";
    new[2].1 = "3";
    new[3].1 = "1";
    let fx = Fixture::new();
    fx.make_both(&old);
    let before = snapshot(&fx.dir());
    let steps = fx.env().planned_write(&changes).unwrap();
    assert_eq!(snapshot(&fx.dir()), before, "planning writes nothing");

    // The sequence: copy 2, then copy 1, each lock editing=1, checksum,
    // env, lock editing=0, checksum; locks and checksums as grub-editenv
    // and sha256sum make them.
    let lock0 = reference_block(&fx.scratch("l0"), &[("editing", "0")]);
    let lock1 = reference_block(&fx.scratch("l1"), &[("editing", "1")]);
    let new_env = {
        let path = fx.scratch("new");
        fs::copy(fx.copy(1).join("env"), &path).unwrap();
        editenv(
            &path,
            &[
                "set",
                "mender_boot_part=3",
                "mender_boot_part_hex=3",
                "upgrade_available=1",
            ],
        );
        fs::read(path).unwrap()
    };
    let sum_of = |lock: &[u8]| {
        let scratch = fx.scratch("sum");
        fs::create_dir_all(&scratch).unwrap();
        fs::write(scratch.join("lock"), lock).unwrap();
        ok(run_in(Some(&scratch), "sha256sum", &["lock"]), "sha256sum")
    };
    let mut expected_steps = Vec::new();
    for n in [2, 1] {
        let copy = fx.copy(n);
        expected_steps.extend([
            (copy.join("lock"), lock1.clone()),
            (copy.join("lock.sha256sum"), sum_of(&lock1)),
            (copy.join("env"), new_env.clone()),
            (copy.join("lock"), lock0.clone()),
            (copy.join("lock.sha256sum"), sum_of(&lock0)),
        ]);
    }
    assert!(steps == expected_steps, "unexpected write sequence");

    for stop in 0..=steps.len() {
        let fx = Fixture::new();
        fx.make_both(&old);
        let steps = fx.env().planned_write(&changes).unwrap();
        for (path, bytes) in &steps[..stop] {
            fs::write(path, bytes).unwrap();
        }
        let expected = if stop <= 5 { &old } else { &new };
        assert_eq!(grub_boot_view(&fx), listing(expected), "GRUB, stop {stop}");
        assert_eq!(
            fx.env().read().unwrap(),
            vars(expected),
            "ours, stop {stop}"
        );
        assert_valid_copy(&fx.copy(1));
        assert_valid_copy(&fx.copy(2));
    }

    // With copy 1 bad, the write repairs it first (from copy 2), then
    // writes as usual; every cut leaves the old or the new variables.
    let stale = [("mender_boot_part", "9")];
    let plan = |fx: &Fixture| {
        fx.make_copy(1, &stale);
        fx.make_copy(2, &old);
        make_lock(&fx.copy(1), 1);
        fx.env().planned_write(&changes).unwrap()
    };
    let steps = plan(&Fixture::new());
    assert_eq!(steps.len(), 15);
    for (i, (path, _)) in steps.iter().enumerate() {
        let copy = if !(5..10).contains(&i) {
            COPY_DIRS[0]
        } else {
            COPY_DIRS[1]
        };
        assert!(
            path.parent().unwrap().ends_with(copy),
            "step {i}: {}",
            path.display()
        );
    }
    for stop in 0..=steps.len() {
        let fx = Fixture::new();
        let steps = plan(&fx);
        for (path, bytes) in &steps[..stop] {
            fs::write(path, bytes).unwrap();
        }
        let expected = if stop <= 10 { &old } else { &new };
        assert_eq!(
            grub_boot_view(&fx),
            listing(expected),
            "GRUB, repair, stop {stop}"
        );
        assert_eq!(
            fx.env().read().unwrap(),
            vars(expected),
            "ours, repair, stop {stop}"
        );
    }
}

/// Values that do not fit into the 1024 bytes: an error, and every file
/// stays byte for byte as it was.
#[test]
fn too_long_is_an_error_and_writes_nothing() {
    let fx = Fixture::new();
    fx.make_both(&sample());
    let before = snapshot(&fx.dir());
    let env = fx.env();
    let long = "v".repeat(1000);
    let err = env
        .write(&[("upgrade_available", Some("1")), ("long", Some(&long))])
        .unwrap_err();
    assert!(
        matches!(err, BootEnvError::Full { capacity: 1024, .. }),
        "{err}"
    );
    assert_eq!(snapshot(&fx.dir()), before);
    // grub-editenv agrees that it does not fit.
    let scratch = fx.scratch("ref");
    fs::copy(fx.copy(1).join("env"), &scratch).unwrap();
    let out = run_in(
        None,
        "grub-editenv",
        &[path_str(&scratch), "set", &format!("long={long}")],
    );
    assert!(!out.status.success());

    // Exactly full fits, as in grub-editenv.
    let used = list(&fx.copy(1).join("env")).len();
    let header = 25 + 69;
    let room = 1024 - header - used - "long=\n".len();
    let fits = "w".repeat(room);
    env.write(&[("long", Some(&fits))]).unwrap();
    assert_eq!(fs::read(fx.copy(1).join("env")).unwrap().len(), 1024);
    assert_eq!(list(&fx.copy(1).join("env")).len(), used + 6 + room);
    // One more byte (an escaped backslash takes two) does not.
    let before = snapshot(&fx.dir());
    let over = format!("{}\\", "w".repeat(room - 1));
    assert!(matches!(
        env.write(&[("long", Some(&over))]),
        Err(BootEnvError::Full { .. })
    ));
    assert_eq!(snapshot(&fx.dir()), before);

    // create too.
    let fx = Fixture::new();
    let err = fx.env().create(&vars(&[("long", &long)])).unwrap_err();
    assert!(matches!(err, BootEnvError::Full { .. }), "{err}");
    assert!(snapshot(&fx.dir()).is_empty());
}

/// A block larger than 1024 bytes (made by hand or an older tool) keeps
/// its size.
#[test]
fn block_size_is_kept() {
    let fx = Fixture::new();
    fx.make_both(&sample());
    for n in [1, 2] {
        let path = fx.copy(n).join("env");
        let mut bytes = fs::read(&path).unwrap();
        bytes.resize(4096, b'#');
        fs::write(&path, bytes).unwrap();
    }
    let long = "v".repeat(2000);
    fx.env().write(&[("long", Some(&long))]).unwrap();
    for n in [1, 2] {
        let path = fx.copy(n).join("env");
        assert_eq!(fs::metadata(&path).unwrap().len(), 4096);
        assert!(list(&path).contains(&format!("long={long}\n")));
    }
}

#[test]
fn invalid_names_write_nothing() {
    let fx = Fixture::new();
    fx.make_both(&sample());
    let before = snapshot(&fx.dir());
    let env = fx.env();
    for bad in ["#x", "", "a=b", "a b", "a\nb"] {
        let err = env
            .write(&[("ok", Some("1")), (bad, Some("1"))])
            .unwrap_err();
        assert!(
            matches!(err, BootEnvError::InvalidName { .. }),
            "{bad:?}: {err}"
        );
    }
    assert!(matches!(
        env.write(&[("a", Some("x\0y"))]),
        Err(BootEnvError::InvalidValue { .. })
    ));
    assert!(matches!(
        env.create(&vars(&[("#x", "1")])),
        Err(BootEnvError::InvalidName { .. })
    ));
    assert_eq!(snapshot(&fx.dir()), before);
}

/// create makes the directories, and replaces whatever is there.
#[test]
fn create_makes_directories_and_replaces_everything() {
    let fx = Fixture::new();
    let env = fx.env();
    assert!(!fx.dir().exists());
    env.create(&vars(&[("a", "1"), ("empty", "")])).unwrap();
    assert_valid_copy(&fx.copy(1));
    assert_valid_copy(&fx.copy(2));
    assert_eq!(env.read().unwrap(), vars(&[("a", "1")]));
    corrupt_checksum(&fx.copy(1));
    make_lock(&fx.copy(2), 1);
    env.create(&vars(&sample())).unwrap();
    assert_eq!(env.read().unwrap(), vars(&sample()));
    assert_eq!(list(&fx.copy(2).join("env")), listing(&sample()));
    // No temporary files left behind.
    let names: Vec<PathBuf> = snapshot(&fx.dir()).into_keys().collect();
    assert_eq!(names.len(), 6, "{names:?}");
}

/// GRUB's own `save_env` rewrites a lock in place with editing=1 then
/// editing=0; the result must still match the checksum we wrote. (The
/// in-place edit is done here with grub-editenv, which edits the same way.)
#[test]
fn lock_survives_grub_rewriting_it() {
    let fx = Fixture::new();
    fx.env().create(&vars(&sample())).unwrap();
    let lock = fx.copy(1).join("lock");
    editenv(&lock, &["set", "editing=1"]);
    editenv(&lock, &["set", "editing=0"]);
    assert_valid_copy(&fx.copy(1));
}

#[test]
fn locate_order() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let at = |d: &str| root.join(d.trim_start_matches('/'));
    let err = GrubEnv::locate_under(root, None).unwrap_err().to_string();
    for d in SEARCH_DIRS {
        assert!(err.contains(&at(d).display().to_string()), "{err}");
    }
    assert!(err.contains("GrubEnvDir"), "{err}");

    // Existing directories without mender_grubenv1 do not count.
    for d in SEARCH_DIRS {
        fs::create_dir_all(at(d)).unwrap();
    }
    assert!(GrubEnv::locate_under(root, None).is_err());
    // The later candidates, then the earlier ones take over.
    for d in SEARCH_DIRS.iter().rev() {
        fs::create_dir_all(at(d).join("mender_grubenv1")).unwrap();
        assert_eq!(GrubEnv::locate_under(root, None).unwrap(), at(d));
    }
    // ENV_DIR beats the search, even where nothing is.
    let etc = at("/etc");
    fs::create_dir_all(&etc).unwrap();
    fs::write(etc.join("mender_grubenv.config"), "# x\nOTHER=1\n").unwrap();
    assert_eq!(
        GrubEnv::locate_under(root, None).unwrap(),
        at(SEARCH_DIRS[0])
    );
    fs::write(etc.join("mender_grubenv.config"), "ENV_DIR=/data/env\n").unwrap();
    assert_eq!(GrubEnv::locate_under(root, None).unwrap(), at("/data/env"));
    // GrubEnvDir beats everything.
    assert_eq!(
        GrubEnv::locate_under(root, Some(Path::new("/cfg/dir"))).unwrap(),
        Path::new("/cfg/dir")
    );
    assert_eq!(
        GrubEnv::locate(Some(Path::new("/cfg/dir"))).unwrap(),
        Path::new("/cfg/dir")
    );
}

/// `bootenv::open` with `BootEnvType = grub` finds the configured
/// directory.
#[test]
fn open_by_configuration() {
    let fx = Fixture::new();
    fx.make_both(&sample());
    let text = format!(
        "{{\"BootEnvType\": \"grub\", \"GrubEnvDir\": \"{}\"}}",
        fx.dir().display()
    );
    let config = mender_rs::config::Config::from_str("test", &text, false, fx.tmp.path()).unwrap();
    let env = mender_rs::bootenv::open(&config).unwrap();
    assert!(
        env.describe().contains("mender_grubenv1"),
        "{}",
        env.describe()
    );
    // The lock file goes to /var/lock, or into the directory.
    assert_eq!(env.read().unwrap(), vars(&sample()));
}

/// Another process holding the lock file is waited for.
#[test]
fn waits_for_a_lock_held_elsewhere() {
    use std::time::{Duration, Instant};
    let fx = Fixture::new();
    fx.make_both(&sample());
    let lock_path = fx.tmp.path().join("set.lock");
    let holder = fs::File::create(&lock_path).unwrap();
    holder.lock().unwrap();
    let started = Instant::now();
    let env = fx.env();
    let writer = std::thread::spawn(move || {
        env.write(&[("bootcount", Some("1"))]).unwrap();
        (Instant::now(), env.read().unwrap())
    });
    std::thread::sleep(Duration::from_millis(300));
    let released = Instant::now();
    drop(holder);
    let (done, read) = writer.join().unwrap();
    assert!(done >= released, "wrote while the lock was held");
    assert!(done - started < Duration::from_secs(5));
    assert_eq!(read["bootcount"], "1");
}
