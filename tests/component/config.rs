//! Integration tests of `mender_rs::config`: real files, precedence, syntax
//! selection, the `mender.toml` sibling, warnings and error messages.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::Duration;

use mender_rs::config::{BootEnvType, Config, ConfigError, ConfigPaths};

// --- a logger capturing warnings ------------------------------------------

struct Capture;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static LOGGER: Capture = Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        LINES
            .lock()
            .unwrap()
            .push(format!("{}: {}", record.level(), record.args()));
    }

    fn flush(&self) {}
}

fn init_logger() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&LOGGER).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// Logged lines mentioning `needle` (tests run in parallel; each uses its
/// own temporary directory in the needle).
fn logged(needle: &str) -> Vec<String> {
    LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains(needle))
        .cloned()
        .collect()
}

// --- helpers --------------------------------------------------------------

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        init_logger();
        Setup {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    /// Default-style paths inside the temporary directory: main
    /// `etc/mender.conf`, fallback `data/mender.conf`, data dir `data`.
    fn paths(&self) -> ConfigPaths {
        ConfigPaths {
            main: self.path("etc/mender.conf"),
            main_explicit: false,
            fallback: self.path("data/mender.conf"),
            fallback_explicit: false,
            data_dir: self.path("data"),
        }
    }

    fn main(&self, text: &str) -> PathBuf {
        self.write("etc/mender.conf", text)
    }

    fn sibling(&self, text: &str) -> PathBuf {
        self.write("etc/mender.toml", text)
    }

    fn fallback(&self, text: &str) -> PathBuf {
        self.write("data/mender.conf", text)
    }

    fn load(&self) -> Result<Config, ConfigError> {
        Config::load(&self.paths())
    }

    fn load_error(&self) -> String {
        self.load().unwrap_err().to_string()
    }

    fn name(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// --- precedence -----------------------------------------------------------

#[test]
fn main_wins_over_fallback_key_by_key() {
    let s = Setup::new();
    s.fallback(
        r#"{"RootfsPartA": "/dev/mmcblk0p2", "RootfsPartB": "/dev/mmcblk0p3",
            "ModuleTimeoutSeconds": 60, "ServerURL": "https://fallback.example",
            "HttpsClient": {"Certificate": "/etc/cert.pem"}}"#,
    );
    s.main(
        r#"{"RootfsPartA": "/dev/sda2", "ServerURL": "https://main.example",
            "HttpsClient": {"Key": "/etc/key.pem"}}"#,
    );
    let c = s.load().unwrap();
    assert_eq!(c.rootfs_part_a.as_deref(), Some(Path::new("/dev/sda2")));
    assert_eq!(
        c.rootfs_part_b.as_deref(),
        Some(Path::new("/dev/mmcblk0p3"))
    );
    assert_eq!(c.module_timeout, secs(60));
    assert_eq!(c.servers, ["https://main.example"]);
    let https = c.https_client.unwrap();
    assert_eq!(https.certificate, Path::new("/etc/cert.pem"));
    assert_eq!(https.key, Path::new("/etc/key.pem"));
}

#[test]
fn only_fallback_or_only_main() {
    let s = Setup::new();
    s.fallback(r#"{"RootfsPartA": "/dev/a"}"#);
    assert_eq!(
        s.load().unwrap().rootfs_part_a.as_deref(),
        Some(Path::new("/dev/a"))
    );
    let s = Setup::new();
    s.main(r#"{"RootfsPartB": "/dev/b"}"#);
    assert_eq!(
        s.load().unwrap().rootfs_part_b.as_deref(),
        Some(Path::new("/dev/b"))
    );
}

#[test]
fn no_files_means_defaults_relative_to_data_dir() {
    let s = Setup::new();
    let c = s.load().unwrap();
    assert_eq!(c.data_dir, s.path("data"));
    assert_eq!(c.device_type_file, s.path("data/device_type"));
    assert_eq!(c.artifact_scripts_path, s.path("data/scripts"));
    assert_eq!(c.modules_work_path, s.path("data/modules/v3"));
    assert_eq!(c.rootfs_scripts_path, Path::new("/etc/mender/scripts"));
    assert_eq!(c.modules_path, Path::new("/usr/share/mender/modules/v3"));
    assert_eq!(c.state_script_timeout, secs(3600));
    assert_eq!(c.state_script_retry_interval, secs(60));
    assert_eq!(c.state_script_retry_timeout, secs(1800));
    assert_eq!(c.module_timeout, secs(14400));
    assert_eq!(c.update_poll_interval, secs(1800));
    assert_eq!(c.inventory_poll_interval, secs(28800));
    assert_eq!(c.retry_poll_interval, secs(300));
    assert_eq!(c.retry_poll_count, 0);
    assert_eq!(c.update_control_map_expiration, None);
    assert_eq!(c.update_control_map_boot_expiration, secs(600));
    assert_eq!(c.boot_env_type, BootEnvType::UBoot);
    assert_eq!(c.boot_env_config, Path::new("/etc/fw_env.config"));
    assert!(c.servers.is_empty());
    assert!(c.dbus_enabled);
    assert!(c.artifact_verify_keys.is_empty());
}

#[test]
fn default_paths() {
    let p = ConfigPaths::default();
    assert_eq!(p.main, Path::new("/etc/mender/mender.conf"));
    assert_eq!(p.fallback, Path::new("/var/lib/mender/mender.conf"));
    assert_eq!(p.data_dir, Path::new("/var/lib/mender"));
    assert!(!p.main_explicit && !p.fallback_explicit);
}

#[test]
fn explicit_missing_files_are_errors() {
    let s = Setup::new();
    let paths = ConfigPaths {
        main_explicit: true,
        ..s.paths()
    };
    let message = Config::load(&paths).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}: ", s.name("etc/mender.conf"))),
        "{message}"
    );
    assert!(message.contains("No such file"), "{message}");

    let paths = ConfigPaths {
        fallback_explicit: true,
        ..s.paths()
    };
    let message = Config::load(&paths).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}: ", s.name("data/mender.conf"))),
        "{message}"
    );
}

#[test]
fn unreadable_file_is_an_error_even_if_not_explicit() {
    let s = Setup::new();
    fs::create_dir_all(s.path("etc/mender.conf")).unwrap();
    let message = s.load_error();
    assert!(
        message.starts_with(&format!("{}: ", s.name("etc/mender.conf"))),
        "{message}"
    );
}

#[test]
fn invalid_utf8_names_the_file() {
    let s = Setup::new();
    fs::create_dir_all(s.path("etc")).unwrap();
    fs::write(s.path("etc/mender.conf"), b"{\"TenantToken\": \"\xff\"}").unwrap();
    assert_eq!(
        s.load_error(),
        format!(
            "{}: not valid UTF-8 (at byte 17)",
            s.name("etc/mender.conf")
        )
    );
}

// --- JSON and TOML --------------------------------------------------------

#[test]
fn toml_file_selected_by_name() {
    let s = Setup::new();
    let main = s.write(
        "custom.toml",
        "ServerURL = \"hosted.mender.io\"\nModuleTimeoutSeconds = 99\n\n[DBus]\nEnabled = false\n",
    );
    let paths = ConfigPaths {
        main,
        main_explicit: true,
        ..s.paths()
    };
    let c = Config::load(&paths).unwrap();
    assert_eq!(c.servers, ["https://hosted.mender.io"]);
    assert_eq!(c.module_timeout, secs(99));
    assert!(!c.dbus_enabled);

    // The same text in a file not ending in .toml is JSON, hence an error.
    let main = s.write("custom.conf", "ServerURL = \"hosted.mender.io\"\n");
    let paths = ConfigPaths {
        main,
        main_explicit: true,
        ..s.paths()
    };
    let message = Config::load(&paths).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}: invalid JSON: ", s.name("custom.conf"))),
        "{message}"
    );
}

#[test]
fn toml_fallback() {
    let s = Setup::new();
    let fallback = s.write("data/mender.toml", "RootfsPartA = \"/dev/a\"\n");
    s.main(r#"{"RootfsPartB": "/dev/b"}"#);
    let paths = ConfigPaths {
        fallback,
        ..s.paths()
    };
    let c = Config::load(&paths).unwrap();
    assert_eq!(c.rootfs_part_a.as_deref(), Some(Path::new("/dev/a")));
    assert_eq!(c.rootfs_part_b.as_deref(), Some(Path::new("/dev/b")));
}

#[test]
fn json_mender_conf_wins_over_sibling_toml_key_by_key() {
    let s = Setup::new();
    s.fallback(
        r#"{"RootfsPartA": "/dev/fallback-a", "RootfsPartB": "/dev/fallback-b",
            "ModulesPath": "/fallback/modules"}"#,
    );
    s.sibling(
        "RootfsPartA = \"/dev/toml-a\"\nRootfsPartB = \"/dev/toml-b\"\n\
         UpdatePollIntervalSeconds = 60\n",
    );
    s.main(r#"{"RootfsPartA": "/dev/json-a"}"#);
    let c = s.load().unwrap();
    assert_eq!(c.rootfs_part_a.as_deref(), Some(Path::new("/dev/json-a")));
    assert_eq!(c.rootfs_part_b.as_deref(), Some(Path::new("/dev/toml-b")));
    assert_eq!(c.update_poll_interval, secs(60));
    assert_eq!(c.modules_path, Path::new("/fallback/modules"));
}

#[test]
fn sibling_toml_alone() {
    let s = Setup::new();
    s.sibling("[[Servers]]\nServerURL = \"a.example\"\n[[Servers]]\nServerURL = \"b.example/\"\n");
    assert_eq!(
        s.load().unwrap().servers,
        ["https://a.example", "https://b.example"]
    );
}

#[test]
fn sibling_not_read_for_explicit_main() {
    let s = Setup::new();
    s.sibling("RootfsPartB = \"/dev/toml-b\"\n");
    s.main(r#"{"RootfsPartA": "/dev/json-a"}"#);
    let paths = ConfigPaths {
        main_explicit: true,
        ..s.paths()
    };
    let c = Config::load(&paths).unwrap();
    assert_eq!(c.rootfs_part_a.as_deref(), Some(Path::new("/dev/json-a")));
    assert_eq!(c.rootfs_part_b, None);
}

#[test]
fn sibling_errors_name_the_toml_file() {
    let s = Setup::new();
    s.sibling("ModuleTimeoutSeconds = \"long\"\n");
    s.main("{}");
    assert_eq!(
        s.load_error(),
        format!(
            "{}: ModuleTimeoutSeconds: expected an integer, found a string",
            s.name("etc/mender.toml")
        )
    );
    s.sibling("ModuleTimeoutSeconds = \n");
    let message = s.load_error();
    assert!(
        message.starts_with(&format!(
            "{}: invalid TOML at line 1 column ",
            s.name("etc/mender.toml")
        )),
        "{message}"
    );
    assert!(!message.contains('\n'));
}

// --- keys -----------------------------------------------------------------

#[test]
fn case_insensitive_keys() {
    let s = Setup::new();
    s.fallback(r#"{"rootfsparta": "/dev/a"}"#);
    s.main(
        r#"{"ROOTFSPARTA": "/dev/main-a", "serverURL": "x.example",
            "security": {"authprivatekey": "/k.pem"}}"#,
    );
    let c = s.load().unwrap();
    assert_eq!(c.rootfs_part_a.as_deref(), Some(Path::new("/dev/main-a")));
    assert_eq!(c.servers, ["https://x.example"]);
    assert_eq!(c.auth_private_key.as_deref(), Some(Path::new("/k.pem")));
}

#[test]
fn unknown_key_warns_but_loads() {
    let s = Setup::new();
    let main = s.main(r#"{"RootfsPartA": "/dev/a", "FancyNewKey": true, "DBus": {"Whatever": 1}}"#);
    let c = s.load().unwrap();
    assert_eq!(c.rootfs_part_a.as_deref(), Some(Path::new("/dev/a")));
    let main = main.display().to_string();
    assert_eq!(
        logged(&main),
        [
            format!("WARN: {main}: FancyNewKey: unknown configuration key, ignored"),
            format!("WARN: {main}: DBus.Whatever: unknown configuration key, ignored"),
        ]
    );
}

#[test]
fn accepted_unused_keys_do_not_warn() {
    let s = Setup::new();
    let main = s.main(
        r#"{"Connectivity": {"DisableKeepAlive": true, "IdleConnTimeoutSeconds": 5},
            "UpdateLogPath": "/var/log", "DeviceTier": "system",
            "RetryDownloadCount": 3, "UpdateControlMapPollIntervalSeconds": 30}"#,
    );
    s.load().unwrap();
    assert!(logged(&main.display().to_string()).is_empty());
}

#[test]
fn server_url_and_servers_normalisation() {
    let s = Setup::new();
    s.main(r#"{"ServerURL": "docker.mender.io/"}"#);
    assert_eq!(s.load().unwrap().servers, ["https://docker.mender.io"]);
    s.main(r#"{"ServerURL": "http://10.1.2.3:8080"}"#);
    assert_eq!(s.load().unwrap().servers, ["http://10.1.2.3:8080"]);
    s.main(
        r#"{"Servers": [{"ServerURL": "https://one.example/"},
                        {"ServerURL": "two.example:8443/"}]}"#,
    );
    assert_eq!(
        s.load().unwrap().servers,
        ["https://one.example", "https://two.example:8443"]
    );
}

#[test]
fn every_kind_of_error_names_file_and_key() {
    let s = Setup::new();
    let main = s.name("etc/mender.conf");
    let cases = [
        (
            r#"{"StateScriptTimeoutSeconds": "3600"}"#,
            "StateScriptTimeoutSeconds: expected an integer, found a string",
        ),
        (
            r#"{"StateScriptRetryTimeoutSeconds": -1}"#,
            "StateScriptRetryTimeoutSeconds: must not be negative, found -1",
        ),
        (
            r#"{"ModuleTimeoutSeconds": 2.5}"#,
            "ModuleTimeoutSeconds: expected an integer, found a float",
        ),
        (r#"{"DeviceTypeFile": ""}"#, "DeviceTypeFile: empty path"),
        (
            r#"{"ArtifactScriptsPath": ""}"#,
            "ArtifactScriptsPath: empty path",
        ),
        (
            r#"{"ServerURL": "https://a", "Servers": [{"ServerURL": "https://b"}]}"#,
            "ServerURL: cannot be used together with Servers",
        ),
        (
            r#"{"ArtifactVerifyKey": "/a.pem", "ArtifactVerifyKeys": ["/b.pem"]}"#,
            "ArtifactVerifyKey: cannot be used together with ArtifactVerifyKeys",
        ),
        (
            r#"{"BootEnvType": "barebox"}"#,
            r#"BootEnvType: unknown boot environment "barebox"; expected "uboot", "grub" or "tools""#,
        ),
        (
            r#"{"SkipVerify": 1}"#,
            "SkipVerify: expected a boolean, found an integer",
        ),
        (
            r#"{"Servers": [{"ServerURL": ""}]}"#,
            "Servers[0].ServerURL: missing or empty",
        ),
    ];
    for (text, want) in cases {
        s.main(text);
        assert_eq!(s.load_error(), format!("{main}: {want}"), "for {text}");
    }
    s.main("{\"RootfsPartA\": \"/dev/a\"");
    assert_eq!(
        s.load_error(),
        format!("{main}: invalid JSON: EOF while parsing an object at line 1 column 24")
    );
}

#[test]
fn conflict_across_files_names_both_files() {
    let s = Setup::new();
    s.fallback(r#"{"ArtifactVerifyKeys": ["/b.pem"]}"#);
    s.main(r#"{"ArtifactVerifyKey": "/a.pem"}"#);
    assert_eq!(
        s.load_error(),
        format!(
            "{}: ArtifactVerifyKey: cannot be used together with ArtifactVerifyKeys (set in {})",
            s.name("etc/mender.conf"),
            s.name("data/mender.conf")
        )
    );
}

#[test]
fn from_str_names_its_source() {
    let e = Config::from_str(
        "<stdin>",
        "{\"RetryPollCount\": -1}",
        false,
        Path::new("/d"),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "<stdin>: RetryPollCount: must not be negative, found -1"
    );
}

// --- the mender.conf that distributions install ---------------------------

/// The Yocto / Debian style file (what `mender setup` writes for the demo
/// server).
const YOCTO_CONF: &str = r#"{
    "InventoryPollIntervalSeconds": 28800,
    "RetryPollIntervalSeconds": 300,
    "RootfsPartA": "/dev/mmcblk0p2",
    "RootfsPartB": "/dev/mmcblk0p3",
    "ServerURL": "https://docker.mender.io",
    "TenantToken": "",
    "UpdatePollIntervalSeconds": 1800
}
"#;

#[test]
fn yocto_style_mender_conf() {
    let s = Setup::new();
    let main = s.main(YOCTO_CONF);
    let c = s.load().unwrap();
    assert_eq!(c.inventory_poll_interval, secs(28800));
    assert_eq!(c.retry_poll_interval, secs(300));
    assert_eq!(c.update_poll_interval, secs(1800));
    assert_eq!(
        c.rootfs_part_a.as_deref(),
        Some(Path::new("/dev/mmcblk0p2"))
    );
    assert_eq!(
        c.rootfs_part_b.as_deref(),
        Some(Path::new("/dev/mmcblk0p3"))
    );
    assert_eq!(c.servers, ["https://docker.mender.io"]);
    assert_eq!(c.tenant_token, "");
    assert!(logged(&main.display().to_string()).is_empty());
}

/// The file the distribution's mender-client package installed, when this
/// machine has one (copied, so the test does not depend on it staying).
#[test]
fn installed_mender_conf_if_present() {
    let installed = Path::new("/etc/mender/mender.conf");
    let Ok(text) = fs::read_to_string(installed) else {
        eprintln!(
            "{} not present; covered by yocto_style_mender_conf",
            installed.display()
        );
        return;
    };
    let s = Setup::new();
    s.main(&text);
    s.load().unwrap();
}

// --- device type ----------------------------------------------------------

fn device_type_of(s: &Setup, text: &str) -> Result<String, ConfigError> {
    s.write("data/device_type", text);
    s.load().unwrap().device_type()
}

#[test]
fn device_type_parsing() {
    let s = Setup::new();
    assert_eq!(
        device_type_of(&s, "device_type=raspberrypi4\n").unwrap(),
        "raspberrypi4"
    );
    assert_eq!(
        device_type_of(&s, "device_type=qemux86-64").unwrap(),
        "qemux86-64"
    );
    assert_eq!(
        device_type_of(&s, "  device_type = beaglebone yocto \r\n").unwrap(),
        "beaglebone yocto"
    );
    assert_eq!(
        device_type_of(
            &s,
            "# comment\nother=1\n\ndevice_type=imx8\ndevice_type=later\n"
        )
        .unwrap(),
        "imx8"
    );
    let file = s.name("data/device_type");
    assert_eq!(
        device_type_of(&s, "other=1\ndevice_typo=x\n")
            .unwrap_err()
            .to_string(),
        format!("{file}: no device_type=<value> line")
    );
    assert_eq!(
        device_type_of(&s, "").unwrap_err().to_string(),
        format!("{file}: no device_type=<value> line")
    );
    assert_eq!(
        device_type_of(&s, "device_type=  \n")
            .unwrap_err()
            .to_string(),
        format!("{file}: device_type: empty value")
    );
}

#[test]
fn device_type_file_from_config_and_missing() {
    let s = Setup::new();
    let custom = s.write("etc/device_type", "device_type=custom-board\n");
    s.main(&format!(r#"{{"DeviceTypeFile": "{}"}}"#, custom.display()));
    assert_eq!(s.load().unwrap().device_type().unwrap(), "custom-board");

    let missing = s.path("nowhere/device_type");
    s.main(&format!(r#"{{"DeviceTypeFile": "{}"}}"#, missing.display()));
    let message = s.load().unwrap().device_type().unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}: ", missing.display())),
        "{message}"
    );
}

#[test]
fn only_regular_files_of_bounded_size_are_read() {
    // A link to /dev/zero, a FIFO (no writer: must not block) or a huge
    // sparse file, as the main, the sibling TOML or the fallback file.
    for (name, sibling) in [
        ("etc/mender.conf", false),
        ("etc/mender.toml", true),
        ("data/mender.conf", false),
    ] {
        for kind in ["zero", "fifo", "huge"] {
            let s = Setup::new();
            let path = s.path(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            if sibling {
                s.main("{}");
            }
            let want = match kind {
                "zero" => {
                    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
                    "is a character device, not a regular file".to_string()
                }
                "fifo" => {
                    let st = std::process::Command::new("mkfifo")
                        .arg(&path)
                        .status()
                        .unwrap();
                    assert!(st.success());
                    "is a FIFO, not a regular file".to_string()
                }
                _ => {
                    fs::File::create(&path)
                        .unwrap()
                        .set_len((1 << 20) + 1)
                        .unwrap();
                    "1048577 bytes, more than the 1048576 allowed for a configuration file"
                        .to_string()
                }
            };
            assert_eq!(
                s.load_error(),
                format!("{}: {want}", path.display()),
                "{name} {kind}"
            );
        }
    }
    // Exactly at the cap is read (and here is not JSON).
    let s = Setup::new();
    let main = s.main("");
    fs::File::create(&main).unwrap().set_len(1 << 20).unwrap();
    assert!(
        s.load_error().contains("invalid JSON"),
        "{}",
        s.load_error()
    );
}

#[test]
fn device_type_file_of_the_wrong_kind_is_refused() {
    let s = Setup::new();
    let dir = s.path("etc/device_type.d");
    fs::create_dir_all(&dir).unwrap();
    s.main(&format!(r#"{{"DeviceTypeFile": "{}"}}"#, dir.display()));
    assert_eq!(
        s.load().unwrap().device_type().unwrap_err().to_string(),
        format!("{}: is a directory, not a regular file", dir.display())
    );
}
