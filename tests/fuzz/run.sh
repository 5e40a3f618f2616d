#!/usr/bin/env bash
# Builds the fuzzers (tests/fuzz/build.sh) and runs each of the four for SECONDS:
#   tests/fuzz/run.sh [SECONDS] [OUT]      (defaults: 25, build-fuzz)
# fuzz_gguf and fuzz_tokenizer (libFuzzer, ASan + UBSan), then the atheris harness's image and
# chat targets. Corpora grow in OUT/corpus/<name> (seeded on first use); a crash, leak, hang
# (10 s per input) or an exception that is not a VlcacheError stops that fuzzer, leaves its
# input in OUT/artifacts/ and makes this script fail.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH=${1:-25}
OUT=${2:-build-fuzz}
tests/fuzz/build.sh "$OUT"
mkdir -p "$OUT/artifacts"
FLAGS=(-max_total_time="$SECONDS_EACH" -timeout=10 -print_final_stats=1 -artifact_prefix="$OUT/artifacts/")
# one fuzzer: NAME LOG COMMAND...; its log's tail when it fails
run() {
    local name=$1 log=$2
    shift 2
    echo "== $name, ${SECONDS_EACH}s"
    if ! "$@" >"$log" 2>&1; then
        grep -vE "NEW|REDUCE|pulse" "$log" | tail -40
        echo "$name: FINDING, input saved in $OUT/artifacts/ (log: $log)"
        exit 1
    fi
    grep -E "^#[0-9]+[[:space:]]+DONE|^stat::number_of_executed_units|^stat::average_exec_per_sec" "$log" || true
}
for h in gguf tokenizer; do
    mkdir -p "$OUT/corpus/$h"
    run "fuzz_$h" "$OUT/fuzz_$h.log" "$OUT/fuzz_$h" "${FLAGS[@]}" "$OUT/corpus/$h" "$OUT/seeds/$h"
done
for t in image chat; do
    run "atheris $t" "$OUT/atheris_$t.log" python tests/fuzz/fuzz_python.py "$t" "$OUT/corpus/py_$t" "${FLAGS[@]}"
done
echo "fuzz: no findings"
