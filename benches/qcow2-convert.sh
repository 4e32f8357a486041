#!/usr/bin/env bash
# `qluks convert -O raw` against `qemu-img convert -O raw` on a fully written 1 GiB qcow2
# (64 KiB clusters), LUKS aes-256-xts and its unencrypted twin, output to /dev/shm.
#
# Usage: benches/qcow2-convert.sh [REPEATS] [WORKDIR]   (defaults: 3, a fresh temp directory)
# Needs a release build (cargo build --release), qemu-img and qemu-io. Each repeat runs qemu-img
# then qluks on the same input, so both see the same machine load; prints every time, the
# medians and their ratio, the outputs' equality, and the decrypted read throughput: `qluks
# compare` of an encrypted twin with a 10 ms keyslot, with itself, reads and decrypts it twice (2 GiB) through
# reused 4 MiB buffers and writes nothing; wall clock and CPU time (user + sys).
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-3}
work=${2:-$(mktemp -d)}
qluks=$(realpath "${QLUKS:-${CARGO_TARGET_DIR:-target}/release/qluks}")
[[ -x $qluks ]] || { echo "no $qluks: run cargo build --release first" >&2; exit 1; }
out=/dev/shm/qluks-bench-$$
mkdir -p "$work" "$out"
trap 'rm -rf "$out"' EXIT
cd "$work"

secret=(--object secret,id=sec0,data=pw)
enc_opts=driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=sec0
if [[ ! -f enc.qcow2 ]]; then
  qemu-img create -q -f qcow2 "${secret[@]}" \
    -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.cipher-alg=aes-256,cluster_size=64k enc.qcow2 1G
  qemu-io "${secret[@]}" --image-opts "$enc_opts" -c 'write -P 0x5a 0 1G' >/dev/null
  qemu-img create -q -f qcow2 -o cluster_size=64k plain.qcow2 1G
  qemu-io -f qcow2 -c 'write -P 0x5a 0 1G' plain.qcow2 >/dev/null
fi
# The read-throughput twin: the same data with a 10 ms keyslot, so that the two unlocks of
# `compare` (2 s each at QEMU's default iter-time) do not swamp the 2 GiB read.
if [[ ! -f enc-fast.qcow2 ]]; then
  qemu-img create -q -f qcow2 "${secret[@]}" -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 \
    -o encrypt.cipher-alg=aes-256,cluster_size=64k enc-fast.qcow2 1G
  qemu-io "${secret[@]}" --image-opts driver=qcow2,file.filename=enc-fast.qcow2,encrypt.key-secret=sec0 \
    -c 'write -P 0x5a 0 1G' >/dev/null
fi
printf pw >pw.txt

ms() { local s; s=$(date +%s%N); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; echo $((($(date +%s%N) - s) / 1000000)); }
# "WALL_MS CPU_MS" of a command (CPU = user + sys of all its threads).
timed() {
  /usr/bin/time -o "$out/time" -f '%e %U %S' "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
  awk '{print int($1 * 1000), int(($2 + $3) * 1000)}' "$out/time"
}
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

declare -a qe le qp lp rd cpu qec lec qpc lpc
for ((i = 0; i < repeats; i++)); do
  rm -f "$out"/*
  read -r w c < <(timed qemu-img convert "${secret[@]}" --image-opts "$enc_opts" -O raw "$out/qemu-enc.raw"); qe+=("$w"); qec+=("$c")
  read -r w c < <(timed "$qluks" convert --passphrase-file pw.txt -O raw enc.qcow2 "$out/qluks-enc.raw"); le+=("$w"); lec+=("$c")
  cmp -s "$out/qemu-enc.raw" "$out/qluks-enc.raw" || { echo "encrypted outputs differ" >&2; exit 1; }
  rm -f "$out"/*
  read -r w c < <(timed qemu-img convert -O raw plain.qcow2 "$out/qemu-plain.raw"); qp+=("$w"); qpc+=("$c")
  read -r w c < <(timed "$qluks" convert -O raw plain.qcow2 "$out/qluks-plain.raw"); lp+=("$w"); lpc+=("$c")
  cmp -s "$out/qemu-plain.raw" "$out/qluks-plain.raw" || { echo "plain outputs differ" >&2; exit 1; }
  rd+=("$(ms "$qluks" compare --passphrase-file pw.txt --second-passphrase-file pw.txt enc-fast.qcow2 enc-fast.qcow2)")
  cpu+=("$( { /usr/bin/time -f '%U %S' "$qluks" compare --passphrase-file pw.txt --second-passphrase-file pw.txt \
    enc-fast.qcow2 enc-fast.qcow2 >/dev/null; } 2>&1 | awk '{print int(($1 + $2) * 1000)}')")
done
rm -f "$out"/*
me=$(median "${qe[@]}"); ml=$(median "${le[@]}"); mp=$(median "${qp[@]}"); mlp=$(median "${lp[@]}"); mr=$(median "${rd[@]}"); mc=$(median "${cpu[@]}")
echo "LUKS aes-256-xts  qemu-img ${qe[*]} ms | qluks ${le[*]} ms | medians $me / $ml ms: qluks $(awk "BEGIN {printf \"%.2f\", $me / $ml}")x"
echo "unencrypted       qemu-img ${qp[*]} ms | qluks ${lp[*]} ms | medians $mp / $mlp ms: qluks $(awk "BEGIN {printf \"%.2f\", $mp / $mlp}")x"
echo "decrypted read (2 GiB): wall ${rd[*]} ms, median $(awk "BEGIN {printf \"%.2f\", 2.147483648 / ($mr / 1000)}") GB/s; CPU ${cpu[*]} ms, median $(awk "BEGIN {printf \"%.2f\", 2.147483648 / ($mc / 1000)}") GB/s per CPU-second"
echo "CPU (user+sys) LUKS: qemu-img ${qec[*]} | qluks ${lec[*]} ms: $(awk "BEGIN {printf \"%.2f\", $(median "${qec[@]}") / $(median "${lec[@]}")}")x; unencrypted: qemu-img ${qpc[*]} | qluks ${lpc[*]} ms: $(awk "BEGIN {printf \"%.2f\", $(median "${qpc[@]}") / $(median "${lpc[@]}")}")x"
echo "outputs byte-identical; load: $(cut -d' ' -f1-3 /proc/loadavg)"
