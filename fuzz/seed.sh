#!/usr/bin/env bash
# Seed corpora for every fuzz target, generated (never committed): small images made by
# qemu-img, qemu-io and cryptsetup with the cheapest KDF costs they allow, covering the read
# matrix (qcow v1 plain/AES/compressed; qcow2 v2 and v3, 512 B to 64 KiB clusters, zero
# clusters, extended L2, zlib and zstd compression, LUKS and legacy AES encryption, internal
# snapshots, backing chains over qcow2 and raw, an external data file; LUKS1 and LUKS2
# volumes with PBKDF2 and Argon2id, 512 B and 4 KiB sectors), each written into
# corpus/TARGET/ with the control prefix that target's input format expects (see the doc
# comment at the top of each fuzz_targets/*.rs), plus small structured inputs for the
# differential and create targets. Tools that are missing are skipped (smoke.sh decides
# whether that is fatal). Usage: fuzz/seed.sh [CORPUS_DIR] (default fuzz/corpus).
set -euo pipefail
cd "$(dirname "$0")"
corpus="${1:-corpus}"
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT

# Little-endian bytes of $1, $2 bytes wide.
le() { local i; for ((i = 0; i < $2; i++)); do printf "\\x$(printf %02x $((($1 >> (8 * i)) & 255)))"; done; }
# Big-endian u64 at byte $2 of file $1.
be64() { echo $((16#$(od -An -j "$2" -N8 -tx1 "$1" | tr -d ' \n'))); }
put() { mkdir -p "$corpus/$1"; cat > "$corpus/$1/$2"; }

# --- Prefixes of the targets that take an image after a control prefix.
# luks_volume: flags 1 (fix LUKS2 checksums), then a write_at into the volume, a read across
# its end, a write_in_place near u64::MAX and a read.
luks_ops() { printf '\x01\x04'; le 13 1; le 1000 8; le 5000 3; le 4 1; le 700 8; le 1400 3
  le 10 1; le 4095 8; le 8192 3; le 15 1; le 513 8; le 4096 3; }
# image_open reads: inside, across the end, near u64::MAX.
image_ops() { printf '\x03'; le 3 1; le 1000 8; le 5000 2; le 1 1; le 700 8; le 1400 2; le 2 1; le 100 8; le 512 2; }
seed_image() { { image_ops; cat "$1"; } | put image_open "$(basename "$1")"; }
# qcow2_snapshots: flags (0: open with the passphrase, 1: metadata only).
seed_snapshots() { { printf '\x00'; cat "$1"; } | put qcow2_snapshots "$(basename "$1")"
  { printf '\x01'; cat "$1"; } | put qcow2_snapshots "meta-$(basename "$1")"; }
# qcow2_chain: flags, files - 1, then per file: name length, name, u24 length, bytes; then
# the write (offset, length). $1 = flags, $2 = seed name, then pairs NAME FILE (top first).
seed_chain() {
  local flags=$1 name=$2; shift 2
  { printf "\\x$(printf %02x "$flags")"; le $(($# / 2 - 1)) 1
    while (($#)); do le ${#1} 1; printf %s "$1"; le "$(stat -c %s "$2")" 3; cat "$2"; shift 2; done
    le 4000 8; le 5000 2; } | put qcow2_chain "$name"
}
# Every qcow2 image: the header, read and map targets, image_open, snapshots, and a chain of
# one (the write flag set).
seed_qcow2() {
  local f=$1 b; b=$(basename "$f")
  cp "$f" "$corpus/qcow2_read/$b"; cp "$f" "$corpus/qcow2_map/$b"
  head -c 4096 "$f" > "$corpus/qcow2_header/$b"
  seed_image "$f"; seed_snapshots "$f"; seed_chain 32 "$b" top "$f"
}
mkdir -p "$corpus"/{qcow1_read,qcow2_header,qcow2_read,qcow2_map,luks1_header,luks2_header,luks2_metadata,luks_volume}

if command -v qemu-img >/dev/null && command -v qemu-io >/dev/null; then
  qio() { qemu-io "$@" >/dev/null; }
  sec=(--object secret,id=s,data=pw)
  # qcow v1: plain, legacy AES, compressed.
  qemu-img create -q -f qcow "$seeds/a.qcow" 1M
  qio -f qcow -c "write -P 0x11 0 8k" -c "write -P 0x22 300k 1k" "$seeds/a.qcow"
  qemu-img create -q -f qcow "${sec[@]}" -o encrypt.format=aes,encrypt.key-secret=s "$seeds/e.qcow" 1M
  head -c 256k < <(yes qluks) > "$seeds/t.raw"
  qemu-img convert -c -f raw -O qcow "$seeds/t.raw" "$seeds/c.qcow" || true # qemu-img 10 exits 1 here
  cp "$seeds"/*.qcow "$corpus/qcow1_read/"
  for f in "$seeds"/*.qcow; do seed_image "$f"; done

  # qcow2 layouts: v2/v3, 512 B..16 KiB clusters, zero clusters, extended L2.
  for o in compat=0.10,cluster_size=512 cluster_size=512 cluster_size=4096,extended_l2=off compat=0.10 \
    cluster_size=16384,extended_l2=on cluster_size=4096,refcount_bits=1 cluster_size=4096,refcount_bits=64 \
    cluster_size=4096,lazy_refcounts=on; do
    f="$seeds/q-${o//[=,.]/_}.qcow2"
    qemu-img create -q -f qcow2 -o "$o" "$f" 1M
    qio -f qcow2 -c "write -P 0x11 0 8k" -c "write -z 64k 16k" -c "write -P 0x22 300k 1k" -c "write -P 0x33 1000k 3k" "$f"
    seed_qcow2 "$f"
  done
  # Compressed clusters, zlib and zstd.
  qemu-img convert -c -f raw -O qcow2 -o cluster_size=4096 "$seeds/t.raw" "$seeds/z-zlib.qcow2"
  qemu-img convert -c -f raw -O qcow2 -o cluster_size=4096,compression_type=zstd "$seeds/t.raw" "$seeds/z-zstd.qcow2"
  qemu-img convert -c -f raw -O qcow2 -o cluster_size=16384,extended_l2=on "$seeds/t.raw" "$seeds/z-extl2.qcow2"
  for f in "$seeds"/z-*.qcow2; do seed_qcow2 "$f"; done
  # Internal snapshots (v3 and v2): each sees other data.
  for o in cluster_size=4096 compat=0.10,cluster_size=1024; do
    f="$seeds/s-${o//[=,.]/_}.qcow2"
    qemu-img create -q -f qcow2 -o "$o" "$f" 256k
    qio -f qcow2 -c "write -P 0x11 0 8k" "$f"
    qemu-img snapshot -c first "$f"
    qio -f qcow2 -c "write -P 0x22 4k 8k" -c "write -z 64k 4k" "$f"
    qemu-img snapshot -c second "$f"
    qio -f qcow2 -c "write -P 0x33 0 2k" "$f"
    qemu-img resize -q "$f" 384k 2>/dev/null || true
    qemu-img snapshot -c after-resize "$f"
    seed_qcow2 "$f"
  done
  # Legacy AES (passphrase pw).
  f="$seeds/aes.qcow2"
  qemu-img create -q -f qcow2 "${sec[@]}" -o encrypt.format=aes,encrypt.key-secret=s,cluster_size=4096 "$f" 256k
  qio "${sec[@]}" --image-opts "driver=qcow2,file.filename=$f,encrypt.key-secret=s" -c "write -P 0x44 0 8k"
  seed_qcow2 "$f"
  # LUKS qcow2 within the fuzz KDF budget: qemu-img's layout (aes-128-cbc-essiv:sha256, so
  # that the keyslot areas take 1032 sectors, not 4040) with its LUKS header replaced by
  # cryptsetup's, which is the same layout with 1000 PBKDF2 iterations (qemu-img's iter-time
  # cannot go that low). Passphrase pw.
  if command -v cryptsetup >/dev/null; then
    f="$seeds/luks.qcow2"
    qemu-img create -q -f qcow2 "${sec[@]}" -o encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=1,cluster_size=4096 \
      -o encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256 "$f" 256k
    # The FDE extension (type 0x0537be77) holds the LUKS area's offset and length.
    ext=$(LC_ALL=C grep -obUaP '\x05\x37\xbe\x77' "$f" | head -1 | cut -d: -f1)
    area=$(be64 "$f" $((ext + 8)))
    area_len=$(be64 "$f" $((ext + 16)))
    truncate -s $((area_len + 65536)) "$seeds/phdr"
    printf pw > "$seeds/pwf"
    cryptsetup luksFormat -q --type luks1 --key-file "$seeds/pwf" --pbkdf-force-iterations 1000 \
      --cipher aes-cbc-essiv:sha256 --key-size 128 --hash sha256 --align-payload $((area_len / 512)) "$seeds/phdr" 2>/dev/null
    dd if="$seeds/phdr" of="$f" bs=512 seek=$((area / 512)) count=$((area_len / 512)) conv=notrunc status=none
    qio "${sec[@]}" --image-opts "driver=qcow2,file.filename=$f,encrypt.key-secret=s" -c "write -P 0x55 0 8k" \
      -c "write -P 0x66 100k 1k"
    seed_qcow2 "$f"
    # luks1_unlock on the embedded header: flags 6 (header at 512 x u16, area length u32).
    { printf '\x06'; le $((area / 512)) 2; le "$area_len" 4; cat "$f"; } | put luks1_unlock luks-qcow2
  fi
  # Backing chains: qcow2 over qcow2 over raw, and qcow2 over qcow2 (declared formats).
  qemu-img convert -f raw -O qcow2 -o cluster_size=4096 "$seeds/t.raw" "$seeds/base.qcow2"
  (cd "$seeds" && qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 mid.qcow2 &&
    qio -f qcow2 -c "write -P 0x77 4k 4k" mid.qcow2 &&
    qemu-img create -q -f qcow2 -o cluster_size=512 -b mid.qcow2 -F qcow2 top.qcow2 &&
    qio -f qcow2 -c "write -P 0x88 6k 1k" top.qcow2 &&
    qemu-img create -q -f qcow2 -o cluster_size=16384,extended_l2=on -b t.raw -F raw over-raw.qcow2 &&
    qio -f qcow2 -c "write -P 0x99 5k 1k" over-raw.qcow2)
  seed_chain 32 chain3 top.qcow2 "$seeds/top.qcow2" mid.qcow2 "$seeds/mid.qcow2" base.qcow2 "$seeds/base.qcow2"
  seed_chain 33 chain3-by-depth x "$seeds/top.qcow2" y "$seeds/mid.qcow2" z "$seeds/base.qcow2"
  seed_chain 32 over-raw over-raw.qcow2 "$seeds/over-raw.qcow2" t.raw "$seeds/t.raw"
  seed_chain 48 probed over-raw.qcow2 "$seeds/over-raw.qcow2" t.raw "$seeds/t.raw"
  seed_chain 32 loop top.qcow2 "$seeds/top.qcow2" mid.qcow2 "$seeds/top.qcow2"
  seed_qcow2 "$seeds/top.qcow2"
  # An external data file.
  (cd "$seeds" && qemu-img create -q -f qcow2 -o cluster_size=4096,data_file=data.raw,data_file_raw=on ext.qcow2 256k &&
    qio -f qcow2 -c "write -P 0xaa 0 8k" ext.qcow2)
  seed_chain 32 data-file ext.qcow2 "$seeds/ext.qcow2" data.raw "$seeds/data.raw"
  seed_qcow2 "$seeds/ext.qcow2"
  head -c 64k "$seeds/t.raw" > "$seeds/t64k.raw"
  seed_image "$seeds/t64k.raw"
  qemu-img create -q -f luks "${sec[@]}" -o key-secret=s,iter-time=10 "$seeds/l.luks" 1M
  head -c 4096 "$seeds/l.luks" > "$corpus/luks1_header/qemu-default.luks"
fi

if command -v cryptsetup >/dev/null; then
  printf pw > "$seeds/key"
  # (quiet: cryptsetup warns that these keyslot areas and devices are small, as meant)
  fmt() { local out; out=$(cryptsetup luksFormat -q --key-file "$seeds/key" "$@" 2>&1) || { echo "$out"; return 1; }; }
  truncate -s 4M "$seeds/v2"
  fmt --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --luks2-metadata-size 16k --luks2-keyslots-size 1m "$seeds/v2"
  head -c 32768 "$seeds/v2" > "$corpus/luks2_header/cryptsetup.luks2"
  # dd reads exactly the JSON area: a `tail | head` pipeline dies of SIGPIPE under pipefail.
  dd if="$seeds/v2" bs=4096 skip=1 count=3 status=none | tr -d '\0' > "$corpus/luks2_metadata/cryptsetup.json"
  # Small whole volumes with the cheapest KDFs cryptsetup allows (PBKDF2 1000 iterations,
  # Argon2id 4 passes x 32 KiB), passphrase "pw": LUKS1 (all eight keyslot areas of a 128-bit
  # key, 8 KiB of payload), LUKS2 with PBKDF2 and a dynamic or fixed-size segment, LUKS2 with
  # Argon2id, LUKS2 with 4 KiB sectors and a 512-bit key, and LUKS1 with two keyslots.
  truncate -s 536k "$seeds/l1.luks"
  fmt --type luks1 --pbkdf-force-iterations 1000 --cipher aes-cbc-essiv:sha256 --key-size 128 --hash sha1 \
    --align-payload 8 "$seeds/l1.luks"
  cp "$seeds/l1.luks" "$seeds/l1-two-slots.luks"
  printf pX > "$seeds/key2"
  cryptsetup luksAddKey -q --key-file "$seeds/key" --pbkdf-force-iterations 1000 "$seeds/l1-two-slots.luks" "$seeds/key2"
  truncate -s 168k "$seeds/l2-pbkdf2.luks"
  fmt --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --cipher aes-xts-plain64 --key-size 256 \
    --luks2-metadata-size 16k --luks2-keyslots-size 128k --offset 320 "$seeds/l2-pbkdf2.luks"
  LC_ALL=C sed 's/"size":"dynamic"/"size":"8192"   /g' "$seeds/l2-pbkdf2.luks" > "$seeds/l2-fixed.luks"
  # Issue 8 item 6: a fixed-size segment at offset 2^64-4096 (the JSON grows by 11 bytes, taken
  # from the NUL padding of its area; luks_volume fixes the checksums); the seed's read at 4096
  # made the device offset wrap.
  perl -0777 -pe 's/"offset":"163840","size":"8192"   (.*?)\0{11}/"offset":"18446744073709547520","size":"8192"$1/gs' \
    "$seeds/l2-fixed.luks" > "$seeds/l2-wrap.luks"
  truncate -s 104k "$seeds/l2-argon2.luks"
  fmt --type luks2 --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 32 --pbkdf-parallel 1 \
    --cipher aes-cbc-essiv:sha256 --key-size 128 --luks2-metadata-size 16k --luks2-keyslots-size 64k \
    --offset 192 "$seeds/l2-argon2.luks"
  truncate -s 304k "$seeds/l2-4k.luks"
  fmt --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --hash sha512 --cipher aes-xts-plain64 \
    --key-size 512 --luks2-metadata-size 16k --luks2-keyslots-size 256k --offset 576 --sector-size 4096 \
    "$seeds/l2-4k.luks"
  for f in "$seeds"/*.luks; do
    b=$(basename "$f")
    { luks_ops; cat "$f"; } > "$corpus/luks_volume/$b"
    { printf '\x01\x01'; le 15 1; le 4096 8; le 512 3; cat "$f"; } > "$corpus/luks_volume/read4k-$b"
    seed_image "$f"
    if [[ $(od -An -j7 -N1 -tu1 "$f" | tr -d " ") == 1 ]]; then
      # luks1_unlock: every keyslot; keyslot 0 only, with a wrong passphrase too.
      { printf '\x00'; le 0 6; cat "$f"; } | put luks1_unlock "$b"
      { printf '\x09'; le 0 6; cat "$f"; } | put luks1_unlock "slot0-$b"
      head -c 4096 "$f" > "$corpus/luks1_header/$b"
    else
      # luks2_unlock: plain; checksums fixed and compared with the one-step open; keyslot 0.
      { printf '\x00'; cat "$f"; } | put luks2_unlock "$b"
      { printf '\x05'; cat "$f"; } | put luks2_unlock "fixed-$b"
      { printf '\x02'; cat "$f"; } | put luks2_unlock "slot0-$b"
      head -c 32768 "$f" > "$corpus/luks2_header/$b"
    fi
  done
fi

# Structured inputs for the targets that build their own data (the layouts are in each
# target's doc comment): a spread of choice bytes, then bytes that vary.
filler() { head -c "$2" < <(yes "qluks fuzz seed $1"); }
for i in 0 1 2 3 4 5 6 7 8 9 10 11; do
  c=$((i * 37 % 256))
  # xts: key length, unit size and first-unit kinds; count 9; u16 extra; unit numbers.
  { le $(((i & 3) | (i << 3 & 0x38) | (i > 8 ? 4 : 0))) 1; le $((i % 4)) 1; le 8 1; le $((100 + i)) 2
    le $((0xfffffff0 + i)) 8; le 0 8; filler "$i" 160; } | put xts_differential "s$i"
  # cbc: key length, IV generator, first-sector kind; sector size; count 5; ESSIV hash; n.
  { le $(((i % 3) | (i % 4) << 2 | (i % 8) << 4)) 1; le $((i % 4)) 1; le 4 1; le "$i" 1; le $((48 + i)) 2
    le $((0xfffffffd)) 8; filler "iv$i" 16; filler "$i" 160; } | put cbc_differential "s$i"
  # luks_create_roundtrip: LUKS1/LUKS2 (PBKDF2 and Argon2id), modes, key sizes, hashes.
  { le $((i % 4 == 3 ? 1 : i % 2 | (i % 4 == 1 ? 2 : 0))) 1; le "$i" 1; le $((i * 5)) 1; le "$i" 1; le 1000 2; le 1000 2
    le 1 1; le 32 2; le 1 1; le $((i % 4)) 4; le 0 4; le $((16 + i)) 2; le "$c" 1
    le 700 4; le 3000 2; le 0 4; le 512 2; le 9999 4; le 100 2; le 4096 4; le 4096 2; filler "$i" 64; } |
    put luks_create_roundtrip "s$i"
  # qcow2_create_roundtrip: options across v2/v3, cluster sizes 512..64K, refcount widths,
  # LUKS and legacy AES; four operations.
  { le $(((i & 0x0f) & ~0x10 | (i == 5 ? 0x30 : 0))) 1; le "$i" 1; le $((i % 7)) 1; le $((i % 3 == 1 ? 1 : (i == 8 ? 2 : 0))) 1
    le 0 1; le $((2048 + i * 100)) 8; le 1000 2; le 0 8; le 0 1; le 0 1
    le 0 1; le 1000 4; le 5000 2; le 2 1; le 3000 4; le 9000 2; le 3 1; le 0 4; le 4096 2; le 4 1; le 77 4; le 300 2
    filler "$i" 64; } | put qcow2_create_roundtrip "s$i"
done
echo "seeded $(find "$corpus" -type f | wc -l) inputs in $corpus"
