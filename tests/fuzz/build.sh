#!/usr/bin/env bash
# Builds the libFuzzer harnesses (ASan + UBSan) and their seed corpora:
#   tests/fuzz/build.sh [OUT]        (default OUT: build-fuzz)
# gives OUT/fuzz_gguf, OUT/fuzz_tokenizer and OUT/seeds/{gguf,tokenizer}/. Needs clang with
# libFuzzer (Debian: clang + libclang-rt-NN-dev). JOBS=n compiles n files at a time (1).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-build-fuzz}
CC=${CC:-clang}
JOBS=${JOBS:-1}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=gnu11 -g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE -Inative/include -Inative/src $SAN"
mkdir -p "$OUT/obj" "$OUT/seeds/gguf" "$OUT/seeds/tokenizer"

# the library, instrumented for coverage (libFuzzer's main comes in at the link); an object
# newer than its source and every header is kept
newest_h=$(ls -t native/src/*.h native/include/*.h | head -1)
for src in native/src/*.c; do
    obj="$OUT/obj/$(basename "$src" .c).o"
    if [ ! "$obj" -nt "$src" ] || [ ! "$obj" -nt "$newest_h" ]; then echo "$src $obj"; fi
done | xargs -r -n 2 -P "$JOBS" sh -c "$CC $CFLAGS -fsanitize=fuzzer-no-link -c \"\$0\" -o \"\$1\""
for h in fuzz_gguf fuzz_tokenizer; do
    $CC $CFLAGS -fsanitize=fuzzer "tests/fuzz/$h.c" "$OUT"/obj/*.o -lm -lpthread -o "$OUT/$h"
done

# seeds: tiny files written with the C tests' helpers (tests/c/vlc_tiny_vision.h)
$CC $CFLAGS tests/fuzz/seeds.c "$OUT"/obj/*.o -lm -lpthread -o "$OUT/seeds_writer"
"$OUT/seeds_writer" "$OUT/seeds"
echo "built $OUT/fuzz_gguf $OUT/fuzz_tokenizer; seeds: $(ls "$OUT/seeds/gguf" | wc -l) gguf, $(ls "$OUT/seeds/tokenizer" | wc -l) tokenizer"
