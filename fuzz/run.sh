#!/usr/bin/env bash
# A bounded cargo-fuzz run of every target, each starting from its corpus (fuzz/corpus/<target>/).
#   FUZZ_SECONDS   seconds per target (default 15; docs/FUZZING.md has the long run)
#   FUZZ_PROFILE   `dev` (default: an unoptimised build, several times faster to compile, which
#                  is what a bounded regression run needs) or `release` (for long runs)
# Needs nightly and cargo-fuzz; without them it says so and exits 0 (the corpora and every
# crash file are replayed on stable by tests/fuzz_corpora.rs in any case). A crash fails the
# run; libFuzzer leaves the input in fuzz/artifacts/<target>/, which is kept as a regression
# input once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECONDS:-15}"
case "${FUZZ_PROFILE:-dev}" in
    dev) profile=(--dev) ;;
    release) profile=() ;;
    *) echo "fuzz: FUZZ_PROFILE is dev or release" >&2; exit 2 ;;
esac

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: no nightly toolchain here; bounded fuzzing skipped (corpora still run on stable)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz is not installed (cargo install cargo-fuzz); bounded fuzzing skipped"
    exit 0
fi

cd fuzz
cargo +nightly fuzz build "${profile[@]}"
for target in $(cargo +nightly fuzz list); do
    # Work on a copy: inputs found here are not written into the checkout.
    work="$(mktemp -d)"
    cp -r "corpus/$target/." "$work/"
    log="$work.log"
    status=0
    cargo +nightly fuzz run "${profile[@]}" "$target" "$work" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    runs="$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)"
    rm -rf "$work"
    if [ "$status" != "0" ]; then
        tail -40 "$log"
        echo "fuzz: $target FAILED (the input is in fuzz/artifacts/$target/)"
        exit 1
    fi
    echo "fuzz: $target: ${runs:-?} runs in ${secs}s, no crash"
    rm -f "$log"
done
echo "fuzz: every target ran ${secs}s without a crash"
