// sampler.c: picks the next token from logits. Independent of the model.
// Chain (llama.cpp's order): repetition penalty -> (greedy if temperature <= 0) ->
// top-k -> top-p -> min-p -> temperature -> softmax -> draw. Seeded and reproducible:
// the same seed, history and logits give the same token on every machine.
#include "error.h"

#include <float.h>
#include <math.h>
#include <string.h>

typedef struct vlc_cand {
    float   logit;
    int32_t id;
} vlc_cand;

struct vlc_sampler {
    vlc_sampler_params p;
    uint64_t           rng;        // splitmix64 state
    int32_t *          history;    // [hist_cap] ring of accepted tokens
    int32_t            hist_cap;
    int64_t            n_accepted;
    vlc_cand *         cand;       // [cand_cap] scratch
    uint8_t *          seen;       // [cand_cap] scratch: token already penalised
    int32_t            cand_cap;
};

void vlc_sampler_params_init(vlc_sampler_params * p) {
    p->temperature    = 0.0f;
    p->top_k          = 0;
    p->top_p          = 1.0f;
    p->min_p          = 0.0f;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n  = 64;
    p->seed           = 0;
}

static uint64_t splitmix64(uint64_t * s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t * s) { return (double) (splitmix64(s) >> 11) * (1.0 / 9007199254740992.0); }

vlc_status vlc_sampler_create(const vlc_sampler_params * params, vlc_sampler ** out) {
    VLC_CHECK(out != NULL, VLC_STATUS_INVALID_ARG, "out is NULL");
    *out = NULL;
    vlc_sampler_params p;
    vlc_sampler_params_init(&p);
    if (params) {
        p = *params;
    }
    VLC_CHECK(isfinite(p.temperature), VLC_STATUS_INVALID_ARG, "temperature = %g", p.temperature);
    VLC_CHECK(p.top_p > 0.0f, VLC_STATUS_INVALID_ARG,
              "top_p = %g, expected > 0 (>= 1 turns it off)", p.top_p);
    VLC_CHECK(p.min_p >= 0.0f && p.min_p <= 1.0f, VLC_STATUS_INVALID_ARG, "min_p = %g, expected in [0, 1]", p.min_p);
    VLC_CHECK(p.repeat_penalty > 0.0f && isfinite(p.repeat_penalty), VLC_STATUS_INVALID_ARG,
              "repeat_penalty = %g, expected > 0", p.repeat_penalty);
    VLC_CHECK(p.repeat_last_n >= -1, VLC_STATUS_INVALID_ARG, "repeat_last_n = %d, expected >= -1", p.repeat_last_n);
    vlc_sampler * s = calloc(1, sizeof(*s));
    VLC_CHECK(s != NULL, VLC_STATUS_OOM, "cannot allocate the sampler");
    s->p = p;
    vlc_sampler_reset(s);
    *out = s;
    return VLC_STATUS_OK;
}

void vlc_sampler_free(vlc_sampler * s) {
    if (!s) {
        return;
    }
    free(s->history);
    free(s->cand);
    free(s->seen);
    free(s);
}

void vlc_sampler_reset(vlc_sampler * s) {
    s->rng        = s->p.seed;
    s->n_accepted = 0;
}

void vlc_sampler_accept(vlc_sampler * s, int32_t token) {
    int32_t want = s->p.repeat_last_n < 0 ? 1 << 16 : s->p.repeat_last_n;
    if (want == 0) {
        return;
    }
    if (s->hist_cap < want) {
        int32_t * h = realloc(s->history, (size_t) want * sizeof(int32_t));
        if (!h) {
            return;  // the penalty then sees less history; never fails the caller
        }
        s->history  = h;
        s->hist_cap = want;
        s->n_accepted = 0;  // ring layout changed; restart the window
    }
    s->history[s->n_accepted % s->hist_cap] = token;
    s->n_accepted++;
}

// Descending by logit, ties by smaller id, so the order never depends on qsort.
static int cand_cmp(const void * a, const void * b) {
    const vlc_cand * x = a;
    const vlc_cand * y = b;
    if (x->logit != y->logit) {
        return x->logit > y->logit ? -1 : 1;
    }
    return x->id - y->id;
}

vlc_status vlc_sampler_sample(vlc_sampler * s, const float * logits, int32_t n_vocab, int32_t * out) {
    VLC_CHECK(s && logits && out, VLC_STATUS_INVALID_ARG, "sampler, logits or out is NULL");
    VLC_CHECK(n_vocab > 0, VLC_STATUS_INVALID_ARG, "n_vocab = %d", n_vocab);
    if (s->cand_cap < n_vocab) {
        free(s->cand);
        free(s->seen);
        s->cand     = malloc((size_t) n_vocab * sizeof(vlc_cand));
        s->seen     = malloc((size_t) n_vocab);
        s->cand_cap = s->cand && s->seen ? n_vocab : 0;
        VLC_CHECK(s->cand_cap > 0, VLC_STATUS_OOM, "cannot allocate %d candidates", n_vocab);
    }
    // NaN can never be chosen (-inf) and +inf is the largest float, so the order and the
    // softmax stay defined; with no finite logit at all there is nothing to choose from
    vlc_cand * c        = s->cand;
    int32_t    n_finite = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        const float l = logits[i];
        n_finite += isfinite(l) != 0;
        c[i].logit = isnan(l) ? -INFINITY : l == INFINITY ? FLT_MAX : l;
        c[i].id    = i;
    }
    VLC_CHECK(n_finite > 0, VLC_STATUS_INVALID_ARG,
              "none of the %d logits is finite (logits[0] = %g): nothing to sample", n_vocab, (double) logits[0]);

    // repetition penalty, once per distinct token in the window
    if (s->p.repeat_penalty != 1.0f && s->n_accepted > 0) {
        int64_t n = s->n_accepted < s->hist_cap ? s->n_accepted : s->hist_cap;
        memset(s->seen, 0, (size_t) n_vocab);
        for (int64_t i = 0; i < n; i++) {
            int32_t t = s->history[i];
            if (t < 0 || t >= n_vocab || s->seen[t]) {
                continue;
            }
            s->seen[t] = 1;
            float * l = &c[t].logit;
            *l = *l > 0.0f ? *l / s->p.repeat_penalty : *l * s->p.repeat_penalty;
        }
    }

    if (s->p.temperature <= 0.0f) {
        int32_t best = 0;
        for (int32_t i = 1; i < n_vocab; i++) {
            if (c[i].logit > c[best].logit) {
                best = i;
            }
        }
        *out = best;
        return VLC_STATUS_OK;
    }

    qsort(c, (size_t) n_vocab, sizeof(vlc_cand), cand_cmp);
    int32_t n = n_vocab;
    if (s->p.top_k > 0 && s->p.top_k < n) {
        n = s->p.top_k;
    }
    // probabilities at temperature 1 for top-p / min-p (llama.cpp applies them before temperature)
    double max_l = c[0].logit, sum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        sum += exp((double) c[i].logit - max_l);
    }
    if (s->p.top_p < 1.0f) {
        double cum = 0.0;
        for (int32_t i = 0; i < n; i++) {
            cum += exp((double) c[i].logit - max_l) / sum;
            if (cum >= s->p.top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (s->p.min_p > 0.0f) {
        // p_i / p_max >= min_p  <=>  logit_i - max >= log(min_p)
        double cut = log((double) s->p.min_p);
        int32_t keep = 1;
        while (keep < n && (double) c[keep].logit - max_l >= cut) {
            keep++;
        }
        n = keep;
    }
    sum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        sum += exp(((double) c[i].logit - max_l) / s->p.temperature);
    }
    double r = uniform01(&s->rng) * sum, acc = 0.0;
    for (int32_t i = 0; i < n; i++) {
        acc += exp(((double) c[i].logit - max_l) / s->p.temperature);
        if (r < acc) {
            *out = c[i].id;
            return VLC_STATUS_OK;
        }
    }
    *out = c[n - 1].id;
    return VLC_STATUS_OK;
}
