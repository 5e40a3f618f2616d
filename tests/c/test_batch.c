// test_batch.c: batched decoding (vlc_text_forward_batch), run under the sanitizers by
// test_ctests.py. 18 states of different lengths, some compacted to ragged per-head
// lengths, one with an f32 cache, decode several steps together; clones of them decode
// the same tokens one by one. Every logit must be bit-identical, for F32 and Q8_0 / Q4_K
// weights, for 1 to 3 threads, with the leading state's n_batch 16 (a chunk of 16 rows:
// the prefill kernels, then 2) and 4 (chunks of 4: the decode kernels). Bad batches are
// refused and change no state.
#include "kvcache.h"
#include "model.h"
#include "ops_cpu.h"
#include "quant.h"

#include <stdio.h>

#define VLC_TEST_SEED 0x51a7e03bc29d4f68ull
#include "vlc_test.h"
#include "vlc_tiny.h"

enum { V = 61, C = 256, L = 2, H = 4, HKV = 2, F = 256, N = 18, STEPS = 4, N_CTX = 128 };

static void run(const char * what, const vlc_model * m, int32_t threads, int32_t lead_batch) {
    vlc_text_state * a[N];  // batched
    vlc_text_state * b[N];  // the same states decoded one at a time
    int32_t          toks[N][STEPS];
    for (int i = 0; i < N; i++) {
        const int32_t n = 3 + 5 * i;  // prompts of 3 .. 88 tokens
        a[i] = state_new_kv(m, N_CTX, i == 0 ? lead_batch : 16, threads, i == 4 ? VLC_TYPE_F32 : VLC_TYPE_F16);
        int32_t prompt[96];
        for (int t = 0; t < n; t++) {
            prompt[t] = (int32_t) (rng_u64() % V);
        }
        CHECK(vlc_text_forward(a[i], prompt, NULL, n, NULL, 0) == VLC_STATUS_OK, "prefill %d", i);
        if (i % 2 == 1) {  // a random half of the entries of each head kept: ragged lengths
            uint8_t keep[L * HKV * 96];
            for (int e = 0; e < L * HKV * n; e++) {
                keep[e] = (uint8_t) (rng_u64() & 1);
            }
            for (int h = 0; h < L * HKV; h++) {
                keep[h * n + n - 1] = 1;  // at least one entry per head
            }
            CHECK(vlc_text_state_compact(a[i], keep, n, i == 3 ? 0 : 2) == VLC_STATUS_OK, "compact %d", i);
        }
        CHECK(vlc_text_state_clone(a[i], &b[i]) == VLC_STATUS_OK, "clone %d", i);
        for (int s = 0; s < STEPS; s++) {
            toks[i][s] = (int32_t) (rng_u64() % V);
        }
    }
    float got[N * V];
    for (int s = 0; s < STEPS; s++) {
        int32_t step[N];
        for (int i = 0; i < N; i++) {
            step[i] = toks[i][s];
        }
        CHECK(vlc_text_forward_batch(a, step, N, got) == VLC_STATUS_OK, "%s: batch step %d", what, s);
        for (int i = 0; i < N; i++) {
            float want[V];
            CHECK(vlc_text_forward(b[i], &step[i], NULL, 1, want, 1) == VLC_STATUS_OK, "single step");
            CHECK(memcmp(want, got + i * V, sizeof(want)) == 0, "%s, %d threads, n_batch %d: step %d state %d differs",
                  what, threads, lead_batch, s, i);
            CHECK(memcmp(vlc_text_state_logits(a[i]), want, sizeof(want)) == 0, "%s: state %d last logits", what, i);
            CHECK(vlc_text_state_n_past(a[i]) == vlc_text_state_n_past(b[i]), "%s: n_past of state %d", what, i);
        }
    }
    for (int i = 0; i < N; i++) {
        for (int h = 0; h < L * HKV; h++) {
            CHECK(vlc_kv_at(vlc_text_state_kv(a[i]), h / HKV, h % HKV)->n == vlc_kv_at(vlc_text_state_kv(b[i]), h / HKV, h % HKV)->n,
                  "%s: kv length of state %d head %d", what, i, h);
        }
    }
    // one more step for every state, after the batch: still the same
    for (int i = 0; i < N; i++) {
        float x[V], y[V];
        CHECK(vlc_text_forward(a[i], &toks[i][0], NULL, 1, x, 1) == VLC_STATUS_OK, "after");
        CHECK(vlc_text_forward(b[i], &toks[i][0], NULL, 1, y, 1) == VLC_STATUS_OK, "after");
        CHECK(memcmp(x, y, sizeof(x)) == 0, "%s: state %d decodes differently after the batch", what, i);
    }
    for (int i = 0; i < N; i++) {
        vlc_text_state_free(a[i]);
        vlc_text_state_free(b[i]);
    }
}

static void refusals(const vlc_model * m, const vlc_model * other) {
    vlc_text_state * s[3] = { state_new(m, N_CTX, 8, 1), state_new(m, N_CTX, 8, 1), state_new(other, N_CTX, 8, 1) };
    int32_t          p[4] = { 1, 2, 3, 4 };
    for (int i = 0; i < 3; i++) {
        CHECK(vlc_text_forward(s[i], p, NULL, 4, NULL, 0) == VLC_STATUS_OK, "prefill");
    }
    float            lg[3 * V];
    int32_t          t[3]   = { 5, 6, 7 };
    vlc_text_state * dup[2] = { s[0], s[0] };
    vlc_text_state * mix[2] = { s[0], s[2] };
    vlc_text_state * nul[2] = { s[0], NULL };
    CHECK(vlc_text_forward_batch(dup, t, 2, lg) == VLC_STATUS_INVALID_ARG, "a state twice");
    CHECK(vlc_text_forward_batch(mix, t, 2, lg) == VLC_STATUS_INVALID_ARG, "two models");
    CHECK(vlc_text_forward_batch(nul, t, 2, lg) == VLC_STATUS_INVALID_ARG, "NULL state");
    CHECK(vlc_text_forward_batch(s, t, 0, lg) == VLC_STATUS_INVALID_ARG, "n = 0");
    int32_t bad[2] = { 5, V };
    CHECK(vlc_text_forward_batch(s, bad, 2, lg) == VLC_STATUS_INVALID_ARG, "token out of range");
    int32_t fill[N_CTX];
    for (int i = 0; i < N_CTX - 4; i++) {
        fill[i] = 1;
    }
    CHECK(vlc_text_forward(s[1], fill, NULL, N_CTX - 4, NULL, 0) == VLC_STATUS_OK, "fill the context");
    CHECK(vlc_text_forward_batch(s, t, 2, lg) == VLC_STATUS_CONTEXT_FULL, "full context");
    CHECK(vlc_text_state_n_past(s[0]) == 4 && vlc_text_state_n_past(s[1]) == N_CTX, "refused batches changed a state");
    for (int i = 0; i < 3; i++) {
        vlc_text_state_free(s[i]);
    }
}

int main(void) {
    tiny t, u;
    tiny_init(&t, V, C, L, H, HKV, F);
    tiny_init(&u, V, C, L, H, HKV, F);
    run("F32", &t.model, 1, 16);
    run("F32", &t.model, 3, 4);
    refusals(&t.model, &u.model);

    const uint32_t types[] = { VLC_TYPE_Q8_0, VLC_TYPE_Q4_K };
    for (int k = 0; k < 2; k++) {
        tiny q;
        tiny_init(&q, V, C, L, H, HKV, F);
        tiny_quantize(&q, types[k]);
        run(vlc_type_traits_of(types[k])->name, &q.model, 2, 16);
        tiny_free(&q);
    }
    tiny_free(&t);
    tiny_free(&u);
    if (g_fail) {
        fprintf(stderr, "test_batch: %d failure(s)\n", g_fail);
        return 1;
    }
    printf("test_batch: ok\n");
    return 0;
}
