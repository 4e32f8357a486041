#!/usr/bin/env bash
# Builds the UEFI example three times (x86_64 soft-float: soft backend; x86_64 with SSE: AES-NI;
# aarch64: ARMv8 AES), makes the disks with the real tools, and boots OVMF (x86_64, q35) and
# AAVMF (aarch64, virt) under TCG. The firmware's shell runs the program from a vvfat ESP
# through startup.nsh; the program's status reaches the host through isa-debug-exit (x86) or
# semihosting (Arm).
#
#   Job A: a GPT disk whose partition "qluks-data" is a LUKS2 volume made by cryptsetup
#          (offline `reencrypt --encrypt`, argon2id, 2 lanes): unlock, read a range, SHA-256.
#   Job B: an encrypted qcow2 overlay on an encrypted qcow2 base (different passphrases), both
#          files in \qluks on the ESP: open the chain, read a range, SHA-256.
#
# Checked: both jobs on both architectures give the host's digest; a wrong passphrase is refused;
# a wrong expected digest fails the run; an Argon2 claim above argon2-max-mib is refused; a
# passphrase typed on the console (no echo, Backspace) unlocks. Prints .efi sizes, the deepest
# stack use, and unlock/read times per backend (under TCG: QEMU's speed, not a CPU's).
#
# QEMU system emulators and firmware: Debian's qemu-system-x86, qemu-system-arm,
# qemu-system-common, ovmf and qemu-efi-aarch64, unpacked into .cache/uefi (never installed:
# installing qemu-system-* would replace qemu-utils 10).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache="$repo/.cache/uefi"
root="$cache/root"
# UEFI_WORK=DIR keeps the disks and the logs there (for a look after a failure).
if [[ -n "${UEFI_WORK:-}" ]]; then
  work=$UEFI_WORK
  rm -rf "$work" && mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$cache"

say() { echo "[uefi] $*"; }
die() { echo "[uefi] FAIL: $*" >&2; exit 1; }
trap 'echo "[uefi] FAIL: line $LINENO: $BASH_COMMAND exited with status $?" >&2' ERR

# --- tools -----------------------------------------------------------------------------------
packages=(qemu-system-x86 qemu-system-arm qemu-system-common ovmf qemu-efi-aarch64)
if [[ ! -x "$root/usr/bin/qemu-system-x86_64" || ! -x "$root/usr/bin/qemu-system-aarch64" ||
  ! -f "$root/usr/share/OVMF/OVMF_CODE_4M.fd" || ! -f "$root/usr/share/AAVMF/AAVMF_CODE.fd" ]]; then
  say "unpacking ${packages[*]} into $cache (not installing them)"
  (
    cd "$cache"
    rm -f ./*.deb
    apt-get download "${packages[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "${packages[@]}" >/dev/null; }
    for deb in ./*.deb; do dpkg -x "$deb" root; done
    rm -f ./*.deb
  )
fi
missing_libs() { ldd "$1" | awk '/not found/ {print $1}'; }
if [[ -n "$(missing_libs "$root/usr/bin/qemu-system-x86_64")$(missing_libs "$root/usr/bin/qemu-system-aarch64")" ]]; then
  say "installing the shared libraries the emulators need"
  libs=(libfdt1 libcapstone4 libpmem1 librdmacm1 libibverbs1 libslirp0 libvdeplug2 libaio1 liburing2 libnuma1)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${libs[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${libs[@]}" >/dev/null; }
  still="$(missing_libs "$root/usr/bin/qemu-system-x86_64") $(missing_libs "$root/usr/bin/qemu-system-aarch64")"
  [[ -z "${still// /}" ]] || die "the emulators still miss: $still"
fi
if ! command -v sfdisk >/dev/null; then
  say "installing fdisk (sfdisk writes the test disk's GPT)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fdisk >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fdisk >/dev/null; }
fi
for t in cryptsetup qemu-img qemu-io openssl; do command -v "$t" >/dev/null || die "$t is missing"; done
qemu_x86="$root/usr/bin/qemu-system-x86_64"
qemu_arm="$root/usr/bin/qemu-system-aarch64"
# qemu-system-x86's TCG accelerator is a module of qemu-system-common.
export QEMU_MODULE_DIR="$root/usr/lib/x86_64-linux-gnu/qemu"
say "$("$qemu_x86" --version | head -1); $("$qemu_arm" --version | head -1)"

# --- the program, three builds ---------------------------------------------------------------
rustup target add x86_64-unknown-uefi aarch64-unknown-uefi >/dev/null 2>&1 || true
rustup component add rust-src --toolchain nightly >/dev/null 2>&1 || true
cd "$here"
cargo build --release --quiet --target x86_64-unknown-uefi
cargo build --release --quiet --target aarch64-unknown-uefi
# x86_64-unknown-uefi is soft-float: no SSE code, so the hal has only its soft backend there.
# The same target with SSE enabled (firmware runs with SSE on; the MS x64 ABI preserves
# xmm6-15 across calls and firmware interrupt handlers save the FPU state) gets AES-NI and VAES;
# it needs core rebuilt for it (nightly, rust-src).
cargo +nightly build --release --quiet -Zjson-target-spec -Zbuild-std=core,compiler_builtins \
  -Zbuild-std-features=compiler-builtins-mem --target "$here/x86_64-unknown-uefi-sse.json"
efi_x86_soft="$here/target/x86_64-unknown-uefi/release/qluks-uefi.efi"
efi_x86_sse="$here/target/x86_64-unknown-uefi-sse/release/qluks-uefi.efi"
efi_arm="$here/target/aarch64-unknown-uefi/release/qluks-uefi.efi"
for f in "$efi_x86_soft" "$efi_x86_sse" "$efi_arm"; do [[ -f "$f" ]] || die "no $f"; done
say "sizes: x86_64 soft-float $(stat -c %s "$efi_x86_soft") bytes, x86_64 SSE $(stat -c %s "$efi_x86_sse") bytes," \
  "aarch64 $(stat -c %s "$efi_arm") bytes"

# --- the disks -------------------------------------------------------------------------------
cd "$work"
# Deterministic data: an AES-CTR keystream of a fixed key (every byte differs from its
# neighbours, so a misplaced or mis-decrypted sector cannot go unnoticed).
stream() { head -c "$2" /dev/zero | openssl enc -aes-128-ctr -nosalt -K "$1" -iv 00000000000000000000000000000000; }
sha256_of() { dd if="$1" bs=1M iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none | sha256sum | cut -d' ' -f1; }

# Job A: 8 MiB of data encrypted in place by cryptsetup (the header takes the first 2 MiB, the
# data moves behind it), argon2id with 2 lanes and 32 MiB, on partition 2 of a GPT disk; a decoy
# partition 1 whose label starts with the same letters comes first.
luks_pass=luks-Secret-7q
plain_len=$((8 << 20))
stream 00112233445566778899aabbccddeeff $plain_len >plain.bin
cp plain.bin part.img
truncate -s $((plain_len + (2 << 20))) part.img
printf %s "$luks_pass" >luks.key
cryptsetup reencrypt --encrypt --type luks2 --reduce-device-size 2M --batch-mode --key-file luks.key \
  --pbkdf argon2id --pbkdf-memory 32768 --pbkdf-parallel 2 --pbkdf-force-iterations 4 \
  --luks2-metadata-size 16k --luks2-keyslots-size 1m part.img
part_sectors=$(($(stat -c %s part.img) / 512))
part_guid=6a1b4f6e-2c3d-4e5f-8a9b-0c1d2e3f4a5b
truncate -s $(((2 << 20) + (part_sectors + 2048 + 34) * 512)) gpt.img
sfdisk --quiet gpt.img <<EOF
label: gpt
first-lba: 2048
start=2048, size=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="qluks-dat"
start=4096, size=$part_sectors, type=CA7D7CCB-63ED-4C53-861C-1742536059CC, uuid=$part_guid, name="qluks-data"
EOF
dd if=part.img of=gpt.img bs=1M seek=2 conv=notrunc status=none
a_offset=12345
a_length=$(((5 << 20) + 333))
a_sha=$(sha256_of plain.bin $a_offset $a_length)
say "job A: LUKS2 partition $part_guid ($part_sectors sectors), range $a_length bytes at $a_offset, sha256 $a_sha"

# Job B: as the bare-metal example: a 12 MiB base, a 16 MiB overlay with its own passphrase,
# written at unaligned ranges, one zeroed; PBKDF2 calibrated for 10 ms on the host.
base_pass=base-secret-Ab3
overlay_pass=overlay-secret-Xy9
secrets=(--object "secret,id=s0,data=$base_pass" --object "secret,id=s1,data=$overlay_pass")
luks() { echo "encrypt.format=luks,encrypt.key-secret=$1,encrypt.iter-time=10"; }
mkdir -p esp/qluks
stream 000102030405060708090a0b0c0d0e0f $((12 << 20)) >base.data
stream f0e0d0c0b0a090807060504030201000 $((1 << 20)) >overlay.data
(
  cd esp/qluks
  qemu-img create -q -f qcow2 "${secrets[@]}" -o "$(luks s0)" base.qcow2 12M
  qemu-io "${secrets[@]}" --image-opts "driver=qcow2,file.filename=base.qcow2,encrypt.key-secret=s0" \
    -c "write -q -s ../../base.data 0 12M" >/dev/null
  qemu-img create -q -f qcow2 -u -b base.qcow2 -F qcow2 "${secrets[@]}" -o "$(luks s1)" overlay.qcow2 16M
  qemu-io "${secrets[@]}" --image-opts \
    "driver=qcow2,file.filename=overlay.qcow2,encrypt.key-secret=s1,backing.encrypt.key-secret=s0" \
    -c "write -q -s ../../overlay.data 4194321 300000" -c "write -q -P 0x5a 7340031 65536" \
    -c "write -q -z 9437179 200000" -c "write -q -s ../../overlay.data 11534336 1048576" \
    -c "write -q -P 0xc3 14680065 4097" >/dev/null
  qemu-img convert "${secrets[@]}" --image-opts \
    "driver=qcow2,file.filename=overlay.qcow2,encrypt.key-secret=s1,backing.encrypt.key-secret=s0" \
    -O raw ../../overlay.raw
)
b_offset=$((3 << 20 | 1000))
b_length=$(((15 << 20) + 333 - b_offset))
b_sha=$(sha256_of overlay.raw $b_offset $b_length)
say "job B: \\qluks\\overlay.qcow2 on base.qcow2, range $b_length bytes at $b_offset, sha256 $b_sha"

# The BlockIO write test: the writes of jobs.rs's WRITES (offset, length, byte) into the decoy
# partition (1 MiB at 1 MiB, zeros), applied here to a copy for the expected digest.
scratch_after() {
  python3 - "$1" <<'PY'
import sys
part = bytearray(open(sys.argv[1], "rb").read()[1 << 20:2 << 20])
for off, n, b in [(1, 100, 0x11), (511, 2, 0x22), (1000, 3000, 0x33), (4096, 8192, 0x55), (16384, 4096, 0x66), (70001, 600000, 0x44)]:
    part[off:off + n] = bytes([b]) * n
sys.stdout.buffer.write(part)
PY
}
scratch_after gpt.img >scratch.expected
w_sha=$(sha256sum <scratch.expected | cut -d' ' -f1)

job_a="job=luks2 offset=$a_offset length=$a_length"
job_b="job=qcow2 folder=\\qluks image=overlay.qcow2 offset=$b_offset length=$b_length"
wrong() { local h=$1 b=${1:32:2}; printf '%s%02x%s' "${h:0:32}" $((0x$b ^ 0x01)) "${h:34}"; }

# --- booting ---------------------------------------------------------------------------------
# The disks: on x86 the ESP on AHCI and the GPT disk on NVMe (whose BlockIO asks for IoAlign 8,
# so misaligned buffers take the bounce path); on Arm both on virtio-mmio (IoAlign 1).
# boot ARCH EFI LOG ARGS [KEYS]: writes startup.nsh, boots, and returns the program's exit
# status (x86: QEMU's status (s - 1) / 2 from isa-debug-exit; Arm: semihosting's status), or
# 99 when the program never reported one. KEYS, if given, are typed on the serial console once
# the program asks for a passphrase.
boot() {
  local arch=$1 efi=$2 log=$3 args=$4 keys=${5:-}
  cp "$efi" esp/qluks-uefi.efi
  printf 'fs0:\\qluks-uefi.efi %s exit=qemu\r\n' "$args" >esp/startup.nsh
  local cmd
  if [[ $arch == x86 ]]; then
    cp "$root/usr/share/OVMF/OVMF_VARS_4M.fd" vars.fd
    cmd=("$qemu_x86" -machine q35 -cpu max -m 512M -nodefaults -vga none -nographic -no-reboot
      -drive "if=pflash,format=raw,readonly=on,file=$root/usr/share/OVMF/OVMF_CODE_4M.fd"
      -drive "if=pflash,format=raw,file=vars.fd"
      -drive "format=raw,file=fat:rw:esp" -drive "if=none,id=gpt,format=raw,file=gpt.img"
      -device nvme,drive=gpt,serial=qluks -device isa-debug-exit,iobase=0xf4,iosize=0x04 -serial stdio)
  else
    cp "$root/usr/share/AAVMF/AAVMF_CODE.fd" code.fd
    cp "$root/usr/share/AAVMF/AAVMF_VARS.fd" vars.fd
    cmd=("$qemu_arm" -machine virt -cpu max -m 512M -nodefaults -nographic -no-reboot
      -drive "if=pflash,format=raw,readonly=on,file=code.fd" -drive "if=pflash,format=raw,file=vars.fd"
      -drive "if=none,id=esp,format=raw,file=fat:rw:esp" -device virtio-blk-device,drive=esp
      -drive "if=none,id=gpt,format=raw,file=gpt.img" -device virtio-blk-device,drive=gpt
      -semihosting-config enable=on,target=native -serial stdio)
  fi
  local status=0
  if [[ -z $keys ]]; then
    timeout 600 "${cmd[@]}" </dev/null >"$log" 2>&1 || status=$?
  else
    rm -f keys.fifo && mkfifo keys.fifo
    timeout 600 "${cmd[@]}" <keys.fifo >"$log" 2>&1 &
    local pid=$!
    exec 3>keys.fifo
    local waited=0
    until grep -q 'Passphrase for' "$log" 2>/dev/null; do
      sleep 1
      waited=$((waited + 1))
      ((waited < 300)) || break
    done
    printf '%b' "$keys" >&3
    wait "$pid" || status=$?
    exec 3>&-
  fi
  # The program's lines, without the firmware's and the shell's screen control.
  sed -e 's/\x1b\[[0-9;=?]*[A-Za-z]//g' -e 's/\r//g' "$log" | sed -n '/^qluks UEFI/,$p' | grep -v '^\s*$' |
    sed "s/^/[uefi $arch] /"
  if [[ $arch == x86 ]]; then
    ((status % 2 == 1)) && return $(((status - 1) / 2))
    return 99
  fi
  ((status == 0 || status == 1 || status == 2 || status == 4)) && grep -q '^exit status' <(tr -d '\r' <"$log") &&
    return "$status"
  return 99
}

# expect STATUS LOG PATTERN...: the run ended with STATUS and its log has every pattern.
expect() {
  local want=$1 got=$2 log=$3 what=$4
  shift 4
  ((got == want)) || die "$what: exit status $got, expected $want"
  local p
  for p in "$@"; do
    tr -d '\r' <"$log" | grep -q -- "$p" || die "$what: the log lacks '$p'"
  done
  say "PASS: $what"
}
field() { tr -d '\r' <"$2" | grep -m1 "^$1" | sed "s/^$1//"; }
summary=()
measure() { # LABEL LOG
  summary+=("$1: unlock $(field 'unlock time: ' "$2" | cut -d' ' -f1-2), read $(field 'read time: ' "$2" | sed 's/ (.*, / at /; s/)$//'), stack $(field 'stack used: ' "$2" | cut -d' ' -f1-2)")
}

# write_test ARCH EFI SELECTOR: job=disk-write on the decoy partition (zeroed first), which must
# read back, and whose bytes the host must then find in the disk image.
write_test() {
  dd if=/dev/zero of=gpt.img bs=1M seek=1 count=1 conv=notrunc status=none
  local s=0
  boot "$1" "$2" "write-$1.log" "job=disk-write $3 sha256=$w_sha" || s=$?
  expect 0 $s "write-$1.log" "$1: unaligned writes through BlockIO, flushed, read back" '^disk write: 6 writes' \
    '^digest match: yes'
  cmp -s scratch.expected <(dd if=gpt.img bs=1M skip=1 count=1 status=none) || die "the disk image does not hold the writes"
  say "PASS: the disk image holds the guest's writes"
}

s=0; boot x86 "$efi_x86_sse" a-x86.log "$job_a part-guid=$part_guid passphrase=$luks_pass sha256=$a_sha" || s=$?
expect 0 $s a-x86.log "x86_64 AES-NI: job A" '^hal backend: aesni' '^digest match: yes' "^sha256: $a_sha" '^stack used: [0-9]' \
  '^cpu: AVX state enabled for this program'
# (QEMU 7.2's TCG has VAES but not VPCLMULQDQ, so the hal keeps AES-NI; on a CPU with both
# the program enables the AVX state the firmware left off, and the hal picks VAES.)
measure "x86_64 aesni, job A (LUKS2 argon2id)" a-x86.log
s=0; boot x86 "$efi_x86_sse" b-x86.log "$job_b passphrase=$overlay_pass backing-passphrase=$base_pass sha256=$b_sha" || s=$?
expect 0 $s b-x86.log "x86_64 AES-NI: job B" '^hal backend: aesni' '^digest match: yes' "^sha256: $b_sha"
measure "x86_64 aesni, job B (qcow2 chain)" b-x86.log
s=0; boot x86 "$efi_x86_sse" wrongpass-x86.log "$job_a part-label=qluks-data passphrase=not-it sha256=$a_sha" || s=$?
expect 2 $s wrongpass-x86.log "x86_64: a wrong LUKS2 passphrase is refused" '^ERROR: unlock: .*passphrase'
s=0; boot x86 "$efi_x86_sse" wrongsha-x86.log "$job_b passphrase=$overlay_pass backing-passphrase=$base_pass sha256=$(wrong "$b_sha")" || s=$?
expect 1 $s wrongsha-x86.log "x86_64: a wrong expected digest fails the run" '^DIGEST MISMATCH'
s=0; boot x86 "$efi_x86_sse" limit-x86.log "$job_a part-guid=$part_guid passphrase=$luks_pass argon2-max-mib=16 sha256=$a_sha" || s=$?
expect 2 $s limit-x86.log "x86_64: an Argon2 claim above argon2-max-mib is refused" 'over argon2-max-mib' '^ERROR: unlock: every keyslot claims more'
s=0; boot x86 "$efi_x86_sse" console-x86.log "$job_a part-label=qluks-data sha256=$a_sha" "oops\x7f\x7f\x7f\x7f${luks_pass}\r" || s=$?
expect 0 $s console-x86.log "x86_64: passphrase typed on the console (Backspace used)" '^digest match: yes'
! grep -q -- "$luks_pass" console-x86.log || die "the console echoed the passphrase"
say "PASS: the typed passphrase was not echoed"
write_test x86 "$efi_x86_sse" "part-label=qluks-dat"
s=0; boot x86 "$efi_x86_soft" a-x86-soft.log "$job_a part-guid=$part_guid passphrase=$luks_pass sha256=$a_sha" || s=$?
expect 0 $s a-x86-soft.log "x86_64 soft-float build: job A" '^hal backend: soft' '^digest match: yes'
measure "x86_64 soft, job A" a-x86-soft.log
s=0; boot x86 "$efi_x86_soft" b-x86-soft.log "$job_b passphrase=$overlay_pass backing-passphrase=$base_pass sha256=$b_sha" || s=$?
expect 0 $s b-x86-soft.log "x86_64 soft-float build: job B" '^hal backend: soft' '^digest match: yes'
measure "x86_64 soft, job B" b-x86-soft.log

s=0; boot arm "$efi_arm" a-arm.log "$job_a part-label=qluks-data passphrase=$luks_pass sha256=$a_sha" || s=$?
expect 0 $s a-arm.log "aarch64 ARMv8: job A" '^hal backend: armv8' '^digest match: yes' '^stack used: [0-9]'
measure "aarch64 armv8, job A" a-arm.log
s=0; boot arm "$efi_arm" b-arm.log "$job_b passphrase=$overlay_pass backing-passphrase=$base_pass sha256=$b_sha" || s=$?
expect 0 $s b-arm.log "aarch64 ARMv8: job B" '^hal backend: armv8' '^digest match: yes'
measure "aarch64 armv8, job B" b-arm.log
s=0; boot arm "$efi_arm" wrongsha-arm.log "$job_a part-guid=$part_guid passphrase=$luks_pass sha256=$(wrong "$a_sha")" || s=$?
expect 1 $s wrongsha-arm.log "aarch64: a wrong expected digest fails the run" '^DIGEST MISMATCH'
s=0; boot arm "$efi_arm" wrongpass-arm.log "$job_b passphrase=$overlay_pass backing-passphrase=not-it sha256=$b_sha" || s=$?
expect 2 $s wrongpass-arm.log "aarch64: a wrong base passphrase is refused" '^ERROR: open: .*passphrase'
write_test arm "$efi_arm" "part-guid=$(sfdisk --part-uuid gpt.img 1)"
s=0; boot arm "$efi_arm" a-arm-soft.log "$job_a part-label=qluks-data passphrase=$luks_pass backend=soft sha256=$a_sha" || s=$?
expect 0 $s a-arm-soft.log "aarch64 soft backend: job A" '^hal backend: soft' '^digest match: yes'
measure "aarch64 soft, job A" a-arm-soft.log
s=0; boot arm "$efi_arm" b-arm-soft.log "$job_b passphrase=$overlay_pass backing-passphrase=$base_pass backend=soft sha256=$b_sha" || s=$?
expect 0 $s b-arm-soft.log "aarch64 soft backend: job B" '^hal backend: soft' '^digest match: yes'
measure "aarch64 soft, job B" b-arm-soft.log

say "measured under TCG (emulated CPUs: the times are QEMU's, not real hardware's):"
for line in "${summary[@]}"; do say "  $line"; done
say "PASS: all UEFI runs"
