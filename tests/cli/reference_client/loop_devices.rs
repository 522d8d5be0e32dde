//! Loop devices, always detached.

use super::*;

/// Every loop device this test attached; detached on drop, panic or not.
pub(super) struct Loops {
    pub(super) attached: Vec<PathBuf>,
}

impl Drop for Loops {
    fn drop(&mut self) {
        for dev in self.attached.drain(..) {
            let ran = run(Command::new("losetup").arg("-d").arg(&dev), TOOL_TIMEOUT);
            if ran.code != 0 {
                eprintln!("could not detach {}: {}", dev.display(), ran.stderr);
            }
        }
    }
}

/// The digits that end a device path: what both clients take as its
/// partition number.
pub(super) fn number_of(dev: &Path) -> String {
    let name = s(dev);
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    name[name.len() - digits..].to_string()
}

/// The source of the mount on `/`, as `mount` prints it.
pub(super) fn root_source() -> String {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let mut source = String::new();
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4) == Some(&"/")
            && let Some(dash) = fields.iter().position(|f| *f == "-")
            && let Some(src) = fields.get(dash + 2)
        {
            source = (*src).to_string();
        }
    }
    source
}

/// Attaches loop devices over 8 MiB files until two are found whose numbers
/// cannot be confused by mender 3.4, which matches `mender_boot_part` as a
/// suffix of device paths (`1` would match `/dev/loop11`, and the device
/// mounted on `/`).
pub(super) fn attach_pair(dir: &Path, loops: &mut Loops) -> (PathBuf, PathBuf) {
    let root = root_source();
    let mut usable: Vec<PathBuf> = Vec::new();
    for i in 0..8 {
        let backing = dir.join(format!("partition-{i}.img"));
        fs::write(&backing, vec![0u8; PARTITION_LEN]).expect("write backing file");
        let dev = PathBuf::from(tool("losetup", &["-f", "--show", s(&backing)]).trim());
        loops.attached.push(dev.clone());
        let n = number_of(&dev);
        let clash = n.is_empty()
            || root.ends_with(&n)
            || usable.iter().any(|u| {
                let m = number_of(u);
                m.ends_with(&n) || n.ends_with(&m)
            });
        if !clash {
            usable.push(dev);
        }
        if usable.len() == 2 {
            return (usable[0].clone(), usable[1].clone());
        }
    }
    panic!(
        "no two loop devices with distinct partition numbers among {:?}",
        loops.attached
    );
}
