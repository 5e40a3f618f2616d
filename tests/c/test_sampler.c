// test_sampler.c: the sampler chain against what each rule must do, on hand-made logits.
#include "vlcache.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int g_fail = 0;
#define EXPECT(cond, ...) do { if (!(cond)) { printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); g_fail++; } } while (0)

static vlc_sampler * make(float temp, int top_k, float top_p, float min_p, float rep, uint64_t seed) {
    vlc_sampler_params p;
    vlc_sampler_params_init(&p);
    p.temperature = temp; p.top_k = top_k; p.top_p = top_p; p.min_p = min_p; p.repeat_penalty = rep; p.seed = seed;
    vlc_sampler * s = NULL;
    vlc_status st = vlc_sampler_create(&p, &s);
    EXPECT(st == VLC_STATUS_OK, "create: %s", vlc_last_error());
    return s;
}

static int sample(vlc_sampler * s, const float * l, int n) {
    int32_t t = -1;
    vlc_status st = vlc_sampler_sample(s, l, n, &t);
    EXPECT(st == VLC_STATUS_OK && t >= 0 && t < n, "sample: st %d t %d", st, t);
    return t;
}

int main(void) {
    float l[5] = {1.0f, 3.0f, 3.0f, -2.0f, 0.5f};

    // greedy: argmax, ties to the smaller id
    vlc_sampler * g = make(0.0f, 0, 1.0f, 0.0f, 1.0f, 0);
    EXPECT(sample(g, l, 5) == 1, "greedy tie must pick id 1");
    vlc_sampler_free(g);

    // top_k = 1 is greedy at any temperature
    vlc_sampler * k1 = make(5.0f, 1, 1.0f, 0.0f, 1.0f, 7);
    for (int i = 0; i < 100; i++) EXPECT(sample(k1, l, 5) == 1, "top_k=1");
    vlc_sampler_free(k1);

    // temperature 1: frequencies follow softmax (20000 draws, fixed seed; 4-sigma bound)
    float w[4] = {0.0f, logf(2.0f), logf(3.0f), logf(4.0f)};
    vlc_sampler * t1 = make(1.0f, 0, 1.0f, 0.0f, 1.0f, 42);
    int cnt[4] = {0};
    const int N = 20000;
    for (int i = 0; i < N; i++) cnt[sample(t1, w, 4)]++;
    for (int i = 0; i < 4; i++) {
        double p = (i + 1) / 10.0, sd = sqrt(p * (1 - p) / N);
        EXPECT(fabs(cnt[i] / (double) N - p) < 4 * sd, "softmax freq id %d: %f vs %f", i, cnt[i] / (double) N, p);
    }
    // same seed -> same sequence; reset reseeds
    vlc_sampler * t2 = make(1.0f, 0, 1.0f, 0.0f, 1.0f, 42);
    vlc_sampler_reset(t1);
    for (int i = 0; i < 200; i++) EXPECT(sample(t1, w, 4) == sample(t2, w, 4), "seeded sequences differ at %d", i);
    vlc_sampler_free(t1);
    vlc_sampler_free(t2);

    // top_p = 0.5 on probabilities .4 .3 .2 .1 keeps {3, 2} (cumulative .4 < .5 <= .7)
    vlc_sampler * tp = make(1.0f, 0, 0.5f, 0.0f, 1.0f, 3);
    for (int i = 0; i < 500; i++) { int t = sample(tp, w, 4); EXPECT(t == 3 || t == 2, "top_p picked %d", t); }
    vlc_sampler_free(tp);

    // min_p = 0.6: keep p >= 0.6 * 0.4 = 0.24 -> {3, 2}
    vlc_sampler * mp = make(1.0f, 0, 1.0f, 0.6f, 1.0f, 3);
    int seen2 = 0;
    for (int i = 0; i < 500; i++) { int t = sample(mp, w, 4); EXPECT(t == 3 || t == 2, "min_p picked %d", t); seen2 += t == 2; }
    EXPECT(seen2 > 0, "min_p never picked id 2");
    vlc_sampler_free(mp);

    // repetition penalty 2: logit 3 -> 1.5 for the accepted token 1, so 2 wins; negatives get more negative
    vlc_sampler * rp = make(0.0f, 0, 1.0f, 0.0f, 2.0f, 0);
    vlc_sampler_accept(rp, 1);
    vlc_sampler_accept(rp, 1);  // twice: penalised once only
    EXPECT(sample(rp, l, 5) == 2, "penalty should move argmax to id 2");
    vlc_sampler_free(rp);
    vlc_sampler * rn = make(0.0f, 0, 1.0f, 0.0f, 2.0f, 0);
    float neg[3] = {-1.0f, -1.5f, -3.0f};
    vlc_sampler_accept(rn, 0);  // -1 -> -2 is below -1.5
    EXPECT(sample(rn, neg, 3) == 1, "negative logits are multiplied by the penalty");
    vlc_sampler_free(rn);

    // bad parameters are errors with a message, not crashes
    vlc_sampler_params p;
    vlc_sampler_params_init(&p);
    p.min_p = 2.0f;
    vlc_sampler * bad = NULL;
    EXPECT(vlc_sampler_create(&p, &bad) == VLC_STATUS_INVALID_ARG && bad == NULL, "min_p = 2 accepted");
    EXPECT(strstr(vlc_last_error(), "min_p") != NULL, "message '%s' does not name min_p", vlc_last_error());
    vlc_sampler_free(NULL);

    // non-finite logits: NaN is never picked, +inf beats every float, none finite is an error
    const float nan = nanf(""), inf = INFINITY;
    for (int hot = 0; hot < 2; hot++) {
        vlc_sampler * nf = make(hot ? 0.7f : 0.0f, 0, 1.0f, 0.0f, 1.0f, 5);
        float part[4] = {nan, 1.0f, nan, 0.5f}, big[3] = {0.0f, inf, 2.0f};
        for (int i = 0; i < 50; i++) {
            int t = sample(nf, part, 4);
            EXPECT(t == 1 || (hot && t == 3), "NaN logit picked (%d)", t);
            EXPECT(sample(nf, big, 3) == 1, "+inf not picked");
        }
        float none[3] = {nan, -inf, inf * 0.0f};
        int32_t t = -7;
        EXPECT(vlc_sampler_sample(nf, none, 3, &t) == VLC_STATUS_INVALID_ARG && t == -7,
               "all non-finite logits gave a token (%d)", t);
        EXPECT(strstr(vlc_last_error(), "finite") != NULL, "message '%s'", vlc_last_error());
        vlc_sampler_free(nf);
    }

    if (g_fail) { printf("%d failures\n", g_fail); return 1; }
    printf("test_sampler: ok\n");
    return 0;
}
