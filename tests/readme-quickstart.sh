#!/usr/bin/env bash
# The README's library section as a newcomer uses it: every ```rust block becomes a binary of a
# new crate that depends on qluks by path (feature std), and the crate must build. (The same
# blocks also run as doctests through `#[doc = include_str!("../README.md")]` in src/lib.rs.)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/bin"
cat > "$work/Cargo.toml" <<EOF
[package]
name = "readme-quickstart"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
qluks = { path = "$repo", features = ["std"] }

[workspace]
EOF
cp "$repo/Cargo.lock" "$work/Cargo.lock"
awk -v dir="$work/src/bin" '
  /^```rust/ { n++; file = sprintf("%s/readme_example_%d.rs", dir, n); inside = 1; next }
  /^```/     { inside = 0; next }
  inside     { print > file }
' "$repo/README.md"
count=$(find "$work/src/bin" -name '*.rs' | wc -l)
if [ "$count" -lt 3 ]; then
  echo "FAIL: the README's library section should have at least 3 rust blocks, found $count"
  exit 1
fi
CARGO_TARGET_DIR="$repo/target/readme-quickstart" cargo build --quiet --offline --manifest-path "$work/Cargo.toml" --bins
echo "README quick start: $count examples build in a new crate"
