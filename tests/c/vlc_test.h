// vlc_test.h: what the C test programs share: CHECK, which records a failure and goes on
// (the first 30 are printed), and a seeded splitmix64 generator, so every run sees the
// same data. Define VLC_TEST_SEED before including it to pick a test's own stream.
#pragma once

#include <stdint.h>
#include <stdio.h>

#ifndef VLC_TEST_SEED
#    define VLC_TEST_SEED 0x9e3779b97f4a7c15ull
#endif

static int g_fail = 0;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            if (g_fail < 30) {                                                  \
                fprintf(stderr, "%s:%d: FAIL %s: ", __FILE__, __LINE__, #cond); \
                fprintf(stderr, __VA_ARGS__);                                   \
                fprintf(stderr, "\n");                                          \
            }                                                                   \
            g_fail++;                                                           \
        }                                                                       \
    } while (0)

static uint64_t g_rng = VLC_TEST_SEED;

static inline uint64_t rng_u64(void) {  // splitmix64
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z          = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z          = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline float rng_unif(void) {  // [-1, 1)
    return (float) ((double) (rng_u64() >> 11) * 0x1p-53 * 2.0 - 1.0);
}
