// kvcache.c: per layer and KV head buffers, growth, compaction and copies (kvcache.h).
#include "kvcache.h"

#include "backend.h"
#include "error.h"
#include "ops_cpu.h"
#include "quant.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static int64_t n_heads(const vlc_kvcache * kv) {
    return (int64_t) kv->n_layer * kv->n_head_kv;
}

static size_t row_bytes(const vlc_kvcache * kv) {
    return (size_t) kv->head_dim * vlc_type_size(kv->type);
}

// Bytes one head holds per entry: key, value and position.
static size_t entry_bytes(const vlc_kvcache * kv) {
    return 2 * row_bytes(kv) + sizeof(int32_t);
}

static void head_free(const vlc_kvcache * kv, vlc_kv_head * h) {
    kv->be->dealloc(kv->be, h->k);
    kv->be->dealloc(kv->be, h->v);
    free(h->pos);
    memset(h, 0, sizeof(*h));
}

// New buffers of cap entries for *h (old ones untouched); 0 when an allocation failed.
static int head_alloc(const vlc_kvcache * kv, vlc_kv_head * h, int32_t cap) {
    const size_t sz = (size_t) cap * row_bytes(kv);
    h->k   = kv->be->alloc(kv->be, sz);
    h->v   = kv->be->alloc(kv->be, sz);
    h->pos = malloc(cap ? (size_t) cap * sizeof(int32_t) : 1);
    h->n   = 0;
    h->cap = cap;
    if (!h->k || !h->v || !h->pos) {
        head_free(kv, h);
        return 0;
    }
    return 1;
}

vlc_status vlc_kv_init(vlc_kvcache * kv, vlc_backend * be, int32_t n_layer, int32_t n_head_kv, int32_t head_dim,
                       uint32_t type, int32_t cap) {
    *kv = (vlc_kvcache) { .be = be, .n_layer = n_layer, .n_head_kv = n_head_kv, .head_dim = head_dim, .type = type };
    const int64_t  n     = n_heads(kv);
    const uint64_t total = (uint64_t) n * (uint64_t) cap * entry_bytes(kv);
    kv->heads = calloc((size_t) n, sizeof(vlc_kv_head));
    VLC_CHECK(kv->heads != NULL, VLC_STATUS_OOM, "cannot allocate %" PRId64 " KV head records", n);
    for (int64_t i = 0; i < n; i++) {
        if (!head_alloc(kv, &kv->heads[i], cap)) {
            vlc_kv_free(kv);
            return VLC_ERR(VLC_STATUS_OOM,
                           "cannot allocate the KV cache: %llu bytes (%d layers x %d KV heads x %d positions x %d dims, %s)",
                           (unsigned long long) total, n_layer, n_head_kv, cap, head_dim,
                           type == VLC_TYPE_F16 ? "f16" : "f32");
        }
    }
    kv->bytes = total;
    return VLC_STATUS_OK;
}

void vlc_kv_free(vlc_kvcache * kv) {
    for (int64_t i = 0; kv->heads && i < n_heads(kv); i++) {
        head_free(kv, &kv->heads[i]);
    }
    free(kv->heads);
    kv->heads = NULL;
    kv->bytes = 0;
}

void vlc_kv_clear(vlc_kvcache * kv) {
    for (int64_t i = 0; i < n_heads(kv); i++) {
        kv->heads[i].n = 0;
    }
    kv->compressed = 0;  // compacted heads keep their buffers and grow again as needed
}

vlc_status vlc_kv_reserve(vlc_kvcache * kv, int32_t n, int32_t limit) {
    const size_t row = row_bytes(kv);
    for (int64_t i = 0; i < n_heads(kv); i++) {
        vlc_kv_head * h    = &kv->heads[i];
        const int64_t need = (int64_t) h->n + n;
        if (need <= h->cap) {
            continue;
        }
        int64_t cap = (int64_t) h->cap + h->cap / 2;
        cap         = cap < need ? need : cap;
        cap         = cap > (int64_t) h->n + limit ? (int64_t) h->n + limit : cap;
        vlc_kv_head f;
        if (!head_alloc(kv, &f, (int32_t) cap)) {
            return VLC_ERR(VLC_STATUS_OOM, "cannot grow KV head %" PRId64 " of layer %" PRId64 " to %" PRId64 " entries",
                           i % kv->n_head_kv, i / kv->n_head_kv, cap);
        }
        kv->be->copy(kv->be, f.k, h->k, (size_t) h->n * row);
        kv->be->copy(kv->be, f.v, h->v, (size_t) h->n * row);
        memcpy(f.pos, h->pos, (size_t) h->n * sizeof(int32_t));
        f.n = h->n;
        kv->bytes += (uint64_t) (cap - h->cap) * entry_bytes(kv);
        head_free(kv, h);
        *h = f;
    }
    return VLC_STATUS_OK;
}

void vlc_kv_put(const vlc_kvcache * kv, vlc_kv_head * h, int32_t e, const float * k, const float * v, int32_t pos) {
    const size_t row = row_bytes(kv);
    vlc_cpu_from_f32((char *) h->k + (size_t) e * row, k, kv->type, kv->head_dim);
    vlc_cpu_from_f32((char *) h->v + (size_t) e * row, v, kv->type, kv->head_dim);
    h->pos[e] = pos;
}

void vlc_kv_advance(vlc_kvcache * kv, int32_t il, int32_t n) {
    for (int32_t g = 0; g < kv->n_head_kv; g++) {
        vlc_kv_at(kv, il, g)->n += n;
    }
}

void vlc_kv_truncate(vlc_kvcache * kv, int32_t p0) {
    for (int64_t i = 0; i < n_heads(kv); i++) {
        vlc_kv_head * h = &kv->heads[i];
        while (h->n > 0 && h->pos[h->n - 1] >= p0) {
            h->n--;
        }
    }
}

vlc_status vlc_kv_compact(vlc_kvcache * kv, const uint8_t * keep, int32_t m, int32_t room) {
    const int64_t nh  = n_heads(kv);
    const size_t  row = row_bytes(kv);
    vlc_kv_head * fresh = calloc((size_t) nh, sizeof(vlc_kv_head));
    VLC_CHECK(fresh != NULL, VLC_STATUS_OOM, "cannot allocate %" PRId64 " KV head records", nh);
    uint64_t bytes = 0;
    for (int64_t i = 0; i < nh; i++) {
        const vlc_kv_head * h  = &kv->heads[i];
        const uint8_t *     kp = keep + i * m;  // head i = il * Hkv + g
        vlc_kv_head *       f  = &fresh[i];
        int32_t             n  = 0;
        for (int32_t e = 0; e < h->n; e++) {
            n += h->pos[e] >= m || kp[h->pos[e]];
        }
        if (!head_alloc(kv, f, n + room)) {
            for (int64_t j = 0; j < i; j++) {
                head_free(kv, &fresh[j]);
            }
            free(fresh);
            return VLC_ERR(VLC_STATUS_OOM, "cannot allocate %d entries for KV head %" PRId64 " of layer %" PRId64,
                           n + room, i % kv->n_head_kv, i / kv->n_head_kv);
        }
        for (int32_t e = 0; e < h->n; e++) {  // the kept entries' indices, in order, in f->pos for now
            if (h->pos[e] >= m || kp[h->pos[e]]) {
                f->pos[f->n++] = e;
            }
        }
        bytes += (uint64_t) (n + room) * entry_bytes(kv);
    }
    for (int64_t i = 0; i < nh; i++) {
        vlc_kv_head * h = &kv->heads[i];
        vlc_kv_head * f = &fresh[i];
        kv->be->gather_rows(kv->be, f->k, h->k, f->pos, f->n, row);
        kv->be->gather_rows(kv->be, f->v, h->v, f->pos, f->n, row);
        for (int32_t e = 0; e < f->n; e++) {
            f->pos[e] = h->pos[f->pos[e]];
        }
        head_free(kv, h);
        *h = *f;
    }
    free(fresh);
    kv->bytes      = bytes;
    kv->compressed = 1;
    return VLC_STATUS_OK;
}

vlc_status vlc_kv_copy(vlc_kvcache * dst, const vlc_kvcache * src) {
    const size_t row = row_bytes(src);
    for (int64_t i = 0; i < n_heads(src); i++) {
        const vlc_kv_head * h = &src->heads[i];
        vlc_kv_head *       d = &dst->heads[i];
        if (d->cap != h->cap) {
            vlc_kv_head f;
            VLC_CHECK(head_alloc(dst, &f, h->cap), VLC_STATUS_OOM,
                      "cannot allocate %d entries for a copy of KV head %" PRId64, h->cap, i);
            dst->bytes = dst->bytes - (uint64_t) d->cap * entry_bytes(dst) + (uint64_t) h->cap * entry_bytes(dst);
            head_free(dst, d);
            *d = f;
        }
        dst->be->copy(dst->be, d->k, h->k, (size_t) h->n * row);
        dst->be->copy(dst->be, d->v, h->v, (size_t) h->n * row);
        memcpy(d->pos, h->pos, (size_t) h->n * sizeof(int32_t));
        d->n = h->n;
    }
    dst->bytes      = src->bytes;
    dst->compressed = src->compressed;
    return VLC_STATUS_OK;
}
