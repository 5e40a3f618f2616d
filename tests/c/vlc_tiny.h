// vlc_tiny.h: a random Llama built in memory (no file) and a text state on it, for the C
// tests that run the decoder. Include after vlc_test.h (uses its rng) and model.h.
#pragma once

#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct tiny {
    vlc_model model;
    float *   buf;
    uint8_t * qbuf;  // tiny_quantize's copies, or NULL
} tiny;

static vlc_weight wmake(float ** cur, int64_t n_in, int64_t n_out, float amp) {
    vlc_weight w = { *cur, VLC_TYPE_F32, { n_in, n_out } };
    for (int64_t i = 0; i < n_in * n_out; i++) {
        (*cur)[i] = amp * rng_unif();
    }
    *cur += n_in * n_out;
    return w;
}

static void tiny_init(tiny * t, int32_t V, int32_t C, int32_t L, int32_t H, int32_t Hkv, int32_t F) {
    memset(t, 0, sizeof(*t));
    vlc_hparams * hp = &t->model.hp;
    const int32_t D  = C / H;
    *hp = (vlc_hparams) { V, 4096, C, L, H, Hkv, D, F, 10000.0f, 1.0f, 1e-5f };
    const int64_t per_layer = 2 * (int64_t) C + (int64_t) C * H * D * 2 + 2 * (int64_t) C * Hkv * D + 3 * (int64_t) C * F;
    t->buf = malloc(sizeof(float) * (size_t) ((int64_t) L * per_layer + 2 * (int64_t) V * C + C));
    float * cur = t->buf;
    t->model.layers = calloc((size_t) L, sizeof(vlc_layer));
    const float a = 1.0f / sqrtf((float) C), af = 1.0f / sqrtf((float) F);
    for (int32_t il = 0; il < L; il++) {
        vlc_layer * ly = &t->model.layers[il];
        ly->attn_norm  = wmake(&cur, C, 1, 0.1f);
        ly->ffn_norm   = wmake(&cur, C, 1, 0.1f);
        for (int32_t i = 0; i < C; i++) {  // norms near 1
            ((float *) ly->attn_norm.data)[i] += 1.0f;
            ((float *) ly->ffn_norm.data)[i] += 1.0f;
        }
        ly->wq     = wmake(&cur, C, (int64_t) H * D, 3.0f * a);  // peaky enough for sparsity
        ly->wk     = wmake(&cur, C, (int64_t) Hkv * D, 3.0f * a);
        ly->wv     = wmake(&cur, C, (int64_t) Hkv * D, a);
        ly->wo     = wmake(&cur, (int64_t) H * D, C, a);
        ly->w_gate = wmake(&cur, C, F, a);
        ly->w_up   = wmake(&cur, C, F, a);
        ly->w_down = wmake(&cur, F, C, af);
    }
    t->model.tok_embd    = wmake(&cur, C, V, 1.0f);
    t->model.output      = wmake(&cur, C, V, a);
    t->model.output_norm = wmake(&cur, C, 1, 0.0f);
    for (int32_t i = 0; i < C; i++) {
        ((float *) t->model.output_norm.data)[i] = 1.0f;
    }
}

// Every matrix of the layers and the output re-encoded as the block type `type` (all
// the rows must be whole blocks of it), in one buffer tiny_free frees.
static inline void tiny_quantize(tiny * t, uint32_t type) {
    vlc_weight * ws[7 * 64 + 1];
    int          n = 0;
    for (int32_t il = 0; il < t->model.hp.n_layer && il < 64; il++) {
        vlc_layer * ly = &t->model.layers[il];
        vlc_weight * lw[] = { &ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down };
        for (int i = 0; i < 7; i++) {
            ws[n++] = lw[i];
        }
    }
    ws[n++]      = &t->model.output;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        total += vlc_row_bytes(type, ws[i]->ne[0]) * (size_t) ws[i]->ne[1];
    }
    t->qbuf       = malloc(total);
    uint8_t * dst = t->qbuf;
    for (int i = 0; i < n; i++) {
        const size_t rb = vlc_row_bytes(type, ws[i]->ne[0]);
        for (int64_t r = 0; r < ws[i]->ne[1]; r++) {
            vlc_quantize_row(type, (const float *) ws[i]->data + r * ws[i]->ne[0], dst + (size_t) r * rb, ws[i]->ne[0]);
        }
        ws[i]->data = dst;
        ws[i]->type = type;
        dst += rb * (size_t) ws[i]->ne[1];
    }
}

static void tiny_free(tiny * t) {
    free(t->model.layers);
    free(t->buf);
    free(t->qbuf);
}

// A text state with a KV cache of kv_type (VLC_TYPE_F16 or VLC_TYPE_F32).
static inline vlc_text_state * state_new_kv(const vlc_model * m, int32_t n_ctx, int32_t n_batch, int32_t n_threads,
                                            uint32_t kv_type) {
    vlc_session_params sp = { n_ctx, n_batch, n_threads, kv_type };
    vlc_text_state *   st = NULL;
    vlc_status         s  = vlc_text_state_create(m, &sp, &st);
    CHECK(s == VLC_STATUS_OK && st, "vlc_text_state_create: %d", s);
    return st;
}

static inline vlc_text_state * state_new(const vlc_model * m, int32_t n_ctx, int32_t n_batch, int32_t n_threads) {
    return state_new_kv(m, n_ctx, n_batch, n_threads, VLC_TYPE_F16);
}

