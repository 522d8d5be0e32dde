//! The loop limit: a crash-looping update is given up after 30 persisted
//! transitions (spec §3.8).

use super::*;

/// A device whose release-2 install crashed right after persisting
/// ArtifactInstall (before anything was switched).
fn crashed_install() -> Lab {
    let lab = Lab::new(Scenario::Success);
    lab.restore();
    let r = lab.run_command(UserCommand::Install, Some("step:3"));
    assert!(r.aborted_by_injection(), "{}", r.describe());
    assert_eq!(
        lab.device.pending().map(|(p, _)| p).as_deref(),
        Some("artifact-install")
    );
    lab
}

/// Power cuts, each followed by a `commit` that crashes at its first store
/// write, for at most `attempts` rounds or, with `until_marked`, until the
/// name is marked `_INCONSISTENT`. Returns the number of crashed resumes,
/// the round that marked the name, and the run that did not crash.
fn crash_looping_resumes(
    lab: &Lab,
    attempts: usize,
    until_marked: bool,
) -> (usize, Option<usize>, Option<Run>) {
    let mut crashed = 0;
    let mut marked = None;
    for attempt in 1..=attempts {
        lab.device.reboot();
        let r = lab.device.run(&["commit"], Some("step:1"));
        if marked.is_none() && lab.device.artifact_name().ends_with("_INCONSISTENT") {
            marked = Some(attempt);
        }
        if !r.aborted_by_injection() {
            return (crashed, marked, Some(r));
        }
        crashed += 1;
        if until_marked && marked.is_some() {
            break;
        }
    }
    (crashed, marked, None)
}

/// The update is gone, the name marked, and the device boots the image its
/// provides name.
fn assert_abandoned(lab: &Lab) {
    let dev = &lab.device;
    assert_eq!(dev.pending(), None, "the update is still pending");
    dev.reboot();
    let name = dev.artifact_name();
    assert!(name.ends_with("_INCONSISTENT"), "show-artifact: {name}");
    lab.booted_image().unwrap();
    for command in ["commit", "rollback"] {
        let r = dev.run(&[command], None);
        assert_eq!(r.code, Some(2), "{command} at rest: {}", r.describe());
    }
}

/// Spec §3.8: after 30 persisted transitions a crash-looping update is
/// given up and the artifact marked `_INCONSISTENT`. Every resume crashes at
/// its first store write until the name is marked; the next resume (power
/// stable again) finishes abandoning the update.
#[test]
fn crash_loop_hits_the_loop_limit() {
    let lab = crashed_install();
    let max = mender_rs::engine::MAX_STEPS as usize;
    let (crashed, marked, ended) = crash_looping_resumes(&lab, max + 5, true);
    println!(
        "crash injection loop limit: name marked _INCONSISTENT by crashed resume {} of {crashed} (loop limit {max}; update state then: {:?})",
        marked.map_or("-".to_string(), |m| m.to_string()),
        lab.device.pending()
    );
    assert!(ended.is_none(), "{}", ended.unwrap().describe());
    let marked = marked.expect("never marked _INCONSISTENT");
    assert!(marked <= max + 2, "marked only after {marked} resumes");
    lab.device.reboot();
    let r = lab.device.run(&["commit"], None);
    assert!(
        r.signal.is_none() && matches!(r.code, Some(0..=2)) && !r.stderr.contains("panicked"),
        "{}",
        r.describe()
    );
    assert_abandoned(&lab);
}

/// The same loop, with every resume crashing at its first store write for
/// good: the update must still be abandoned within the loop limit and a few
/// more resumes.
#[test]

fn crash_loop_at_the_first_write_is_abandoned() {
    let lab = crashed_install();
    let max = mender_rs::engine::MAX_STEPS as usize;
    let (crashed, marked, ended) = crash_looping_resumes(&lab, max + 5, false);
    let r = ended.unwrap_or_else(|| {
        panic!(
            "still crashing after {crashed} resumes (name marked by resume {marked:?}); update state {:?}",
            lab.device.pending()
        )
    });
    assert!(
        r.signal.is_none() && matches!(r.code, Some(0..=2)) && !r.stderr.contains("panicked"),
        "{}",
        r.describe()
    );
    assert_abandoned(&lab);
}
