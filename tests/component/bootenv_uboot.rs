//! The U-Boot environment backend against libubootenv's `fw_printenv` and
//! `fw_setenv` (package libubootenv-tool), which are the oracle: these tests
//! fail, not skip, when the tools are missing.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mender_rs::bootenv::{BootEnv, BootEnvError, EnvVars, UBootEnv, check_canary};

const SIZE: usize = 0x4000;

// ---------------------------------------------------------------- helpers

fn run(tool: &str, args: &[&str]) -> Output {
    match Command::new(tool).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "{tool} not found: these tests need libubootenv's tools as the oracle \
             (apt-get install libubootenv-tool)"
        ),
        Err(e) => panic!("cannot run {tool}: {e}"),
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// `fw_printenv -c CONFIG`: the lines it prints; panics unless it succeeds
/// without complaint.
fn fw_printenv(config: &Path) -> Vec<String> {
    let out = run("fw_printenv", &["-c", path_str(config)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "fw_printenv failed ({}): {stderr}",
        out.status
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(str::to_string)
        .collect()
}

/// `fw_setenv -c CONFIG [-f DEFAULTS] -s SCRIPT` with `name=value` lines
/// (`name=` deletes; a bare `name` is ignored by libubootenv 0.3.2).
fn fw_setenv(config: &Path, defaults: Option<&[&str]>, lines: &[&str]) {
    let dir = config.parent().unwrap();
    let script = dir.join("script.txt");
    fs::write(&script, lines.join("\n") + "\n").unwrap();
    let mut args = vec!["-c", path_str(config)];
    let defaults_file = dir.join("defaults.txt");
    if let Some(defaults) = defaults {
        fs::write(&defaults_file, defaults.join("\n") + "\n").unwrap();
        args.extend(["-f", path_str(&defaults_file)]);
    }
    args.extend(["-s", path_str(&script)]);
    let out = run("fw_setenv", &args);
    assert!(
        out.status.success(),
        "fw_setenv failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What fw_printenv prints for `vars`.
fn lines_of(vars: &EnvVars) -> Vec<String> {
    vars.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn vars(pairs: &[(&str, &str)]) -> EnvVars {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Deterministic noise.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A file of `len` bytes of `fill`.
    fn file(&self, name: &str, len: usize, fill: u8) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, vec![fill; len]).unwrap();
        p
    }

    /// An fw_env.config with one line per `(file, offset, size)`.
    fn config(&self, lines: &[(&Path, u64, usize)]) -> PathBuf {
        let text: String = lines
            .iter()
            .map(|(f, off, size)| format!("{} {off:#x} {size:#x}\n", f.display()))
            .collect();
        let p = self.path("fw_env.config");
        fs::write(&p, text).unwrap();
        p
    }

    /// A single-copy environment in a fresh zero file.
    fn single(&self) -> (PathBuf, PathBuf, UBootEnv) {
        let file = self.file("env.img", SIZE, 0);
        let config = self.config(&[(&file, 0, SIZE)]);
        let env = UBootEnv::from_config_file(&config).unwrap();
        (file, config, env)
    }

    /// A redundant environment in two fresh zero files.
    fn redundant(&self) -> ([PathBuf; 2], PathBuf, UBootEnv) {
        let a = self.file("env1.img", SIZE, 0);
        let b = self.file("env2.img", SIZE, 0);
        let config = self.config(&[(&a, 0, SIZE), (&b, 0, SIZE)]);
        let env = UBootEnv::from_config_file(&config).unwrap();
        ([a, b], config, env)
    }
}

fn flag(file: &Path) -> u8 {
    fs::read(file).unwrap()[4]
}

fn set_flag(file: &Path, flag: u8) {
    let mut bytes = fs::read(file).unwrap();
    bytes[4] = flag;
    fs::write(file, bytes).unwrap();
}

/// Flips one byte at `at` (inside the data, so the CRC no longer matches).
fn corrupt(file: &Path, at: usize) {
    let mut bytes = fs::read(file).unwrap();
    bytes[at] ^= 0x5a;
    fs::write(file, bytes).unwrap();
}

fn sample() -> EnvVars {
    vars(&[
        ("bootcmd", "run mender_setup; boot"),
        ("bootlimit", "1"),
        ("bootcount", "0"),
        ("upgrade_available", "0"),
        ("mender_boot_part", "2"),
        ("mender_boot_part_hex", "2"),
        ("spaced", "hello  world "),
        ("equals", "a=b=c"),
    ])
}

fn sample_script() -> Vec<String> {
    lines_of(&sample())
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// ---------------------------------------------------------- single copy

#[test]
fn tools_are_installed() {
    let out = run("fw_printenv", &["-V"]);
    assert!(out.status.success());
    let out = run("fw_setenv", &["-V"]);
    assert!(out.status.success());
}

#[test]
fn single_written_by_fw_setenv_reads_with_ours() {
    let fx = Fixture::new();
    let (_, config, env) = fx.single();
    let script = sample_script();
    fw_setenv(&config, Some(&["seed=1"]), &strs(&script));
    let mut expected = sample();
    expected.insert("seed".into(), "1".into());
    assert_eq!(env.read().unwrap(), expected);
}

#[test]
fn single_written_by_ours_reads_with_fw_printenv_and_back() {
    let fx = Fixture::new();
    let (_, config, env) = fx.single();
    env.create(&vars(&[("seed", "1")])).unwrap();
    let s = sample();
    let changes: Vec<(&str, Option<&str>)> = s
        .iter()
        .map(|(k, v)| (k.as_str(), Some(v.as_str())))
        .collect();
    env.write(&changes).unwrap();
    let mut expected = sample();
    expected.insert("seed".into(), "1".into());
    assert_eq!(fw_printenv(&config), lines_of(&expected));
    assert_eq!(env.read().unwrap(), expected);

    // fw_setenv modifies what we wrote; we read its result.
    fw_setenv(&config, None, &["upgrade_available=1", "seed=", "new=x y"]);
    expected.insert("upgrade_available".into(), "1".into());
    expected.remove("seed");
    expected.insert("new".into(), "x y".into());
    assert_eq!(env.read().unwrap(), expected);
    assert_eq!(fw_printenv(&config), lines_of(&expected));
}

#[test]
fn create_replaces_everything() {
    let fx = Fixture::new();
    let (_, config, env) = fx.single();
    fw_setenv(&config, Some(&["old=1"]), &["other=2"]);
    env.create(&vars(&[("fresh", "yes")])).unwrap();
    assert_eq!(env.read().unwrap(), vars(&[("fresh", "yes")]));
    assert_eq!(fw_printenv(&config), ["fresh=yes"]);
}

#[test]
fn delete_semantics() {
    let fx = Fixture::new();
    let (_, config, env) = fx.single();
    fw_setenv(&config, Some(&["a=1", "b=2", "c=3"]), &["d=4"]);
    env.write(&[
        ("a", None),       // delete
        ("nope", None),    // deleting what is not there is no error
        ("b", Some("20")), // set
        ("e", Some("5")),  // set, then
        ("e", None),       // deleted again: the last change wins
        ("f", Some("x")),  // set, then
        ("f", Some("")),   // deleted by an empty value, as fw_setenv does
        ("c", Some("")),   // the same for an existing variable
    ])
    .unwrap();
    let expected = vars(&[("b", "20"), ("d", "4")]);
    assert_eq!(env.read().unwrap(), expected);
    assert_eq!(fw_printenv(&config), lines_of(&expected));
    // Deleting everything leaves a valid, empty environment.
    env.write(&[("b", None), ("d", None)]).unwrap();
    assert_eq!(env.read().unwrap(), EnvVars::new());
    assert_eq!(fw_printenv(&config), Vec::<String>::new());
}

#[test]
fn env_full_leaves_the_file_untouched() {
    let fx = Fixture::new();
    let size = 0x100;
    let file = fx.file("env.img", size, 0);
    let config = fx.config(&[(&file, 0, size)]);
    let env = UBootEnv::from_config_file(&config).unwrap();
    env.create(&vars(&[("a", "1")])).unwrap();
    let before = fs::read(&file).unwrap();
    // 4 bytes of CRC leave 252: "a=1\0" (4) + "big=<v>\0" (5 + n) + 1.
    let too_big = "x".repeat(243);
    let err = env.write(&[("big", Some(&too_big))]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BootEnvError::Full { .. }), "{msg}");
    assert!(msg.contains("needs 253 bytes of 252"), "{msg}");
    assert!(msg.contains(path_str(&file)), "{msg}");
    assert_eq!(fs::read(&file).unwrap(), before);
    // One byte less fits exactly, and fw_printenv agrees.
    let fits = "x".repeat(242);
    env.write(&[("big", Some(&fits))]).unwrap();
    assert_eq!(
        fw_printenv(&config),
        ["a=1".to_string(), format!("big={fits}")]
    );
}

#[test]
fn area_inside_a_larger_file_leaves_the_rest_untouched() {
    let fx = Fixture::new();
    let total = 1 << 20;
    let offset = 0x21000;
    let file = fx.path("disk.img");
    fs::write(&file, noise(total, 7)).unwrap();
    let config = fx.config(&[(&file, offset as u64, SIZE)]);
    let env = UBootEnv::from_config_file(&config).unwrap();

    let outside = |bytes: &[u8]| {
        let mut v = bytes[..offset].to_vec();
        v.extend_from_slice(&bytes[offset + SIZE..]);
        v
    };
    let original = fs::read(&file).unwrap();
    // Noise is neither blank nor valid.
    assert!(matches!(env.read(), Err(BootEnvError::BadCrc { .. })));
    fw_setenv(&config, Some(&["a=1"]), &["b=2"]);
    env.write(&[("c", Some("3")), ("a", None)]).unwrap();
    assert_eq!(fw_printenv(&config), ["b=2", "c=3"]);
    env.create(&vars(&[("d", "4")])).unwrap();
    assert_eq!(fw_printenv(&config), ["d=4"]);
    let after = fs::read(&file).unwrap();
    assert_eq!(after.len(), total);
    assert!(
        outside(&after) == outside(&original),
        "bytes outside the area changed"
    );

    // An area that ends exactly at the end of the file.
    let config = fx.config(&[(&file, (total - SIZE) as u64, SIZE)]);
    let env = UBootEnv::from_config_file(&config).unwrap();
    let before = fs::read(&file).unwrap();
    env.create(&vars(&[("end", "1")])).unwrap();
    assert_eq!(fw_printenv(&config), ["end=1"]);
    let after = fs::read(&file).unwrap();
    assert_eq!(after.len(), total);
    assert!(after[..total - SIZE] == before[..total - SIZE]);
}

#[test]
fn area_beyond_the_end_of_the_file_is_an_error() {
    let fx = Fixture::new();
    let file = fx.file("env.img", SIZE - 1, 0);
    let config = fx.config(&[(&file, 0, SIZE)]);
    let env = UBootEnv::from_config_file(&config).unwrap();
    let err = env.read().unwrap_err();
    assert!(matches!(err, BootEnvError::Short { .. }), "{err}");
    assert!(err.to_string().contains(path_str(&file)), "{err}");
    assert!(env.write(&[("a", Some("1"))]).is_err());
    assert!(env.create(&vars(&[("a", "1")])).is_err());
    assert_eq!(fs::metadata(&file).unwrap().len(), SIZE as u64 - 1);
}

#[test]
fn missing_device_is_an_error_naming_it() {
    let fx = Fixture::new();
    let file = fx.path("absent.img");
    let config = fx.config(&[(&file, 0, SIZE)]);
    let env = UBootEnv::from_config_file(&config).unwrap();
    let err = env.read().unwrap_err();
    assert!(err.to_string().contains(path_str(&file)), "{err}");
    assert!(env.write(&[("a", Some("1"))]).is_err());
    assert!(!file.exists(), "a missing device must not be created");
}

#[test]
fn corrupt_crc_is_an_error_naming_the_file() {
    let fx = Fixture::new();
    let (file, config, env) = fx.single();
    fw_setenv(&config, Some(&["a=1"]), &["b=2"]);
    corrupt(&file, 6);
    let before = fs::read(&file).unwrap();
    let err = env.read().unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, BootEnvError::BadCrc { offset: 0, .. }),
        "{msg}"
    );
    assert!(msg.contains(path_str(&file)), "{msg}");
    assert!(msg.contains("bad CRC"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    // A write does not paper over it.
    assert!(matches!(
        env.write(&[("c", Some("3"))]),
        Err(BootEnvError::BadCrc { .. })
    ));
    assert_eq!(fs::read(&file).unwrap(), before);
    // A corrupt CRC field is the same.
    let (file2, _, env2) = {
        let f = fx.file("env2.img", SIZE, 0);
        let c = fx.path("fw_env2.config");
        fs::write(&c, format!("{} 0 0x4000\n", f.display())).unwrap();
        let e = UBootEnv::from_config_file(&c).unwrap();
        (f, c, e)
    };
    env2.create(&vars(&[("a", "1")])).unwrap();
    corrupt(&file2, 0);
    assert!(matches!(env2.read(), Err(BootEnvError::BadCrc { .. })));
}

#[test]
fn never_written_areas_read_as_empty_and_are_not_written() {
    for fill in [0x00u8, 0xff] {
        let fx = Fixture::new();
        let file = fx.file("env.img", SIZE, fill);
        let config = fx.config(&[(&file, 0, SIZE)]);
        let env = UBootEnv::from_config_file(&config).unwrap();
        assert_eq!(env.read().unwrap(), EnvVars::new(), "fill {fill:#x}");
        // Writing only our variables would take the bootloader's built-in
        // default environment away: refused, nothing written.
        let err = env.write(&[("upgrade_available", Some("1"))]).unwrap_err();
        assert!(
            matches!(err, BootEnvError::NeverWritten { .. }),
            "fill {fill:#x}: {err}"
        );
        assert!(err.to_string().contains(path_str(&file)), "{err}");
        assert_eq!(fs::read(&file).unwrap(), vec![fill; SIZE]);
        // create() makes one, which fw_printenv reads.
        env.create(&vars(&[("a", "1")])).unwrap();
        assert_eq!(fw_printenv(&config), ["a=1"]);
        env.write(&[("b", Some("2"))]).unwrap();
        assert_eq!(fw_printenv(&config), ["a=1", "b=2"]);
    }
}

#[test]
fn invalid_names_and_values_write_nothing() {
    let fx = Fixture::new();
    let (file, _, env) = fx.single();
    env.create(&vars(&[("a", "1")])).unwrap();
    let before = fs::read(&file).unwrap();
    let bad: &[&[(&str, Option<&str>)]] = &[
        &[("ok", Some("1")), ("", Some("x"))],
        &[("ok", Some("1")), ("a=b", Some("x"))],
        &[("ok", Some("1")), ("a\0b", Some("x"))],
        &[("ok", Some("1")), ("a b", Some("x"))],
        &[("ok", Some("1")), ("a\tb", None)],
        &[("ok", Some("1")), ("a\nb", Some("x"))],
        &[("ok", Some("1")), ("v", Some("x\0y"))],
    ];
    for changes in bad {
        let err = env.write(changes).unwrap_err();
        assert!(
            matches!(
                err,
                BootEnvError::InvalidName { .. } | BootEnvError::InvalidValue { .. }
            ),
            "{changes:?}: {err}"
        );
        assert_eq!(fs::read(&file).unwrap(), before, "{changes:?}");
    }
    assert!(env.create(&vars(&[("x y", "1")])).is_err());
    assert_eq!(fs::read(&file).unwrap(), before);
}

#[test]
fn unchanged_write_writes_nothing() {
    let fx = Fixture::new();
    let ([a, b], _, env) = fx.redundant();
    env.create(&vars(&[("a", "1")])).unwrap();
    let before = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
    env.write(&[("a", Some("1")), ("gone", None)]).unwrap();
    env.write(&[]).unwrap();
    assert_eq!((fs::read(&a).unwrap(), fs::read(&b).unwrap()), before);
}

#[test]
fn values_with_odd_bytes_round_trip() {
    let fx = Fixture::new();
    let (_, config, env) = fx.single();
    fw_setenv(&config, Some(&["seed=1"]), &[]);
    let odd = "tab\there; semicolon; 'quotes' \"double\" $var ${var} \\ ünïcödé";
    env.write(&[("odd", Some(odd)), ("name.with-punct:1", Some("=="))])
        .unwrap();
    let mut expected = vars(&[("seed", "1"), ("odd", odd), ("name.with-punct:1", "==")]);
    assert_eq!(env.read().unwrap(), expected);
    assert_eq!(fw_printenv(&config), lines_of(&expected));
    fw_setenv(&config, None, &["seed=2"]);
    expected.insert("seed".into(), "2".into());
    assert_eq!(env.read().unwrap(), expected);
}

#[test]
fn config_syntax_as_libubootenv_reads_it() {
    let fx = Fixture::new();
    // Offset 8 (octal 010) inside a larger file; size in hex without 0x.
    let file = fx.file("disk.img", 0x3000, 0);
    let config = fx.path("fw_env.config");
    fs::write(
        &config,
        format!(
            "# fw_env.config\n\n   # indented comment\n{}\t010   1000  # trailing comment\n",
            file.display()
        ),
    )
    .unwrap();
    let env = UBootEnv::from_config_file(&config).unwrap();
    assert_eq!(env.areas()[0].offset, 8);
    assert_eq!(env.areas()[0].size, 0x1000);
    assert_eq!(
        env.describe(),
        format!("{}: {} 0x8", config.display(), file.display())
    );
    fw_setenv(&config, Some(&["a=1"]), &["b=2"]);
    assert_eq!(env.read().unwrap(), vars(&[("a", "1"), ("b", "2")]));
    let bytes = fs::read(&file).unwrap();
    assert!(bytes[..8].iter().all(|&b| b == 0));
    assert!(bytes[8 + 0x1000..].iter().all(|&b| b == 0));
    env.write(&[("c", Some("3"))]).unwrap();
    assert_eq!(fw_printenv(&config), ["a=1", "b=2", "c=3"]);
}

#[test]
fn config_errors_name_the_file_and_line() {
    let fx = Fixture::new();
    let config = fx.path("fw_env.config");
    fs::write(
        &config,
        "# ok\n/dev/mmcblk0 0x400000 0x4000\n/dev/mmcblk0 zz 0x4000\n",
    )
    .unwrap();
    let err = UBootEnv::from_config_file(&config).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, BootEnvError::ConfigLine { line: 3, .. }),
        "{msg}"
    );
    assert!(
        msg.starts_with(&format!("{} line 3: ", config.display())),
        "{msg}"
    );
    fs::write(&config, "# nothing\n").unwrap();
    let err = UBootEnv::from_config_file(&config).unwrap_err();
    assert!(err.to_string().contains(path_str(&config)), "{err}");
    let missing = fx.path("nope.config");
    let err = UBootEnv::from_config_file(&missing).unwrap_err();
    assert!(err.to_string().contains(path_str(&missing)), "{err}");
}

#[test]
fn canary_rule_on_a_real_environment() {
    let fx = Fixture::new();
    let (_, config, env) = fx.single();
    fw_setenv(
        &config,
        Some(&["mender_check_saveenv_canary=1"]),
        &["bootcount=0"],
    );
    let err = check_canary(&env.read().unwrap()).unwrap_err();
    assert!(err.to_string().contains("check fw_env.config"), "{err}");
    fw_setenv(&config, None, &["mender_saveenv_canary=1"]);
    check_canary(&env.read().unwrap()).unwrap();
}

// ------------------------------------------------------------ redundant

#[test]
fn redundant_written_by_fw_setenv_reads_with_ours() {
    let fx = Fixture::new();
    let (_, config, env) = fx.redundant();
    let script = sample_script();
    fw_setenv(&config, Some(&["seed=1"]), &strs(&script));
    let mut expected = sample();
    expected.insert("seed".into(), "1".into());
    assert_eq!(env.read().unwrap(), expected);
    for i in 0..3 {
        let line = format!("count={i}");
        fw_setenv(&config, None, &[&line]);
        expected.insert("count".into(), i.to_string());
        assert_eq!(env.read().unwrap(), expected);
    }
}

#[test]
fn redundant_write_goes_to_the_inactive_copy_and_bumps_the_flag() {
    let fx = Fixture::new();
    let ([a, b], config, env) = fx.redundant();
    // fw_setenv on two blank copies writes copy 2 with flag 1.
    fw_setenv(&config, Some(&["seed=1"]), &[]);
    assert_eq!(fs::read(&a).unwrap(), vec![0; SIZE]);
    assert_eq!(flag(&b), 1);

    let mut expected = vars(&[("seed", "1")]);
    let mut files = [a.clone(), b.clone()];
    let mut active_flag = 1u8;
    for i in 0..5 {
        let value = i.to_string();
        let active_before = fs::read(&files[1]).unwrap();
        env.write(&[("n", Some(&value))]).unwrap();
        expected.insert("n".into(), value);
        // The copy that was current is untouched; the other one is new.
        assert_eq!(fs::read(&files[1]).unwrap(), active_before, "write {i}");
        active_flag = active_flag.wrapping_add(1);
        assert_eq!(flag(&files[0]), active_flag, "write {i}");
        assert_eq!(env.read().unwrap(), expected);
        assert_eq!(fw_printenv(&config), lines_of(&expected));
        files.swap(0, 1);
    }

    // fw_setenv continues from our flag, and we from its.
    fw_setenv(&config, None, &["from=tool"]);
    expected.insert("from".into(), "tool".into());
    active_flag = active_flag.wrapping_add(1);
    assert_eq!(flag(&files[0]), active_flag);
    assert_eq!(env.read().unwrap(), expected);
    env.write(&[("from", Some("us"))]).unwrap();
    expected.insert("from".into(), "us".into());
    assert_eq!(flag(&files[1]), active_flag.wrapping_add(1));
    assert_eq!(fw_printenv(&config), lines_of(&expected));
}

#[test]
fn redundant_flag_wraps_from_255_to_0() {
    let fx = Fixture::new();
    let ([a, b], config, env) = fx.redundant();
    env.create(&vars(&[("v", "old")])).unwrap();
    // The flag is outside the CRC: make copy 2 current with 255.
    assert_eq!(flag(&b), 1);
    set_flag(&b, 255);
    assert_eq!(fw_printenv(&config), ["v=old"]);
    env.write(&[("v", Some("new"))]).unwrap();
    assert_eq!(flag(&a), 0);
    assert_eq!(flag(&b), 255);
    assert_eq!(env.read().unwrap(), vars(&[("v", "new")]));
    assert_eq!(fw_printenv(&config), ["v=new"]);
    // fw_setenv agrees that 0 is current and continues with 1 on copy 2.
    fw_setenv(&config, None, &["v=tool"]);
    assert_eq!(flag(&b), 1);
    assert_eq!(env.read().unwrap(), vars(&[("v", "tool")]));
}

/// The selection rule, checked against fw_printenv for flag pairs.
#[test]
fn redundant_selection_agrees_with_fw_printenv() {
    let fx = Fixture::new();
    let ([a, b], config, env) = fx.redundant();
    // Two valid copies with different contents.
    env.create(&vars(&[("w", "one")])).unwrap(); // copy 2, flag 1
    env.write(&[("w", Some("two"))]).unwrap(); // copy 1, flag 2
    // Copy 1 holds "two", copy 2 holds "one"; make that explicit.
    let copy1 = vars(&[("w", "two")]);
    let copy2 = vars(&[("w", "one")]);
    let pairs = [
        (1, 2),
        (2, 1),
        (5, 5),
        (255, 0),
        (0, 255),
        (10, 200),
        (200, 10),
        (254, 255),
        (0, 1),
        (1, 0),
        (255, 1),
        (1, 255),
        (0, 128),
        (128, 0),
        (0, 127),
        (127, 0),
        (0, 0),
        (255, 255),
    ];
    for (f1, f2) in pairs {
        set_flag(&a, f1);
        set_flag(&b, f2);
        let ours = env.read().unwrap();
        let tool = fw_printenv(&config);
        assert_eq!(lines_of(&ours), tool, "flags {f1} {f2}");
        assert!(ours == copy1 || ours == copy2, "flags {f1} {f2}: {ours:?}");
    }
}

#[test]
fn redundant_falls_back_to_the_good_copy() {
    for bad in 0..2 {
        let fx = Fixture::new();
        let (files, config, env) = fx.redundant();
        fw_setenv(&config, Some(&["v=first"]), &[]); // copy 2, flag 1
        fw_setenv(&config, None, &["v=second"]); // copy 1, flag 2
        let contents = [vars(&[("v", "second")]), vars(&[("v", "first")])];
        let good = 1 - bad;
        corrupt(&files[bad], 10);
        assert_eq!(env.read().unwrap(), contents[good], "copy {} bad", bad + 1);
        assert_eq!(fw_printenv(&config), lines_of(&contents[good]));
        // The next write goes over the bad copy and wins.
        let good_before = fs::read(&files[good]).unwrap();
        env.write(&[("w", Some("x"))]).unwrap();
        assert_eq!(fs::read(&files[good]).unwrap(), good_before);
        let mut expected = contents[good].clone();
        expected.insert("w".into(), "x".into());
        assert_eq!(env.read().unwrap(), expected);
        assert_eq!(fw_printenv(&config), lines_of(&expected));
        assert_eq!(flag(&files[bad]), flag(&files[good]).wrapping_add(1));
    }
}

#[test]
fn redundant_one_blank_copy_is_ignored() {
    let fx = Fixture::new();
    let ([a, _], config, env) = fx.redundant();
    fw_setenv(&config, Some(&["v=1"]), &[]); // copy 2 only
    assert_eq!(fs::read(&a).unwrap(), vec![0; SIZE]);
    assert_eq!(env.read().unwrap(), vars(&[("v", "1")]));
    env.write(&[("v", Some("2"))]).unwrap();
    assert_eq!(flag(&a), 2);
    assert_eq!(fw_printenv(&config), ["v=2"]);
}

#[test]
fn redundant_both_bad_is_an_error() {
    let fx = Fixture::new();
    let (files, config, env) = fx.redundant();
    fw_setenv(&config, Some(&["v=1"]), &[]);
    fw_setenv(&config, None, &["v=2"]);
    corrupt(&files[0], 10);
    corrupt(&files[1], 0);
    let before = (fs::read(&files[0]).unwrap(), fs::read(&files[1]).unwrap());
    let err = env.read().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BootEnvError::BothCopiesBad { .. }), "{msg}");
    assert!(msg.contains("both environment copies are bad"), "{msg}");
    assert!(msg.contains(path_str(&files[0])), "{msg}");
    assert!(msg.contains(path_str(&files[1])), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    assert!(matches!(
        env.write(&[("v", Some("3"))]),
        Err(BootEnvError::BothCopiesBad { .. })
    ));
    assert_eq!(
        (fs::read(&files[0]).unwrap(), fs::read(&files[1]).unwrap()),
        before
    );
    // One blank and one corrupt copy is not "never written".
    fs::write(&files[0], vec![0u8; SIZE]).unwrap();
    assert!(matches!(
        env.read(),
        Err(BootEnvError::BothCopiesBad { .. })
    ));
}

#[test]
fn redundant_never_written_reads_empty_and_create_starts_like_fw_setenv() {
    let fx = Fixture::new();
    let ([a, b], config, env) = fx.redundant();
    assert_eq!(env.read().unwrap(), EnvVars::new());
    assert!(matches!(
        env.write(&[("v", Some("1"))]),
        Err(BootEnvError::NeverWritten { .. })
    ));
    assert_eq!(fs::read(&a).unwrap(), vec![0; SIZE]);
    assert_eq!(fs::read(&b).unwrap(), vec![0; SIZE]);
    env.create(&vars(&[("v", "1")])).unwrap();
    assert_eq!(fs::read(&a).unwrap(), vec![0; SIZE]);
    assert_eq!(flag(&b), 1);
    assert_eq!(fw_printenv(&config), ["v=1"]);
}

/// A write cut short by a power cut leaves the copy being written (the
/// inactive one) partly old and partly new; the current copy still wins,
/// for us and for fw_printenv.
#[test]
fn redundant_power_cut_during_a_write_keeps_the_previous_environment() {
    let fx = Fixture::new();
    let (files, config, env) = fx.redundant();
    fw_setenv(&config, Some(&["v=one"]), &["pad=xxxxxxxx"]); // copy 2, flag 1
    fw_setenv(&config, None, &["v=two"]); // copy 1, flag 2: current
    let previous = vars(&[("pad", "xxxxxxxx"), ("v", "two")]);
    let target = &files[1]; // the inactive copy, which our write goes to
    let old = fs::read(target).unwrap();
    let current_copy = fs::read(&files[0]).unwrap();

    // Find out what the complete write produces, then undo it.
    let big = "y".repeat(3000);
    env.write(&[("v", Some("three")), ("big", Some(&big))])
        .unwrap();
    let new = fs::read(target).unwrap();
    assert_eq!(fs::read(&files[0]).unwrap(), current_copy);
    assert_ne!(new, old);
    let mut complete = previous.clone();
    complete.insert("v".into(), "three".into());
    complete.insert("big".into(), big.clone());
    assert_eq!(env.read().unwrap(), complete);

    let check = |torn: Vec<u8>, what: &str| {
        let is_new = torn == new;
        fs::write(target, torn).unwrap();
        let expected = if is_new { &complete } else { &previous };
        assert_eq!(&env.read().unwrap(), expected, "{what}");
        assert_eq!(fw_printenv(&config), lines_of(expected), "{what}");
    };
    // The first k bytes written, the rest still old, and the reverse.
    for k in [1, 4, 5, 6, 64, 512, 2048, 3000, SIZE / 2, SIZE - 1] {
        let mut torn = new[..k].to_vec();
        torn.extend_from_slice(&old[k..]);
        check(torn, &format!("first {k} bytes written"));
        let mut torn = old[..k].to_vec();
        torn.extend_from_slice(&new[k..]);
        check(torn, &format!("all but the first {k} bytes written"));
    }
    // Garbage in the middle of the copy.
    let mut torn = new.clone();
    torn[1000..1512].copy_from_slice(&noise(512, 3));
    check(torn, "garbled");
    // The copy's file cut short (only ours: a truncated file is not
    // something a power cut does to a block device).
    fs::write(target, &new[..SIZE / 2]).unwrap();
    assert_eq!(env.read().unwrap(), previous, "truncated");
    // The next write repairs it.
    fs::write(target, &old).unwrap();
    env.write(&[("v", Some("four"))]).unwrap();
    let mut expected = previous.clone();
    expected.insert("v".into(), "four".into());
    assert_eq!(fw_printenv(&config), lines_of(&expected));
}

/// The usual layout: both copies in one device at two offsets.
#[test]
fn redundant_copies_in_one_file() {
    let fx = Fixture::new();
    let total = 0x100000;
    let file = fx.path("disk.img");
    fs::write(&file, noise(total, 11)).unwrap();
    let (o1, o2) = (0x40000usize, 0x60000usize);
    let config = fx.config(&[(&file, o1 as u64, SIZE), (&file, o2 as u64, SIZE)]);
    let env = UBootEnv::from_config_file(&config).unwrap();
    assert_eq!(
        env.describe(),
        format!(
            "{}: {f} 0x40000, {f} 0x60000",
            config.display(),
            f = file.display()
        )
    );
    let original = fs::read(&file).unwrap();
    assert!(matches!(
        env.read(),
        Err(BootEnvError::BothCopiesBad { .. })
    ));
    fw_setenv(&config, Some(&["a=1"]), &["b=2"]);
    assert_eq!(env.read().unwrap(), vars(&[("a", "1"), ("b", "2")]));
    env.write(&[("c", Some("3"))]).unwrap();
    env.write(&[("a", None)]).unwrap();
    assert_eq!(fw_printenv(&config), ["b=2", "c=3"]);
    fw_setenv(&config, None, &["d=4"]);
    assert_eq!(
        env.read().unwrap(),
        vars(&[("b", "2"), ("c", "3"), ("d", "4")])
    );
    let after = fs::read(&file).unwrap();
    let outside = |v: &[u8]| {
        let mut out = v[..o1].to_vec();
        out.extend_from_slice(&v[o1 + SIZE..o2]);
        out.extend_from_slice(&v[o2 + SIZE..]);
        out
    };
    assert_eq!(after.len(), total);
    assert!(
        outside(&after) == outside(&original),
        "bytes outside changed"
    );
}

#[test]
fn bootloader_contract_batch() {
    // What the engine does at ArtifactInstall, in one write.
    let fx = Fixture::new();
    let ([a, b], config, env) = fx.redundant();
    fw_setenv(
        &config,
        Some(&[
            "bootcount=0",
            "upgrade_available=0",
            "mender_boot_part=2",
            "mender_boot_part_hex=2",
            "mender_check_saveenv_canary=1",
            "mender_saveenv_canary=1",
        ]),
        &[],
    );
    let before = [flag(&a), flag(&b)];
    env.write(&[
        ("mender_boot_part", Some("3")),
        ("mender_boot_part_hex", Some("3")),
        ("upgrade_available", Some("1")),
        ("bootcount", Some("0")),
    ])
    .unwrap();
    let after = [flag(&a), flag(&b)];
    assert_ne!(before, after, "one copy written");
    assert!(
        before[0] == after[0] || before[1] == after[1],
        "only one copy written"
    );
    let env_now = env.read().unwrap();
    check_canary(&env_now).unwrap();
    let expected: BTreeMap<String, String> = vars(&[
        ("bootcount", "0"),
        ("mender_boot_part", "3"),
        ("mender_boot_part_hex", "3"),
        ("mender_check_saveenv_canary", "1"),
        ("mender_saveenv_canary", "1"),
        ("upgrade_available", "1"),
    ]);
    assert_eq!(env_now, expected);
    assert_eq!(fw_printenv(&config), lines_of(&expected));
}

/// Two configured paths to one file (a symlink) are opened and locked once.
#[test]
fn redundant_copies_through_a_symlink() {
    let fx = Fixture::new();
    let file = fx.file("disk.img", 0x10000, 0);
    let link = fx.path("link.img");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let config = fx.config(&[(&file, 0, SIZE), (&link, 0x8000, SIZE)]);
    let env = UBootEnv::from_config_file(&config).unwrap();
    fw_setenv(&config, Some(&["a=1"]), &[]);
    env.write(&[("b", Some("2"))]).unwrap();
    assert_eq!(fw_printenv(&config), ["a=1", "b=2"]);
}

/// Another process holding the environment's file lock is waited for.
#[test]
fn waits_for_a_lock_held_elsewhere() {
    use std::time::{Duration, Instant};
    let fx = Fixture::new();
    let (file, config, env) = fx.single();
    env.create(&vars(&[("a", "1")])).unwrap();
    let holder = fs::File::open(&file).unwrap();
    holder.lock().unwrap();
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        let env = UBootEnv::from_config_file(&config).unwrap();
        env.write(&[("b", Some("2"))]).unwrap();
        (Instant::now(), env.read().unwrap())
    });
    std::thread::sleep(Duration::from_millis(300));
    let released = Instant::now();
    drop(holder);
    let (done, read) = writer.join().unwrap();
    assert!(done >= released, "wrote while the lock was held");
    assert!(done - started < Duration::from_secs(5));
    assert_eq!(read, vars(&[("a", "1"), ("b", "2")]));
}

#[test]
fn from_config_str_names_the_config_in_messages() {
    let fx = Fixture::new();
    let file = fx.file("env.img", SIZE, 0);
    let env = UBootEnv::from_config_str(
        "/etc/fw_env.config",
        &format!("{} 0x0 0x4000\n", file.display()),
    )
    .unwrap();
    assert_eq!(
        env.describe(),
        format!("/etc/fw_env.config: {} 0x0", file.display())
    );
    let err = env.write(&[("a", Some("1"))]).unwrap_err();
    assert!(err.to_string().starts_with("/etc/fw_env.config: "), "{err}");
}
