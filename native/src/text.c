// text.c: the Llama decoder's session state and forward pass, written against the
// backend seam (backend.h).
//
// Is: the session's state (its backend, which owns the threads and kernel scratch; its
// KV cache, kvcache.h; its attention statistics, stats.h; one activation slab in backend
// memory sized at create from n_batch) and vlc_text_forward:
// embed -> L x (RMSNorm, Q/K/V, RoPE, causal GQA attention, Wo + residual, RMSNorm,
// SwiGLU MLP + residual) -> final RMSNorm -> logits of the rows asked for. Prefill runs
// in chunks of n_batch tokens; decode is the same path with n = 1.
// Also: batched decoding (one step for many states of one model).
// Is not: the ops and how they split into tasks (backend_cpu.c), argument checks of the
// public API (api.c), the KV store (kvcache.c), the statistics' bookkeeping (stats.c),
// the policies (kvpolicy.c). An uncompressed cache holds n_ctx entries per head from
// create on; a compacted head grows (1.5x, up to what the context can still take) when a forward
// pass needs more room, before anything runs.
// Letters: T = tokens of a chunk (<= B = n_batch), C = n_embd, H = n_head,
// Hkv = n_head_kv, G = H / Hkv, D = head_dim, F = n_ff, V = n_vocab, L = n_layer.
#include "model.h"

#include "backend.h"
#include "error.h"
#include "kvcache.h"
#include "ops_cpu.h"
#include "quant.h"
#include "stats.h"
#include "threads.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

enum { VLC_MAX_CTX = 1 << 20 };

// ---------------------------------------------------------------------------
// state

struct vlc_text_state {
    const vlc_model * m;
    int32_t           n_ctx;
    int32_t           n_batch;     // B
    int32_t           n_threads;
    int32_t           n_past;      // tokens run so far = position of the next token
    vlc_backend *     be;          // runs every op; owns the threads and kernel scratch
    vlc_kvcache       kv;          // [L, Hkv] heads, their lengths, positions and type
    vlc_stats         stats;       // off unless vlc_text_state_set_stats turned it on

    const float **    norm;        // [2L + 1] f32 views: attn_norm at 2l, ffn_norm at 2l+1, output_norm at 2L
    float *           norm_f32;    // [2L + 1, C] converted norms when the file's are not F32, else NULL

    float *           slab;        // backend memory; everything below points into it
    float *           x;           // [B, C]    residual stream
    float *           xn;          // [B, C]    normalised input of a sub-block
    float *           q;           // [B, H*D]
    float *           k;           // [B, Hkv*D]
    float *           v;           // [B, Hkv*D]
    float *           att;         // [B, H*D]  attention output, heads concatenated
    float *           gate;        // [B, F]
    float *           up;          // [B, F]
    float *           logits;      // [V] logits of the last position run
    int32_t *         pos;         // host, [B] positions of the rows of a step
    vlc_attn_seq *    seqs;        // host, [B] the sequences of a step
    float *           probe;       // host, [C] a chunk's last row of x, read back after each stage
    int32_t           bad_stage;   // first stage whose probe was not finite: -1 none, 0 input, l + 1 layer l
    int32_t           probing;     // set only while a failed call is run again to find bad_stage
    int               has_logits;
};

static size_t round16(size_t n) {
    return (n + 15) & ~(size_t) 15;  // keep every sub-buffer 64-byte aligned
}

// Room for n more entries in every KV head, within what the context can still take.
static vlc_status kv_reserve(vlc_text_state * st, int32_t n) {
    return vlc_kv_reserve(&st->kv, n, st->n_ctx - st->n_past);
}

static vlc_status norms_init(vlc_text_state * st) {
    const vlc_model *   m  = st->m;
    const vlc_hparams * hp = &m->hp;
    const int32_t       nn = 2 * hp->n_layer + 1;
    st->norm = calloc((size_t) nn, sizeof(float *));
    VLC_CHECK(st->norm != NULL, VLC_STATUS_OOM, "cannot allocate %d norm views", nn);
    int all_f32 = m->output_norm.type == VLC_TYPE_F32;
    for (int32_t il = 0; il < hp->n_layer; il++) {
        all_f32 &= m->layers[il].attn_norm.type == VLC_TYPE_F32 && m->layers[il].ffn_norm.type == VLC_TYPE_F32;
    }
    if (!all_f32) {
        const size_t bytes = (size_t) nn * (size_t) hp->n_embd * sizeof(float);
        st->norm_f32 = malloc(bytes);
        VLC_CHECK(st->norm_f32 != NULL, VLC_STATUS_OOM, "cannot allocate %zu bytes for f32 norm weights", bytes);
    }
    for (int32_t i = 0; i < nn; i++) {
        const vlc_weight * w = i == nn - 1 ? &m->output_norm
                             : (i % 2 == 0 ? &m->layers[i / 2].attn_norm : &m->layers[i / 2].ffn_norm);
        if (w->type == VLC_TYPE_F32) {
            st->norm[i] = w->data;
        } else {
            float * dst = st->norm_f32 + (size_t) i * (size_t) hp->n_embd;
            vlc_cpu_to_f32(dst, w->data, w->type, hp->n_embd);
            st->norm[i] = dst;
        }
    }
    return VLC_STATUS_OK;
}

// The widest matmul input of the decoder: n_embd, n_head * head_dim or n_ff.
static int64_t max_matmul_in(const vlc_hparams * hp) {
    const int64_t HD = (int64_t) hp->n_head * hp->head_dim;
    const int64_t m  = hp->n_embd > HD ? hp->n_embd : HD;
    return m > hp->n_ff ? m : hp->n_ff;
}

// The backend's kernel scratch for steps of up to B rows over this model's weights (one
// reserve per layer's weight types; reserve only grows).
static vlc_status backend_reserve(vlc_text_state * st) {
    const vlc_model *   m  = st->m;
    const vlc_hparams * hp = &m->hp;
    vlc_backend_need    need = { .max_rows = st->n_batch, .max_in = max_matmul_in(hp),
                                 .G = hp->n_head / hp->n_head_kv, .D = hp->head_dim,
                                 .types = &m->output.type, .n_types = 1 };
    VLC_TRY(st->be->reserve(st->be, &need));
    for (int32_t il = 0; il < hp->n_layer; il++) {
        const vlc_layer * L       = &m->layers[il];
        const uint32_t    types[] = { L->wq.type, L->wk.type, L->wv.type, L->wo.type, L->w_gate.type, L->w_up.type,
                                      L->w_down.type };
        need.types   = types;
        need.n_types = (int32_t) (sizeof(types) / sizeof(types[0]));
        VLC_TRY(st->be->reserve(st->be, &need));
    }
    return VLC_STATUS_OK;
}

static vlc_status slab_alloc(vlc_text_state * st) {
    const vlc_hparams * hp = &st->m->hp;
    const size_t B = (size_t) st->n_batch, C = (size_t) hp->n_embd, F = (size_t) hp->n_ff;
    const size_t D = (size_t) hp->head_dim, HD = (size_t) hp->n_head * D, KD = (size_t) hp->n_head_kv * D;

    const size_t sizes[] = {
        round16(B * C), round16(B * C), round16(B * HD), round16(B * KD), round16(B * KD),
        round16(B * HD), round16(B * F), round16(B * F), round16((size_t) hp->n_vocab),
    };
    float ** ptrs[] = { &st->x, &st->xn, &st->q, &st->k, &st->v, &st->att, &st->gate, &st->up, &st->logits };
    size_t total = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        total += sizes[i];
    }
    st->slab = st->be->alloc(st->be, total * sizeof(float));
    VLC_CHECK(st->slab != NULL, VLC_STATUS_OOM, "cannot allocate the session scratch: %zu bytes (n_batch = %d)",
              total * sizeof(float), st->n_batch);
    size_t off = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        *ptrs[i] = st->slab + off;
        off += sizes[i];
    }
    st->pos   = malloc(B * sizeof(int32_t));
    st->seqs  = malloc(B * sizeof(vlc_attn_seq));
    st->probe = malloc((size_t) hp->n_embd * sizeof(float));
    VLC_CHECK(st->pos != NULL && st->seqs != NULL && st->probe != NULL, VLC_STATUS_OOM,
              "cannot allocate %zu step records", B);
    return VLC_STATUS_OK;
}

vlc_status vlc_text_state_create(const vlc_model * m, const vlc_session_params * p, vlc_text_state ** out) {
    VLC_CHECK(out != NULL, VLC_STATUS_INVALID_ARG, "out is NULL");
    *out = NULL;
    VLC_CHECK(m != NULL && m->layers != NULL, VLC_STATUS_INVALID_ARG, "model is NULL or has no weights bound");
    vlc_session_params prm = { 0, 512, 0, VLC_TYPE_F16 };
    if (p) {
        prm = *p;
    }
    const vlc_hparams * hp = &m->hp;
    int32_t n_ctx = prm.n_ctx == 0 ? hp->n_ctx_train : prm.n_ctx;
    VLC_CHECK(n_ctx > 0 && n_ctx <= VLC_MAX_CTX, VLC_STATUS_INVALID_ARG,
              "n_ctx = %d%s, expected 1 .. %d", n_ctx, prm.n_ctx == 0 ? " (the model's training context)" : "",
              VLC_MAX_CTX);
    VLC_CHECK(prm.n_batch >= 0, VLC_STATUS_INVALID_ARG, "n_batch = %d, expected >= 0 (0 = 512)", prm.n_batch);
    int32_t n_batch = prm.n_batch == 0 ? 512 : prm.n_batch;
    n_batch         = n_batch > n_ctx ? n_ctx : n_batch;
    VLC_CHECK(prm.n_threads >= 0 && prm.n_threads <= 1024, VLC_STATUS_INVALID_ARG,
              "n_threads = %d, expected 0 .. 1024 (0 = all cores)", prm.n_threads);
    int32_t n_threads = prm.n_threads == 0 ? vlc_n_cpus() : prm.n_threads;
    VLC_CHECK(prm.type_kv == VLC_TYPE_F16 || prm.type_kv == VLC_TYPE_F32, VLC_STATUS_INVALID_ARG,
              "type_kv = %d, expected VLC_TYPE_F16 (%d) or VLC_TYPE_F32 (%d)", prm.type_kv, VLC_TYPE_F16,
              VLC_TYPE_F32);

    vlc_text_state * st = calloc(1, sizeof(*st));
    VLC_CHECK(st != NULL, VLC_STATUS_OOM, "cannot allocate the text state (%zu bytes)", sizeof(*st));
    st->m         = m;
    st->n_ctx     = n_ctx;
    st->n_batch   = n_batch;
    st->n_threads = n_threads;

    vlc_status s = vlc_backend_cpu_create(n_threads, &st->be);
    if (s == VLC_STATUS_OK) {
        s = vlc_kv_init(&st->kv, st->be, hp->n_layer, hp->n_head_kv, hp->head_dim, (uint32_t) prm.type_kv, n_ctx);
    }
    if (s == VLC_STATUS_OK) {
        s = norms_init(st);
    }
    if (s == VLC_STATUS_OK) {
        s = slab_alloc(st);
    }
    if (s == VLC_STATUS_OK) {
        s = backend_reserve(st);
    }
    if (s != VLC_STATUS_OK) {
        vlc_text_state_free(st);
        return s;
    }
    *out = st;
    return VLC_STATUS_OK;
}

void vlc_text_state_free(vlc_text_state * st) {
    if (!st) {
        return;
    }
    vlc_stats_free(&st->stats);
    vlc_kv_free(&st->kv);
    free(st->norm);
    free(st->norm_f32);
    if (st->be) {
        st->be->dealloc(st->be, st->slab);
    }
    free(st->pos);
    free(st->seqs);
    free(st->probe);
    vlc_backend_free(st->be);
    free(st);
}

void vlc_text_state_reset(vlc_text_state * st) {
    if (!st) {
        return;
    }
    vlc_kv_clear(&st->kv);
    vlc_stats_free(&st->stats);
    st->n_past     = 0;
    st->has_logits = 0;
}

int32_t vlc_text_state_n_past(const vlc_text_state * st) { return st ? st->n_past : 0; }
int32_t vlc_text_state_n_ctx(const vlc_text_state * st) { return st ? st->n_ctx : 0; }
uint64_t vlc_text_state_kv_bytes(const vlc_text_state * st) { return st ? st->kv.bytes : 0; }
const vlc_kvcache * vlc_text_state_kv(const vlc_text_state * st) { return &st->kv; }
const vlc_stats * vlc_text_state_stats(const vlc_text_state * st) { return &st->stats; }

const float * vlc_text_state_logits(const vlc_text_state * st) {
    return st && st->has_logits ? st->logits : NULL;
}

void vlc_text_state_rewind(vlc_text_state * st, int32_t n_past) {
    vlc_kv_truncate(&st->kv, n_past);
    st->n_past     = n_past;
    st->has_logits = 0;
}

int64_t vlc_first_nonfinite(const float * x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) {
            return i;
        }
    }
    return -1;
}

// Notes in st->bad_stage the first stage of this call (0 the input, l + 1 layer l) after
// which the chunk's last row is not finite: one row of C read back. Only while probing (a
// call whose logits were not finite, run again to say where), so a good call pays nothing.
static void probe_last_row(vlc_text_state * st, int32_t T, int32_t stage) {
    if (!st->probing || st->bad_stage >= 0) {
        return;
    }
    const int64_t C = st->m->hp.n_embd;
    st->be->download(st->be, st->probe, st->x + (int64_t) (T - 1) * C, (size_t) C * sizeof(float));
    if (vlc_first_nonfinite(st->probe, C) >= 0) {
        st->bad_stage = stage;
    }
}

// ---------------------------------------------------------------------------
// forward: the model, layer by layer, as backend ops over T rows in the state's scratch

// Layer il for the T rows in st->x, at positions st->pos, of the sequences st->seqs[0 ..
// n_seqs) (one sequence of T rows for a prefill chunk, T of one row each for a batched
// decode step); ml: where the attention keeps each row's softmax (max, sum) for the
// statistics, or NULL.
static void layer(vlc_text_state * st, int32_t il, int32_t T, int32_t n_seqs, float * ml) {
    vlc_backend *       be = st->be;
    const vlc_hparams * hp = &st->m->hp;
    const vlc_layer *   L  = &st->m->layers[il];
    const int64_t       C = hp->n_embd, F = hp->n_ff;
    const int64_t       HD = (int64_t) hp->n_head * hp->head_dim, KD = (int64_t) hp->n_head_kv * hp->head_dim;

    // attention: x += Wo attn(rope(Wq xn), rope(Wk xn), Wv xn), xn = rmsnorm(x)
    be->rmsnorm(be, st->xn, st->x, st->norm[2 * il], T, C, hp->rms_eps);
    const vlc_mm qkv[3] = { { .y = st->q, .ldy = HD, .w = &L->wq },
                            { .y = st->k, .ldy = KD, .w = &L->wk },
                            { .y = st->v, .ldy = KD, .w = &L->wv } };
    be->matmul(be, st->xn, C, T, 3, qkv);
    be->rope(be, st->q, hp->n_head, st->k, hp->n_head_kv, st->pos, T, hp->head_dim, hp->rope_freq_base,
             hp->rope_freq_scale);
    be->kv_store(be, st->seqs, n_seqs, il, st->k, st->v);
    be->attention(be, st->att, st->q, hp->n_head, st->seqs, n_seqs, il, ml);
    if (ml) {
        be->attn_stats(be, &st->stats, &st->kv, il, st->pos[0], T, st->q);
    }
    for (int32_t i = 0; i < n_seqs; i++) {
        vlc_kv_advance(st->seqs[i].kv, il, st->seqs[i].n);
    }
    const vlc_mm wo = { .y = st->x, .ldy = C, .w = &L->wo, .accumulate = 1 };
    be->matmul(be, st->att, HD, T, 1, &wo);

    // MLP: x += W_down (silu(W_gate xn) * W_up xn), xn = rmsnorm(x)
    be->rmsnorm(be, st->xn, st->x, st->norm[2 * il + 1], T, C, hp->rms_eps);
    const vlc_mm gu[2] = { { .y = st->gate, .ldy = F, .w = &L->w_gate }, { .y = st->up, .ldy = F, .w = &L->w_up } };
    be->matmul(be, st->xn, C, T, 2, gu);
    be->swiglu(be, st->gate, st->up, T, F);
    const vlc_mm down = { .y = st->x, .ldy = C, .w = &L->w_down, .accumulate = 1 };
    be->matmul(be, st->gate, F, T, 1, &down);
}

// Final norm of rows [lo, T) and their logits into y.
static void logits_rows(vlc_text_state * st, int32_t lo, int32_t T, float * y) {
    vlc_backend *       be = st->be;
    const vlc_hparams * hp = &st->m->hp;
    const int64_t       C  = hp->n_embd;
    be->rmsnorm(be, st->xn + lo * C, st->x + lo * C, st->norm[2 * hp->n_layer], T - lo, C, hp->rms_eps);
    const vlc_mm o = { .y = y, .ldy = hp->n_vocab, .w = &st->m->output };
    be->matmul(be, st->xn + lo * C, C, T - lo, 1, &o);
}

// Runs one chunk of T <= B tokens at positions n_past .. n_past+T-1 and writes the logits
// of the chunk rows [lo, T) into y ([T - lo, V]) when y != NULL.
static void forward_chunk(vlc_text_state * st, const int32_t * tokens, const float * embd, int32_t T,
                          int32_t lo, float * y) {
    vlc_backend *       be = st->be;
    const vlc_hparams * hp = &st->m->hp;
    const int32_t       p0 = st->n_past;
    for (int32_t i = 0; i < T; i++) {
        st->pos[i] = p0 + i;
    }
    st->seqs[0] = (vlc_attn_seq) { .kv = &st->kv, .row = 0, .n = T, .pos = p0 };

    // chunk rows some statistics set covers keep their softmax max and sum in stats.ml
    int32_t ml_lo, ml_hi;
    vlc_stats_chunk_rows(&st->stats, p0, T, &ml_lo, &ml_hi);

    if (tokens) {
        be->embed(be, st->x, &st->m->tok_embd, tokens, T);
    } else {
        be->upload(be, st->x, embd, (size_t) T * (size_t) hp->n_embd * sizeof(float));
    }
    probe_last_row(st, T, 0);
    for (int32_t il = 0; il < hp->n_layer; il++) {
        layer(st, il, T, 1, ml_lo < ml_hi ? st->stats.ml : NULL);
        probe_last_row(st, T, il + 1);
    }
    st->n_past += T;

    // final norm and logits, only for the rows asked for
    if (y && lo < T) {
        logits_rows(st, lo, T, y);
    }
}

vlc_status vlc_text_forward(vlc_text_state * st, const int32_t * tokens, const float * embd, int32_t n,
                            float * logits_out, int32_t n_out) {
    VLC_CHECK(st != NULL, VLC_STATUS_INVALID_ARG, "state is NULL");
    VLC_CHECK((tokens != NULL) != (embd != NULL), VLC_STATUS_INVALID_ARG,
              "exactly one of tokens and embd must be given");
    VLC_CHECK(n > 0, VLC_STATUS_INVALID_ARG, "n = %d, expected > 0", n);
    VLC_CHECK(n_out >= 0 && n_out <= n, VLC_STATUS_INVALID_ARG, "n_out = %d, expected 0 .. %d", n_out, n);
    VLC_CHECK(logits_out != NULL || n_out == 0, VLC_STATUS_INVALID_ARG, "logits_out is NULL with n_out = %d", n_out);
    VLC_CHECK((int64_t) st->n_past + n <= st->n_ctx, VLC_STATUS_CONTEXT_FULL,
              "%d positions do not fit: %d of the context's %d are used", n, st->n_past, st->n_ctx);
    const vlc_hparams * hp = &st->m->hp;
    if (tokens) {
        for (int32_t i = 0; i < n; i++) {
            VLC_CHECK(tokens[i] >= 0 && tokens[i] < hp->n_vocab, VLC_STATUS_INVALID_ARG,
                      "token id %d at index %d is out of range [0, %d)", tokens[i], i, hp->n_vocab);
        }
    } else {
        const int64_t bad = vlc_first_nonfinite(embd, (int64_t) n * hp->n_embd);
        VLC_CHECK(bad < 0, VLC_STATUS_INVALID_ARG, "input embeddings: row %" PRId64 ", column %" PRId64 " is %g",
                  bad / hp->n_embd, bad % hp->n_embd, bad < 0 ? 0.0 : (double) embd[bad]);
    }

    VLC_TRY(kv_reserve(st, n));

    const int64_t V       = hp->n_vocab;
    const int32_t first   = n_out > 0 ? n - n_out : n - 1;  // first row whose logits are computed
    const int32_t p0      = st->n_past;
    st->has_logits        = 0;
    for (int32_t c0 = 0; c0 < n; c0 += st->n_batch) {
        const int32_t T  = n - c0 < st->n_batch ? n - c0 : st->n_batch;
        const int32_t lo = first > c0 ? first - c0 : 0;  // chunk-local first row with logits
        float *       y  = NULL;
        if (lo < T) {
            y = n_out > 0 ? logits_out + (int64_t) (c0 + lo - first) * V : st->logits;
        }
        forward_chunk(st, tokens ? tokens + c0 : NULL, embd ? embd + (int64_t) c0 * hp->n_embd : NULL, T, lo, y);
    }
    if (n_out > 0) {
        memcpy(st->logits, logits_out + (int64_t) (n_out - 1) * V, (size_t) V * sizeof(float));
    }
    // the rows returned must be finite; else the call is undone and says where it went wrong
    for (int32_t i = first; i < n; i++) {
        const int64_t bad = vlc_first_nonfinite(n_out > 0 ? logits_out + (int64_t) (i - first) * V : st->logits, V);
        if (bad < 0) {
            continue;
        }
        const double value = n_out > 0 ? logits_out[(int64_t) (i - first) * V + bad] : st->logits[bad];
        // run the call again without logits, probing each stage, to name where it went wrong
        vlc_text_state_rewind(st, p0);
        st->probing   = 1;
        st->bad_stage = -1;
        for (int32_t c0 = 0; c0 < n; c0 += st->n_batch) {
            const int32_t T = n - c0 < st->n_batch ? n - c0 : st->n_batch;
            forward_chunk(st, tokens ? tokens + c0 : NULL, embd ? embd + (int64_t) c0 * hp->n_embd : NULL, T, T, NULL);
        }
        st->probing = 0;
        vlc_text_state_rewind(st, p0);
        char input[48], stage[96];
        if (tokens) {
            snprintf(input, sizeof(input), "token %d", tokens[i]);
        } else {
            snprintf(input, sizeof(input), "embedding row %d", i);
        }
        if (st->bad_stage < 0) {
            snprintf(stage, sizeof(stage), "the hidden states checked stayed finite: the output norm / matrix");
        } else if (st->bad_stage == 0) {
            snprintf(stage, sizeof(stage), "the input embedding was not finite");
        } else {
            snprintf(stage, sizeof(stage), "the hidden state first went non-finite in layer %d (blk.%d)",
                     st->bad_stage - 1, st->bad_stage - 1);
        }
        return VLC_ERR(VLC_STATUS_NUMERIC, "logits of position %d (%s) are not finite: %g at index %" PRId64
                       "; %s. The model's weights hold NaN / inf or the values overflowed; nothing was kept",
                       p0 + i, input, value, bad, stage);
    }
    st->has_logits = 1;
    return VLC_STATUS_OK;
}

// ---------------------------------------------------------------------------
// batched decoding: one position for each of n states of one model. The matmuls and the
// per-row ops run once over the n rows in the first state's scratch and backend; the KV
// store and the attention see n sequences of one row, each against its own cache.

// T <= st->n_batch rows in st's scratch; logits of every row into y [T, V].
static void forward_batch_chunk(vlc_text_state * st, vlc_text_state * const * sts, const int32_t * tokens, int32_t T,
                                float * y) {
    const vlc_hparams * hp = &st->m->hp;
    for (int32_t i = 0; i < T; i++) {
        st->pos[i]  = sts[i]->n_past;
        st->seqs[i] = (vlc_attn_seq) { .kv = &sts[i]->kv, .row = i, .n = 1, .pos = sts[i]->n_past };
    }
    st->be->embed(st->be, st->x, &st->m->tok_embd, tokens, T);
    for (int32_t il = 0; il < hp->n_layer; il++) {
        layer(st, il, T, T, NULL);
    }
    logits_rows(st, 0, T, y);
    for (int32_t i = 0; i < T; i++) {
        sts[i]->n_past += 1;
        memcpy(sts[i]->logits, y + (int64_t) i * hp->n_vocab, (size_t) hp->n_vocab * sizeof(float));
        sts[i]->has_logits = 1;
    }
}

vlc_status vlc_text_batch_prepare(vlc_text_state * const * sts, const int32_t * tokens, int32_t n) {
    VLC_CHECK(sts != NULL && tokens != NULL, VLC_STATUS_INVALID_ARG, "states or tokens is NULL");
    VLC_CHECK(n > 0, VLC_STATUS_INVALID_ARG, "n = %d states, expected > 0", n);
    for (int32_t i = 0; i < n; i++) {
        const vlc_text_state * si = sts[i];
        VLC_CHECK(si != NULL, VLC_STATUS_INVALID_ARG, "state %d is NULL", i);
        VLC_CHECK(si->m == sts[0]->m, VLC_STATUS_INVALID_ARG, "state %d belongs to another model than state 0", i);
        for (int32_t j = 0; j < i; j++) {
            VLC_CHECK(sts[j] != si, VLC_STATUS_INVALID_ARG, "states %d and %d are the same state", j, i);
        }
        VLC_CHECK(tokens[i] >= 0 && tokens[i] < si->m->hp.n_vocab, VLC_STATUS_INVALID_ARG,
                  "token id %d of state %d is out of range [0, %d)", tokens[i], i, si->m->hp.n_vocab);
        VLC_CHECK(si->n_past < si->n_ctx, VLC_STATUS_CONTEXT_FULL, "state %d: all %d positions of its context are used",
                  i, si->n_ctx);
        VLC_CHECK(!vlc_stats_covers(&si->stats, si->n_past), VLC_STATUS_INVALID_ARG,
                  "state %d gathers attention statistics at position %d: decode it alone", i, si->n_past);
    }
    for (int32_t i = 0; i < n; i++) {  // room for one entry per head (only capacity changes)
        VLC_TRY(kv_reserve(sts[i], 1));
    }
    return VLC_STATUS_OK;
}

vlc_status vlc_text_forward_batch(vlc_text_state * const * sts, const int32_t * tokens, int32_t n, float * logits_out) {
    VLC_CHECK(logits_out != NULL, VLC_STATUS_INVALID_ARG, "logits_out is NULL");
    VLC_TRY(vlc_text_batch_prepare(sts, tokens, n));
    vlc_text_batch_run(sts, tokens, n, logits_out);
    return VLC_STATUS_OK;
}

void vlc_text_batch_run(vlc_text_state * const * sts, const int32_t * tokens, int32_t n, float * logits_out) {
    const int64_t V = sts[0]->m->hp.n_vocab;
    for (int32_t c0 = 0; c0 < n; c0 += sts[0]->n_batch) {
        const int32_t T = n - c0 < sts[0]->n_batch ? n - c0 : sts[0]->n_batch;
        forward_batch_chunk(sts[0], sts + c0, tokens + c0, T, logits_out + c0 * V);
    }
}

// ---------------------------------------------------------------------------
// attention statistics, KV compaction and copies (model.h)

vlc_status vlc_text_state_set_stats(vlc_text_state * st, const vlc_attn_stats_params * p) {
    VLC_CHECK(st != NULL, VLC_STATUS_INVALID_ARG, "state is NULL");
    if (!p) {
        vlc_stats_free(&st->stats);
        return VLC_STATUS_OK;
    }
    VLC_TRY(vlc_stats_check(p, st->n_past, st->n_ctx, st->kv.compressed));
    const vlc_hparams * hp = &st->m->hp;
    return vlc_stats_enable(&st->stats, p, st->n_ctx, st->n_batch, hp->n_layer, hp->n_head, hp->n_head_kv);
}

vlc_status vlc_text_state_compact(vlc_text_state * st, const uint8_t * keep, int32_t m, int32_t room) {
    VLC_CHECK(st && keep, VLC_STATUS_INVALID_ARG, "state or keep is NULL");
    VLC_CHECK(m >= 1 && m <= st->n_past, VLC_STATUS_INVALID_ARG, "m = %d, expected 1 .. n_past = %d", m, st->n_past);
    VLC_CHECK(room >= 0, VLC_STATUS_INVALID_ARG, "room = %d, expected >= 0", room);
    VLC_TRY(vlc_kv_compact(&st->kv, keep, m, room));
    vlc_stats_free(&st->stats);
    return VLC_STATUS_OK;
}

vlc_status vlc_text_state_clone(const vlc_text_state * src, vlc_text_state ** out) {
    VLC_CHECK(src && out, VLC_STATUS_INVALID_ARG, "src or out is NULL");
    *out = NULL;
    const vlc_session_params prm = { src->n_ctx, src->n_batch, src->n_threads, (int32_t) src->kv.type };
    vlc_text_state * st = NULL;
    VLC_TRY(vlc_text_state_create(src->m, &prm, &st));
    const vlc_hparams * hp = &src->m->hp;
    vlc_status          s  = VLC_STATUS_OK;
    if (src->stats.on) {
        s = vlc_stats_enable(&st->stats, &src->stats.prm, st->n_ctx, st->n_batch, hp->n_layer, hp->n_head,
                             hp->n_head_kv);
    }
    if (s == VLC_STATUS_OK) {
        s = vlc_kv_copy(&st->kv, &src->kv);
    }
    if (s != VLC_STATUS_OK) {
        vlc_text_state_free(st);
        return s;
    }
    vlc_stats_copy(&st->stats, &src->stats);
    st->n_past     = src->n_past;
    st->has_logits = src->has_logits;
    memcpy(st->logits, src->logits, (size_t) hp->n_vocab * sizeof(float));
    *out = st;
    return VLC_STATUS_OK;
}
