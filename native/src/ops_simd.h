// ops_simd.h: SIMD (AVX2 / AVX-512) matmul kernels over F32 / F16 / BF16 weight rows,
// chosen at run time so that one build runs on any x86-64. The reference kernels of
// ops_cpu.h stay the oracle and the fallback: vlc_simd_matmul_rows returns 0 when it has
// no path (SIMD off, non-x86 build, another weight type) and the caller runs the
// reference.
//
// Level: the best the CPU supports, unless the environment variable VLC_SIMD
// (off | avx2 | avx512, read once at first use) asks for another; a level the CPU lacks
// falls back to the best lower one. Tests switch levels with vlc_simd_set_level.
//
// Summation order (per level, fixed): each output y[t, o] = W[o, :] . x[t, :] is one
// L-lane FMA chain over k in increasing order (lane l takes k = l, l + L, ...; the tail
// is zero-padded to a whole vector), L = 8 (AVX2) or 16 (AVX-512), then a fixed
// horizontal tree reduction. F16 / BF16 elements are converted exactly (vcvtph2ps, bf16
// shift) whether on the fly or into the packed buffer first. So an output's bits depend
// neither on r0 / r1, the row or token blocking, the thread split, nor on n_tok: a decode
// step gives the same bits as the same row inside a prefill. They do differ from the reference
// kernel (fused multiply-add, another order), within f32 rounding.
#pragma once

#include <stddef.h>
#include <stdint.h>

enum { VLC_SIMD_OFF = 0, VLC_SIMD_AVX2 = 1, VLC_SIMD_AVX512 = 2 };

// The active level (decided once: VLC_SIMD, else the best the CPU has).
int vlc_simd_level(void);

// 1 if this CPU (and build) can run level, else 0. VLC_SIMD_OFF is always supported.
int vlc_simd_supported(int level);

// Forces level (tests, benchmarks); one the CPU lacks is lowered to the best supported
// level below it. Returns the previous level. Not meant to race with running matmuls.
int vlc_simd_set_level(int level);

// "off", "avx2", "avx512".
const char * vlc_simd_level_name(int level);

// Same contract as vlc_cpu_matmul_rows: for o in [r0, r1) and t in [0, n_tok),
//   y[t * ldy + o] = (accumulate ? y[t * ldy + o] : 0) + W[o, :] . x[t * ldx .. + n_in]
// W [n_out, n_in] rows of type F32 / F16 / BF16 (VLC_TYPE_*), x [n_tok, ldx], y [n_tok, ldy].
// From 6 tokens (AVX-512; 128 with AVX2) on, blocks of up to 64 rows are converted once into
// a per-thread, 64-byte aligned buffer (about 1 MiB, kept until the thread exits) and run
// through register tiles of 4 rows x 6 (3) tokens; below that, rows are converted on the
// fly (also when the buffer cannot be allocated): AVX2 in tiles of 3 rows x 4 tokens from
// 3 tokens on (a batched decode step), else 8 rows x 1 token. Same bits either way. work: unused (kept for the vlc_cpu_matmul_rows signature;
// NULL is fine). Returns 1 when done, 0 when it has no path for this call (nothing
// written; run the reference instead).
int vlc_simd_matmul_rows(float * y, int64_t ldy, const void * w, uint32_t type, const float * x,
                         int64_t ldx, int64_t n_in, int64_t n_tok, int64_t r0, int64_t r1,
                         int accumulate, float * work);

// Output rows a matmul task should own for n_tok tokens of n_in inputs so that the packed
// kernel reuses each activation row across them: VLC_MATMUL_ROWS (16) for decode, without
// SIMD, or for very long rows; else a multiple of it (64 for n_in <= 4096 at 1 MiB of packed
// rows, 32 for n_in = 5632). Row ranges of any size give the same bits; this only sets
// how much of x is re-read from L3 per row (16-row tasks: ~25% slower prefill matmuls).
int64_t vlc_simd_task_rows(int64_t n_in, int64_t n_tok);
