// ops_cpu.h: the reference CPU kernels of the text model, written plainly. They are the
// oracle the SIMD and CUDA variants are tested against, so they stay simple: f32
// activations, f32 accumulation, one fixed summation order per output, and no dispatch
// to anything faster. Kernel layers, each using only those below it: types and block
// layouts (quant.h) <- these references <- the SIMD kernels (ops_simd.h, ops_qsimd.h) <-
// the dispatching entry points (vlc_cpu_matmul*, matmul.c; vlc_cpu_attn*, ops_attn.c).
// Letters: T = tokens, C = n_embd, H = n_head, Hkv = n_head_kv, G = H / Hkv, D = head_dim,
// N = entries in a KV head.
#pragma once

#include "quant.h"
#include "threads.h"
#include "vlcache.h"

#include <stddef.h>
#include <stdint.h>

// ---------------------------------------------------------------------------
// vector ops

// sum_i a[i] * b[i] with 8 partial sums (element i goes to sum i % 8), combined pairwise.
float vlc_cpu_dot(const float * a, const float * b, int64_t n);

// out[n] = x[n] / sqrt(mean(x^2) + eps) * w[n]. out may equal x.
void vlc_cpu_rmsnorm(float * out, const float * x, const float * w, int64_t n, float eps);

// Numerically stable softmax of x[n], in place.
void vlc_cpu_softmax(float * x, int64_t n);

// out[n] = silu(gate[n]) * up[n], silu(g) = g / (1 + exp(-g)). out may equal gate or up.
void vlc_cpu_swiglu(float * out, const float * gate, const float * up, int64_t n);

// ---------------------------------------------------------------------------
// RoPE, adjacent-pair ("normal") style, as llama.cpp runs llama GGUFs (whose Q/K rows
// are permuted so that Hugging Face's rotate-half pairs (j, j + D/2) become (2j, 2j+1)).

// cs[D]: (cos, sin) of theta_j = pos * freq_scale * base^(-2j/D), j = 0 .. D/2-1, at
// cs[2j], cs[2j+1]. The frequency and the angle are rounded to f32 the way Hugging Face
// computes them (inv_freq = 1 / base^(2j/D) in f32, angle = f32 product); cos and sin
// are evaluated in double and rounded.
void vlc_cpu_rope_table(float * cs, int32_t pos, int32_t D, float freq_base, float freq_scale);

// x[n_head, D]: rotates each pair (x[2j], x[2j+1]) of every head by cs (from rope_table).
void vlc_cpu_rope(float * x, int32_t n_head, int32_t D, const float * cs);

// ---------------------------------------------------------------------------
// matmul: y = W x, W [n_out, n_in] stored as rows of F32 / F16 / BF16 or a block type of
// quant.h (GGUF ne = [n_in, n_out]).

// Rows a matmul task owns; the threaded matmul splits the output rows in blocks of this
// many. Work per thread: VLC_MATMUL_ROWS * n_in floats (unused for F32 weights).
enum { VLC_MATMUL_ROWS = 16 };
// Below this many tokens, F16 / BF16 rows are converted inside the dot product instead
// (decode); at or above it, once per row into work and reused for every token (prefill).
enum { VLC_MATMUL_FUSED_MAX_TOK = 3 };

// The reference (ops_cpu.c: the oracle, calling nothing faster). For o in [r0, r1) and
// t in [0, n_tok):
//   y[t * ldy + o] = (accumulate ? y[t * ldy + o] : 0) + dot(W[o, :], x[t * ldx .. + n_in])
// x [n_tok, n_in] with row stride ldx; y [n_tok, ldy]. Each W row is converted to f32
// once (into work[VLC_MATMUL_ROWS, n_in]) and dotted with every token, or for fewer than
// VLC_MATMUL_FUSED_MAX_TOK tokens converted inside the dot. Every y element is one dot in
// vlc_cpu_dot's summation order, so the result depends neither on r0, r1, the blocking,
// nor on n_tok (decode gives the same bits as the same row inside a prefill).
// Block-quantized W: each token's row is quantized to 8-bit activation blocks (quant.h)
// into work, and every output is one vlc_vec_dot_ref.
void vlc_ref_matmul_rows(float * y, int64_t ldy, const void * w, uint32_t type, const float * x,
                         int64_t ldx, int64_t n_in, int64_t n_tok, int64_t r0, int64_t r1,
                         int accumulate, float * work);

// The CPU matmul (matmul.c, the one dispatch point), same contract: block-quantized W
// through vlc_qmatmul_rows (ops_qsimd.h: the same bits as a caller that quantizes the
// activations once and calls it itself), float W through the SIMD kernels of ops_simd.h
// when the CPU has them (their bits, not the reference's), else vlc_ref_matmul_rows.
void vlc_cpu_matmul_rows(float * y, int64_t ldy, const void * w, uint32_t type, const float * x,
                         int64_t ldx, int64_t n_in, int64_t n_tok, int64_t r0, int64_t r1,
                         int accumulate, float * work);

// Single-threaded y [n_tok, n_out] (+)= x [n_tok, n_in] W^T; work [VLC_MATMUL_ROWS * n_in].
void vlc_cpu_matmul(float * y, const void * w, uint32_t type, const float * x, int64_t n_in,
                    int64_t n_out, int64_t n_tok, int accumulate, float * work);

// Same, spread over the pool in tasks of output rows; bit-identical to vlc_cpu_matmul for
// any thread count. work [n_threads, VLC_MATMUL_ROWS * n_in]. xq: NULL, or room for the
// n_tok activation rows of a block-quantized W (vlc_act_row_bytes(type, n_in) bytes each),
// which are then quantized once for all tasks instead of once per task.
void vlc_cpu_matmul_mt(vlc_pool * pool, float * y, const void * w, uint32_t type, const float * x,
                       int64_t n_in, int64_t n_out, int64_t n_tok, int accumulate, float * work, void * xq);

// ---------------------------------------------------------------------------
// attention of query rows against one KV head (ops_attn.c): the reference kernels (VLC_SIMD
// off, non-x86 builds, KV types other than F32 / F16) and AVX2 / AVX-512 kernels chosen by
// vlc_simd_level(). Each level has one fixed arithmetic per query vector (ops_attn.c's
// header comment), so a row's result depends neither on R, its place in the block, the
// thread split nor the chunking (a decode step gives the bits of its prefill row); the
// AVX2 and AVX-512 kernels give the same bits, the reference (vlc_cpu_dot, expf) others.

// Keys per tile; tiles start at multiples of it (absolute entry index).
enum { VLC_ATTN_TILE = 64 };
// Query vectors (rows x G) the block kernel carries through the keys together: each K / V
// tile is converted once per pass of max(1, VLC_ATTN_PASS / G) rows.
enum { VLC_ATTN_PASS = 256 };

// Rows of one pass: max(1, VLC_ATTN_PASS / G). Blocks of a multiple of it waste nothing.
int32_t vlc_cpu_attn_pass_rows(int32_t G);

// Floats of work the attention kernels need for G query heads of dimension D, any R
// (aligned to 64 bytes inside).
size_t vlc_cpu_attn_work_floats(int32_t G, int32_t D);

// Flash attention of R consecutive query rows against the entries k[N, D], v[N, D] (type
// F32 or F16) of one KV head shared by G query heads:
//   q    row r's G query heads at q + r * ldq ([G, D])
//   out  row r's G outputs at out + r * ldo ([G, D]); must not overlap q
//   n0   entries row 0 sees (>= 1); row r sees n0 + r (causal) or n0 (causal == 0)
//   ml   NULL, or row r's final softmax (max, sum) of head g at ml[r * ldml + 2g], [.. + 1]
// out_g = softmax(q_g k^T * scale) v over the visible entries, keys in tiles of
// VLC_ATTN_TILE with a running max and normaliser per row and head (online softmax), no
// row x key matrix stored. work [vlc_cpu_attn_work_floats(G, D)].
void vlc_cpu_attn_rows(float * out, int64_t ldo, float * ml, int64_t ldml, const float * q, int64_t ldq, int32_t R,
                       int64_t n0, int causal, int32_t G, const void * k, const void * v, uint32_t kv_type, int32_t D,
                       float scale, float * work);

// One query position: out[G, D] for q[G, D] against all N entries (vlc_cpu_attn_rows with
// R = 1, n0 = N).
void vlc_cpu_attn(float * out, const float * q, int32_t G, const void * k, const void * v,
                  uint32_t kv_type, int64_t N, int32_t D, float scale, float * work);

// The same, bit for bit, and also writes each query head's final softmax max and sum:
// ml[2g] = max_j s_gj, ml[2g + 1] = sum_j exp(s_gj - max) (the online normaliser, in f32),
// s_gj the score as the active level computes it. ml [G, 2] may be NULL.
void vlc_cpu_attn_ml(float * out, float * ml, const float * q, int32_t G, const void * k, const void * v,
                     uint32_t kv_type, int64_t N, int32_t D, float scale, float * work);

// Floats of work vlc_cpu_attn_stats needs for dimension D.
size_t vlc_cpu_attn_stats_work_floats(int32_t D);

// Attention statistics of W consecutive query rows against the entries [j0, j1) of one
// KV head, without any row x key matrix: scores are recomputed tile by tile once each
// row's max and normaliser are known (from vlc_cpu_attn_rows / _ml).
//   q    row r's G query heads at q + r * ldq, [G, D] each (r = 0 .. W-1)
//   n0   entries visible to row 0 (causal prefix 0 .. n0-1, n0 >= 1); row r sees n0 + r
//   ml   row r's (max, sum) of head g at ml[r * ldml + 2g], ml[r * ldml + 2g + 1]
// For every visible entry j of [j0, j1), with e = exp(s - max) computed from the same f32
// score and with the same exp as the attention of the active level (so 0 <= e <= 1, and
// the row max gives exactly 1):
//   colsum[j - j0] += (double) (e * (1 / sum))   summed over rows r (in order) then heads g
//   count[g]       += (e >= p)                  i.e. weight >= p * row max, decided on e
// colsum [j1 - j0] and count [G] accumulate. The weights are f32 (as the attention uses
// them); the per-key sums are double. work [vlc_cpu_attn_stats_work_floats(D)].
void vlc_cpu_attn_stats(double * colsum, int64_t * count, const float * q, int64_t ldq, int32_t W, int64_t n0,
                        const float * ml, int64_t ldml, int32_t G, const void * k, uint32_t kv_type, int64_t j0,
                        int64_t j1, int32_t D, float scale, float p, float * work);

// y[n] = exp(x[n]) as the attention kernels of the active level compute it (tests): libm
// expf for the reference, else the vector polynomial of ops_attn.c (<= 1 ulp; x <= -104
// gives 0).
void vlc_cpu_attn_exp(float * y, const float * x, int64_t n);

// ---------------------------------------------------------------------------
// vision ops (the CLIP ViT and the LLaVA projector, vision.c). Same rules: f32, one fixed
// order per output element.

// out[n] = (x - mean) / sqrt(var + eps) * w + b, mean and biased variance of x[n]
// accumulated in double over two passes (as torch's LayerNorm, to f32 rounding). w or b
// may be NULL (1 / 0). out may equal x.
void vlc_cpu_layernorm(float * out, const float * x, const float * w, const float * b, int64_t n, float eps);

// x[n] += b[n].
void vlc_cpu_add(float * x, const float * b, int64_t n);

// In place over x[n]. Exact GELU 0.5 x (1 + erf(x / sqrt 2)) (torch "gelu"); its tanh
// approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) ("gelu_pytorch_tanh",
// "gelu_new"); CLIP's quick_gelu x * sigmoid(1.702 x).
void vlc_cpu_gelu_erf(float * x, int64_t n);
void vlc_cpu_gelu_tanh(float * x, int64_t n);
void vlc_cpu_quick_gelu(float * x, int64_t n);

// Patchify for a PxP stride-P convolution without padding, as im2col: img [3, S, S]
// (planar) -> out [(S/P)^2, 3*P*P], patch p = py * (S/P) + px (row-major), element
// (ch, ky, kx) at ch*P*P + ky*P + kx, the order of a torch Conv2d weight [Cout, 3, P, P]
// (GGUF ne [P, P, 3, Cout]), so the convolution is out times W^T. S % P == 0.
void vlc_cpu_patchify(float * out, const float * img, int32_t S, int32_t P);
