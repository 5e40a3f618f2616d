// backend.h: the seam between the forward passes (text.c, vision.c) and a device.
//
// A backend is a table of coarse ops over its own memory plus the state it needs to run
// them (the CPU backend, backend_cpu.c: a thread pool, per-thread scratch, the quantized
// activation buffers and every task split). The forward passes call only these ops and
// read like the model, layer by layer; they hold no thread, SIMD or device detail. What
// stays host code: positions, lengths, the statistics' bookkeeping and the KV policies.
//
// Memory: every float * / void * an op takes is backend memory (from alloc) or a weight
// bound to the backend, except where a comment says "host". On the CPU backend both are
// plain host memory and a bound weight is the model's view into the GGUF mapping. Three
// places still hand the CPU backend host memory where a device backend needs a staging
// copy: the pixels of patch_embed, the projector's output and the logits rows (the
// caller's buffers); the CUDA backend (issue 13) adds those copies and the model's
// per-backend weight copies. Ops are issued in order; sync waits for all of them (a no-op
// on the CPU, where each op returns when it is done).
//
// Determinism: each op computes every output element in one fixed order, so its bits do
// not depend on the thread count, the task split or how the caller chunks tokens.
// Letters: T = rows (tokens), C = row width, H = query heads, Hkv = KV heads, G = H / Hkv,
// D = head_dim.
#pragma once

#include "vlcache.h"

#include <stddef.h>
#include <stdint.h>

struct vlc_weight;
struct vlc_kvcache;
struct vlc_stats;

// Activations after a matmul's bias (vision): none, exact GELU, its tanh approximation,
// CLIP's quick GELU (ops_cpu.h).
enum { VLC_ACT_NONE, VLC_ACT_GELU_ERF, VLC_ACT_GELU_TANH, VLC_ACT_QUICK_GELU };

// One output of a matmul job: y[t, o] = (accumulate ? y[t, o] : 0) + W[o, :] . x[t, :],
// then + b[o] and act (b may be NULL). A job's outputs all read the same x.
typedef struct vlc_mm {
    float *                   y;    // [T, ldy]
    int64_t                   ldy;
    const struct vlc_weight * w;    // [n_out, n_in], bound to the backend
    const float *             b;    // [n_out] or NULL
    int                       act;  // VLC_ACT_*
    int                       accumulate;
} vlc_mm;

// One sequence's rows of an attention op: rows [row, row + n) of q, k and v belong to the
// sequence whose cache is kv, at positions pos, pos + 1, ... Its new K / V rows go to
// entries kv head length .. + n - 1 (the caller advances the lengths afterwards).
typedef struct vlc_attn_seq {
    struct vlc_kvcache * kv;
    int32_t              row, n;
    int32_t              pos;
} vlc_attn_seq;

// What the scratch of later ops must hold, for reserve: rows up to max_rows, matmul
// inputs up to max_in wide over weights of the given types, attention of G query heads
// per KV head of dimension D.
typedef struct vlc_backend_need {
    int64_t          max_rows;
    int64_t          max_in;
    int32_t          G, D;
    const uint32_t * types;  // host, [n_types] weight types the matmuls will read
    int32_t          n_types;
} vlc_backend_need;

typedef struct vlc_backend vlc_backend;

struct vlc_backend {
    const char * name;
    int32_t      n_threads;
    void *       ctx;  // the backend's own state

    void (*free)(vlc_backend * be);

    // memory
    void * (*alloc)(vlc_backend * be, size_t bytes);  // NULL when out of memory
    void   (*dealloc)(vlc_backend * be, void * p);    // NULL is a no-op
    void   (*upload)(vlc_backend * be, void * dst, const void * src_host, size_t bytes);
    void   (*download)(vlc_backend * be, void * dst_host, const void * src, size_t bytes);
    void   (*copy)(vlc_backend * be, void * dst, const void * src, size_t bytes);
    // dst row i = src row idx[i] (idx host, [n]), rows of row_bytes: KV compaction.
    void   (*gather_rows)(vlc_backend * be, void * dst, const void * src, const int32_t * idx, int64_t n,
                          size_t row_bytes);
    void   (*sync)(vlc_backend * be);
    // Grows the scratch to what need says (never shrinks): after it, ops within it allocate
    // nothing. VLC_STATUS_OOM leaves the old scratch.
    vlc_status (*reserve)(vlc_backend * be, const vlc_backend_need * need);

    // row ops
    // x[t, :] = row tokens[t] of the table ([V, C], any weight type) in f32; tokens host.
    void (*embed)(vlc_backend * be, float * x, const struct vlc_weight * table, const int32_t * tokens, int64_t T);
    // y[t] = rmsnorm(x[t]) * w (C wide); y may equal x.
    void (*rmsnorm)(vlc_backend * be, float * y, const float * x, const float * w, int64_t T, int64_t C, float eps);
    // y[t] = layernorm(x[t]) * w + b; y may equal x.
    void (*layernorm)(vlc_backend * be, float * y, const float * x, const float * w, const float * b, int64_t T,
                      int64_t C, float eps);
    // y[t] += x[t] (C wide).
    void (*add)(vlc_backend * be, float * y, const float * x, int64_t T, int64_t C);
    // gate[t] = silu(gate[t]) * up[t] (F wide).
    void (*swiglu)(vlc_backend * be, float * gate, const float * up, int64_t T, int64_t F);
    // Adjacent-pair RoPE of row t's H query and Hkv key heads (rows of q: H*D floats, of k:
    // Hkv*D) at position pos[t] (host).
    void (*rope)(vlc_backend * be, float * q, int32_t H, float * k, int32_t Hkv, const int32_t * pos, int64_t T,
                 int32_t D, float freq_base, float freq_scale);

    // matmul: n (1..3) outputs of one input x [T, n_in] (one job: x is converted or
    // quantized once for all of them).
    void (*matmul)(vlc_backend * be, const float * x, int64_t n_in, int64_t T, int n, const vlc_mm * outs);

    // decoder attention, layer il, GQA: every sequence's new K / V rows (k, v: [T, Hkv*D])
    // stored in its cache (entries from the head's current length on), ...
    void (*kv_store)(vlc_backend * be, const vlc_attn_seq * seqs, int32_t n_seqs, int32_t il, const float * k,
                     const float * v);
    // ... then out[t] = causal attention of q[t] ([T, H*D]) over its sequence's entries up
    // to its own, keys scaled by 1/sqrt(D). ml: NULL, or [T, H, 2] where row t's softmax
    // (max, sum) per head is kept (one sequence only: the statistics' rows).
    void (*attention)(vlc_backend * be, float * out, const float * q, int32_t H, const vlc_attn_seq * seqs,
                      int32_t n_seqs, int32_t il, float * ml);
    // The attention statistics of layer il for the chunk's T rows at positions p0 ..
    // (stats.h: vlc_stats_gather), from q and the ml that attention kept.
    void (*attn_stats)(vlc_backend * be, struct vlc_stats * stats, const struct vlc_kvcache * kv, int32_t il,
                       int32_t p0, int32_t T, const float * q);

    // ViT ops
    // Patch embedding of nt tiles (pixels [nt, 3, S, S]): x [nt, 1 + (S/P)^2, C] = [cls;
    // conv(patches) + bias] + pos, the convolution a matmul with weight patch [C, 3*P*P].
    // Scratch: cols [nt * (S/P)^2, 3*P*P] (the patches), conv [nt * (S/P)^2, C].
    void (*patch_embed)(vlc_backend * be, float * x, const float * pixels, int64_t nt, int32_t S, int32_t P,
                        const struct vlc_weight * patch, const float * bias, const float * cls, const float * pos,
                        float * cols, float * conv);
    // Bidirectional multi-head attention within each of nt tiles of T rows: q, k, v, out
    // [nt, T, H*D]; kh, vh [nt, H, T, D] scratch.
    void (*vit_attention)(vlc_backend * be, float * out, const float * q, const float * k, const float * v,
                          int64_t nt, int64_t T, int32_t H, int32_t D, float * kh, float * vh);
};

// backend_cpu.c: the CPU backend on n_threads (>= 1) threads.
vlc_status vlc_backend_cpu_create(int32_t n_threads, vlc_backend ** out);

static inline void vlc_backend_free(vlc_backend * be) {
    if (be) {
        be->free(be);
    }
}
