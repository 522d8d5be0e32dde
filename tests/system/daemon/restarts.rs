//! Restarts at every persisted step of a deployment.

use super::*;

/// Kills the daemon at its K-th persisted step (crash injection), for
/// every K of the process that starts a deployment and of the process
/// after the reboot, on the success path and on a path that fails the
/// commit and rolls back; checks that each deployment ends with exactly
/// one final status and a device in a known state.
#[test]
fn a_restart_at_every_persisted_step_gives_exactly_one_final_status() {
    if !cfg!(feature = "crash-injection") {
        eprintln!("skipped: needs --features crash-injection");
        return;
    }
    // (which daemon start crashes, the failing artifact script)
    let families: [(u32, Option<&str>); 4] = [
        (1, None),
        (2, None),
        (2, Some("ArtifactCommit_Enter_01")),
        // After the reboot back into the old software.
        (3, Some("ArtifactCommit_Enter_01")),
    ];
    let mut runs = 0;
    for (start, failing) in families {
        let mut k = 1;
        loop {
            assert!(k <= 40, "more than 40 persisted steps?");
            let server = MenderServer::start();
            let mut m = managed(&server);
            let name = format!("release-s{start}-k{k}");
            let scripts: Vec<(&str, i32)> = failing.iter().map(|f| (*f, 1)).collect();
            let artifact = m.dev.write_rootfs_artifact(&name, 256 << 10, &scripts, &[]);
            let dep = server.add_deployment(&artifact, &name, &[DEVICE_TYPE]);
            m.crash_at(start, &format!("step:{k}"));
            let what = format!("start {start}, step {k}, failing {failing:?}");
            assert!(
                m.run_until(
                    &server,
                    Duration::from_secs(90),
                    final_status_of(dep.clone())
                ),
                "{what}: {}",
                m.log_tail()
            );
            // Give a resend (state not cleared yet) its chance.
            m.run_until(&server, Duration::from_secs(2), |_| false);
            let dev_id = m.device_id(&server);
            let finals = accepted_finals(&server, &dev_id, &dep);
            assert_eq!(finals.len(), 1, "{what}: {finals:?}\n{}", m.log_tail());
            let env = m.dev.env();
            let shown = m.dev.show_artifact();
            match finals[0].as_str() {
                "success" => {
                    assert!(failing.is_none(), "{what}");
                    assert_eq!(shown, name, "{what}");
                    assert_eq!(env["mender_boot_part"], "3", "{what}");
                }
                _ => {
                    assert_eq!(env["mender_boot_part"], "2", "{what}: {}", m.log_tail());
                    assert_ne!(shown, name, "{what}");
                }
            }
            assert_eq!(env["upgrade_available"], "0", "{what}");
            runs += 1;
            let stderr = fs::read_to_string(m.dev.path("daemon.stderr")).unwrap_or_default();
            eprintln!("{what}: {} after {} starts", finals[0], m.starts);
            if !stderr.contains("crash injection") {
                // K is past the last step of that process.
                assert!(k > 2, "{what}: too few steps");
                break;
            }
            k += 1;
        }
    }
    eprintln!("{runs} crash runs");
}
