// kvcache.h: the KV cache of one session, one buffer per layer and KV head.
//
// Each head keeps its entries in position order with the original position of every
// entry, so that a compression (VL-Cache step E) can shrink every head on its own and
// decoding goes on over ragged lengths. Byte accounting is exact: kv->bytes is what the
// buffers hold (K, V and positions at their capacities), and it drops when a compaction
// frees the old buffers.
// Is not: the choice of what to keep (kvpolicy.c), the statistics it is made from
// (stats.c), the glue between them (compress.c).
// Letters: L = n_layer, Hkv = n_head_kv, D = head_dim.
#pragma once

#include "vlcache.h"

#include <stdint.h>

// One KV head of one layer: entry i holds the key (already rotated by RoPE at pos[i])
// and the value of the token at original position pos[i].
typedef struct vlc_kv_head {
    void *    k;    // [cap, D] of the cache's type
    void *    v;    // [cap, D]
    int32_t * pos;  // [cap]
    int32_t   n;    // entries in use
    int32_t   cap;
} vlc_kv_head;

typedef struct vlc_kvcache {
    struct vlc_backend * be;   // whose memory holds K and V (positions are host memory)
    int32_t       n_layer, n_head_kv, head_dim;
    uint32_t      type;        // VLC_TYPE_F16 or VLC_TYPE_F32
    vlc_kv_head * heads;       // [L, Hkv]
    uint64_t      bytes;       // allocated for K, V and positions
    int           compressed;  // set by vlc_kv_compact, cleared by vlc_kv_clear
} vlc_kvcache;

static inline vlc_kv_head * vlc_kv_at(const vlc_kvcache * kv, int32_t il, int32_t g) {
    return &kv->heads[(int64_t) il * kv->n_head_kv + g];
}

// Every head with cap entries, K and V in be's memory. On error *kv holds nothing
// (vlc_kv_free is still safe).
vlc_status vlc_kv_init(vlc_kvcache * kv, struct vlc_backend * be, int32_t n_layer, int32_t n_head_kv,
                       int32_t head_dim, uint32_t type, int32_t cap);
void       vlc_kv_free(vlc_kvcache * kv);
// Empties every head (buffers and capacities stay) and clears the compressed mark.
void       vlc_kv_clear(vlc_kvcache * kv);

// Room for n more entries in every head: a short one (only a compacted head can be)
// grows to max(n + len, 1.5 x cap), at most len + limit entries. On VLC_STATUS_OOM the
// heads already grown keep their (valid, larger) buffers.
vlc_status vlc_kv_reserve(vlc_kvcache * kv, int32_t n, int32_t limit);

// Writes entry e (h->n <= e < h->cap) of head h from the f32 rows k and v ([D] each),
// converted to the cache's type (the CPU backend's kv_store; host memory). The entries written count once vlc_kv_advance says so:
// until then attention may read them and h->n still says what came before them.
void vlc_kv_put(const vlc_kvcache * kv, vlc_kv_head * h, int32_t e, const float * k, const float * v, int32_t pos);
// n more entries in use in every head of layer il.
void vlc_kv_advance(vlc_kvcache * kv, int32_t il, int32_t n);

// Drops the entries at positions >= p0 from every head (the last ones appended: a failed
// step is undone with this). Buffers and capacities stay.
void vlc_kv_truncate(vlc_kvcache * kv, int32_t p0);
// Compaction after a plan: keep [L, Hkv, m] says which prompt positions [0, m) each head
// keeps; entries at positions >= m are all kept. Every head's kept entries are gathered,
// in order, into new buffers of (kept + room) entries, then the old ones are freed; the
// cache is marked compressed. On VLC_STATUS_OOM nothing changed.
vlc_status vlc_kv_compact(vlc_kvcache * kv, const uint8_t * keep, int32_t m, int32_t room);

// dst (initialised with src's shape and type) becomes a copy of src: entries, capacities,
// byte count and mark. On VLC_STATUS_OOM dst holds a valid, partial copy.
vlc_status vlc_kv_copy(vlc_kvcache * dst, const vlc_kvcache * src);
