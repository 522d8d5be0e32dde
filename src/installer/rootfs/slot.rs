//! What a rootfs slot is and whether the system uses it: the identity of a
//! slot (device number or inode, so that aliases cannot get through) and
//! the checks against the root file system, mounts, holders and loop
//! devices. Separate from the A/B policy because it follows the kernel's
//! interfaces (`/proc/self/mountinfo`, sysfs), not the update's states.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// What a slot is, to tell whether two names reach the same storage: a
/// block device by its device number, a regular file (simulated devices)
/// by its file system and inode. Links, `/dev/disk/by-*` names, hard links
/// and `.`/`..` in paths all come out the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotId {
    Block(u64),
    File { dev: u64, ino: u64 },
}

impl SlotId {
    pub(super) fn of(path: &Path) -> Result<SlotId> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("rootfs partition {}", path.display()))?;
        Self::from_meta(path, &meta)
    }

    pub(super) fn from_meta(path: &Path, meta: &std::fs::Metadata) -> Result<SlotId> {
        let kind = meta.file_type();
        if kind.is_block_device() {
            Ok(SlotId::Block(meta.rdev()))
        } else if kind.is_file() {
            Ok(SlotId::File {
                dev: meta.dev(),
                ino: meta.ino(),
            })
        } else {
            bail!(
                "rootfs partition {} is neither a block device nor a file",
                path.display()
            )
        }
    }
}

impl std::fmt::Display for SlotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            SlotId::Block(rdev) => write!(f, "device {}", dev_name(rdev)),
            SlotId::File { dev, ino } => {
                write!(f, "file (inode {ino} on device {})", dev_name(dev))
            }
        }
    }
}

/// `major:minor`, as in `/proc/self/mountinfo` and `/sys/dev/block`.
fn dev_name(dev: u64) -> String {
    let dev = dev as libc::dev_t;
    format!("{}:{}", libc::major(dev), libc::minor(dev))
}

/// Largest mount table read. A device has tens of mounts (about 150 bytes
/// each); 4 MiB is tens of thousands, more than any host has.
const MAX_MOUNTINFO: u64 = 4 << 20;

/// Largest sysfs attribute read (a loop device's backing file is a path).
const MAX_SYSFS_ATTR: u64 = 16 << 10;

/// Most loop devices looked at, and most holders named.
const MAX_LOOP_DEVICES: usize = 4096;

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// The mounted device's number (`st_dev` of files on it).
    dev: u64,
    /// Where it is mounted.
    point: String,
    /// The device it was mounted from, when that is a block device node
    /// (file systems such as btrfs report an anonymous `dev`).
    source_dev: Option<u64>,
}

/// Why the storage `id` must not be written now, if it must not.
pub(super) fn in_use(id: SlotId) -> Result<Option<String>> {
    match id {
        SlotId::Block(rdev) => {
            let root = std::fs::metadata("/").context("stat /")?.dev();
            let table = crate::fsutil::read_bounded(
                Path::new("/proc/self/mountinfo"),
                MAX_MOUNTINFO,
                "the mount table",
            )
            .context("cannot tell whether the partition is mounted")?;
            let mounts = parse_mountinfo(&String::from_utf8_lossy(&table));
            let holders = holders(rdev);
            Ok(block_in_use(rdev, root, &mounts, &holders, &sysfs_related))
        }
        SlotId::File { dev, ino } => Ok(loop_backed_by(dev, ino)
            .map(|lo| format!("backs the loop device {lo} (it may be mounted)"))),
    }
}

/// The decision for a block device `rdev`, from what the system reports:
/// `root` is `st_dev` of `/`, `holders` what sysfs lists as built on it,
/// `related(a, b)` whether one device is a partition of the other.
fn block_in_use(
    rdev: u64,
    root: u64,
    mounts: &[Mount],
    holders: &[String],
    related: &dyn Fn(u64, u64) -> bool,
) -> Option<String> {
    let same = |dev: u64| dev == rdev || related(rdev, dev);
    if same(root) {
        return Some(format!(
            "is {}, which holds the running root file system /",
            dev_name(rdev)
        ));
    }
    if !holders.is_empty() {
        return Some(format!(
            "is {}, which is in use by {} (device-mapper, RAID or the like)",
            dev_name(rdev),
            holders.join(", ")
        ));
    }
    mounts
        .iter()
        .find(|m| same(m.dev) || m.source_dev.is_some_and(same))
        .map(|m| format!("is {}, which is mounted on {}", dev_name(rdev), m.point))
}

/// The mounts of `/proc/self/mountinfo` (lines it cannot read are left
/// out: the exclusive open still guards them).
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(majmin), Some(point)) = (fields.get(2), fields.get(4)) else {
            continue;
        };
        let Some((major, minor)) = majmin.split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
            continue;
        };
        let source = fields
            .iter()
            .position(|f| *f == "-")
            .and_then(|sep| fields.get(sep + 2))
            .map(|s| unescape_mount_field(s));
        let source_dev = source
            .filter(|s| s.starts_with("/dev/"))
            .and_then(|s| std::fs::metadata(s).ok())
            .filter(|m| m.file_type().is_block_device())
            .map(|m| m.rdev());
        mounts.push(Mount {
            dev: libc::makedev(major, minor),
            point: unescape_mount_field(point),
            source_dev,
        });
    }
    mounts
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The sysfs directory of a block device, resolved.
fn sysfs_dir(dev: u64) -> Option<PathBuf> {
    std::fs::canonicalize(format!("/sys/dev/block/{}", dev_name(dev))).ok()
}

/// Whether `a` is a partition of `b` or `b` of `a` (sysfs nests partitions
/// inside their disk). False where sysfs is not there to tell.
fn sysfs_related(a: u64, b: u64) -> bool {
    match (sysfs_dir(a), sysfs_dir(b)) {
        (Some(a), Some(b)) => a != b && (a.starts_with(&b) || b.starts_with(&a)),
        _ => false,
    }
}

/// The devices built on `dev` (device-mapper, md, bcache: sysfs
/// `holders`).
fn holders(dev: u64) -> Vec<String> {
    let Some(dir) = sysfs_dir(dev) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir.join("holders")) else {
        return Vec::new();
    };
    entries
        .take(MAX_LOOP_DEVICES)
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The loop device (`/dev/loopN`) whose backing file is the file `dev`,
/// `ino`, if one is attached (mounted or not, in any mount namespace that
/// shares our view of the path sysfs reports).
fn loop_backed_by(dev: u64, ino: u64) -> Option<String> {
    let entries = std::fs::read_dir("/sys/block").ok()?;
    for entry in entries.take(MAX_LOOP_DEVICES).filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = crate::fsutil::read_bounded_string(
            &entry.path().join("loop/backing_file"),
            MAX_SYSFS_ATTR,
            "a sysfs attribute",
        ) else {
            continue; // not attached
        };
        let backing = backing.trim_end_matches('\n');
        if let Ok(meta) = std::fs::metadata(backing)
            && meta.is_file()
            && meta.dev() == dev
            && meta.ino() == ino
        {
            return Some(format!("/dev/{name}"));
        }
    }
    None
}
#[cfg(test)]
mod tests {
    use super::*;

    fn dev(major: u32, minor: u32) -> u64 {
        libc::makedev(major, minor)
    }

    #[test]
    fn mountinfo_lines_are_read_with_their_escapes() {
        let text = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
            45 27 7:3 / /mnt/with\\040space rw - ext4 /dev/loop3 rw\n\
            garbage\n\
            46 27 0:51 / /data rw - btrfs /dev/null rw\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].dev, dev(254, 0));
        assert_eq!(mounts[0].point, "/");
        assert_eq!(mounts[1].point, "/mnt/with space");
        // A source that is not a block device node is not taken.
        assert_eq!(mounts[2].source_dev, None);
        assert_eq!(unescape_mount_field("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape_mount_field("tail\\04"), "tail\\04");
    }

    #[test]
    fn a_block_slot_in_use_is_named_with_the_reason() {
        let target = dev(179, 3);
        let none = |_: u64, _: u64| false;
        let mount = |d: u64, point: &str, source_dev: Option<u64>| Mount {
            dev: d,
            point: point.into(),
            source_dev,
        };
        let others = [
            mount(dev(179, 2), "/", None),
            mount(dev(0, 22), "/sys", None),
        ];
        assert_eq!(block_in_use(target, dev(179, 2), &others, &[], &none), None);
        // Holding the root file system.
        let why = block_in_use(target, target, &[], &[], &none).unwrap();
        assert!(
            why.contains("179:3") && why.contains("root file system"),
            "{why}"
        );
        // Mounted elsewhere, by number or (btrfs) by its source node.
        let mounted = [mount(target, "/mnt/b", None)];
        let why = block_in_use(target, dev(179, 2), &mounted, &[], &none).unwrap();
        assert!(why.contains("mounted on /mnt/b"), "{why}");
        let btrfs = [mount(dev(0, 51), "/data", Some(target))];
        let why = block_in_use(target, dev(179, 2), &btrfs, &[], &none).unwrap();
        assert!(why.contains("mounted on /data"), "{why}");
        // Under device-mapper (dm-verity root, LVM).
        let why = block_in_use(target, dev(253, 0), &[], &["dm-0".into()], &none).unwrap();
        assert!(why.contains("in use by dm-0"), "{why}");
        // A whole disk whose partition runs /.
        let disk = dev(179, 0);
        let parent = |a: u64, b: u64| a == disk && b == dev(179, 2);
        let why = block_in_use(disk, dev(179, 2), &[], &[], &parent).unwrap();
        assert!(why.contains("root file system"), "{why}");
    }

    #[test]
    fn slot_identity_sees_through_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("mmcblk0p2");
        std::fs::write(&a, b"x").unwrap();
        let b = dir.path().join("mmcblk0p3");
        std::fs::write(&b, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let hard = dir.path().join("hard");
        std::fs::hard_link(&a, &hard).unwrap();
        let dotted = PathBuf::from(format!(
            "{}/./../{}/./mmcblk0p2",
            dir.path().display(),
            dir.path().file_name().unwrap().to_string_lossy()
        ));
        let id = SlotId::of(&a).unwrap();
        for alias in [&link, &hard, &dotted] {
            assert_eq!(SlotId::of(alias).unwrap(), id, "{}", alias.display());
        }
        assert_ne!(SlotId::of(&b).unwrap(), id);
        let e = SlotId::of(dir.path()).unwrap_err().to_string();
        assert!(e.contains("neither a block device nor a file"), "{e}");
    }
}
