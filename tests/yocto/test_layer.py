#!/usr/bin/env python3
"""Tests of meta-mender-rs's Python helpers, run outside BitBake
(scripts/check-layer): the mender-state-scripts class's install/deploy
logic, the partition layout, the feature checks, mender.conf generation and
the bootstrap Artifact."""
import json
import os
import stat
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "meta-mender-rs", "lib"))

from mender_rs import bootstrap, features, layout, menderconf, statescripts  # noqa: E402

NINE = ["Idle_Enter_10_log", "Sync_Leave_20", "Download_Error_99_x",
        "ArtifactInstall_Enter_01", "ArtifactReboot_Leave_50_check", "ArtifactCommit_Enter_00",
        "ArtifactRollback_Leave_10", "ArtifactRollbackReboot_Enter_05", "ArtifactFailure_Error_42_mail"]


def write(path, text="#!/bin/sh\necho hi >&2\n", mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


class StateScripts(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.t = self.tmp.name
        # the class's two default locations: ${S}/mender-state-scripts and ${B}/mender-state-scripts
        self.src = os.path.join(self.t, "S", "mender-state-scripts")
        self.build = os.path.join(self.t, "B", "mender-state-scripts")
        os.makedirs(self.src)
        os.makedirs(self.build)
        self.locations = "%s %s" % (self.src, self.build)
        self.rootfs = os.path.join(self.t, "D", "etc", "mender", "scripts")
        self.deploy = os.path.join(self.t, "deploy", "mender-state-scripts")

    def tearDown(self):
        self.tmp.cleanup()

    def test_good_names_land_where_they_belong(self):
        for i, n in enumerate(NINE):
            write(os.path.join(self.build if i % 2 else self.src, n))
        installed = statescripts.install(self.locations, self.rootfs)
        deployed = statescripts.deploy(self.locations, self.deploy)
        self.assertEqual(sorted(installed), ["Download_Error_99_x", "Idle_Enter_10_log", "Sync_Leave_20"])
        self.assertEqual(sorted(os.listdir(self.rootfs)), sorted(installed))
        self.assertEqual(sorted(os.listdir(self.deploy)), sorted(n for n in NINE if n.startswith("Artifact")))
        for d in (self.rootfs, self.deploy):
            for n in os.listdir(d):
                self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, n)).st_mode), 0o755, n)
        # nothing of the artifact's went into the rootfs and the other way round
        self.assertFalse(any(n.startswith("Artifact") for n in os.listdir(self.rootfs)))

    def test_scripts_in_subdirectories_and_the_same_file_twice(self):
        write(os.path.join(self.build, "sub", "Sync_Enter_01"))
        os.symlink(self.build, os.path.join(self.src, "link"))  # same files reached twice
        self.assertEqual(statescripts.install(self.locations, self.rootfs), ["Sync_Enter_01"])

    def test_bad_names_fail_naming_the_script(self):
        bad = ["Install_Enter_01", "ArtifactInstall_Start_01", "ArtifactInstall_Enter_1",
               "ArtifactInstall_Enter_ab", "ArtifactInstall_Enter_01_", "Idle_Enter", "README",
               "ArtifactInstall_Enter_01_has space", "idle_Enter_01", "ArtifactInstall_Enter_001"]
        for n in bad:
            with self.subTest(name=n):
                d = os.path.join(self.t, "bad-" + str(bad.index(n)))
                write(os.path.join(d, n))
                out = os.path.join(self.t, "out-" + str(bad.index(n)))
                for fn in (statescripts.install, statescripts.deploy):
                    with self.assertRaises(statescripts.BadScript) as cm:
                        fn(d, out)
                    self.assertIn("'%s'" % n, str(cm.exception))
                self.assertFalse(os.path.exists(out), "nothing is copied when a name is bad")

    def test_one_bad_name_stops_everything(self):
        write(os.path.join(self.build, "Idle_Enter_01"))
        write(os.path.join(self.build, "ArtifactInstall_Enter_01"))
        write(os.path.join(self.build, "Sync_Begin_01"))
        with self.assertRaises(statescripts.BadScript):
            statescripts.install(self.locations, self.rootfs)
        self.assertFalse(os.path.exists(self.rootfs))

    def test_missing_location_fails(self):
        with self.assertRaises(statescripts.BadScript) as cm:
            statescripts.install(self.locations + " " + os.path.join(self.t, "nope"), self.rootfs)
        self.assertIn("does not exist", str(cm.exception))

    def test_same_name_twice_fails(self):
        write(os.path.join(self.src, "Idle_Enter_01"), "a")
        write(os.path.join(self.build, "Idle_Enter_01"), "b")
        with self.assertRaises(statescripts.BadScript):
            statescripts.install(self.locations, self.rootfs)

    def test_empty_locations(self):
        self.assertEqual(statescripts.install(self.locations, self.rootfs), [])
        self.assertEqual(statescripts.deploy(self.locations, self.deploy), [])

    def test_version_file(self):
        statescripts.write_version(os.path.join(self.t, "rootfs"), "3")
        with open(os.path.join(self.t, "rootfs", "etc", "mender", "scripts", "version")) as f:
            self.assertEqual(f.read(), "3")

    def test_command_line(self):
        cli = [sys.executable, os.path.join(ROOT, "meta-mender-rs", "lib", "mender_rs", "statescripts.py")]
        write(os.path.join(self.build, "ArtifactCommit_Leave_90"))
        r = subprocess.run(cli + ["deploy", self.deploy, self.src, self.build], capture_output=True, text=True)
        self.assertEqual((r.returncode, r.stdout), (0, "ArtifactCommit_Leave_90\n"))
        write(os.path.join(self.build, "Commit_Leave_90"))
        r = subprocess.run(cli + ["deploy", self.deploy, self.src, self.build], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("state script 'Commit_Leave_90' doesn't have a valid name", r.stderr)

    def test_example_recipe_names(self):
        """The example layer's recipe uses all nine states with valid names."""
        with open(os.path.join(ROOT, "recipes", "recipes-mender", "example-state-scripts",
                               "example-state-scripts_1.0.bb")) as f:
            text = f.read()
        block = text.split('EXAMPLE_STATE_SCRIPTS = "', 1)[1].split('"', 1)[0]
        names = block.replace("\\", " ").split()
        self.assertEqual(sorted({n.split("_")[0] for n in names}), sorted(statescripts.STATES))
        for n in names:
            statescripts.destination(n)


class Layout(unittest.TestCase):
    def get(self, **kw):
        return {k: str(v) for k, v in kw.items()}.get

    def test_defaults(self):
        g = self.get(MENDER_FEATURES="mender-image mender-image-uefi mender-grub")
        self.assertEqual([layout.part_number(g, r) for r in ("boot", "a", "b", "swap", "data")], ["1", "2", "3", "", "4"])
        self.assertEqual(layout.table_type(g), "gpt")
        # 1024 MiB - 16 - 128 - 8 (start) - 4 * 8 (alignment), halved, 8 MiB aligned
        self.assertEqual(layout.rootfs_size_kb(g), 416 * 1024)

    def test_device_base(self):
        self.assertEqual(layout.device_base("/dev/mmcblk0"), "/dev/mmcblk0p")
        self.assertEqual(layout.device_base("/dev/sda"), "/dev/sda")
        self.assertEqual(layout.device_base("/dev/vda"), "/dev/vda")
        self.assertEqual(layout.device_base("/dev/nvme0n1"), "/dev/nvme0n1p")

    def test_no_boot_partition_and_swap_on_mbr(self):
        g = self.get(MENDER_BOOT_PART_SIZE_MB=0, MENDER_SWAP_PART_SIZE_MB=64, MENDER_FEATURES="mender-image-sd")
        self.assertEqual(layout.partitions(g), [("a", 1), ("b", 2), ("swap", 3), ("data", 4)])
        g = self.get(MENDER_SWAP_PART_SIZE_MB=64, MENDER_FEATURES="mender-image-sd")
        # five partitions on MBR: the fourth becomes the extended one, data is 6
        self.assertEqual(layout.partitions(g), [("boot", 1), ("a", 2), ("b", 3), ("swap", 5), ("data", 6)])
        g = self.get(MENDER_SWAP_PART_SIZE_MB=64, MENDER_FEATURES="mender-image-uefi")
        self.assertEqual(layout.part_number(g, "data"), "5")

    def test_uboot_env_on_the_device(self):
        g = self.get(MENDER_FEATURES="mender-uboot mender-image-sd", MENDER_UBOOT_ENV_STORAGE="device")
        self.assertEqual(layout.uboot_env_offsets(g), (8 << 20, 16 << 20, 8 << 20))
        self.assertEqual(layout.reserved_bootloader_space(g), 16 << 20)
        self.assertEqual(layout.reserved_bootloader_space(self.get(MENDER_FEATURES="mender-uboot")), 0)

    def test_too_small_and_too_big(self):
        with self.assertRaises(ValueError):
            layout.rootfs_size_kb(self.get(MENDER_STORAGE_TOTAL_SIZE_MB=150))
        self.assertIsNone(layout.check_rootfs_fits(1024 * 1024, 1024, "r.ext4"))
        msg = layout.check_rootfs_fits(1024 * 1024 + 1, 1024, "core-image.ext4")
        self.assertIn("core-image.ext4 is 1025 KiB, larger than the rootfs partition (1024 KiB", msg)

    def test_hex(self):
        self.assertEqual(layout.hexnum("2"), "2")
        self.assertEqual(layout.hexnum("11"), "B")


class Features(unittest.TestCase):
    def test_compute_and_check(self):
        f = features.compute("mender-grub mender-image mender-image-uefi mender-uboot mender-image-sd",
                             "mender-grub mender-image-uefi")
        self.assertEqual(f, ["mender-image", "mender-uboot", "mender-image-sd"])
        self.assertEqual(features.check(f), [])
        self.assertEqual(features.overrides(f), ":mender-image:mender-uboot:mender-image-sd")
        self.assertIn("unknown feature 'mender-foo'", features.check(["mender-foo"])[0])
        self.assertTrue(features.check(["mender-image-sd"]))  # needs mender-image
        self.assertTrue(features.check(["mender-grub", "mender-uboot"]))
        self.assertIn("not supported", features.check(["mender-ubi"])[0])


class MenderConf(unittest.TestCase):
    def test_split_and_merge(self):
        g = {"MENDER_SERVER_URL": "https://example.com", "MENDER_TENANT_TOKEN": "",
             "MENDER_UPDATE_POLL_INTERVAL_SECONDS": "1800", "MENDER_ROOTFS_PART_A": "/dev/vda2",
             "MENDER_ROOTFS_PART_B": "/dev/vda3", "MENDER_RS_BOOT_ENV_TYPE": "grub",
             "MENDER_RS_GRUB_ENV_DIR": "/boot/efi/grub-mender-grubenv",
             "MENDER_PERSISTENT_CONFIGURATION_VARS": "RootfsPartA RootfsPartB"}.get
        user = json.dumps({"serverurl": "https://old.example.com", "StateScriptTimeoutSeconds": 60})
        t, p, w = menderconf.generate(g, user, have_verify_key=True)
        self.assertEqual(p, {"RootfsPartA": "/dev/vda2", "RootfsPartB": "/dev/vda3"})
        self.assertEqual(t, {"ServerURL": "https://example.com", "UpdatePollIntervalSeconds": 1800,
                             "BootEnvType": "grub", "GrubEnvDir": "/boot/efi/grub-mender-grubenv",
                             "StateScriptTimeoutSeconds": 60,
                             "ArtifactVerifyKey": "/etc/mender/artifact-verify-key.pem"})
        self.assertEqual(len(w), 1)
        self.assertIn("ServerURL", w[0])

    def test_bad_integer(self):
        with self.assertRaises(ValueError):
            menderconf.generate({"MENDER_RETRY_POLL_INTERVAL_SECONDS": "5m"}.get)


class Appends(unittest.TestCase):
    def test_appends_change_nothing_without_mender_features(self):
        """yocto-check-layer's test_signatures adds each layer to a build that
        does not enable mender-rs: no task signature may change. Every
        assignment in the two layers' .bbappend files must carry a mender
        feature override (:mender-grub, :mender-client-install ...), and
        inherits must be conditional."""
        import re
        assign = re.compile(r"^([A-Za-z_][\w\-${}@.]*(?::[\w\-${}]+)*)(?:\[[\w\-]+\])?\s*(\?\?=|\?=|:=|\+=|=\+|\.=|=\.|=)")
        func = re.compile(r"^(?:python\s+)?([\w\-]+(?::[\w\-]+)*)\s*\(\)\s*\{")
        feature = re.compile(r":(?:%s)(?::|$)" % "|".join(re.escape(f) for f in features.IMPLEMENTED))
        found = 0
        for layer in ("meta-mender-rs", "recipes"):
            for top, _, files in os.walk(os.path.join(ROOT, layer)):
                for name in sorted(files):
                    if not name.endswith(".bbappend"):
                        continue
                    path = os.path.join(top, name)
                    with open(path) as f:
                        lines = f.read().replace("\\\n", " ").splitlines()
                    for line in lines:
                        line = line.strip()
                        m = assign.match(line) or func.match(line)
                        if m:
                            found += 1
                            self.assertTrue(feature.search(m.group(1)),
                                            "%s: '%s' applies without a mender feature" % (path, line))
                        elif line.startswith(("inherit ", "inherit_defer ", "require ", "include ")):
                            self.assertIn("${@", line, "%s: unconditional %s" % (path, line))
        self.assertGreater(found, 5)


class BootstrapArtifact(unittest.TestCase):
    """The command the image class runs, run here with the debug build of
    mender-rs, and the result read back by the reference mender-artifact."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.t = self.tmp.name
        self.image = os.path.join(self.t, "core-image.ext4")
        with open(self.image, "wb") as f:
            f.write(b"filesystem image" * 1000)
        self.vars = {"MENDER_ARTIFACT_NAME": "release-1", "MENDER_DEVICE_TYPES_COMPATIBLE": "board-a board-b",
                     "MENDER_ARTIFACT_PROVIDES": "data-partition.version:7", "MENDER_ARTIFACT_PROVIDES_GROUP": "fleet"}

    def tearDown(self):
        self.tmp.cleanup()

    def test_destination_is_in_the_data_partition_tree(self):
        self.assertEqual(bootstrap.destination("/r", "/data/mender"), "/r/data/mender/bootstrap.mender")
        with self.assertRaises(ValueError):
            bootstrap.destination("/r", "/var/lib/mender")

    def test_command(self):
        out = os.path.join(self.t, "bootstrap.mender")
        argv = bootstrap.command(self.vars.get, self.image, out)
        self.assertEqual(argv[:4], ["mender-rs", "artifact", "write", "bootstrap-artifact"])
        self.assertIn("rootfs-image.checksum:" + bootstrap.sha256_file(self.image), argv)
        self.assertEqual([argv[i + 1] for i, a in enumerate(argv) if a == "-t"], ["board-a", "board-b"])
        with self.assertRaises(ValueError):
            bootstrap.command({"MENDER_DEVICE_TYPES_COMPATIBLE": "x"}.get, self.image, out)
        binary = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug", "mender-rs")
        if not os.path.exists(binary):
            self.skipTest("no debug build of mender-rs at %s" % binary)
        subprocess.run([binary] + argv[1:], check=True)
        read = subprocess.run(["mender-artifact", "read", out], check=True, stdout=subprocess.PIPE, text=True)
        for want in ("Name: release-1", "Empty type", "rootfs-image.version: release-1",
                     "data-partition.version: 7", "Provides group: fleet"):
            self.assertIn(want, read.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=1)
