#!/usr/bin/env bash
# Short fuzzing smoke run of every target (CI): seeds each corpus with small images made by
# qemu-img when it is there, then runs each target for FUZZ_SECONDS (default 20), built with
# overflow checks and debug assertions (cargo-fuzz default without -O). Needs a
# nightly toolchain and cargo-fuzz; prints executions per target.
set -euo pipefail
cd "$(dirname "$0")"
secs="${FUZZ_SECONDS:-20}"
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^qluks-fuzz$')

if command -v qemu-img >/dev/null; then
  seeds=$(mktemp -d)
  trap 'rm -rf "$seeds"' EXIT
  mkdir -p corpus/qcow1_read corpus/qcow2_header corpus/qcow2_read corpus/qcow2_map corpus/luks1_header
  qemu-img create -q -f qcow "$seeds/a.qcow" 1M
  qemu-io -f qcow -c "write -P 0x11 0 8k" -c "write -P 0x22 300k 1k" "$seeds/a.qcow" >/dev/null
  qemu-img create -q -f qcow --object secret,id=s,data=pw -o encrypt.format=aes,encrypt.key-secret=s \
    "$seeds/e.qcow" 1M
  head -c 256k < <(yes qluks) > "$seeds/t.raw"
  qemu-img convert -c -f raw -O qcow "$seeds/t.raw" "$seeds/c.qcow" || true  # qemu-img 10 exits 1 here
  cp "$seeds"/*.qcow corpus/qcow1_read/
  for o in cluster_size=512 cluster_size=4096,extended_l2=off compat=0.10 cluster_size=16384,extended_l2=on; do
    f="$seeds/q-${o//[=,]/_}.qcow2"
    qemu-img create -q -f qcow2 -o "$o" "$f" 1M
    qemu-io -f qcow2 -c "write -P 0x11 0 8k" -c "write -z 64k 16k" -c "write -P 0x22 300k 1k" "$f" >/dev/null
    cp "$f" corpus/qcow2_read/; cp "$f" corpus/qcow2_map/
    head -c 4096 "$f" > "corpus/qcow2_header/$(basename "$f")"
  done
  qemu-img convert -c -f raw -O qcow2 -o cluster_size=4096 "$seeds/t.raw" "$seeds/z.qcow2"
  cp "$seeds/z.qcow2" corpus/qcow2_read/
  qemu-img create -q -f luks --object secret,id=s,data=pw -o key-secret=s,iter-time=10 "$seeds/l.luks" 1M
  head -c 4096 "$seeds/l.luks" > corpus/luks1_header/qemu-default.luks
fi

if command -v cryptsetup >/dev/null; then
  lseeds=$(mktemp -d)
  mkdir -p corpus/luks2_header corpus/luks2_metadata
  printf pw > "$lseeds/key"
  truncate -s 4M "$lseeds/v2"
  cryptsetup luksFormat -q --type luks2 --key-file "$lseeds/key" --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
    --luks2-metadata-size 16k --luks2-keyslots-size 1m "$lseeds/v2"
  head -c 32768 "$lseeds/v2" > corpus/luks2_header/cryptsetup.luks2
  # dd reads exactly the JSON area: a `tail | head` pipeline dies of SIGPIPE under pipefail.
  dd if="$lseeds/v2" bs=4096 skip=1 count=3 status=none | tr -d '\0' > corpus/luks2_metadata/cryptsetup.json
  rm -rf "$lseeds"
fi

for t in $targets; do
  mkdir -p "corpus/$t"
  echo "--- fuzz $t for ${secs}s"
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=1024 2>&1 \
    | grep -E '^(#[0-9]+.*DONE|Done [0-9]+ runs)|ERROR|panicked|SUMMARY' || true
  # cargo fuzz exits non-zero on a crash; the pipeline above hides that, so check artifacts.
  if compgen -G "artifacts/$t/crash-*" >/dev/null || compgen -G "artifacts/$t/oom-*" >/dev/null; then
    echo "fuzz target $t found a failing input:"; ls "artifacts/$t"; exit 1
  fi
done
