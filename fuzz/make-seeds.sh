#!/bin/sh
# Writes a few small, good artifacts as the seed corpus of the
# artifact_reader fuzz target (default: fuzz/corpus/artifact_reader, which
# git ignores). The signed ones use fuzz/seed-key.pem, whose public half is
# embedded in the fuzz target, so the fuzzer starts from signatures it can
# verify.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${1:-$here/corpus/artifact_reader}
key=$here/seed-key.pem

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

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
