#!/usr/bin/env bash
# Short fuzzing smoke run of every target (CI): seeds each corpus with small images made by
# qemu-img when it is there, then runs each target for FUZZ_SECONDS (default 20), built with
# overflow checks and debug assertions (cargo-fuzz default without -O). Needs a
# nightly toolchain and cargo-fuzz; prints executions per target.
set -euo pipefail
cd "$(dirname "$0")"
secs="${FUZZ_SECONDS:-20}"
# FUZZ_TARGETS: a space-separated subset (default: every target in Cargo.toml).
targets="${FUZZ_TARGETS:-$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^qluks-fuzz$')}"

# Little-endian bytes of $1, $2 bytes wide (for the operation prefixes of luks_volume and
# image_open seeds).
le() { local i; for ((i = 0; i < $2; i++)); do printf "\\x$(printf %02x $((($1 >> (8 * i)) & 255)))"; done; }
# luks_volume operations (fuzz_targets/luks_volume.rs): flags 1 (fix LUKS2 checksums), then a
# write_at into the volume, a read across its end, a write_in_place near u64::MAX and a read.
luks_ops() { printf '\x01\x04'; le 13 1; le 1000 8; le 5000 3; le 4 1; le 700 8; le 1400 3
  le 10 1; le 4095 8; le 8192 3; le 15 1; le 513 8; le 4096 3; }
# image_open reads (fuzz_targets/image_open.rs): inside, across the end, near u64::MAX.
image_ops() { printf '\x03'; le 3 1; le 1000 8; le 5000 2; le 1 1; le 700 8; le 1400 2; le 2 1; le 100 8; le 512 2; }
seed_image() { mkdir -p corpus/image_open; { image_ops; cat "$1"; } > "corpus/image_open/$(basename "$1")"; }

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
  for f in "$seeds"/*.qcow "$seeds"/q-*.qcow2 "$seeds/z.qcow2"; do seed_image "$f"; done
  head -c 64k "$seeds/t.raw" > "$seeds/t64k.raw"; seed_image "$seeds/t64k.raw"
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
  # Small whole volumes with the cheapest KDFs cryptsetup allows (PBKDF2 1000 iterations,
  # Argon2id 4 passes x 32 KiB), passphrase "pw", for luks_volume and image_open: LUKS1 (all
  # eight keyslot areas of a 128-bit key, 8 KiB of payload), LUKS2 with PBKDF2 and a dynamic
  # or fixed-size segment, LUKS2 with Argon2id, LUKS2 with 4 KiB sectors and a 512-bit key.
  mkdir -p corpus/luks_volume
  # (quiet: cryptsetup warns that these keyslot areas and devices are small, as meant)
  fmt() { local out; out=$(cryptsetup luksFormat -q --key-file "$lseeds/key" "$@" 2>&1) || { echo "$out"; return 1; }; }
  truncate -s 536k "$lseeds/l1.luks"
  fmt --type luks1 --pbkdf-force-iterations 1000 --cipher aes-cbc-essiv:sha256 --key-size 128 --hash sha1 \
    --align-payload 8 "$lseeds/l1.luks"
  truncate -s 168k "$lseeds/l2-pbkdf2.luks"
  fmt --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --cipher aes-xts-plain64 --key-size 256 \
    --luks2-metadata-size 16k --luks2-keyslots-size 128k --offset 320 "$lseeds/l2-pbkdf2.luks"
  LC_ALL=C sed 's/"size":"dynamic"/"size":"8192"   /g' "$lseeds/l2-pbkdf2.luks" > "$lseeds/l2-fixed.luks"
  # Issue 8 item 6: a fixed-size segment at offset 2^64-4096 (the JSON grows by 11 bytes, taken
  # from the NUL padding of its area; luks_volume fixes the checksums); the seed's read at 4096
  # made the device offset wrap.
  perl -0777 -pe 's/"offset":"163840","size":"8192"   (.*?)\0{11}/"offset":"18446744073709547520","size":"8192"$1/gs' \
    "$lseeds/l2-fixed.luks" > "$lseeds/l2-wrap.luks"
  truncate -s 104k "$lseeds/l2-argon2.luks"
  fmt --type luks2 --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 32 --pbkdf-parallel 1 \
    --cipher aes-cbc-essiv:sha256 --key-size 128 --luks2-metadata-size 16k --luks2-keyslots-size 64k \
    --offset 192 "$lseeds/l2-argon2.luks"
  truncate -s 304k "$lseeds/l2-4k.luks"
  fmt --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --hash sha512 --cipher aes-xts-plain64 \
    --key-size 512 --luks2-metadata-size 16k --luks2-keyslots-size 256k --offset 576 --sector-size 4096 \
    "$lseeds/l2-4k.luks"
  for f in "$lseeds"/*.luks; do
    { luks_ops; cat "$f"; } > "corpus/luks_volume/$(basename "$f")"
    { printf '\x01\x01'; le 15 1; le 4096 8; le 512 3; cat "$f"; } > "corpus/luks_volume/read4k-$(basename "$f")"
    seed_image "$f"
  done
  rm -rf "$lseeds"
fi

# The model targets decode any bytes into options and operations: one deterministic seed each.
for t in qcow2_write_model luks_volume_model; do
  mkdir -p "corpus/$t"; head -c 400 < <(yes "qluks $t seed") > "corpus/$t/text-seed"
done

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
