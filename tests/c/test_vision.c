// test_vision.c: the vision ops (ops_cpu.c "vision ops") and the CLIP tower + projector
// (vision.c) against independent double-precision references written here, on a tiny
// tower built in memory as a GGUF (vlc_tiny_vision.h).
//
// Checks: LayerNorm / GELU variants / patchify values; encode against a plain loop
// reference (CLS first, feature layer, select strategy, quick_gelu or erf GELU) within
// 1e-5 of max|ref| (f32 sums of <= 48 terms of O(1) values, ~1e-6 expected); legacy
// swapped ffn names and thread counts give the same bits; every missing tensor, a wrong
// shape, an unknown projector, a projector width mismatch and an out-of-range feature
// layer are errors naming the culprit; NULL / out-of-range arguments are INVALID_ARG.
#include "ops_cpu.h"
#include "vision.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VLC_TEST_SEED 0x2545f4914f6cdd1dull
#include "vlc_test.h"
#include "vlc_tiny_vision.h"

// ---------------------------------------------------------------------------
// vision ops

static void test_ops(void) {
    enum { n = 37 };
    float x[n], w[n], b[n], y[n];
    fill(x, n, 3.0f, 0.7f);
    fill(w, n, 0.5f, 1.0f);
    fill(b, n, 0.5f, 0.0f);
    vlc_cpu_layernorm(y, x, w, b, n, 1e-5f);
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= n;
    for (int i = 0; i < n; i++) {
        const double r = (x[i] - mean) / sqrt(var + 1e-5) * w[i] + b[i];
        CHECK(fabs(y[i] - r) <= 1e-6 * (1 + fabs(r)), "layernorm[%d] %g vs %g", i, y[i], r);
    }
    memcpy(y, x, sizeof(x));
    vlc_cpu_layernorm(y, y, NULL, NULL, n, 0.0f);  // in place, no affine
    for (int i = 0; i < n; i++) {
        const double r = (x[i] - mean) / sqrt(var);
        CHECK(fabs(y[i] - r) <= 1e-6 * (1 + fabs(r)), "layernorm plain[%d] %g vs %g", i, y[i], r);
    }

    float g1[n], g2[n], g3[n];
    memcpy(g1, x, sizeof(x));
    memcpy(g2, x, sizeof(x));
    memcpy(g3, x, sizeof(x));
    vlc_cpu_gelu_erf(g1, n);
    vlc_cpu_gelu_tanh(g2, n);
    vlc_cpu_quick_gelu(g3, n);
    for (int i = 0; i < n; i++) {
        const double v  = x[i];
        const double r1 = 0.5 * v * (1 + erf(v / sqrt(2.0)));
        const double r2 = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
        const double r3 = v / (1 + exp(-1.702 * v));
        CHECK(fabs(g1[i] - r1) <= 1e-6 * (1 + fabs(r1)), "gelu_erf(%g) %g vs %g", v, g1[i], r1);
        CHECK(fabs(g2[i] - r2) <= 1e-6 * (1 + fabs(r2)), "gelu_tanh(%g) %g vs %g", v, g2[i], r2);
        CHECK(fabs(g3[i] - r3) <= 1e-6 * (1 + fabs(r3)), "quick_gelu(%g) %g vs %g", v, g3[i], r3);
    }
    float big[2] = { -100.0f, 100.0f };
    vlc_cpu_quick_gelu(big, 2);
    CHECK(big[0] == 0.0f && big[1] == 100.0f, "quick_gelu saturation %g %g", big[0], big[1]);
    float add[3] = { 1, 2, 3 };
    vlc_cpu_add(add, (const float[]) { 0.5f, -2, 1 }, 3);
    CHECK(add[0] == 1.5f && add[1] == 0.0f && add[2] == 4.0f, "add");

    // patchify: out[p, (ch, ky, kx)] = img[ch, py*P + ky, px*P + kx], p = py * (S/P) + px
    enum { S = 12, P = 4, NP = 3, K = 3 * P * P };
    float img[3 * S * S], pt[NP * NP * K];
    fill(img, 3 * S * S, 1.0f, 0.0f);
    vlc_cpu_patchify(pt, img, S, P);
    int bad = 0;
    for (int py = 0; py < NP; py++)
        for (int px = 0; px < NP; px++)
            for (int ch = 0; ch < 3; ch++)
                for (int ky = 0; ky < P; ky++)
                    for (int kx = 0; kx < P; kx++)
                        bad += pt[(py * NP + px) * K + (ch * P + ky) * P + kx] !=
                               img[(ch * S + py * P + ky) * S + px * P + kx];
    CHECK(bad == 0, "patchify: %d elements misplaced", bad);
}

// Names of every tensor write_tower writes (for the omission test); returns the count.
static int tensor_names(char names[][48], int n_store) {
    int n = 0;
    const char * top[] = { "v.patch_embd.weight", "v.class_embd", "v.position_embd.weight", "v.pre_ln.weight",
                           "v.pre_ln.bias", "mm.0.weight", "mm.0.bias", "mm.2.weight", "mm.2.bias" };
    for (size_t i = 0; i < sizeof(top) / sizeof(top[0]); i++) {
        snprintf(names[n++], 48, "%s", top[i]);
    }
    const char * per[] = { "ln1", "ln2", "attn_q", "attn_k", "attn_v", "attn_out", "ffn_up", "ffn_down" };
    for (int l = 0; l < n_store; l++) {
        for (size_t i = 0; i < sizeof(per) / sizeof(per[0]); i++) {
            snprintf(names[n++], 48, "v.blk.%d.%s.weight", l, per[i]);
            snprintf(names[n++], 48, "v.blk.%d.%s.bias", l, per[i]);
        }
    }
    return n;
}

// ---------------------------------------------------------------------------
// reference forward pass in double

static void ref_ln(double * y, const double * x, const float * w, const float * b) {
    double m = 0, v = 0;
    for (int i = 0; i < C; i++) m += x[i];
    m /= C;
    for (int i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
    v /= C;
    for (int i = 0; i < C; i++) y[i] = (x[i] - m) / sqrt(v + 1e-5) * w[i] + b[i];
}

static void ref_linear(double * y, const float * w, const float * b, const double * x, int n_in, int n_out) {
    for (int o = 0; o < n_out; o++) {
        double s = b ? b[o] : 0;
        for (int i = 0; i < n_in; i++) s += (double) w[o * n_in + i] * x[i];
        y[o] = s;
    }
}

// out [Tout, E] for one tile img [3, S, S]
static void ref_encode(const tower * t, const float * img, int n_layer, int full, int gelu, double * out) {
    double x[T][C], xn[T][C], q[T][C], k[T][C], v[T][C], a[T][C];
    for (int c = 0; c < C; c++) x[0][c] = t->cls[c] + t->pos[c];
    for (int py = 0; py < NP; py++) {
        for (int px = 0; px < NP; px++) {
            const int p = py * NP + px;
            for (int c = 0; c < C; c++) {
                double s = 0;
                for (int ch = 0; ch < 3; ch++)
                    for (int ky = 0; ky < P; ky++)
                        for (int kx = 0; kx < P; kx++)
                            s += (double) t->patch[((c * 3 + ch) * P + ky) * P + kx] *
                                 img[(ch * S + py * P + ky) * S + px * P + kx];
                x[1 + p][c] = s + t->pos[(1 + p) * C + c];
            }
        }
    }
    for (int i = 0; i < T; i++) ref_ln(x[i], x[i], t->pre_w, t->pre_b);
    for (int l = 0; l < n_layer; l++) {
        for (int i = 0; i < T; i++) {
            ref_ln(xn[i], x[i], t->ln1_w[l], t->ln1_b[l]);
            ref_linear(q[i], t->wq[l], t->bq[l], xn[i], C, C);
            ref_linear(k[i], t->wk[l], t->bk[l], xn[i], C, C);
            ref_linear(v[i], t->wv[l], t->bv[l], xn[i], C, C);
        }
        for (int h = 0; h < H; h++) {
            for (int i = 0; i < T; i++) {
                double s[T], mx = -1e300, sum = 0;
                for (int j = 0; j < T; j++) {
                    s[j] = 0;
                    for (int d = 0; d < D; d++) s[j] += q[i][h * D + d] * k[j][h * D + d];
                    s[j] /= sqrt((double) D);
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int j = 0; j < T; j++) sum += (s[j] = exp(s[j] - mx));
                for (int d = 0; d < D; d++) {
                    double o = 0;
                    for (int j = 0; j < T; j++) o += s[j] / sum * v[j][h * D + d];
                    a[i][h * D + d] = o;
                }
            }
        }
        for (int i = 0; i < T; i++) {
            double o[C], hdn[F];
            ref_linear(o, t->wo[l], t->bo[l], a[i], C, C);
            for (int c = 0; c < C; c++) x[i][c] += o[c];
            ref_ln(xn[i], x[i], t->ln2_w[l], t->ln2_b[l]);
            ref_linear(hdn, t->fc1[l], t->b1[l], xn[i], C, F);
            for (int f = 0; f < F; f++) {
                const double z = hdn[f];
                hdn[f] = gelu ? 0.5 * z * (1 + erf(z / sqrt(2.0))) : z / (1 + exp(-1.702 * z));
            }
            ref_linear(o, t->fc2[l], t->b2[l], hdn, F, C);
            for (int c = 0; c < C; c++) x[i][c] += o[c];
        }
    }
    for (int i = full ? 0 : 1, r = 0; i < T; i++, r++) {
        double p1[E1];
        ref_linear(p1, t->mm0, t->mm0_b, x[i], C, E1);
        for (int e = 0; e < E1; e++) p1[e] = 0.5 * p1[e] * (1 + erf(p1[e] / sqrt(2.0)));
        ref_linear(out + r * E, t->mm2, t->mm2_b, p1, E1, E);
    }
}

// ---------------------------------------------------------------------------
// encode tests

enum { NT = 3 };

static void check_against_ref(const tower * t, const opts * o, int n_layer, int full, const char * what) {
    float img[NT * 3 * S * S];
    fill(img, NT * 3 * S * S, 1.5f, 0.0f);
    wbuf       file = write_tower(t, o);
    vlc_gguf * g    = NULL;
    vlc_vision * v  = NULL;
    vlc_status st   = load(&file, E, &g, &v);
    CHECK(st == VLC_STATUS_OK, "%s: load: %s", what, vlc_last_error());
    if (st == VLC_STATUS_OK) {
        vlc_vision_info in;
        vlc_vision_get_info(v, &in);
        const int tout = full ? T : T - 1;
        CHECK(in.has_vision == 1 && in.n_layer == n_layer && in.n_layer_file == o->n_store && in.select_full == full &&
              in.n_tokens_per_tile == tout && in.n_embd_out == E && in.gelu_exact == o->use_gelu &&
              in.image_size == S && in.patch_size == P && in.n_embd == C && in.n_head == H && in.n_ff == F,
              "%s: info", what);
        CHECK(fabsf(in.image_mean[0] - 0.48145466f) < 1e-7f && fabsf(in.image_std[2] - 0.27577711f) < 1e-7f,
              "%s: default mean/std", what);
        float  out1[NT * T * E], out3[NT * T * E];
        double ref[T * E];
        CHECK(vlc_vision_encode_tiles(v, img, NT, 1, out1) == VLC_STATUS_OK, "%s: encode: %s", what, vlc_last_error());
        CHECK(vlc_vision_encode_tiles(v, img, NT, 3, out3) == VLC_STATUS_OK, "%s: encode 3 thr", what);
        CHECK(memcmp(out1, out3, sizeof(float) * NT * tout * E) == 0, "%s: 1 vs 3 threads differ", what);
        double maxd = 0, maxr = 0;
        for (int tile = 0; tile < NT; tile++) {
            ref_encode(t, img + tile * 3 * S * S, n_layer, full, o->use_gelu, ref);
            for (int i = 0; i < tout * E; i++) {
                const double d = fabs(out1[tile * tout * E + i] - ref[i]);
                maxd = d > maxd ? d : maxd;
                maxr = fabs(ref[i]) > maxr ? fabs(ref[i]) : maxr;
            }
        }
        printf("%s: max rel err vs double reference %.2e\n", what, maxd / maxr);
        CHECK(maxr > 0.1 && maxd <= 1e-5 * maxr, "%s: max|diff| %g, max|ref| %g", what, maxd, maxr);
    }
    vlc_vision_free(v);
    vlc_gguf_close(g);
    free(file.p);
}

static void test_encode(const tower * t) {
    opts o = default_opts();
    check_against_ref(t, &o, L, 0, "all stored layers, default, quick_gelu");
    o.feature_layer = 2;
    o.use_gelu      = 1;
    o.select        = "full";
    check_against_ref(t, &o, 2, 1, "feature layer 2 of 3, full, gelu");
    o = default_opts();
    o.n_store = 2;
    o.swapped = 1;
    o.proj_type = NULL;  // absent: mlp assumed from mm.0
    o.select  = "default";
    check_against_ref(t, &o, 2, 0, "legacy: 2 stored, swapped ffn, no projector_type");
    o.feature_layer = 0;
    check_against_ref(t, &o, 0, 0, "feature layer 0 (embeddings after pre-LN)");
}

// ---------------------------------------------------------------------------
// errors

static void expect_load_error(const tower * t, const opts * o, int32_t n_embd_text, vlc_status want,
                              const char * needle, const char * what) {
    wbuf       file = write_tower(t, o);
    vlc_gguf * g    = NULL;
    vlc_vision * v  = (vlc_vision *) 1;
    vlc_status st   = load(&file, n_embd_text, &g, &v);
    CHECK(st == want && v == NULL, "%s: status %d (want %d), %s", what, st, want, vlc_last_error());
    CHECK(strstr(vlc_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", what, vlc_last_error(), needle);
    vlc_vision_free(v);
    vlc_gguf_close(g);
    free(file.p);
}

static void test_errors(const tower * t) {
    static char names[16 + L * 16][48];
    const int   n = tensor_names(names, L);
    for (int i = 0; i < n; i++) {
        opts o = default_opts();
        o.omit = names[i];
        expect_load_error(t, &o, E, VLC_STATUS_FORMAT, names[i], names[i]);
    }
    opts o      = default_opts();
    o.bad_shape = "v.blk.1.attn_v.weight";
    expect_load_error(t, &o, E, VLC_STATUS_FORMAT, "'v.blk.1.attn_v.weight' has shape [7, 8], expected [8, 8]", "shape");
    o           = default_opts();
    o.bad_shape = "v.patch_embd.weight";
    expect_load_error(t, &o, E, VLC_STATUS_FORMAT, "[3, 4, 3, 8], expected [4, 4, 3, 8]", "patch shape");
    o           = default_opts();
    o.proj_type = "ldp";
    expect_load_error(t, &o, E, VLC_STATUS_UNSUPPORTED, "'ldp'", "projector type");
    o = default_opts();
    expect_load_error(t, &o, E + 1, VLC_STATUS_FORMAT, "projector output width 6 (mm.2.weight) does not match the text model's n_embd 7",
                      "width mismatch");
    o.feature_layer = 4;
    expect_load_error(t, &o, E, VLC_STATUS_FORMAT, "clip.vision.feature_layer", "feature layer > block_count");
    o        = default_opts();
    o.select = "spatial";
    expect_load_error(t, &o, E, VLC_STATUS_UNSUPPORTED, "'spatial'", "select strategy");
    o               = default_opts();
    o.block_count   = 1000;
    o.feature_layer = 2;  // only layers 0, 1 are read: the count alone must be refused
    expect_load_error(t, &o, E, VLC_STATUS_FORMAT, "clip.vision.block_count = 1000, but the file stores 3 vision layers",
                      "absurd block_count");
    o.block_count   = 2;
    o.feature_layer = -1;
    expect_load_error(t, &o, E, VLC_STATUS_FORMAT, "clip.vision.block_count = 2, but the file stores 3 vision layers",
                      "block_count below the layers stored");

    // arguments
    vlc_vision * v = (vlc_vision *) 1;
    CHECK(vlc_vision_load(NULL, E, &v) == VLC_STATUS_INVALID_ARG && v == NULL, "load NULL gguf");
    CHECK(vlc_vision_load(NULL, E, NULL) == VLC_STATUS_INVALID_ARG, "load NULL out");
    vlc_vision_free(NULL);
    vlc_vision_info in;
    memset(&in, 0xff, sizeof(in));
    vlc_vision_get_info(NULL, &in);
    CHECK(in.has_vision == 0 && in.n_layer == 0, "info of NULL");

    o              = default_opts();
    wbuf       f   = write_tower(t, &o);
    vlc_gguf * g   = NULL;
    CHECK(load(&f, E, &g, &v) == VLC_STATUS_OK, "load: %s", vlc_last_error());
    float img[3 * S * S] = { 0 }, out[T * E];
    CHECK(vlc_vision_encode_tiles(NULL, img, 1, 1, out) == VLC_STATUS_INVALID_ARG, "encode NULL tower");
    CHECK(vlc_vision_encode_tiles(v, NULL, 1, 1, out) == VLC_STATUS_INVALID_ARG, "encode NULL pixels");
    CHECK(vlc_vision_encode_tiles(v, img, 1, 1, NULL) == VLC_STATUS_INVALID_ARG, "encode NULL out");
    CHECK(vlc_vision_encode_tiles(v, img, 0, 1, out) == VLC_STATUS_INVALID_ARG, "encode 0 tiles");
    CHECK(vlc_vision_encode_tiles(v, img, -1, 1, out) == VLC_STATUS_INVALID_ARG, "encode -1 tiles");
    CHECK(vlc_vision_encode_tiles(v, img, 1, -2, out) == VLC_STATUS_INVALID_ARG, "encode -2 threads");
    CHECK(vlc_vision_encode_tiles(v, img, 1, 0, out) == VLC_STATUS_OK, "encode 0 threads = all cores");
    vlc_vision_free(v);
    vlc_gguf_close(g);
    free(f.p);
}

int main(void) {
    test_ops();
    static tower t;
    tower_init(&t);
    test_encode(&t);
    test_errors(&t);
    if (g_fail) {
        fprintf(stderr, "test_vision: %d failures\n", g_fail);
        return 1;
    }
    printf("test_vision: ok\n");
    return 0;
}
