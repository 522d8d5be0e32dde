//! U-Boot environment areas, as described by an `fw_env.config` and read and
//! written by libubootenv's `fw_printenv`/`fw_setenv`.
//!
//! # Format
//! An area of `size` bytes at `offset` in a regular file or block device.
//! A single copy is a little-endian CRC-32 (IEEE, as zlib computes it) of the
//! data, then the data. With two configuration lines the environment is
//! redundant: each copy is the CRC, one flag byte, then the data; the CRC
//! does not cover the flag. The data is `name=value\0` entries ending with
//! an empty entry (a second `\0`), padded with `0x00` to the end of the area.
//!
//! # Redundant copies
//! The flag is a counter (libubootenv's "incremental" flags, which it uses
//! for files and block devices; flash (MTD, UBI) is not handled here). Of
//! two copies with a good CRC the one with the larger flag is current,
//! except that 0 is newer than 255 (wrap-around); on equal flags the first
//! copy wins. A copy with a bad CRC is ignored. A write goes, in full, to the
//! other copy with the current flag plus one and is fsynced, so a write cut
//! short leaves the current copy untouched and still winning.
//!
//! # `fw_env.config`
//! `<device> <offset> <env size> [<sector size> [<number of sectors>]]`,
//! `#` comments and blank lines; as in libubootenv, the offset is a C integer
//! (`0x` hex, leading `0` octal, else decimal) while the sizes are always
//! hexadecimal, with or without `0x`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{BootEnv, BootEnvError, EnvVars, validate_changes, validate_name};

/// Bytes of the CRC at the start of each copy.
const CRC_LEN: usize = 4;
/// Largest environment size accepted from a configuration. This is the cap
/// of every read of an environment copy (exactly its configured size, at
/// its offset, whatever the size of the file or device): U-Boot's own
/// default is 8 KiB to 128 KiB, and each copy is held in memory whole.
pub const MAX_ENV_SIZE: usize = 64 << 20;
/// Largest `fw_env.config` read: two lines of a few dozen bytes each, or
/// the comments of a well-documented one.
pub const MAX_CONFIG_BYTES: u64 = 64 << 10;
/// Largest `/sys/class/block/<name>/force_ro` read: "0" or "1" and a newline.
const MAX_FORCE_RO_BYTES: u64 = 64;
/// Variables with their bytes as stored: what we do not change is written
/// back byte for byte, even if it is not UTF-8.
type RawVars = BTreeMap<Vec<u8>, Vec<u8>>;

/// One line of `fw_env.config`: where one copy of the environment lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvArea {
    pub device: PathBuf,
    pub offset: u64,
    pub size: usize,
    /// Erase-block size (only meaningful for flash, which is not handled).
    pub sector_size: Option<u64>,
    /// Number of erase blocks (only meaningful for flash).
    pub sectors: Option<u64>,
}

/// A U-Boot environment with one or two (redundant) copies.
#[derive(Debug, Clone)]
pub struct UBootEnv {
    config: String,
    areas: Vec<EnvArea>,
}

/// What one copy holds.
enum CopyState {
    Valid {
        flag: u8,
        vars: RawVars,
    },
    /// All 0x00 or all 0xff: never written.
    Blank,
    /// Unusable: bad CRC, or the area is cut short by the end of the file.
    Bad(BootEnvError),
}

/// The environment as read: the current copy, if any.
enum Current {
    Valid {
        index: usize,
        flag: u8,
        vars: RawVars,
    },
    Blank,
}

/// The files holding the copies, opened and locked.
struct Opened {
    /// Distinct files (by device and inode: two configured paths to one
    /// file share an entry).
    files: Vec<File>,
    /// For each area, its index in `files`.
    of_area: Vec<usize>,
}

impl UBootEnv {
    /// Parses an `fw_env.config` file; errors name the file and line.
    pub fn from_config_file(path: &Path) -> Result<UBootEnv, BootEnvError> {
        let text = crate::fsutil::read_bounded_string(path, MAX_CONFIG_BYTES, "an fw_env.config")?;
        Self::from_config_str(&path.display().to_string(), &text)
    }

    /// Parses `fw_env.config` text; `name` is used in messages.
    pub fn from_config_str(name: &str, text: &str) -> Result<UBootEnv, BootEnvError> {
        let mut areas: Vec<(usize, EnvArea)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            if let Some(area) = parse_config_line(name, line, raw)? {
                areas.push((line, area));
            }
        }
        let config_err = |reason: String| BootEnvError::Config {
            config: name.to_string(),
            reason,
        };
        match areas.len() {
            0 => return Err(config_err("no environment configured".into())),
            1 | 2 => {}
            n => {
                return Err(config_err(format!(
                    "{n} environment lines; at most two (redundant copies) are supported"
                )));
            }
        }
        if let [(_, first), (line, second)] = areas.as_slice() {
            let line_err = |reason: String| BootEnvError::ConfigLine {
                config: name.to_string(),
                line: *line,
                reason,
            };
            if first.size != second.size {
                return Err(line_err(format!(
                    "redundant copies must have the same size ({:#x} and {:#x})",
                    first.size, second.size
                )));
            }
            if first.device == second.device
                && first.offset < second.offset + second.size as u64
                && second.offset < first.offset + first.size as u64
            {
                return Err(line_err(
                    "the two environment copies overlap on the same device".into(),
                ));
            }
        }
        Ok(UBootEnv {
            config: name.to_string(),
            areas: areas.into_iter().map(|(_, a)| a).collect(),
        })
    }

    /// The copies as configured (one, or two when redundant).
    pub fn areas(&self) -> &[EnvArea] {
        &self.areas
    }

    /// Whether there are two copies.
    pub fn is_redundant(&self) -> bool {
        self.areas.len() == 2
    }

    /// Replaces the whole environment by `vars`, whatever the area holds
    /// now (never written, bad CRC or valid), like `fw_setenv -f`; empty
    /// values are left out, as in [`BootEnv::write`]. For
    /// setting up a device or a test; the update engine uses
    /// [`BootEnv::write`], which refuses to create an environment.
    pub fn create(&self, vars: &EnvVars) -> Result<(), BootEnvError> {
        for (name, value) in vars {
            validate_name(name)?;
            if value.contains('\0') {
                return Err(BootEnvError::InvalidValue { name: name.clone() });
            }
        }
        let raw: RawVars = vars
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        let opened = self.open(true)?;
        let states = self.read_states(&opened)?;
        let current = match self.current(states) {
            Ok(c) => Some(c),
            Err(e @ (BootEnvError::BadCrc { .. } | BootEnvError::BothCopiesBad { .. })) => {
                log::info!(
                    "{}: replacing an unusable environment ({e})",
                    self.describe()
                );
                None
            }
            Err(e) => return Err(e),
        };
        self.store(current.as_ref(), &raw)
    }

    fn header_len(&self) -> usize {
        if self.is_redundant() {
            CRC_LEN + 1
        } else {
            CRC_LEN
        }
    }

    /// Bytes available for the entries and the terminating empty entry.
    fn capacity(&self) -> usize {
        self.areas[0].size - self.header_len()
    }

    /// Opens each distinct file once (two opens of one file would make
    /// the second lock wait for the first) and locks it.
    fn open(&self, exclusive: bool) -> Result<Opened, BootEnvError> {
        let mut files: Vec<File> = Vec::new();
        let mut ids: Vec<(u64, u64)> = Vec::new();
        let mut of_area = Vec::new();
        for area in &self.areas {
            let (file, meta) = open_storage(&area.device, false)?;
            let id = (meta.dev(), meta.ino());
            match ids.iter().position(|known| *known == id) {
                Some(i) => of_area.push(i),
                None => {
                    super::lock_file(&file, &area.device, exclusive)?;
                    ids.push(id);
                    files.push(file);
                    of_area.push(files.len() - 1);
                }
            }
        }
        Ok(Opened { files, of_area })
    }

    fn read_states(&self, opened: &Opened) -> Result<Vec<CopyState>, BootEnvError> {
        let redundant = self.is_redundant();
        self.areas
            .iter()
            .enumerate()
            .map(|(i, area)| {
                let file = &opened.files[opened.of_area[i]];
                let mut buf = vec![0u8; area.size];
                match file.read_exact_at(&mut buf, area.offset) {
                    Ok(()) => Ok(parse_copy(&buf, redundant, area)),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        Ok(CopyState::Bad(BootEnvError::Short {
                            device: area.device.display().to_string(),
                            offset: area.offset,
                            size: area.size,
                        }))
                    }
                    Err(e) => Err(io_err(
                        &area.device,
                        &format!("read at offset {:#x}", area.offset),
                        e,
                    )),
                }
            })
            .collect()
    }

    /// Picks the current copy.
    fn current(&self, mut states: Vec<CopyState>) -> Result<Current, BootEnvError> {
        if !self.is_redundant() {
            return match states.pop() {
                Some(CopyState::Valid { flag, vars }) => Ok(Current::Valid {
                    index: 0,
                    flag,
                    vars,
                }),
                Some(CopyState::Blank) => Ok(Current::Blank),
                Some(CopyState::Bad(e)) => Err(e),
                None => unreachable!("one area"),
            };
        }
        let second = states.pop().expect("two areas");
        let first = states.pop().expect("two areas");
        match (first, second) {
            (CopyState::Valid { flag: f1, vars: v1 }, CopyState::Valid { flag: f2, vars: v2 }) => {
                Ok(if second_is_newer(f1, f2) {
                    Current::Valid {
                        index: 1,
                        flag: f2,
                        vars: v2,
                    }
                } else {
                    Current::Valid {
                        index: 0,
                        flag: f1,
                        vars: v1,
                    }
                })
            }
            (CopyState::Valid { flag, vars }, other) => {
                self.warn_unusable(2, &other);
                Ok(Current::Valid {
                    index: 0,
                    flag,
                    vars,
                })
            }
            (other, CopyState::Valid { flag, vars }) => {
                self.warn_unusable(1, &other);
                Ok(Current::Valid {
                    index: 1,
                    flag,
                    vars,
                })
            }
            (CopyState::Blank, CopyState::Blank) => Ok(Current::Blank),
            (first, second) => Err(BootEnvError::BothCopiesBad {
                location: self.describe(),
                first: copy_problem(&first),
                second: copy_problem(&second),
            }),
        }
    }

    fn warn_unusable(&self, copy: usize, state: &CopyState) {
        if let CopyState::Bad(e) = state {
            log::warn!(
                "{}: environment copy {copy} is unusable, using the other one ({e})",
                self.describe()
            );
        }
    }

    /// Writes `vars` as the new environment: over the single copy, or to
    /// the copy that is not `current` with the next flag.
    fn store(&self, current: Option<&Current>, vars: &RawVars) -> Result<(), BootEnvError> {
        let header = self.header_len();
        let capacity = self.capacity();
        let data = serialize(vars, capacity).map_err(|needed| BootEnvError::Full {
            location: self.describe(),
            needed,
            capacity,
        })?;
        let (target, flag) = match current {
            _ if !self.is_redundant() => (0, None),
            Some(Current::Valid { index, flag, .. }) => (1 - index, Some(flag.wrapping_add(1))),
            // Nothing usable: start the counter where libubootenv does.
            Some(Current::Blank) | None => (1, Some(1)),
        };
        let area = &self.areas[target];
        let mut buf = Vec::with_capacity(area.size);
        buf.extend_from_slice(&crc32(&data).to_le_bytes());
        buf.extend(flag);
        buf.extend_from_slice(&data);
        debug_assert_eq!(buf.len(), area.size);
        debug_assert_eq!(header + capacity, area.size);

        let _force_ro = ForceRoGuard::clear(&area.device);
        let (file, _) = open_storage(&area.device, true)?;
        if crate::crash::pause_env_write() {
            // Test hook: the CRC and half of the variables on disk (the
            // rest of the area is padding), then the power cut.
            let used = buf
                .windows(2)
                .skip(header)
                .position(|w| w == [0, 0])
                .map_or(buf.len(), |p| header + p + 2);
            let half = header + (used - header) / 2;
            let _ = file.write_all_at(&buf[..half], area.offset);
            let _ = file.sync_all();
            crate::crash::env_write_paused(&area.device.display().to_string());
        }
        file.write_all_at(&buf, area.offset).map_err(|e| {
            io_err(
                &area.device,
                &format!("write at offset {:#x}", area.offset),
                e,
            )
        })?;
        file.sync_all()
            .map_err(|e| io_err(&area.device, "sync", e))?;
        log::debug!(
            "{}: wrote environment copy {} ({:#x} bytes at {:#x}{})",
            self.config,
            target + 1,
            area.size,
            area.offset,
            flag.map(|f| format!(", flag {f}")).unwrap_or_default()
        );
        Ok(())
    }
}

impl BootEnv for UBootEnv {
    fn read(&self) -> Result<EnvVars, BootEnvError> {
        let opened = self.open(false)?;
        let states = self.read_states(&opened)?;
        Ok(match self.current(states)? {
            Current::Valid { vars, .. } => vars
                .into_iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(&k).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect(),
            Current::Blank => EnvVars::new(),
        })
    }

    fn write(&self, changes: &[(&str, Option<&str>)]) -> Result<(), BootEnvError> {
        validate_changes(changes)?;
        let opened = self.open(true)?;
        let states = self.read_states(&opened)?;
        let current = self.current(states)?;
        let Current::Valid { vars: old, .. } = &current else {
            return Err(BootEnvError::NeverWritten {
                location: self.describe(),
            });
        };
        let mut vars = old.clone();
        for (name, value) in changes {
            let key = name.as_bytes().to_vec();
            match value {
                Some(v) if !v.is_empty() => {
                    vars.insert(key, v.as_bytes().to_vec());
                }
                // An empty value deletes, as with fw_setenv.
                _ => {
                    vars.remove(&key);
                }
            }
        }
        if &vars == old {
            log::debug!("{}: no change, nothing written", self.describe());
            return Ok(());
        }
        self.store(Some(&current), &vars)
        // `opened` (and with it the locks) lives until here.
    }

    fn describe(&self) -> String {
        let copies: Vec<String> = self
            .areas
            .iter()
            .map(|a| format!("{} {:#x}", a.device.display(), a.offset))
            .collect();
        format!("{}: {}", self.config, copies.join(", "))
    }

    fn create(&self, vars: &EnvVars) -> Result<(), BootEnvError> {
        UBootEnv::create(self, vars)
    }
}

/// Parses one line of `fw_env.config`; `None` for blank and comment lines.
fn parse_config_line(
    config: &str,
    line: usize,
    raw: &str,
) -> Result<Option<EnvArea>, BootEnvError> {
    let err = |reason: String| BootEnvError::ConfigLine {
        config: config.to_string(),
        line,
        reason,
    };
    let fields: Vec<&str> = raw
        .split_whitespace()
        .take_while(|f| !f.starts_with('#'))
        .collect();
    if fields.is_empty() {
        return Ok(None);
    }
    const SYNTAX: &str = "<device> <offset> <env size> [<sector size> [<number of sectors>]]";
    if fields.len() < 3 {
        return Err(err(format!(
            "malformed: expected \"{SYNTAX}\", found {} field(s)",
            fields.len()
        )));
    }
    if fields.len() > 5 {
        return Err(err(format!(
            "malformed: expected \"{SYNTAX}\", found {} fields",
            fields.len()
        )));
    }
    let offset = parse_c_integer(fields[1])
        .ok_or_else(|| err(format!("malformed offset {:?}", fields[1])))?;
    let size = parse_hex(fields[2])
        .ok_or_else(|| err(format!("malformed env size {:?} (hexadecimal)", fields[2])))?;
    if !fields[2].starts_with("0x") && !fields[2].starts_with("0X") && size >= 10 {
        log::warn!(
            "{config} line {line}: env size {:?} is read as hexadecimal ({size:#x}), as fw_printenv does",
            fields[2]
        );
    }
    let optional = |i: usize, what: &str| -> Result<Option<u64>, BootEnvError> {
        fields
            .get(i)
            .map(|f| {
                parse_hex(f).ok_or_else(|| err(format!("malformed {what} {f:?} (hexadecimal)")))
            })
            .transpose()
    };
    let sector_size = optional(3, "sector size")?;
    let sectors = optional(4, "number of sectors")?;
    let size = usize::try_from(size)
        .ok()
        .filter(|s| *s <= MAX_ENV_SIZE)
        .ok_or_else(|| err(format!("env size {size:#x} is too large")))?;
    // Room for the CRC, a redundant flag, and the terminating NUL.
    if size < CRC_LEN + 2 {
        return Err(err(format!("env size {size:#x} is too small")));
    }
    if offset.checked_add(size as u64).is_none() {
        return Err(err(format!("offset {offset:#x} is too large")));
    }
    Ok(Some(EnvArea {
        device: PathBuf::from(fields[0]),
        offset,
        size,
        sector_size,
        sectors,
    }))
}

/// A number as C's `strtoull(s, _, 0)` reads it when it consumes all of
/// `s`: `0x` hexadecimal, a leading `0` octal, otherwise decimal.
fn parse_c_integer(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        parse_digits(hex, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        parse_digits(&s[1..], 8)
    } else {
        parse_digits(s, 10)
    }
}

/// A hexadecimal number, with or without `0x`.
fn parse_hex(s: &str) -> Option<u64> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    parse_digits(digits, 16)
}

fn parse_digits(s: &str, radix: u32) -> Option<u64> {
    // from_str_radix would accept a sign.
    if s.is_empty() || !s.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(s, radix).ok()
}

/// Interprets the bytes of one copy.
fn parse_copy(buf: &[u8], redundant: bool, area: &EnvArea) -> CopyState {
    if buf.iter().all(|&b| b == 0) || buf.iter().all(|&b| b == 0xff) {
        return CopyState::Blank;
    }
    let header = if redundant { CRC_LEN + 1 } else { CRC_LEN };
    let stored = u32::from_le_bytes(buf[..CRC_LEN].try_into().expect("4 bytes"));
    let data = &buf[header..];
    let computed = crc32(data);
    if stored != computed {
        return CopyState::Bad(BootEnvError::BadCrc {
            device: area.device.display().to_string(),
            offset: area.offset,
            stored,
            computed,
        });
    }
    let flag = if redundant { buf[CRC_LEN] } else { 0 };
    CopyState::Valid {
        flag,
        vars: parse_entries(data, area),
    }
}

/// The `name=value` entries up to the first empty one. Later duplicates
/// win; entries without a name or '=' are dropped.
fn parse_entries(data: &[u8], area: &EnvArea) -> RawVars {
    let mut vars = RawVars::new();
    for entry in data.split(|&b| b == 0) {
        if entry.is_empty() {
            break;
        }
        match entry.iter().position(|&b| b == b'=') {
            Some(eq) if eq > 0 => {
                vars.insert(entry[..eq].to_vec(), entry[eq + 1..].to_vec());
            }
            _ => log::warn!(
                "{} {:#x}: ignoring malformed environment entry {:?}",
                area.device.display(),
                area.offset,
                String::from_utf8_lossy(entry)
            ),
        }
    }
    vars
}

/// The data part of a copy: the entries, an empty entry, `0x00` padding.
/// `Err(needed)` when they do not fit into `capacity` bytes.
fn serialize(vars: &RawVars, capacity: usize) -> Result<Vec<u8>, usize> {
    let needed = vars
        .iter()
        .map(|(k, v)| k.len() + 1 + v.len() + 1)
        .sum::<usize>()
        + 1;
    if needed > capacity {
        return Err(needed);
    }
    let mut data = Vec::with_capacity(capacity);
    for (k, v) in vars {
        data.extend_from_slice(k);
        data.push(b'=');
        data.extend_from_slice(v);
        data.push(0);
    }
    data.resize(capacity, 0);
    Ok(data)
}

/// Whether copy 2 (flag `f2`) is newer than copy 1 (flag `f1`): the larger
/// counter, 0 being the successor of 255; copy 1 on a tie.
fn second_is_newer(f1: u8, f2: u8) -> bool {
    match (f1, f2) {
        (255, 0) => true,
        (0, 255) => false,
        _ => f2 > f1,
    }
}

fn copy_problem(state: &CopyState) -> String {
    match state {
        CopyState::Valid { .. } => "valid".into(),
        CopyState::Blank => "never written (all 0x00 or all 0xff)".into(),
        CopyState::Bad(e) => e.to_string(),
    }
}

/// CRC-32 with the IEEE polynomial (reflected, init and final xor all
/// ones), as zlib's `crc32`.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut n = 0;
        while n < 256 {
            let mut c = n as u32;
            let mut bit = 0;
            while bit < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                bit += 1;
            }
            table[n] = c;
            n += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Opens the file or block device holding an environment copy, without
/// blocking on whatever else the path may be (a FIFO would wait for a
/// writer). Anything but a regular file or a block device is refused
/// naming what it is; MTD and UBI (character devices) are for the tools
/// backend.
fn open_storage(device: &Path, write: bool) -> Result<(File, std::fs::Metadata), BootEnvError> {
    let opened = crate::fsutil::open_checked(device, write, |_| true);
    let (file, meta) = opened.map_err(|e| match e {
        crate::fsutil::ReadError::Io { source, .. } => io_err(
            device,
            if write { "open for writing" } else { "open" },
            source,
        ),
        other => BootEnvError::Read(other),
    })?;
    let kind = meta.file_type();
    if !(kind.is_file() || kind.is_block_device()) {
        return Err(BootEnvError::Unsupported {
            device: device.display().to_string(),
            reason: format!(
                "is {}, not a regular file or block device (MTD and UBI are not handled natively: set BootEnvType to tools)",
                crate::fsutil::file_kind(kind)
            ),
        });
    }
    Ok((file, meta))
}

fn io_err(path: &Path, op: &str, cause: io::Error) -> BootEnvError {
    BootEnvError::Io {
        path: path.display().to_string(),
        op: op.to_string(),
        cause,
    }
}

/// eMMC boot partitions (`mmcblkNbootM`) are read-only until
/// `/sys/class/block/<name>/force_ro` is 0; this clears it for the time of
/// a write and sets it back, as fw_setenv does.
struct ForceRoGuard {
    path: Option<PathBuf>,
}

impl ForceRoGuard {
    fn clear(device: &Path) -> ForceRoGuard {
        let none = ForceRoGuard { path: None };
        let Ok(real) = std::fs::canonicalize(device) else {
            return none;
        };
        let Some(name) = real.file_name().and_then(|n| n.to_str()) else {
            return none;
        };
        if !is_mmc_boot_partition(name) {
            return none;
        }
        let path = PathBuf::from(format!("/sys/class/block/{name}/force_ro"));
        match crate::fsutil::read_kernel_file(&path, MAX_FORCE_RO_BYTES, "a force_ro flag") {
            Ok(s) if s.trim() == "1" => {}
            _ => return none,
        }
        if let Err(e) = std::fs::write(&path, "0") {
            log::warn!("{}: cannot clear: {e}", path.display());
            return none;
        }
        ForceRoGuard { path: Some(path) }
    }
}

impl Drop for ForceRoGuard {
    fn drop(&mut self) {
        if let Some(path) = &self.path
            && let Err(e) = std::fs::write(path, "1")
        {
            log::warn!("{}: cannot set back to 1: {e}", path.display());
        }
    }
}

/// `mmcblk<N>boot<M>`.
fn is_mmc_boot_partition(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("mmcblk") else {
        return false;
    };
    let Some(pos) = rest.find("boot") else {
        return false;
    };
    let (dev, part) = (&rest[..pos], &rest[pos + 4..]);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(dev) && digits(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"a"), 3_904_355_907);
    }

    #[test]
    fn flag_order_with_wrap_around() {
        // Observed with fw_printenv 0.3.2 on two files (see tests).
        let cases = [
            (1, 2, true),
            (2, 1, false),
            (5, 5, false),
            (255, 0, true),
            (0, 255, false),
            (10, 200, true),
            (200, 10, false),
            (254, 255, true),
            (0, 1, true),
            (1, 0, false),
            (255, 1, false),
            (1, 255, true),
            (0, 128, true),
            (128, 0, false),
        ];
        for (f1, f2, expected) in cases {
            assert_eq!(second_is_newer(f1, f2), expected, "{f1} vs {f2}");
        }
        // The next flag always beats the current one.
        for f in 0..=255u8 {
            assert!(second_is_newer(f, f.wrapping_add(1)));
            assert!(!second_is_newer(f.wrapping_add(1), f));
        }
    }

    #[test]
    fn numbers_as_libubootenv_reads_them() {
        assert_eq!(parse_c_integer("0"), Some(0));
        assert_eq!(parse_c_integer("10"), Some(10));
        assert_eq!(parse_c_integer("010"), Some(8));
        assert_eq!(parse_c_integer("0x10"), Some(16));
        assert_eq!(parse_c_integer("0X1f"), Some(31));
        for bad in ["", "08", "0x", "-1", "+1", "1k", "0x1g"] {
            assert_eq!(parse_c_integer(bad), None, "{bad:?}");
        }
        assert_eq!(parse_hex("4000"), Some(0x4000));
        assert_eq!(parse_hex("0x4000"), Some(0x4000));
        assert_eq!(parse_hex("16384"), Some(0x16384));
        for bad in ["", "0x", "x10", "-1", "10h"] {
            assert_eq!(parse_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn config_lines() {
        let text = "# comment\n\n  # indented comment\n/dev/mmcblk0\t0x400000 0x4000 # trailing\n\
                    /dev/mmcblk0 0x800000 4000 0x200 0x20\r\n";
        let env = UBootEnv::from_config_str("fw_env.config", text).unwrap();
        assert!(env.is_redundant());
        assert_eq!(
            env.areas()[0],
            EnvArea {
                device: "/dev/mmcblk0".into(),
                offset: 0x400000,
                size: 0x4000,
                sector_size: None,
                sectors: None,
            }
        );
        assert_eq!(env.areas()[1].offset, 0x800000);
        assert_eq!(env.areas()[1].size, 0x4000);
        assert_eq!(env.areas()[1].sector_size, Some(0x200));
        assert_eq!(env.areas()[1].sectors, Some(0x20));
        assert_eq!(
            env.describe(),
            "fw_env.config: /dev/mmcblk0 0x400000, /dev/mmcblk0 0x800000"
        );
        assert_eq!(env.capacity(), 0x4000 - 5);

        let single = UBootEnv::from_config_str("c", "env.img 0 0x2000\n").unwrap();
        assert!(!single.is_redundant());
        assert_eq!(single.describe(), "c: env.img 0x0");
        assert_eq!(single.capacity(), 0x2000 - 4);
    }

    #[test]
    fn bad_config_lines_are_named() {
        let cases = [
            ("\n# x\n/dev/x 0\n", 3),
            ("/dev/x\n", 1),
            ("/dev/x zz 0x4000\n", 1),
            ("/dev/x 08 0x4000\n", 1),
            ("/dev/x 0 0x4000 garbage\n", 1),
            ("/dev/x 0 0x4000 1 2 3\n", 1),
            ("/dev/x 0 0x4\n", 1),
            ("/dev/x 0 0xffffffffff\n", 1),
            ("/dev/x 0 0x4000\n/dev/x 0x2000 0x4000\n", 2),
            ("/dev/x 0 0x4000\n/dev/y 0x2000 0x2000\n", 2),
        ];
        for (text, line) in cases {
            match UBootEnv::from_config_str("cfg", text) {
                Err(e @ BootEnvError::ConfigLine { .. }) => {
                    let msg = e.to_string();
                    assert!(
                        msg.starts_with(&format!("cfg line {line}: ")),
                        "{text:?}: {msg}"
                    );
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        for text in ["", "# nothing\n", "a 0 0x100\nb 0 0x100\nc 0 0x100\n"] {
            assert!(
                matches!(
                    UBootEnv::from_config_str("cfg", text),
                    Err(BootEnvError::Config { .. })
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn entries_round_trip() {
        let area = EnvArea {
            device: "x".into(),
            offset: 0,
            size: 64,
            sector_size: None,
            sectors: None,
        };
        let mut vars = RawVars::new();
        vars.insert(b"b".to_vec(), b"x=y z".to_vec());
        vars.insert(b"a".to_vec(), b"".to_vec());
        vars.insert(b"c".to_vec(), vec![0xff, 0xfe]);
        let data = serialize(&vars, 60).unwrap();
        assert_eq!(&data[..18], b"a=\0b=x=y z\0c=\xff\xfe\0\0\0");
        assert_eq!(parse_entries(&data, &area), vars);
        // Exactly full: the entries, then one NUL.
        assert_eq!(serialize(&vars, 17).unwrap().len(), 17);
        assert_eq!(serialize(&vars, 16), Err(17));
        // Unterminated, malformed and duplicate entries.
        let mut odd = RawVars::new();
        odd.insert(b"a".to_vec(), b"2".to_vec());
        odd.insert(b"z".to_vec(), b"9".to_vec());
        assert_eq!(parse_entries(b"a=1\0noeq\0=v\0a=2\0z=9", &area), odd);
        assert!(parse_entries(b"\0a=1\0", &area).is_empty());
    }

    #[test]
    fn mmc_boot_partition_names() {
        assert!(is_mmc_boot_partition("mmcblk0boot0"));
        assert!(is_mmc_boot_partition("mmcblk12boot1"));
        for name in [
            "mmcblk0",
            "mmcblk0p1",
            "mmcblkboot0",
            "mmcblk0boot",
            "sda",
            "mmcblk0boot0p1",
        ] {
            assert!(!is_mmc_boot_partition(name), "{name}");
        }
    }
}
