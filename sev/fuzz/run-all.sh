#!/bin/sh
# Runs every cargo-fuzz target of the sev crate for a bounded time.
# Usage (from anywhere): sh sev/fuzz/run-all.sh [seconds-per-target]
set -eu
secs="${1:-30}"
cd "$(dirname "$0")/.."
for target in $(cargo +nightly fuzz list); do
    echo "== $target (${secs}s)"
    cargo +nightly fuzz run "$target" -- -max_total_time="$secs"
done
