#!/usr/bin/env bash
# AES-XTS throughput of `qluks bench xts` against `openssl speed -evp aes-N-xts` in the same run.
#
# Usage: benches/vs-openssl.sh [REPEATS] [BACKENDS...]   (defaults: 3, every usable non-soft backend)
# Needs a release build (cargo build --release) and openssl on PATH. For each cipher x sector size
# x direction it alternates one qluks run per backend and one openssl run, REPEATS times, so both
# see the same machine load, and prints the medians and their ratio. Our figure is for 1 MiB
# batches of sectors (the batch API); openssl's is for one sector per EVP call, as OpenSSL
# reports it.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-3}
shift || true
qluks=${QLUKS:-${CARGO_TARGET_DIR:-target}/release/qluks}
[[ -x $qluks ]] || { echo "no $qluks: run cargo build --release first" >&2; exit 1; }
if (($#)); then
  backends=("$@")
else
  mapfile -t backends < <("$qluks" bench xts --backend all --seconds 0.01 --output json |
    sed -n 's/.*"backend":"\([a-z0-9]*\)".*/\1/p' | grep -v '^soft$')
fi

median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

printf '%-8s %-5s %-7s %-8s %9s %9s %7s\n' cipher unit dir backend 'GB/s' 'openssl' ratio
for cipher in aes-128 aes-256; do
  for unit in 512 4096; do
    for dir in encrypt decrypt; do
      flag=(); [[ $dir == decrypt ]] && flag=(--decrypt)
      declare -A ours=()
      ssl=()
      for ((i = 0; i < repeats; i++)); do
        for b in "${backends[@]}"; do
          g=$("$qluks" bench xts --backend "$b" --cipher "$cipher" --sector-size "$unit" "${flag[@]}" --output json |
            sed 's/.*"gbps":\([0-9.]*\).*/\1/')
          ours[$b]+="$g "
        done
        # openssl prints thousands of bytes per second, e.g. "AES-256-XTS  8376585.60k".
        k=$(openssl speed -seconds 1 "${flag[@]}" -evp "$cipher-xts" -bytes "$unit" 2>/dev/null |
          awk -v c="${cipher^^}-XTS" '$1 == c {sub(/k$/, "", $2); print $2}')
        ssl+=("$(awk -v k="$k" 'BEGIN {printf "%.3f", k / 1e6}')")
      done
      s=$(printf '%s\n' "${ssl[@]}" | median)
      for b in "${backends[@]}"; do
        o=$(tr ' ' '\n' <<<"${ours[$b]}" | grep . | median)
        printf '%-8s %-5s %-7s %-8s %9.2f %9.2f %7.2f\n' "$cipher" "$unit" "$dir" "$b" "$o" "$s" \
          "$(awk -v o="$o" -v s="$s" 'BEGIN {print o / s}')"
      done
      unset ours
    done
  done
done
