// test_compact.c: KV compaction, growth and copies of the text state (text.c), run under
// the sanitizers by test_ctests.py. The numbers of a decode on a compacted cache are
// checked against an independent NumPy decoder in tests/python/test_compress.py; here:
// - compacting with every entry kept changes nothing: the next decode steps are
//   bit-identical to an uncompacted state's, also past the decode room (growth);
// - a random keep mask leaves exactly the kept positions, in order, then the decoded ones,
//   and changes the decode; the same mask with no decode room (growth at every step)
//   decodes bit-identically;
// - the KV bytes held equal the entries' bytes (kept + room) and drop accordingly;
// - a clone decodes bit-identically to its source, compacted or not, and owns its memory;
// - reset after compaction, then a new prompt, gives the logits of a fresh state;
// - invalid arguments are refused and leave the state as it was.
#include "kvcache.h"
#include "model.h"
#include "ops_cpu.h"

#include <stdio.h>

#define VLC_TEST_SEED 0x9b1d5c3a77e2f041ull
#include "vlc_test.h"
#include "vlc_tiny.h"

enum { V = 61, C = 32, L = 2, H = 4, HKV = 2, F = 48, N = 70, N_CTX = 96, ROOM = 3, STEPS = 8 };

static void decode_steps(vlc_text_state * st, const int32_t * toks, float * lg) {
    for (int i = 0; i < STEPS; i++) {
        CHECK(vlc_text_forward(st, toks + i, NULL, 1, lg + (size_t) i * V, 1) == VLC_STATUS_OK, "decode step %d", i);
    }
}

static uint64_t entry_bytes(void) {
    return 2 * (uint64_t) (C / H) * sizeof(uint16_t) + sizeof(int32_t);  // f16 K + V + position
}

int main(void) {
    tiny t;
    tiny_init(&t, V, C, L, H, HKV, F);
    int32_t toks[N + STEPS];
    for (int i = 0; i < N + STEPS; i++) {
        toks[i] = (int32_t) (rng_u64() % V);
    }
    float * lg = malloc(sizeof(float) * (size_t) N * V);
    float   ref[STEPS * V], got[STEPS * V], got2[STEPS * V];

    // the reference: no compaction
    vlc_text_state * a = state_new(&t.model, N_CTX, 32, 2);
    CHECK(vlc_text_forward(a, toks, NULL, N, lg, N) == VLC_STATUS_OK, "prefill a");
    vlc_text_state * keep_all = NULL;
    vlc_text_state * masked   = NULL;
    CHECK(vlc_text_state_clone(a, &keep_all) == VLC_STATUS_OK, "clone a");
    CHECK(vlc_text_state_clone(a, &masked) == VLC_STATUS_OK, "clone a");
    CHECK(vlc_text_state_kv_bytes(keep_all) == (uint64_t) L * HKV * N_CTX * entry_bytes(), "clone kv bytes");
    decode_steps(a, toks + N, ref);

    // every entry kept: identical decode, across the room's end (STEPS > ROOM: growth)
    uint8_t * keep = malloc((size_t) L * HKV * N);
    memset(keep, 1, (size_t) L * HKV * N);
    CHECK(vlc_text_state_compact(keep_all, keep, N, ROOM) == VLC_STATUS_OK, "compact keep-all");
    CHECK(vlc_text_state_kv(keep_all)->compressed, "compressed flag");
    CHECK(vlc_text_state_kv_bytes(keep_all) == (uint64_t) L * HKV * (N + ROOM) * entry_bytes(), "kv bytes keep-all");
    vlc_text_state * copy = NULL;
    CHECK(vlc_text_state_clone(keep_all, &copy) == VLC_STATUS_OK, "clone compacted");
    decode_steps(keep_all, toks + N, got);
    CHECK(memcmp(ref, got, sizeof(ref)) == 0, "keep-all compaction changed the decode");
    CHECK(vlc_kv_at(vlc_text_state_kv(keep_all), 1, 1)->n == N + STEPS, "entries after decode");
    decode_steps(copy, toks + N, got2);
    CHECK(memcmp(ref, got2, sizeof(ref)) == 0, "clone of a compacted state decodes differently");

    // a random mask: positions and rows
    int32_t kept[L][HKV];
    for (int i = 0; i < L * HKV * N; i++) {
        keep[i] = (rng_u64() & 3) == 0;
    }
    keep[0] = 1;  // at least one entry in head 0
    for (int h = 0; h < L * HKV; h++) {
        kept[h / HKV][h % HKV] = 0;
        for (int j = 0; j < N; j++) {
            kept[h / HKV][h % HKV] += keep[h * N + j];
        }
    }
    // the uncompacted rows of masked, before compaction (a fresh copy to compare with)
    vlc_text_state * before = NULL;
    CHECK(vlc_text_state_clone(masked, &before) == VLC_STATUS_OK, "clone masked");
    uint64_t bytes = 0;
    CHECK(vlc_text_state_compact(masked, keep, N, ROOM) == VLC_STATUS_OK, "compact masked");
    for (int il = 0; il < L; il++) {
        for (int g = 0; g < HKV; g++) {
            const int32_t   n   = vlc_kv_at(vlc_text_state_kv(masked), il, g)->n;
            const int32_t * pos = vlc_kv_at(vlc_text_state_kv(masked), il, g)->pos;
            CHECK(n == kept[il][g], "layer %d head %d: %d entries, %d kept", il, g, n, kept[il][g]);
            for (int e = 0, j = 0; j < N; j++) {
                if (keep[(il * HKV + g) * N + j]) {
                    CHECK(pos[e] == j, "layer %d head %d entry %d: position %d, expected %d", il, g, e, pos[e], j);
                    e++;
                }
            }
            bytes += (uint64_t) (n + ROOM) * entry_bytes();
        }
    }
    CHECK(vlc_text_state_kv_bytes(masked) == bytes, "kv bytes %llu, expected %llu",
          (unsigned long long) vlc_text_state_kv_bytes(masked), (unsigned long long) bytes);
    decode_steps(masked, toks + N, got);
    for (int il = 0; il < L; il++) {
        for (int g = 0; g < HKV; g++) {
            const int32_t * pos = vlc_kv_at(vlc_text_state_kv(masked), il, g)->pos;
            const int32_t   n   = vlc_kv_at(vlc_text_state_kv(masked), il, g)->n;
            CHECK(n == kept[il][g] + STEPS, "entries after decode");
            for (int s = 0; s < STEPS; s++) {
                CHECK(pos[kept[il][g] + s] == N + s, "decoded token %d at position %d", s, pos[kept[il][g] + s]);
            }
        }
    }
    int differs = memcmp(ref, got, sizeof(ref)) != 0;
    CHECK(differs, "dropping three quarters of the cache changed nothing: the mask is not applied");

    // the same mask with no room: every decode step grows the buffers, same numbers
    CHECK(vlc_text_state_compact(before, keep, N, 0) == VLC_STATUS_OK, "compact before, no room");
    decode_steps(before, toks + N, got2);
    CHECK(memcmp(got, got2, sizeof(got)) == 0, "same mask, different decode (room 0 + growth vs room 3)");

    // refused arguments leave the state as it was
    const uint64_t kb = vlc_text_state_kv_bytes(masked);
    CHECK(vlc_text_state_compact(masked, keep, 0, ROOM) == VLC_STATUS_INVALID_ARG, "m = 0 accepted");
    CHECK(vlc_text_state_compact(masked, keep, N + STEPS + 1, ROOM) == VLC_STATUS_INVALID_ARG, "m > n_past accepted");
    CHECK(vlc_text_state_compact(masked, keep, N, -1) == VLC_STATUS_INVALID_ARG, "room < 0 accepted");
    CHECK(vlc_text_state_kv_bytes(masked) == kb, "a refused call changed the state");
    const vlc_attn_stats_params sp = { N + STEPS, 0, 0.01f, 0, 0 };
    CHECK(vlc_text_state_set_stats(masked, &sp) == VLC_STATUS_INVALID_ARG, "statistics on a compressed cache");

    // reset, then a new prompt: the logits of a fresh state (the buffers grow back)
    vlc_text_state_reset(masked);
    CHECK(!vlc_text_state_kv(masked)->compressed, "reset keeps the compressed flag");
    vlc_text_state * fresh = state_new(&t.model, N_CTX, 32, 2);
    float *          lg2   = malloc(sizeof(float) * (size_t) N * V);
    CHECK(vlc_text_forward(fresh, toks + 5, NULL, N, lg, N) == VLC_STATUS_OK, "prefill fresh");
    CHECK(vlc_text_forward(masked, toks + 5, NULL, N, lg2, N) == VLC_STATUS_OK, "prefill after reset");
    CHECK(memcmp(lg, lg2, sizeof(float) * (size_t) N * V) == 0, "reset after compaction: different logits");
    // the context bound still holds for a grown head
    CHECK(vlc_text_forward(masked, toks, NULL, N_CTX - N + 1, NULL, 0) == VLC_STATUS_CONTEXT_FULL, "context bound");

    vlc_text_state_free(a);
    vlc_text_state_free(keep_all);
    vlc_text_state_free(copy);
    vlc_text_state_free(masked);
    vlc_text_state_free(before);
    vlc_text_state_free(fresh);
    free(keep);
    free(lg);
    free(lg2);
    tiny_free(&t);
    printf("test_compact: ok\n");
    return 0;
}
