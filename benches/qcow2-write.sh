#!/usr/bin/env bash
# qcow2 writes: qluks against QEMU on the same files, same run, LUKS aes-256-xts-plain64,
# 64 KiB clusters, keyslots at iter-time 10 ms (so unlocking does not swamp the figures):
#  1. sequential: `io -c 'write -P 0x5a 0 1G' -c flush` into a new (empty) LUKS qcow2:
#     `qluks io` vs `qemu-io`;
#  2. random: 4000 seeded 4 KiB overwrites (-P patterns, 4 KiB aligned) of allocated clusters
#     of a fully written 1 GiB LUKS qcow2, one process each with 4000 -c and a flush:
#     `qluks io` vs `qemu-io`;
#  3. convert: a 1 GiB raw file (non-zero data) into a new LUKS qcow2 (`-O qcow2 -o
#     encrypt.format=luks,...`), and a LUKS qcow2 re-encrypted under a new key into another:
#     `qluks convert` vs `qemu-img convert` (each creates the output and unlocks it again).
#
# Usage: benches/qcow2-write.sh [REPEATS] [WORKDIR]   (defaults: 5, a fresh temp directory)
# Needs a release build (cargo build --release), qemu-img and qemu-io. Images live in
# /dev/shm (no disk in the figures). Each repeat runs QEMU then qluks on fresh copies of the
# same input; prints every time (wall clock and CPU = user + sys, ms), the medians and their
# ratio (QEMU / qluks: above 1 means qluks is faster), and checks after each pair that both
# results have the same guest content (qemu-img compare) and that the qluks result passes
# qemu-img check.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-5}
qluks=$(realpath "${QLUKS:-${CARGO_TARGET_DIR:-target}/release/qluks}")
[[ -x $qluks ]] || { echo "no $qluks: run cargo build --release first" >&2; exit 1; }
work=${2:-$(mktemp -d /dev/shm/qluks-write-bench.XXXXXX)}
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
cd "$work"

secret=(--object secret,id=s0,data=pw)
printf pw >pw.txt
luks=encrypt.format=luks,encrypt.key-secret=s0,encrypt.cipher-alg=aes-256,encrypt.cipher-mode=xts,encrypt.iter-time=10
opts() { echo "driver=qcow2,file.filename=$1,encrypt.key-secret=s0"; }

# The inputs: an empty LUKS qcow2, the same fully written, a raw file of non-zero data.
qemu-img create -q -f qcow2 "${secret[@]}" -o "$luks,cluster_size=64k" empty.qcow2 1G
cp empty.qcow2 full.qcow2
qemu-io "${secret[@]}" --image-opts "$(opts full.qcow2)" -c 'write -P 0x5a 0 1G' >/dev/null
head -c 1G /dev/urandom >src.raw

# 4000 random 4 KiB overwrites (LCG, seed 42) as -c arguments.
mapfile -t random_cmds < <(awk 'BEGIN { x = 42; for (i = 0; i < 4000; i++) {
  x = (x * 1103515245 + 12345) % 2147483648; off = (x % 262144) * 4096;
  printf "write -P %d %d 4k\n", 1 + i % 255, off } }')
random_args=()
for c in "${random_cmds[@]}"; do random_args+=(-c "$c"); done

# "WALL_MS CPU_MS" of a command (CPU = user + sys of all its threads).
timed() {
  /usr/bin/time -o "$work/time" -f '%e %U %S' "$@" >/dev/null 2>"$work/stderr" \
    || { echo "failed: $*" >&2; cat "$work/stderr" >&2; exit 1; }
  awk '{print int($1 * 1000), int(($2 + $3) * 1000)}' "$work/time"
}
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
same() {
  qemu-img compare -q "${secret[@]}" --image-opts "$(opts "$1")" "$(opts "$2")" || { echo "$1 and $2 differ" >&2; exit 1; }
  qemu-img check -q "${secret[@]}" --image-opts "$(opts "$2")" || { echo "qemu-img check $2 failed" >&2; exit 1; }
}
ratio() { awk "BEGIN {printf \"%.2f\", $1 / $2}"; }

declare -a sq sl rq rl cq cl eq el sqc slc rqc rlc cqc clc eqc elc
for ((i = 0; i < repeats; i++)); do
  cp empty.qcow2 q.qcow2; cp empty.qcow2 l.qcow2
  read -r w c < <(timed qemu-io "${secret[@]}" --image-opts "$(opts q.qcow2)" -c 'write -P 0x5a 0 1G' -c flush); sq+=("$w"); sqc+=("$c")
  read -r w c < <(timed "$qluks" io --passphrase-file pw.txt -c 'write -P 0x5a 0 1G' -c flush l.qcow2); sl+=("$w"); slc+=("$c")
  same q.qcow2 l.qcow2

  cp full.qcow2 q.qcow2; cp full.qcow2 l.qcow2
  read -r w c < <(timed qemu-io "${secret[@]}" --image-opts "$(opts q.qcow2)" "${random_args[@]}" -c flush); rq+=("$w"); rqc+=("$c")
  read -r w c < <(timed "$qluks" io --passphrase-file pw.txt "${random_args[@]}" -c flush l.qcow2); rl+=("$w"); rlc+=("$c")
  same q.qcow2 l.qcow2

  rm -f q.qcow2 l.qcow2
  read -r w c < <(timed qemu-img convert "${secret[@]}" -O qcow2 -o "$luks,cluster_size=64k" src.raw q.qcow2); cq+=("$w"); cqc+=("$c")
  read -r w c < <(timed "$qluks" convert -O qcow2 -o "encrypt.format=luks,encrypt.iter-time=10,cluster_size=64k" \
    --target-passphrase-file pw.txt src.raw l.qcow2); cl+=("$w"); clc+=("$c")
  same q.qcow2 l.qcow2

  rm -f q.qcow2 l.qcow2
  read -r w c < <(timed qemu-img convert "${secret[@]}" --image-opts "$(opts full.qcow2)" -O qcow2 -o "$luks,cluster_size=64k" q.qcow2); eq+=("$w"); eqc+=("$c")
  read -r w c < <(timed "$qluks" convert --passphrase-file pw.txt -O qcow2 -o "encrypt.format=luks,encrypt.iter-time=10,cluster_size=64k" \
    --target-passphrase-file pw.txt full.qcow2 l.qcow2); el+=("$w"); elc+=("$c")
  same q.qcow2 l.qcow2
  rm -f q.qcow2 l.qcow2
done

line() {
  local name=$1 peer=$2; shift 2
  local -n a=$1 b=$2 ac=${1}c bc=${2}c
  local ma mb mac mbc; ma=$(median "${a[@]}"); mb=$(median "${b[@]}"); mac=$(median "${ac[@]}"); mbc=$(median "${bc[@]}")
  echo "$name  wall: $peer ${a[*]} ms | qluks ${b[*]} ms | medians $ma / $mb ms: qluks $(ratio "$ma" "$mb")x"
  echo "$name  CPU:  $peer ${ac[*]} ms | qluks ${bc[*]} ms | medians $mac / $mbc ms: qluks $(ratio "$mac" "$mbc")x"
}
line "sequential 1 GiB write   " qemu-io sq sl
line "4000 random 4 KiB writes " qemu-io rq rl
line "convert raw -> LUKS qcow2" qemu-img cq cl
line "convert LUKS -> new key  " qemu-img eq el
echo "results identical (qemu-img compare), qluks results clean (qemu-img check); load: $(cut -d' ' -f1-3 /proc/loadavg)"
