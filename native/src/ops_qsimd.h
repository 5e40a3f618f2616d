// ops_qsimd.h: fast dot products of block-quantized weight rows with 8-bit activation
// rows (quant.h), and the quantized matmul built on them. AVX2 and AVX-512 (VNNI where
// the CPU has it) paths plus the portable reference, chosen at run time by the level of
// ops_simd.h (VLC_SIMD=off|avx2|avx512; vlc_simd_set_level in tests), so one build runs
// on any x86-64.
//
// Results: each path sums exact integer products per block and combines the blocks in
// f32 in a fixed order; paths differ from the reference only by f32 rounding (the tests
// state the bound). For a given path an output does not depend on r0 / r1, the thread
// split or n_tok (a decode step gives the bits the same row has inside a prefill).
#pragma once

#include <stddef.h>
#include <stdint.h>

// One weight row of wtype . one activation row (vlc_quantize_act_row for wtype), n elements.
typedef float (*vlc_qdot_fn)(const void * w, const void * xq, int64_t n);

// The kernel for wtype at the active SIMD level (the reference when there is no faster
// path); NULL for a type that is not quantized.
vlc_qdot_fn vlc_qdot_get(uint32_t wtype);

// For o in [r0, r1) and t in [0, n_tok):
//   y[t * ldy + o] = (accumulate ? y[t * ldy + o] : 0) + W[o, :] . xq[t]
// W [n_out, n_in] rows of wtype; xq [n_tok] activation rows of vlc_act_row_bytes(wtype,
// n_in) bytes each. Blocks rows and tokens for reuse (prefill); same bits as the per-row
// kernel of vlc_qdot_get. laid: NULL, or the same n_tok rows laid out by vlc_qact_lay, which
// the SIMD decode kernels of legacy types read (lay out once per matmul, not per row range).
// Allocates only when a thread's kept scratch must grow (vlc_thread_scratch, threads.h).
void vlc_qmatmul_rows(float * y, int64_t ldy, const void * w, uint32_t wtype, const void * xq, int64_t n_in,
                      int64_t n_tok, int64_t r0, int64_t r1, int accumulate, const void * laid);

// Decode activations of the legacy types (Q4_0 .. Q8_0) laid out as their SIMD row kernels
// read them: vlc_qact_laid_bytes per token (0 for other types), written by vlc_qact_lay from
// n_tok activation rows xq.
size_t vlc_qact_laid_bytes(uint32_t wtype, int64_t n_in);
void   vlc_qact_lay(uint32_t wtype, const void * xq, int64_t n_in, int64_t n_tok, void * laid);
