// vlc_tiny_vision.h: a tiny CLIP tower + LLaVA projector, written in memory as a GGUF
// (S = 8, P = 4, C = 8, 2 heads, F = 12, 3 layers, projector 8 -> 10 -> 6), for the C
// tests (test_vision.c checks it against a double reference; test_hotpath.c counts what
// an encode allocates). Include after vlc_test.h; everything here is static.
#pragma once

#include "gguf.h"
#include "vision.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fill(float * x, int n, float scale, float offset) {
    for (int i = 0; i < n; i++) {
        x[i] = offset + scale * rng_unif();
    }
}

// ---------------------------------------------------------------------------
// a GGUF in memory

typedef struct wbuf {
    uint8_t * p;
    size_t    n, cap;
} wbuf;

static void w_bytes(wbuf * b, const void * src, size_t n) {
    if (n == 0) {
        return;
    }
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p   = realloc(b->p, b->cap);
        if (!b->p) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void w_u32(wbuf * b, uint32_t v) { w_bytes(b, &v, 4); }
static void w_u64(wbuf * b, uint64_t v) { w_bytes(b, &v, 8); }
static void w_f32(wbuf * b, float v) { w_bytes(b, &v, 4); }
static void w_str(wbuf * b, const char * s) {
    w_u64(b, strlen(s));
    w_bytes(b, s, strlen(s));
}
static void w_pad(wbuf * b) {
    static const uint8_t z[32] = { 0 };
    w_bytes(b, z, (32 - b->n % 32) % 32);
}

typedef struct gfile {
    uint64_t n_kv, n_tensors;
    wbuf     kv, info, data;
} gfile;

static wbuf * key(gfile * g, const char * k, uint32_t type) {
    g->n_kv++;
    w_str(&g->kv, k);
    w_u32(&g->kv, type);
    return &g->kv;
}
static void key_u32(gfile * g, const char * k, uint32_t v) { w_u32(key(g, k, VLC_GGUF_UINT32), v); }
static void key_str(gfile * g, const char * k, const char * v) { w_str(key(g, k, VLC_GGUF_STRING), v); }
static void key_bool(gfile * g, const char * k, int v) {
    uint8_t u = (uint8_t) v;
    w_bytes(key(g, k, VLC_GGUF_BOOL), &u, 1);
}

// f32 tensor with GGUF ne[n_dims] (innermost first)
static void tensor(gfile * g, const char * name, int n_dims, const int64_t * ne, const float * data) {
    size_t n = 1;
    g->n_tensors++;
    w_pad(&g->data);
    w_str(&g->info, name);
    w_u32(&g->info, (uint32_t) n_dims);
    for (int d = 0; d < n_dims; d++) {
        w_u64(&g->info, (uint64_t) ne[d]);
        n *= (size_t) ne[d];
    }
    w_u32(&g->info, VLC_TYPE_F32);
    w_u64(&g->info, g->data.n);
    w_bytes(&g->data, data, n * sizeof(float));
}

static wbuf finish(gfile * g) {
    wbuf out = { 0 };
    w_bytes(&out, "GGUF", 4);
    w_u32(&out, 3);
    w_u64(&out, g->n_tensors);
    w_u64(&out, g->n_kv);
    w_bytes(&out, g->kv.p, g->kv.n);
    w_bytes(&out, g->info.p, g->info.n);
    w_pad(&out);
    w_bytes(&out, g->data.p, g->data.n);
    free(g->kv.p);
    free(g->info.p);
    free(g->data.p);
    return out;
}

// ---------------------------------------------------------------------------
// the tiny tower (torch layouts: Linear weight [out][in], conv [C][3][P][P])

enum { S = 8, P = 4, NP = 2, N = 4, T = 5, C = 8, H = 2, D = 4, F = 12, L = 3, E1 = 10, E = 6, K = 48 };

typedef struct tower {
    float patch[C * K], cls[C], pos[T * C], pre_w[C], pre_b[C];
    float ln1_w[L][C], ln1_b[L][C], ln2_w[L][C], ln2_b[L][C];
    float wq[L][C * C], wk[L][C * C], wv[L][C * C], wo[L][C * C], bq[L][C], bk[L][C], bv[L][C], bo[L][C];
    float fc1[L][F * C], b1[L][F], fc2[L][C * F], b2[L][C];
    float mm0[E1 * C], mm0_b[E1], mm2[E * E1], mm2_b[E];
} tower;

static void tower_init(tower * t) {
    const float sc = 1.0f / sqrtf((float) C) * 1.7f, sf = 1.0f / sqrtf((float) F) * 1.7f;
    fill(t->patch, C * K, 0.25f, 0);
    fill(t->cls, C, 0.5f, 0);
    fill(t->pos, T * C, 0.5f, 0);
    fill(t->pre_w, C, 0.2f, 1);
    fill(t->pre_b, C, 0.2f, 0);
    for (int l = 0; l < L; l++) {
        fill(t->ln1_w[l], C, 0.2f, 1); fill(t->ln1_b[l], C, 0.2f, 0);
        fill(t->ln2_w[l], C, 0.2f, 1); fill(t->ln2_b[l], C, 0.2f, 0);
        fill(t->wq[l], C * C, sc, 0); fill(t->wk[l], C * C, sc, 0);
        fill(t->wv[l], C * C, sc, 0); fill(t->wo[l], C * C, sc, 0);
        fill(t->bq[l], C, 0.2f, 0); fill(t->bk[l], C, 0.2f, 0);
        fill(t->bv[l], C, 0.2f, 0); fill(t->bo[l], C, 0.2f, 0);
        fill(t->fc1[l], F * C, sc, 0); fill(t->b1[l], F, 0.2f, 0);
        fill(t->fc2[l], C * F, sf, 0); fill(t->b2[l], C, 0.2f, 0);
    }
    fill(t->mm0, E1 * C, sc, 0);
    fill(t->mm0_b, E1, 0.2f, 0);
    fill(t->mm2, E * E1, 1.7f / sqrtf((float) E1), 0);
    fill(t->mm2_b, E, 0.2f, 0);
}

typedef struct opts {
    int          n_store;        // layers written (block_count)
    int          block_count;    // clip.vision.block_count written instead of n_store; 0: n_store
    int          feature_layer;  // -1: no key
    int          swapped;        // legacy names: fc1 as ffn_down, fc2 as ffn_up
    int          use_gelu;
    const char * select;         // NULL: no key
    const char * proj_type;      // NULL: no key
    const char * omit;           // tensor left out
    const char * bad_shape;      // tensor written with its first dimension one short
    int          n_embd_out;     // E written for mm.2 (E unless testing a mismatch)
} opts;

static opts default_opts(void) {
    return (opts) { .n_store = L, .feature_layer = -1, .proj_type = "mlp", .n_embd_out = E };
}

static void put(gfile * g, const opts * o, const char * name, int n_dims, int64_t ne0, int64_t ne1, int64_t ne2,
                int64_t ne3, const float * data) {
    if (o->omit && strcmp(o->omit, name) == 0) {
        return;
    }
    int64_t ne[4] = { ne0, ne1, ne2, ne3 };
    if (o->bad_shape && strcmp(o->bad_shape, name) == 0) {
        ne[0] -= 1;
    }
    tensor(g, name, n_dims, ne, data);
}

static wbuf write_tower(const tower * t, const opts * o) {
    gfile g = { 0 };
    key_str(&g, "general.architecture", "clip");
    if (o->proj_type) key_str(&g, "clip.projector_type", o->proj_type);
    key_u32(&g, "clip.vision.image_size", S);
    key_u32(&g, "clip.vision.patch_size", P);
    key_u32(&g, "clip.vision.embedding_length", C);
    key_u32(&g, "clip.vision.feed_forward_length", F);
    key_u32(&g, "clip.vision.attention.head_count", H);
    w_f32(key(&g, "clip.vision.attention.layer_norm_epsilon", VLC_GGUF_FLOAT32), 1e-5f);
    key_u32(&g, "clip.vision.block_count", (uint32_t) (o->block_count ? o->block_count : o->n_store));
    if (o->feature_layer >= 0) {
        wbuf * b = key(&g, "clip.vision.feature_layer", VLC_GGUF_ARRAY);
        w_u32(b, VLC_GGUF_INT32);
        w_u64(b, 1);
        w_u32(b, (uint32_t) o->feature_layer);
    }
    key_bool(&g, "clip.use_gelu", o->use_gelu);
    if (o->select) key_str(&g, "vlcache.vision.select_strategy", o->select);

    put(&g, o, "v.patch_embd.weight", 4, P, P, 3, C, t->patch);
    put(&g, o, "v.class_embd", 1, C, 1, 1, 1, t->cls);
    put(&g, o, "v.position_embd.weight", 2, C, T, 1, 1, t->pos);
    put(&g, o, "v.pre_ln.weight", 1, C, 1, 1, 1, t->pre_w);
    put(&g, o, "v.pre_ln.bias", 1, C, 1, 1, 1, t->pre_b);
    char n[64];
    for (int l = 0; l < o->n_store; l++) {
#define PUT(suffix, nd, a, b, data) (snprintf(n, sizeof(n), "v.blk.%d." suffix, l), put(&g, o, n, nd, a, b, 1, 1, data))
        PUT("ln1.weight", 1, C, 1, t->ln1_w[l]);
        PUT("ln1.bias", 1, C, 1, t->ln1_b[l]);
        PUT("ln2.weight", 1, C, 1, t->ln2_w[l]);
        PUT("ln2.bias", 1, C, 1, t->ln2_b[l]);
        PUT("attn_q.weight", 2, C, C, t->wq[l]);
        PUT("attn_k.weight", 2, C, C, t->wk[l]);
        PUT("attn_v.weight", 2, C, C, t->wv[l]);
        PUT("attn_out.weight", 2, C, C, t->wo[l]);
        PUT("attn_q.bias", 1, C, 1, t->bq[l]);
        PUT("attn_k.bias", 1, C, 1, t->bk[l]);
        PUT("attn_v.bias", 1, C, 1, t->bv[l]);
        PUT("attn_out.bias", 1, C, 1, t->bo[l]);
        if (o->swapped) {
            PUT("ffn_down.weight", 2, C, F, t->fc1[l]);
            PUT("ffn_down.bias", 1, F, 1, t->b1[l]);
            PUT("ffn_up.weight", 2, F, C, t->fc2[l]);
            PUT("ffn_up.bias", 1, C, 1, t->b2[l]);
        } else {
            PUT("ffn_up.weight", 2, C, F, t->fc1[l]);
            PUT("ffn_up.bias", 1, F, 1, t->b1[l]);
            PUT("ffn_down.weight", 2, F, C, t->fc2[l]);
            PUT("ffn_down.bias", 1, C, 1, t->b2[l]);
        }
#undef PUT
    }
    put(&g, o, "mm.0.weight", 2, C, E1, 1, 1, t->mm0);
    put(&g, o, "mm.0.bias", 1, E1, 1, 1, 1, t->mm0_b);
    put(&g, o, "mm.2.weight", 2, E1, o->n_embd_out, 1, 1, t->mm2);
    put(&g, o, "mm.2.bias", 1, o->n_embd_out, 1, 1, 1, t->mm2_b);
    return finish(&g);
}

// Loads the tower from a file image; the GGUF handle goes to *g (close it after the tower).
static vlc_status load(const wbuf * file, int32_t n_embd_text, vlc_gguf ** g, vlc_vision ** v) {
    *v            = NULL;
    vlc_status st = vlc_gguf_open_buffer(file->p, file->n, g);
    if (st != VLC_STATUS_OK) {
        return st;
    }
    return vlc_vision_load(*g, n_embd_text, v);
}

