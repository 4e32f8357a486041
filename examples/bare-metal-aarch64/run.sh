#!/usr/bin/env bash
# Builds the bare-metal example, makes an encrypted qcow2 overlay on an encrypted base with
# qemu-img/qemu-io, boots the example on qemu-system-aarch64 (`virt`, -cpu max) with both files
# as virtio-blk disks, and checks that the guest unlocked the overlay with the armv8 backend,
# printed its timings, and found the SHA-256 of the range that the host computed.
#
#   run.sh                   the job plus the driver/fault self-tests; exits 0 when all pass
#   run.sh --corrupt-digest  passes the guest a digest with one byte changed and exits 0 only
#                            if the guest then FAILS with a digest mismatch (a test of the test)
#
# qemu-system-aarch64: $QEMU_SYSTEM_AARCH64, else one on PATH, else Debian's qemu-system-arm
# package unpacked (never installed: installing it would replace qemu-utils) into .cache/.
set -euo pipefail

mode=job
case "${1:-}" in
  "") ;;
  --corrupt-digest) mode=corrupt ;;
  *) echo "usage: $0 [--corrupt-digest]" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache="$repo/.cache/bare-metal-aarch64"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$cache"

say() { echo "[bare-metal] $*"; }
die() { echo "[bare-metal] FAIL: $*" >&2; exit 1; }
trap 'echo "[bare-metal] FAIL: line $LINENO: $BASH_COMMAND exited with status $?" >&2' ERR

# --- qemu-system-aarch64 -------------------------------------------------------------------
missing_libs() { ldd "$1" | awk '/not found/ {print $1}'; }

find_qemu() {
  if [[ -n "${QEMU_SYSTEM_AARCH64:-}" ]]; then echo "$QEMU_SYSTEM_AARCH64"; return; fi
  if command -v qemu-system-aarch64 >/dev/null; then command -v qemu-system-aarch64; return; fi
  local bin="$cache/root/usr/bin/qemu-system-aarch64"
  if [[ ! -x "$bin" ]]; then
    say "unpacking Debian's qemu-system-arm into $cache (not installing it)" >&2
    (
      cd "$cache"
      rm -f qemu-system-arm_*.deb
      apt-get download qemu-system-arm >/dev/null 2>&1 || { apt-get update -qq && apt-get download qemu-system-arm >/dev/null; }
      dpkg -x qemu-system-arm_*.deb root
    ) >&2
  fi
  if [[ -n "$(missing_libs "$bin")" ]]; then
    say "installing the shared libraries it needs" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      libfdt1 libcapstone4 libpmem1 librdmacm1 libibverbs1 libslirp0 libvdeplug2 >/dev/null 2>&1 ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
          libfdt1 libcapstone4 libpmem1 librdmacm1 libibverbs1 libslirp0 libvdeplug2 >/dev/null; }
    local still
    still=$(missing_libs "$bin")
    [[ -z "$still" ]] || die "qemu-system-aarch64 still misses: $still"
  fi
  echo "$bin"
}

qemu=$(find_qemu)
say "$("$qemu" --version | head -1)"

# --- the program -----------------------------------------------------------------------------
(cd "$here" && cargo build --release --quiet)
target_dir=$(cd "$here" && cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
kernel="$target_dir/aarch64-unknown-none/release/qluks-bare-metal-aarch64"
[[ -f "$kernel" ]] || die "no binary at $kernel"
say "binary: $kernel, $(stat -c %s "$kernel") bytes (stripped ELF)"
size "$kernel" | sed 's/^/[bare-metal]   /'

# --- the disks -------------------------------------------------------------------------------
# Deterministic data: an AES-CTR keystream of a fixed key, so every byte differs from its
# neighbours and a misplaced or mis-decrypted sector cannot go unnoticed.
stream() { head -c "$2" /dev/zero | openssl enc -aes-128-ctr -nosalt -K "$1" -iv 00000000000000000000000000000000; }
stream 000102030405060708090a0b0c0d0e0f $((12 << 20)) >"$work/base.data"
stream f0e0d0c0b0a090807060504030201000 $((1 << 20)) >"$work/overlay.data"

base_secret=base-secret-Ab3
overlay_secret=overlay-secret-Xy9
secrets=(--object "secret,id=s0,data=$base_secret" --object "secret,id=s1,data=$overlay_secret")
# iter-time: PBKDF2 counts calibrated for 10 ms on the host (qemu-img's default is 2 s, which
# would be minutes under emulation); the guest still runs the full LUKS unlock.
luks() { echo "encrypt.format=luks,encrypt.key-secret=$1,encrypt.iter-time=10"; }

cd "$work"
# The base: 12 MiB, fully written.
qemu-img create -q -f qcow2 "${secrets[@]}" -o "$(luks s0)" base.qcow2 12M
qemu-io "${secrets[@]}" --image-opts "driver=qcow2,file.filename=base.qcow2,encrypt.key-secret=s0" \
  -c "write -q -s base.data 0 12M" >/dev/null
# The overlay: 16 MiB (longer than its base: the tail reads as zeros), its own passphrase,
# written at partial, unaligned ranges (copy-on-write of partial clusters from the base), with
# a zeroed range that hides base data.
qemu-img create -q -f qcow2 -u -b base.qcow2 -F qcow2 "${secrets[@]}" -o "$(luks s1)" overlay.qcow2 16M
overlay_opts="driver=qcow2,file.filename=overlay.qcow2,encrypt.key-secret=s1,backing.encrypt.key-secret=s0"
qemu-io "${secrets[@]}" --image-opts "$overlay_opts" \
  -c "write -q -s overlay.data 4194321 300000" \
  -c "write -q -P 0x5a 7340031 65536" \
  -c "write -q -z 9437179 200000" \
  -c "write -q -s overlay.data 11534336 1048576" \
  -c "write -q -P 0xc3 14680065 4097" >/dev/null
qemu-img convert "${secrets[@]}" --image-opts "$overlay_opts" -O raw overlay.raw

# sha256_of FILE OFFSET LENGTH
sha256_of() {
  dd if="$1" bs=1M iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none | sha256sum | cut -d' ' -f1
}

# The range the guest reads: from inside the base-only area, across every overlay write, past
# the end of the base into the overlay-only tail; unaligned at both ends.
offset=$((3 << 20 | 1000))
length=$(((15 << 20) + 333 - offset))
expected=$(sha256_of overlay.raw "$offset" "$length")
say "range: $length bytes at $offset, expected sha256 $expected"

# --- running the guest -----------------------------------------------------------------------
# run_guest LOG APPEND [extra qemu args...]: boots the program; returns QEMU's exit status (the
# guest's semihosting exit status, or 124 on timeout).
run_guest() {
  local log=$1 append=$2
  shift 2
  local status=0
  timeout 300 "$qemu" -M virt -cpu max -m 128M -nographic -nodefaults -no-reboot \
    -semihosting-config enable=on,target=native \
    -kernel "$kernel" -append "$append" \
    -drive "if=none,id=overlay,file=overlay.qcow2,format=raw,readonly=on" \
    -device virtio-blk-device,drive=overlay,serial=overlay.qcow2 \
    -drive "if=none,id=base,file=base.qcow2,format=raw,readonly=on" \
    -device virtio-blk-device,drive=base,serial=base.qcow2 \
    "$@" </dev/null >"$log" 2>&1 || status=$?
  sed 's/^/[guest] /' "$log"
  return "$status"
}

job_args="disk=overlay.qcow2 passphrase=$overlay_secret backing_passphrase=$base_secret offset=$offset length=$length"
modern=(-global virtio-mmio.force-legacy=false)

if [[ $mode == corrupt ]]; then
  # Change one byte (the 17th) of the expected digest.
  byte=${expected:32:2}
  flipped=$(printf '%02x' $((0x$byte ^ 0x01)))
  wrong="${expected:0:32}$flipped${expected:34}"
  say "corrupted expected digest: $wrong"
  status=0
  run_guest job.log "$job_args sha256=$wrong" "${modern[@]}" || status=$?
  ((status != 0)) || die "the guest accepted a wrong digest (exit 0)"
  grep -q '^DIGEST MISMATCH' job.log || die "the guest failed (status $status) but not with a digest mismatch"
  say "PASS: the guest refused the corrupted digest (exit status $status)"
  exit 0
fi

# Self-tests of the platform code, each on its own: the driver over the legacy transport on
# the raw file bytes (no qluks involved), then a data abort, a stack overflow and a panic, which
# must be reported and end the run with their own non-zero statuses.
raw_offset=12345
raw_length=$((2 << 20))
raw_expected=$(sha256_of overlay.qcow2 "$raw_offset" "$raw_length")
status=0
run_guest raw.log "source=raw disk=overlay.qcow2 offset=$raw_offset length=$raw_length sha256=$raw_expected" || status=$?
((status == 0)) && grep -q '^digest match: yes' raw.log && grep -q 'legacy transport' raw.log ||
  die "raw read over the legacy virtio-mmio transport (status $status)"
say "PASS: raw read over legacy virtio-mmio"

status=0
run_guest abort.log "$job_args sha256=$expected fault=data-abort" || status=$?
((status == 3)) && grep -q '^EXCEPTION: synchronous: EC=0x25 (data abort)' abort.log ||
  die "a data abort was not reported with exit status 3 (status $status)"
status=0
run_guest overflow.log "$job_args sha256=$expected fault=stack-overflow" || status=$?
((status == 3)) && grep -q '^EXCEPTION: stack overflow' overflow.log ||
  die "a stack overflow was not caught by the guard (status $status)"
status=0
run_guest panic.log "$job_args sha256=$expected fault=panic" || status=$?
((status == 4)) && grep -q '^PANIC: ' panic.log || die "a panic was not reported with exit status 4 (status $status)"
say "PASS: exceptions and panics are reported and fail the run"

# A wrong passphrase for the base must stop the open with an error naming the passphrase.
status=0
run_guest wrong.log "${job_args/backing_passphrase=$base_secret/backing_passphrase=not-the-secret} sha256=$expected" ||
  status=$?
((status == 2)) && grep -qi '^ERROR: open: backing layer 1: .*passphrase' wrong.log ||
  die "a wrong base passphrase was not refused (status $status)"
say "PASS: a wrong base passphrase is refused"

# The job.
status=0
run_guest job.log "$job_args sha256=$expected" "${modern[@]}" || status=$?
((status == 0)) || die "the guest exited with status $status"
grep -q 'modern transport' job.log || die "the disks were not on the modern virtio-mmio transport"
grep -q '^hal backend: armv8$' job.log || die "the unlock did not run on the armv8 backend"
grep -q '^unlock time: [0-9]' job.log || die "no unlock time"
grep -q '^read time: [0-9]' job.log || die "no read time"
grep -q "^sha256: $expected\$" job.log || die "the guest's digest is not the host's"
grep -q '^digest match: yes$' job.log || die "no digest match"
say "PASS: $(grep -h '^unlock time' job.log); $(grep -h '^read time' job.log)"

# The same job on the portable backend: it must give the same digest, and shows what the ARMv8
# backend gains, measured in the same run (under emulation, so the ratio is QEMU's, not a CPU's).
status=0
run_guest soft.log "$job_args sha256=$expected backend=soft" "${modern[@]}" || status=$?
((status == 0)) && grep -q '^hal backend: soft$' soft.log && grep -q '^digest match: yes$' soft.log ||
  die "the job on the soft backend (status $status)"
ms() { grep -h "^$1 time: " "$2" | sed 's/^[a-z]* time: \([0-9.]*\) ms.*/\1/'; }
say "PASS: soft backend too; unlock $(ms unlock soft.log) ms vs armv8 $(ms unlock job.log) ms," \
  "read $(ms read soft.log) ms vs armv8 $(ms read job.log) ms"
