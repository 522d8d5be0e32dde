#!/bin/sh
# Writes small, good seed inputs for the fuzz targets into
# fuzz/corpus/<target> (which git ignores): all targets, or those named.
#
#   ./fuzz/make-seeds.sh                     # every target
#   ./fuzz/make-seeds.sh config uboot_env    # just these
#
# artifact_reader: artifacts written by mender-rs; the signed ones use
# fuzz/seed-key.pem, whose public half is embedded in the target, so the
# fuzzer starts from signatures it can verify. uboot_env and grub_env:
# environments written by fw_setenv and grub-editenv (skipped with a note
# when the tool is missing). The first byte of each seed of the other
# targets selects the parser, as the target's documentation says.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
key=$here/seed-key.pem
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# seed TARGET NAME SELECTOR: the selector byte (octal escape for printf)
# followed by stdin, as corpus/TARGET/NAME.
seed() {
    mkdir -p "$here/corpus/$1"
    { printf "$3"; cat; } >"$here/corpus/$1/$2"
}

artifact_reader() {
out=$here/corpus/artifact_reader
mkdir -p "$out"

cargo build --quiet --manifest-path "$root/Cargo.toml" --bin mender-rs
mender() {
    cargo run --quiet --manifest-path "$root/Cargo.toml" --bin mender-rs -- "$@"
}

printf 'a small root file system image\n' >"$work/rootfs.ext4"
printf 'first payload file\n' >"$work/a.txt"
printf '{"k":"v"}' >"$work/b.json"
: >"$work/empty.bin"
printf '{"dest_dir":"/opt","n":[1,"x"]}' >"$work/meta.json"
printf '#!/bin/sh\nexit 0\n' >"$work/ArtifactInstall_Enter_01"
printf '#!/bin/sh\ntrue\n' >"$work/ArtifactCommit_Leave_50_log"

mender artifact write rootfs-image --compression gzip \
    -t qemux86-64 -n seed-rootfs-gzip -f "$work/rootfs.ext4" \
    -s "$work/ArtifactInstall_Enter_01" -o "$out/rootfs-gzip.mender"
mender artifact write rootfs-image --compression none \
    -t qemux86-64 -t beaglebone -n seed-rootfs-none -f "$work/rootfs.ext4" \
    -k "$key" -o "$out/rootfs-none-signed.mender"
mender artifact write module-image --compression xz \
    -t qemux86-64 -n seed-module-xz -T single-file \
    -f "$work/a.txt" -f "$work/b.json" -f "$work/empty.bin" -m "$work/meta.json" \
    -p app.version:1.0 -d app.channel:stable \
    -k "$key" -o "$out/module-xz-signed.mender"
mender artifact write module-image --compression zstd \
    -t qemux86-64 -n seed-module-zstd -T script \
    -f "$work/a.txt" -s "$work/ArtifactCommit_Leave_50_log" \
    -o "$out/module-zstd.mender"
mender artifact write module-image --compression gzip \
    -t qemux86-64 -n seed-module-nofiles -T noop -g group-a -G group-a \
    -k "$key" -o "$out/module-nofiles-signed.mender"

ls -l "$out"
}

# First byte: even = JSON, odd = TOML ('0' and '1').
config() {
    seed config full.json 0 <<'X'
{
  "ServerURL": "https://hosted.mender.io/",
  "TenantToken": " token ",
  "Servers": null,
  "UpdatePollIntervalSeconds": 1800,
  "InventoryPollIntervalSeconds": 28800,
  "RetryPollIntervalSeconds": 300,
  "RetryPollCount": 3,
  "StateScriptTimeoutSeconds": 0,
  "ModuleTimeoutSeconds": 4294967295,
  "RootfsPartA": "/dev/mmcblk0p2",
  "RootfsPartB": "/dev/mmcblk0p3",
  "ArtifactVerifyKeys": ["/etc/mender/a.pem", "/etc/mender/b.pem"],
  "HttpsClient": {"Certificate": "/c.pem", "Key": "pkcs11:x", "SSLEngine": "e"},
  "Security": {"AuthPrivateKey": "/k.pem"},
  "DBus": {"Enabled": false},
  "BootEnvType": "grub",
  "GrubEnvDir": "/boot/grub",
  "UpdateControlMapExpirationTimeSeconds": 7200,
  "RebootCommand": "systemctl reboot",
  "DeviceKeyType": "ed25519",
  "RetryDownloadCount": 5,
  "Unknown": [1, 2.5, {"x": null}]
}
X
    seed config servers.json 0 <<'X'
{"Servers": [{"ServerURL": "a.example"}, {"serverurl": "http://b.example//"}], "ArtifactVerifyKey": "/k", "SkipVerify": true}
X
    seed config full.toml 1 <<'X'
ServerURL = "hosted.mender.io"
ModuleTimeoutSeconds = 99
ArtifactVerifyKeys = ["/a.pem"]
BootEnvType = "uboot"
BootEnvConfig = "/etc/fw_env.config"
When = 1979-05-27T07:32:00Z

[DBus]
Enabled = false

[HttpsClient]
Certificate = "/c.pem"
Key = "/k.pem"

[[Servers]]
ServerURL = "x"
X
}

# First byte: even = a map document, odd = the maps file.
control_map() {
    id=01234567-89ab-cdef-0123-456789abcdef
    seed control_map map.json 0 <<X
{"id": "$id", "priority": 3, "states": {"ArtifactInstall_Enter": {"action": "pause"}, "ArtifactReboot_Enter": {"action": "force_continue", "on_map_expire": "fail", "on_action_executed": "continue"}, "ArtifactCommit_Enter": null}}
X
    seed control_map map-minimal.json 0 <<X
{"id": "$id"}
X
    seed control_map maps-file.json 1 <<X
{"schema": 1, "boot_id": "6f0e5f8e-1d1c-4c55-9a53-000000000000", "maps": [
 {"id": "$id", "priority": -10, "states": {"ArtifactCommit_Enter": {"action": "fail", "on_map_expire": "continue", "on_action_executed": "fail"}},
  "source": "device", "stamped_ms": 1000, "expires_ms": 601000, "expired": false},
 {"id": "$id", "priority": 10, "states": {"ArtifactInstall_Enter": {"action": "pause", "on_map_expire": "fail", "on_action_executed": "continue"}},
  "source": "server", "stamped_ms": 5, "expires_ms": 7, "expired": true}]}
X
    if [ -r /proc/sys/kernel/random/boot_id ]; then
        boot=$(cat /proc/sys/kernel/random/boot_id)
        seed control_map maps-file-this-boot.json 1 <<X
{"schema": 1, "boot_id": "$boot", "maps": [{"id": "$id", "priority": 0, "states": {"ArtifactReboot_Enter": {"action": "pause", "on_map_expire": "fail", "on_action_executed": "pause"}}, "source": "server", "stamped_ms": 0, "expires_ms": 18446744073709551615, "expired": false}]}
X
    fi
}

# First byte: 0 = fw_env.config text, 1 = one copy, 2 = two copies, bit 3
# = the target fixes the CRCs (the seeds' CRCs are right already).
uboot_env() {
    seed uboot_env fw_env.config '\000' <<'X'
# device  offset  size  sector-size  sectors
/dev/mmcblk0  0x400000  0x4000
/dev/mmcblk0  0x800000  0x4000  0x200 0x20  # redundant
X
    seed uboot_env fw_env-octal.config '\000' <<'X'
/dev/mtd0 0100 1000
X
    if ! command -v fw_setenv >/dev/null; then
        echo "fw_setenv missing: no binary U-Boot seeds" >&2
        return
    fi
    for copies in 1 2; do
        env=$work/uboot-$copies.env
        cfg=$work/fw_env-$copies.config
        head -c $((copies * 512)) /dev/zero >"$env"
        echo "$env 0x0 0x200" >"$cfg"
        [ "$copies" = 2 ] && echo "$env 0x200 0x200" >>"$cfg"
        printf 'bootcmd=run mender_setup; boot\nbootcount=0\nmender_boot_part=2\nupgrade_available=0\n' >"$work/defaults"
        fw_setenv -c "$cfg" -f "$work/defaults" bootcount 1
        fw_setenv -c "$cfg" -f "$work/defaults" mender_boot_part_hex 2
        seed uboot_env "fw_setenv-$copies" "\\00$copies" <"$env"
    done
}

# First byte: 0 = both copies, 1 = copy 1, 2 = copy 2, 3 = copy 1 with
# copy 2's lock at editing=1.
grub_env() {
    if ! command -v grub-editenv >/dev/null; then
        echo "grub-editenv missing: no GRUB seeds" >&2
        return
    fi
    env=$work/grubenv
    grub-editenv "$env" create
    grub-editenv "$env" set mender_boot_part=2 mender_boot_part_hex=2 \
        upgrade_available=1 bootcount=0 'multi=a\b
c'
    for s in 0 1 2 3; do
        seed grub_env "grub-editenv-$s" "\\00$s" <"$env"
    done
}

server_reply() {
    id=01234567-89ab-cdef-0123-456789abcdef
    seed server_reply next.json '' <<X
{"id": "$id", "artifact": {"artifact_name": "release-2", "source": {"uri": "https://s3.example/a?X-Amz=1", "expire": "2026-01-01T00:00:00Z"}, "device_types_compatible": ["qemux86-64", "beaglebone"]}}
X
    seed server_reply next-map.json '' <<X
{"id": "$id", "artifact": {"artifact_name": "r", "source": {"uri": "u"}, "device_types_compatible": ["d"]}, "update_control_map": {"id": "$id", "priority": 1, "states": {"ArtifactReboot_Enter": {"action": "pause"}}}}
X
    seed server_reply next-missing.json '' <<X
{"id": "$id", "artifact": {"artifact_name": "r", "source": {}}}
X
    seed server_reply error.json '' <<'X'
{"error": "device not authorized", "request_id": "x"}
X
    seed server_reply text '' <<'X'
<html><body>502 Bad Gateway</body></html>
X
}

if [ $# = 0 ]; then
    set -- artifact_reader config control_map uboot_env grub_env server_reply
fi
for target; do
    case $target in
    artifact_reader | config | control_map | uboot_env | grub_env | server_reply) "$target" ;;
    *)
        echo "unknown target $target" >&2
        exit 2
        ;;
    esac
done
