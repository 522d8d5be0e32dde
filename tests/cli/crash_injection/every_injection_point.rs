//! Power loss at every injection point of every command of each scenario, and
//! a second one at every step of the resume after it; the device at rest is
//! then checked.

use super::*;

/// Checks the device at rest (invariants 1 to 4); returns the violations.
fn check_at_rest(lab: &Lab, crash_free_log: &[String], case: &CrashCase) -> Vec<String> {
    let dev = &lab.device;
    let mut bad = Vec::new();
    let mut fail = |msg: String| {
        bad.push(format!(
            "{} / {} / {}: {msg}",
            case.scenario.name(),
            case.command.name(),
            case.label
        ))
    };

    // 1. The booted partition holds the image the provides name.
    let booted = lab.booted_image().unwrap_or_else(|e| {
        fail(e);
        String::new()
    });

    // 2. A consistent release.
    let name = dev.artifact_name();
    match lab.release_by_name(&name) {
        None => fail(format!("show-artifact says {name:?}")),
        Some(_) if !booted.is_empty() && booted != name => fail(format!(
            "show-artifact says {name}, the provides and the booted partition {booted}"
        )),
        Some(_) => {}
    }
    if let Some(want) = case.scenario.final_release()
        && name != want
    {
        fail(format!("ended with {name}, the scenario leaves {want}"));
    }

    // 3. Script runs.
    let log = dev.script_log();
    let n = case.log_at_crash.min(log.len());
    if log[..n] != crash_free_log[..n.min(crash_free_log.len())] {
        fail(format!(
            "the scripts before the crash differ from the crash-free run: {:?}",
            &log[..n]
        ));
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &log {
        *counts.entry(s).or_default() += 1;
    }
    for (script, &count) in &counts {
        let free = crash_free_log.iter().filter(|s| s == script).count();
        let allowed = if rerun_allowed(script) {
            free.max(2)
        } else {
            free
        };
        if count > allowed {
            fail(format!(
                "{script} ran {count} times (crash-free: {free}); log: {log:?}"
            ));
        }
    }
    let in_download = case.phase_at_crash.as_deref() == Some("download");
    if in_download && log[n..].iter().any(|s| s.starts_with("Artifact")) {
        fail(format!(
            "Artifact scripts ran after a crash in the download: {:?}",
            &log[n..]
        ));
    }
    let ran = |script: &str| counts.contains_key(script);
    if name == "release-1" && !in_download {
        for script in [
            "ArtifactRollback_Enter_01",
            "ArtifactRollback_Leave_01",
            "ArtifactFailure_Enter_01",
            "ArtifactFailure_Leave_01",
        ] {
            if !ran(script) {
                fail(format!("rolled back without {script}; log: {log:?}"));
            }
        }
    }
    if name == "release-1" && ran("ArtifactCommit_Leave_01") {
        fail(format!(
            "rolled back after ArtifactCommit_Leave; log: {log:?}"
        ));
    }
    if name == "release-2" {
        if !ran("ArtifactCommit_Leave_01") {
            fail(format!(
                "committed without ArtifactCommit_Leave; log: {log:?}"
            ));
        }
        if counts.keys().any(|s| s.starts_with("ArtifactRollback_")) {
            fail(format!("committed after a rollback; log: {log:?}"));
        }
    }

    // 4. Nothing pending.
    for command in ["commit", "rollback"] {
        let r = dev.run(&[command], None);
        if r.code != Some(2) {
            fail(format!("{command} at rest: {}", r.describe()));
        }
    }
    if trace() {
        eprintln!(
            "crash injection trace: {} / {} / {}: phase at crash {:?} -> {name}; log {log:?}",
            case.scenario.name(),
            case.command.name(),
            case.label,
            case.phase_at_crash
        );
    }
    bad
}

/// `CRASH_INJECTION_TRACE=1`: one line per injection point.
fn trace() -> bool {
    std::env::var_os("CRASH_INJECTION_TRACE").is_some()
}

/// After a crash and the power cut: the next user command (`commit`, which
/// resumes whatever was interrupted), then reboot and commit until nothing
/// is pending, and a last reboot.
fn resume_and_settle(lab: &Lab, case: &CrashCase) -> Vec<String> {
    let dev = &lab.device;
    let mut bad = Vec::new();
    let mut attempts = 0;
    loop {
        let r = dev.run(&["commit"], None);
        if r.signal.is_some() || !matches!(r.code, Some(0..=2)) || r.stderr.contains("panicked") {
            bad.push(format!(
                "{} / {} / {}: resuming: {}",
                case.scenario.name(),
                case.command.name(),
                case.label,
                r.describe()
            ));
        }
        if dev.pending().is_none() {
            break;
        }
        attempts += 1;
        if attempts > 3 {
            bad.push(format!(
                "{} / {} / {}: still pending after {attempts} commits: {:?}",
                case.scenario.name(),
                case.command.name(),
                case.label,
                dev.pending()
            ));
            break;
        }
        dev.reboot();
    }
    dev.reboot();
    bad
}

#[derive(Default)]
struct Counts {
    /// Crashes per command and kind.
    points: BTreeMap<(&'static str, &'static str), u32>,
    /// Second crashes, while resuming after a first one.
    resume_crashes: u32,
    /// How the crashed updates ended, per release.
    ended: BTreeMap<String, u32>,
    violations: Vec<String>,
}

impl Counts {
    fn total(&self) -> u32 {
        self.points.values().sum()
    }

    fn summary(&self, scenario: Scenario) -> String {
        let kind = |k: &str| -> String {
            let per: Vec<String> = self
                .points
                .iter()
                .filter(|((_, kind), _)| *kind == k)
                .map(|((cmd, _), n)| format!("{cmd} {n}"))
                .collect();
            let sum: u32 = self
                .points
                .iter()
                .filter(|((_, kind), _)| *kind == k)
                .map(|(_, n)| n)
                .sum();
            if per.len() > 1 {
                format!("{k} {sum} [{}]", per.join(", "))
            } else {
                format!("{k} {sum}")
            }
        };
        format!("{}: {}, {}", scenario.name(), kind("step"), kind("chunk"))
    }
}

/// Runs the scenario crash-free; returns its script log.
fn crash_free(lab: &Lab, scenario: Scenario) -> Vec<String> {
    lab.restore();
    for &(command, code) in scenario.commands() {
        lab.run_command(command, None).expect_code(code);
        lab.device.reboot();
    }
    let log = lab.device.script_log();
    assert_eq!(
        log,
        scenario.expected_log(),
        "{}: crash-free script log",
        scenario.name()
    );
    let case = CrashCase {
        scenario,
        command: UserCommand::Install,
        label: "no crash".into(),
        phase_at_crash: None,
        log_at_crash: 0,
    };
    let bad = check_at_rest(lab, &log, &case);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    log
}

/// Every injection point of every command of `scenario`, and for each, every
/// step of the resume after it (a second crash while recovering).
fn crash_scenario(scenario: Scenario) -> Counts {
    let lab = Lab::new(scenario);
    let reference = crash_free(&lab, scenario);
    let mut counts = Counts::default();
    for (index, &(command, free_code)) in scenario.commands().iter().enumerate() {
        let kinds: &[&'static str] = match command {
            UserCommand::Install => &["step", "chunk"],
            UserCommand::Commit => &["step"],
        };
        for &kind in kinds {
            let mut finished = false;
            for k in 1..=MAX_K {
                let spec = format!("{kind}:{k}");
                lab.restore();
                for &(earlier, code) in &scenario.commands()[..index] {
                    lab.run_command(earlier, None).expect_code(code);
                    lab.device.reboot();
                }
                let run = lab.run_command(command, Some(&spec));
                if !run.aborted_by_injection() {
                    // The command got past its last injection point.
                    if run.code != Some(free_code) || run.stderr.contains("panicked") {
                        counts.violations.push(format!(
                            "{} / {} / {spec}: completion differs from the crash-free run: {}",
                            scenario.name(),
                            command.name(),
                            run.describe()
                        ));
                    }
                    finished = true;
                    break;
                }
                *counts.points.entry((command.name(), kind)).or_default() += 1;
                let mut case = CrashCase {
                    scenario,
                    command,
                    label: spec.clone(),
                    phase_at_crash: lab.device.pending().map(|(phase, _)| phase),
                    log_at_crash: lab.device.script_log().len(),
                };
                // The power cut.
                lab.device.reboot();
                lab.save_checkpoint();
                counts.violations.extend(resume_and_settle(&lab, &case));
                counts
                    .violations
                    .extend(check_at_rest(&lab, &reference, &case));
                *counts.ended.entry(lab.device.artifact_name()).or_default() += 1;

                // A second crash, at each step of the resume.
                let mut resumed = false;
                for k2 in 1..=MAX_K {
                    lab.restore_from(&lab.checkpoint);
                    let resume_spec = format!("step:{k2}");
                    let r = lab.device.run(&["commit"], Some(&resume_spec));
                    if !r.aborted_by_injection() {
                        resumed = true;
                        break;
                    }
                    counts.resume_crashes += 1;
                    case.label = format!("{spec}, then {resume_spec} while resuming");
                    lab.device.reboot();
                    counts.violations.extend(resume_and_settle(&lab, &case));
                    counts
                        .violations
                        .extend(check_at_rest(&lab, &reference, &case));
                }
                assert!(
                    resumed,
                    "{} / {} / {spec}: the resume still crashes at step {MAX_K}",
                    scenario.name(),
                    command.name()
                );
            }
            assert!(
                finished,
                "{} / {} / {kind}: still crashing at K={MAX_K}",
                scenario.name(),
                command.name()
            );
        }
    }
    for kind in ["step", "chunk"] {
        assert!(
            counts.points.keys().any(|(_, k)| *k == kind),
            "{}: no {kind} injection point was hit; is the crash-injection feature on?",
            scenario.name()
        );
    }
    counts
}

#[test]
fn power_loss_at_every_injection_point() {
    let started = Instant::now();
    let scenarios = [
        Scenario::Success,
        Scenario::InstallFailure,
        Scenario::CommitFailure,
    ];
    let results: Vec<(Scenario, Counts)> = thread::scope(|s| {
        let handles: Vec<_> = scenarios
            .iter()
            .map(|&sc| (sc, s.spawn(move || crash_scenario(sc))))
            .collect();
        handles
            .into_iter()
            .map(|(sc, h)| match h.join() {
                Ok(c) => (sc, c),
                Err(e) => std::panic::resume_unwind(e),
            })
            .collect()
    });
    let total: u32 = results.iter().map(|(_, c)| c.total()).sum();
    let resume: u32 = results.iter().map(|(_, c)| c.resume_crashes).sum();
    let parts: Vec<String> = results.iter().map(|(sc, c)| c.summary(*sc)).collect();
    let mut ended: BTreeMap<&str, u32> = BTreeMap::new();
    for (_, c) in &results {
        for (name, n) in &c.ended {
            *ended.entry(name).or_default() += n;
        }
    }
    println!(
        "crash injection: {total} points ({}); {resume} second crashes while resuming; first crashes ended in {ended:?}; {:.1?}",
        parts.join("; "),
        started.elapsed()
    );
    let violations: Vec<&String> = results.iter().flat_map(|(_, c)| &c.violations).collect();
    assert!(
        violations.is_empty(),
        "{} violations:\n{}",
        violations.len(),
        violations
            .iter()
            .take(40)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
