#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) and prints, per target, the executions,
# the corpus size and any crash. Needs nightly and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
# Corpora grow in fuzz/corpus/<target> (seeded from fuzz/seeds/<target>); crashes land in
# fuzz/artifacts/<target>/. Exit status 1 when any target crashed.
set -uo pipefail
secs=${1:-60}
cd "$(dirname "$0")"
targets=(manifest format_json decrypted_archive allowed_signers signature bbolt listing_cache)
mkdir -p corpus
cargo +nightly fuzz build -O >corpus/build.log 2>&1 || { tail -30 corpus/build.log; exit 2; }
failed=0
printf '%-18s %12s %8s %10s %s\n' TARGET EXECS "EXEC/S" CORPUS CRASHES
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null
    before=$(ls "artifacts/$t" | wc -l)
    log="corpus/$t.log"
    # A 512 MiB ceiling: any input that makes a parser allocate more is a crash.
    cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=512 -malloc_limit_mb=512 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$')
    rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$')
    corpus=$(ls "corpus/$t" | wc -l)
    crashes=$(( $(ls "artifacts/$t" | wc -l) - before ))
    printf '%-18s %12s %8s %10s %s\n' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "$crashes"
    if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        failed=1
        grep -E 'panicked|ERROR: libFuzzer|SUMMARY' "$log" | head -5
        ls "artifacts/$t"
    fi
done
exit $failed
