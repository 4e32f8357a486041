#!/usr/bin/env bash
# Short fuzzing smoke run of every target (CI): builds every target once, seeds each corpus
# with seed.sh (small qemu-img/qemu-io/cryptsetup images with tiny KDF costs, and structured
# inputs; generated, never committed), then runs each target for FUZZ_SECONDS (default 20)
# with the dictionary qluks.dict, built with overflow checks and debug assertions
# (cargo-fuzz's default without -O). Fails on any crash, leak, out-of-memory or slow unit
# (over FUZZ_TIMEOUT seconds, default 10: no input may make one execution slow). Needs a
# nightly toolchain and cargo-fuzz; prints executions and coverage per target.
set -euo pipefail
cd "$(dirname "$0")"
secs="${FUZZ_SECONDS:-20}"
unit_timeout="${FUZZ_TIMEOUT:-10}"
# FUZZ_TARGETS: a space-separated subset (default: every target in Cargo.toml).
targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"

if [[ -n "${FUZZ_TARGETS:-}" ]]; then
  for t in $targets; do cargo +nightly fuzz build "$t"; done
else
  cargo +nightly fuzz build # every target in one cargo run
fi
./seed.sh corpus
# The model targets decode any bytes into options and operations: one deterministic seed each.
for t in qcow2_write_model luks_volume_model; do
  mkdir -p "corpus/$t"; head -c 400 < <(yes "qluks $t seed") > "corpus/$t/text-seed"
done

failed=()
for t in $targets; do
  mkdir -p "corpus/$t"
  echo "--- fuzz $t for ${secs}s"
  # cargo fuzz exits non-zero on a crash (and the artifact is kept under artifacts/$t).
  if ! cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
    -timeout="$unit_timeout" -dict=qluks.dict -print_final_stats=1 > "corpus/$t.log" 2>&1; then
    failed+=("$t")
    grep -E 'ERROR|panicked|SUMMARY|Test unit written' -A3 "corpus/$t.log" | head -40 || true
  fi
  grep -E '^#[0-9]+.*DONE|^Done [0-9]+ runs' "corpus/$t.log" || true
  if compgen -G "artifacts/$t/*" >/dev/null; then
    echo "fuzz target $t left failing inputs:"; ls "artifacts/$t"
    [[ " ${failed[*]} " == *" $t "* ]] || failed+=("$t")
  fi
done
if ((${#failed[@]})); then
  echo "FAIL fuzz smoke: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz smoke: $(wc -w <<< "$targets") targets clean"
