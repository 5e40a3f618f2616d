// vision.c: the CLIP vision tower and the LLaVA "mlp" projector (vision.h), its forward
// pass written against the backend seam (backend.h).
//
// Is: reading the clip.* / vlcache.* keys and binding the v.* / mm.* tensors of our
// one-file LLaVA or of a llama.cpp mmproj (tools/GGUF_FORMAT.md), with a shape check of
// every tensor and the legacy llama.cpp quirks handled (ffn_up / ffn_down stored swapped,
// detected by shape; last CLIP layer already removed); and the forward pass of Hugging
// Face's CLIPVisionModel + LlavaForConditionalGeneration.get_image_features: patch
// convolution (as im2col rows times the weight), [CLS; patches] + positions, pre-LayerNorm,
// encoder layers up to the feature layer (LN -> MHA with biases -> residual, LN -> MLP ->
// residual), CLS dropped ("default") or kept ("full"), Linear -> GELU -> Linear. All tiles
// of a call run as one batch of rows through every matmul.
// Is not: image preprocessing (Python), LLaVA-1.6 tile arrangement / image_newline
// (Python), llama.cpp's own (CLS-last, one layer short, tanh-GELU) behaviour, projector
// types other than "mlp", quantized weights. Weights are views into the GGUF mapping; the
// small vectors (norms, biases, class and position embeddings) are copied to f32.
// Letters: S = image side, P = patch size, K = 3*P*P, N = (S/P)^2 patches, T = N + 1
// tokens, C = ViT width, H = heads, D = C / H, F = ViT MLP width, L = layers run,
// E1 = projector hidden width, E = projector output (text n_embd), nt = tiles, R = nt*T.
#include "vision.h"

#include "backend.h"
#include "error.h"
#include "model.h"
#include "quant.h"
#include "threads.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Bounds that keep every size product (tiles x rows x width) far from 64-bit overflow.
enum {
    VIS_MAX_DIM    = 1 << 20,  // C, F, E1, E
    VIS_MAX_SIDE   = 1 << 14,  // S
    VIS_MAX_TOKENS = 1 << 20,  // T
    VIS_MAX_LAYER  = 4096,
    VIS_MAX_TILES  = 1 << 16,  // tiles per encode call
};


typedef struct vis_layer {
    const float * ln1_w, * ln1_b, * ln2_w, * ln2_b;  // [C]
    vlc_weight       wq, wk, wv, wo;                    // [C, C] (n_in = C)
    const float * bq, * bk, * bv, * bo;              // [C]
    vlc_weight       fc1;                               // n_in C, n_out F
    const float * b1;                                // [F]
    vlc_weight       fc2;                               // n_in F, n_out C
    const float * b2;                                // [C]
} vis_layer;

struct vlc_vision {
    const vlc_gguf * g;
    vlc_vision_info  info;
    float            eps;
    int              proj_act;     // VLC_ACT_* (backend.h)
    int              ffn_swapped;  // the file stores fc1 as ffn_down (legacy llama.cpp converter)

    vlc_weight          patch;        // n_in K, n_out C
    const float *    patch_b;      // [C] or NULL (CLIP has none)
    const float *    cls;          // [C]
    const float *    pos;          // [T, C], row 0 = CLS
    const float *    pre_ln_w, * pre_ln_b;  // [C]
    vis_layer *      layers;       // [L]
    vlc_weight          mm0;          // n_in C, n_out E1
    const float *    mm0_b;        // [E1]
    vlc_weight          mm2;          // n_in E1, n_out E
    const float *    mm2_b;        // [E]

    float *          vec;          // f32 copies of every vector above
    int64_t          vec_used, vec_cap;  // floats

    // what an encode runs on, kept between calls (one encode at a time: mu)
    pthread_mutex_t  mu;
    vlc_backend *    be;           // NULL until the first call; recreated when the thread count changes
    float *          slab;         // scratch of slab_cap floats in be's memory, grown to the largest call
    size_t           slab_cap;
};

// ---------------------------------------------------------------------------
// keys


static int str_len(vlc_gguf_str s) {
    return s.len > 64 ? 64 : (int) s.len;
}


static int is_int_type(uint32_t t) {
    return t == VLC_GGUF_UINT8 || t == VLC_GGUF_INT8 || t == VLC_GGUF_UINT16 || t == VLC_GGUF_INT16 ||
           t == VLC_GGUF_UINT32 || t == VLC_GGUF_INT32 || t == VLC_GGUF_UINT64 || t == VLC_GGUF_INT64;
}

static int is_num_type(uint32_t t) {
    return is_int_type(t) || t == VLC_GGUF_FLOAT32 || t == VLC_GGUF_FLOAT64;
}

// clip.vision.feature_layer: an integer array (or a single integer) of non-negative
// hidden-state indices; one distinct value is supported. Absent: *out untouched.
static vlc_status read_feature_layer(const vlc_gguf * g, int32_t n_layer_file, int32_t * out) {
    const char *        key = "clip.vision.feature_layer";
    const vlc_gguf_kv * kv  = vlc_gguf_find_kv(g, key);
    if (!kv) {
        return VLC_STATUS_OK;
    }
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    if (kv->type == VLC_GGUF_ARRAY) {
        VLC_CHECK(is_int_type(kv->arr_type) && kv->n >= 1, VLC_STATUS_FORMAT,
                  "key '%s' must be a non-empty integer array (got %" PRIu64 " elements of type %s)", key, kv->n,
                  vlc_gguf_type_name(kv->arr_type));
        for (uint64_t i = 0; i < kv->n; i++) {
            const int64_t v = vlc_gguf_arr_int(kv, i);
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
    } else {
        VLC_TRY(vlc_gguf_get_int(g, key, 1, &hi));
        lo = hi;
    }
    VLC_CHECK(lo >= 0 && hi <= n_layer_file, VLC_STATUS_FORMAT,
              "key '%s' holds %" PRId64 " .. %" PRId64 ", expected hidden-state indices 0 .. %d "
              "(clip.vision.block_count)", key, lo, hi, n_layer_file);
    VLC_CHECK(lo == hi, VLC_STATUS_UNSUPPORTED,
              "key '%s' selects several layers (%" PRId64 " .. %" PRId64 "): concatenated feature layers are not supported",
              key, lo, hi);
    *out = (int32_t) hi;
    return VLC_STATUS_OK;
}

// A float array of 3 (image_mean / image_std); absent keeps out.
static vlc_status read_vec3(const vlc_gguf * g, const char * key, float * out) {
    const vlc_gguf_kv * kv = vlc_gguf_find_kv(g, key);
    if (!kv) {
        return VLC_STATUS_OK;
    }
    VLC_CHECK(kv->type == VLC_GGUF_ARRAY && is_num_type(kv->arr_type) && kv->n == 3, VLC_STATUS_FORMAT,
              "key '%s' must be an array of 3 numbers (type %s, %" PRIu64 " elements)", key,
              vlc_gguf_type_name(kv->type == VLC_GGUF_ARRAY ? kv->arr_type : kv->type), kv->n);
    for (int i = 0; i < 3; i++) {
        out[i] = (float) vlc_gguf_arr_float(kv, (uint64_t) i);
    }
    return VLC_STATUS_OK;
}

static vlc_status read_hparams(vlc_vision * v) {
    const vlc_gguf *  g  = v->g;
    vlc_vision_info * in = &v->info;

    int has_enc = 1;
    VLC_TRY(vlc_gguf_get_bool(g, "clip.has_vision_encoder", 0, &has_enc));
    VLC_CHECK(has_enc, VLC_STATUS_FORMAT, "clip.has_vision_encoder is false: the file holds no vision tower");

    // projector type: clip.projector_type (llama.cpp's fallback clip.vision.projector_type);
    // absent means "mlp" when the mlp tensors are there
    vlc_gguf_str pt = { 0 };
    VLC_TRY(vlc_gguf_get_str(g, "clip.vision.projector_type", 0, &pt));
    VLC_TRY(vlc_gguf_get_str(g, "clip.projector_type", 0, &pt));
    if (pt.data) {
        VLC_CHECK(vlc_gguf_str_eq(pt, "mlp"), VLC_STATUS_UNSUPPORTED, "clip.projector_type '%.*s' is not supported (only 'mlp')",
                  str_len(pt), pt.data);
    } else {
        VLC_CHECK(vlc_gguf_find_tensor(g, "mm.0.weight") != NULL, VLC_STATUS_FORMAT,
                  "no clip.projector_type key and no 'mm.0.weight' tensor: not a LLaVA mlp projector");
    }
    VLC_CHECK(vlc_gguf_find_tensor(g, "mm.1.weight") == NULL && vlc_gguf_find_tensor(g, "mm.3.weight") == NULL,
              VLC_STATUS_UNSUPPORTED, "tensors 'mm.1' / 'mm.3' (Yi-VL style mlp with LayerNorms) are not supported");

    VLC_TRY(vlc_gguf_get_i32(g, "clip.vision.image_size", 1, &in->image_size, 1, VIS_MAX_SIDE));
    VLC_TRY(vlc_gguf_get_i32(g, "clip.vision.patch_size", 1, &in->patch_size, 1, in->image_size));
    VLC_CHECK(in->image_size % in->patch_size == 0, VLC_STATUS_FORMAT,
              "clip.vision.image_size %d is not a multiple of clip.vision.patch_size %d", in->image_size, in->patch_size);
    const int64_t np = in->image_size / in->patch_size;
    VLC_CHECK(np * np + 1 <= VIS_MAX_TOKENS, VLC_STATUS_FORMAT, "clip.vision.image_size %d / patch_size %d: %" PRId64
              " patches, too many", in->image_size, in->patch_size, np * np);
    VLC_TRY(vlc_gguf_get_i32(g, "clip.vision.embedding_length", 1, &in->n_embd, 1, VIS_MAX_DIM));
    VLC_TRY(vlc_gguf_get_i32(g, "clip.vision.feed_forward_length", 1, &in->n_ff, 1, VIS_MAX_DIM));
    VLC_TRY(vlc_gguf_get_i32(g, "clip.vision.attention.head_count", 1, &in->n_head, 1, in->n_embd));
    VLC_CHECK(in->n_embd % in->n_head == 0, VLC_STATUS_FORMAT,
              "clip.vision.embedding_length %d is not a multiple of clip.vision.attention.head_count %d",
              in->n_embd, in->n_head);
    VLC_TRY(vlc_gguf_get_i32(g, "clip.vision.block_count", 1, &in->n_layer_file, 1, VIS_MAX_LAYER));
    double eps = 1e-5;
    VLC_TRY(vlc_gguf_get_float(g, "clip.vision.attention.layer_norm_epsilon", 1, &eps));
    VLC_CHECK(eps >= 0.0 && eps < 1.0, VLC_STATUS_FORMAT, "clip.vision.attention.layer_norm_epsilon = %g, expected [0, 1)",
              eps);
    v->eps = (float) eps;

    // feature layer: absent = every stored layer (legacy llama.cpp files dropped the
    // unused last layer physically; our converter stores only the layers it needs)
    in->n_layer = in->n_layer_file;
    VLC_TRY(read_feature_layer(g, in->n_layer_file, &in->n_layer));

    int use_gelu = 0;
    VLC_TRY(vlc_gguf_get_bool(g, "clip.use_gelu", 0, &use_gelu));
    int use_silu = 0;
    VLC_TRY(vlc_gguf_get_bool(g, "clip.use_silu", 0, &use_silu));
    VLC_CHECK(!use_silu, VLC_STATUS_UNSUPPORTED, "clip.use_silu = true: a SiLU ViT MLP is not supported");
    in->gelu_exact = use_gelu ? 1 : 0;

    vlc_gguf_str sel = { "default", 7 };
    VLC_TRY(vlc_gguf_get_str(g, "vlcache.vision.select_strategy", 0, &sel));
    if (vlc_gguf_str_eq(sel, "full")) {
        in->select_full = 1;
    } else {
        VLC_CHECK(vlc_gguf_str_eq(sel, "default"), VLC_STATUS_UNSUPPORTED,
                  "vlcache.vision.select_strategy '%.*s' is not supported ('default' or 'full')", str_len(sel), sel.data);
    }

    vlc_gguf_str act = { "gelu", 4 };
    VLC_TRY(vlc_gguf_get_str(g, "vlcache.projector.act", 0, &act));
    if (vlc_gguf_str_eq(act, "gelu")) {
        v->proj_act = VLC_ACT_GELU_ERF;
    } else if (vlc_gguf_str_eq(act, "gelu_pytorch_tanh") || vlc_gguf_str_eq(act, "gelu_new")) {
        v->proj_act = VLC_ACT_GELU_TANH;
    } else if (vlc_gguf_str_eq(act, "quick_gelu")) {
        v->proj_act = VLC_ACT_QUICK_GELU;
    } else {
        return VLC_ERR(VLC_STATUS_UNSUPPORTED, "vlcache.projector.act '%.*s' is not supported "
                       "(gelu, gelu_pytorch_tanh, gelu_new, quick_gelu)", str_len(act), act.data);
    }

    // CLIP's defaults (OpenAI) when the file does not say
    const float mean[3] = { 0.48145466f, 0.4578275f, 0.40821073f };
    const float std[3]  = { 0.26862954f, 0.26130258f, 0.27577711f };
    memcpy(in->image_mean, mean, sizeof(mean));
    memcpy(in->image_std, std, sizeof(std));
    VLC_TRY(read_vec3(g, "clip.vision.image_mean", in->image_mean));
    VLC_TRY(read_vec3(g, "clip.vision.image_std", in->image_std));
    return VLC_STATUS_OK;
}

// ---------------------------------------------------------------------------
// tensors

// Finds tensor `name` with exactly the shape ne[n_dims] (GGUF order; the dims after
// n_dims must be 1) and a supported type. Missing: VLC_STATUS_FORMAT unless optional
// (then *out = NULL).
static vlc_status find_shaped(const vlc_gguf * g, const char * name, int n_dims, const int64_t * ne, int optional,
                              const vlc_gguf_tensor ** out) {
    VLC_TRY(vlc_gguf_find_shaped(g, name, n_dims, ne, optional, out));
    return *out ? vlc_tensor_type_check(name, (*out)->type, ne[0]) : VLC_STATUS_OK;
}

// Matrix `name` with GGUF ne [n_in, n_out].
static vlc_status bind_mat(const vlc_vision * v, const char * name, int64_t n_in, int64_t n_out, vlc_weight * m) {
    const int64_t           ne[2] = { n_in, n_out };
    const vlc_gguf_tensor * t     = NULL;
    VLC_TRY(find_shaped(v->g, name, 2, ne, 0, &t));
    *m = (vlc_weight) { t->data, t->type, { n_in, n_out } };
    return VLC_STATUS_OK;
}

// Tensor `name` of shape ne[n_dims] copied to f32 into the vector store; *out = NULL when
// optional and absent. While the store is not allocated yet (sizing pass) it only checks
// the tensor and adds its size to vec_cap, so no allocation trusts a size the file does not
// back with bytes.
static vlc_status bind_vec(vlc_vision * v, const char * name, int n_dims, const int64_t * ne, int optional,
                           const float ** out) {
    const vlc_gguf_tensor * t = NULL;
    VLC_TRY(find_shaped(v->g, name, n_dims, ne, optional, &t));
    *out = NULL;
    if (!t) {
        return VLC_STATUS_OK;
    }
    int64_t n = 1;
    for (int i = 0; i < n_dims; i++) {
        n *= ne[i];
    }
    if (!v->vec) {
        v->vec_cap += n;  // sizing pass: the tensor exists in the file with this shape
        return VLC_STATUS_OK;
    }
    VLC_CHECK(v->vec_used + n <= v->vec_cap, VLC_STATUS_INTERNAL, "vector store full at '%s'", name);
    float * dst = v->vec + v->vec_used;
    vlc_cpu_to_f32(dst, t->data, t->type, n);
    v->vec_used += n;
    *out = dst;
    return VLC_STATUS_OK;
}

static vlc_status bind_vec1(vlc_vision * v, const char * name, int64_t n, const float ** out) {
    return bind_vec(v, name, 1, &n, 0, out);
}

static vlc_status bind_layer(vlc_vision * v, int32_t il) {
    const int64_t C = v->info.n_embd, F = v->info.n_ff;
    vis_layer *   L = &v->layers[il];
    char          name[64];

#define VIS_NAME(suffix) (snprintf(name, sizeof(name), "v.blk.%d." suffix, (int) il), name)
    VLC_TRY(bind_vec1(v, VIS_NAME("ln1.weight"), C, &L->ln1_w));
    VLC_TRY(bind_vec1(v, VIS_NAME("ln1.bias"), C, &L->ln1_b));
    VLC_TRY(bind_vec1(v, VIS_NAME("ln2.weight"), C, &L->ln2_w));
    VLC_TRY(bind_vec1(v, VIS_NAME("ln2.bias"), C, &L->ln2_b));
    VLC_TRY(bind_mat(v, VIS_NAME("attn_q.weight"), C, C, &L->wq));
    VLC_TRY(bind_mat(v, VIS_NAME("attn_k.weight"), C, C, &L->wk));
    VLC_TRY(bind_mat(v, VIS_NAME("attn_v.weight"), C, C, &L->wv));
    VLC_TRY(bind_mat(v, VIS_NAME("attn_out.weight"), C, C, &L->wo));
    VLC_TRY(bind_vec1(v, VIS_NAME("attn_q.bias"), C, &L->bq));
    VLC_TRY(bind_vec1(v, VIS_NAME("attn_k.bias"), C, &L->bk));
    VLC_TRY(bind_vec1(v, VIS_NAME("attn_v.bias"), C, &L->bv));
    VLC_TRY(bind_vec1(v, VIS_NAME("attn_out.bias"), C, &L->bo));

    // fc1 is ffn_up ([C, F]); the legacy llama.cpp converter named it ffn_down. Decided by
    // the shape of ffn_down, as clip.cpp does (ambiguous only when F == C: then the names
    // are taken as written)
    const vlc_gguf_tensor * down = vlc_gguf_find_tensor(v->g, VIS_NAME("ffn_down.weight"));
    const int swapped = down && F != C && down->ne[0] == C && down->ne[1] == F;
    if (il == 0) {
        v->ffn_swapped = swapped;
    }
    VLC_CHECK(swapped == v->ffn_swapped, VLC_STATUS_FORMAT,
              "layer %d stores ffn_up / ffn_down %s, unlike layer 0", (int) il, swapped ? "swapped" : "unswapped");
    const char * n1 = swapped ? "ffn_down" : "ffn_up";
    const char * n2 = swapped ? "ffn_up" : "ffn_down";
    snprintf(name, sizeof(name), "v.blk.%d.%s.weight", (int) il, n1);
    VLC_TRY(bind_mat(v, name, C, F, &L->fc1));
    snprintf(name, sizeof(name), "v.blk.%d.%s.bias", (int) il, n1);
    VLC_TRY(bind_vec1(v, name, F, &L->b1));
    snprintf(name, sizeof(name), "v.blk.%d.%s.weight", (int) il, n2);
    VLC_TRY(bind_mat(v, name, F, C, &L->fc2));
    snprintf(name, sizeof(name), "v.blk.%d.%s.bias", (int) il, n2);
    VLC_TRY(bind_vec1(v, name, C, &L->b2));
#undef VIS_NAME
    return VLC_STATUS_OK;
}

// Binds every tensor; run twice by bind_all (sizing pass, then copying pass).
static vlc_status bind_tensors(vlc_vision * v, int64_t E1, int64_t E) {
    vlc_vision_info * in = &v->info;
    const int64_t     C = in->n_embd, P = in->patch_size, np = in->image_size / in->patch_size;
    const int64_t     T = np * np + 1;
    v->vec_used       = 0;

    const int64_t           pne[4] = { P, P, 3, C };
    const vlc_gguf_tensor * pt     = NULL;
    VLC_TRY(find_shaped(v->g, "v.patch_embd.weight", 4, pne, 0, &pt));
    v->patch = (vlc_weight) { pt->data, pt->type, { 3 * P * P, C } };
    VLC_TRY(bind_vec(v, "v.patch_embd.bias", 1, &C, 1, &v->patch_b));
    VLC_TRY(bind_vec1(v, "v.class_embd", C, &v->cls));
    const int64_t posne[2] = { C, T };
    VLC_TRY(bind_vec(v, "v.position_embd.weight", 2, posne, 0, &v->pos));
    VLC_TRY(bind_vec1(v, "v.pre_ln.weight", C, &v->pre_ln_w));
    VLC_TRY(bind_vec1(v, "v.pre_ln.bias", C, &v->pre_ln_b));

    for (int32_t il = 0; il < in->n_layer; il++) {
        VLC_TRY(bind_layer(v, il));
    }

    VLC_TRY(bind_mat(v, "mm.0.weight", C, E1, &v->mm0));
    VLC_TRY(bind_vec1(v, "mm.0.bias", E1, &v->mm0_b));
    VLC_TRY(bind_mat(v, "mm.2.weight", E1, E, &v->mm2));
    VLC_TRY(bind_vec1(v, "mm.2.bias", E, &v->mm2_b));
    return VLC_STATUS_OK;
}

static vlc_status bind_all(vlc_vision * v, int32_t n_embd_text) {
    vlc_vision_info * in = &v->info;
    const int64_t     np = in->image_size / in->patch_size, T = np * np + 1;

    // projector widths first (the error a wrong mmproj most likely hits)
    const vlc_gguf_tensor * m0 = vlc_gguf_find_tensor(v->g, "mm.0.weight");
    const vlc_gguf_tensor * m2 = vlc_gguf_find_tensor(v->g, "mm.2.weight");
    VLC_CHECK(m0 != NULL, VLC_STATUS_FORMAT, "missing tensor 'mm.0.weight'");
    VLC_CHECK(m2 != NULL, VLC_STATUS_FORMAT, "missing tensor 'mm.2.weight' (a one-Linear mlp projector is not supported)");
    const int64_t E1 = m0->ne[1], E = m2->ne[1];
    VLC_CHECK(E1 >= 1 && E1 <= VIS_MAX_DIM && E >= 1 && E <= VIS_MAX_DIM, VLC_STATUS_FORMAT,
              "projector widths %" PRId64 " / %" PRId64 " out of range", E1, E);
    VLC_CHECK(E == n_embd_text, VLC_STATUS_FORMAT,
              "projector output width %" PRId64 " (mm.2.weight) does not match the text model's n_embd %d", E,
              (int) n_embd_text);

    const int64_t stored = vlc_gguf_n_blocks(v->g, "v.blk.");
    VLC_CHECK(stored == in->n_layer_file, VLC_STATUS_FORMAT,
              "clip.vision.block_count = %d, but the file stores %" PRId64 " vision layers (tensors 'v.blk.N.*')",
              in->n_layer_file, stored);
    v->layers = calloc((size_t) (in->n_layer > 0 ? in->n_layer : 1), sizeof(vis_layer));
    VLC_CHECK(v->layers != NULL, VLC_STATUS_OOM, "cannot allocate %d vision layer records", in->n_layer);
    v->vec_cap = 0;
    VLC_TRY(bind_tensors(v, E1, E));  // sizing pass: every tensor checked, nothing copied
    v->vec = malloc((size_t) (v->vec_cap > 0 ? v->vec_cap : 1) * sizeof(float));
    VLC_CHECK(v->vec != NULL, VLC_STATUS_OOM, "cannot allocate %" PRId64 " floats of vision vectors", v->vec_cap);
    VLC_TRY(bind_tensors(v, E1, E));

    in->n_embd_out        = (int32_t) E;
    in->n_tokens_per_tile = (int32_t) (in->select_full ? T : T - 1);
    in->has_vision        = 1;
    return VLC_STATUS_OK;
}

// ---------------------------------------------------------------------------
// life cycle

vlc_status vlc_vision_load(const vlc_gguf * g, int32_t n_embd_text, vlc_vision ** out) {
    VLC_CHECK(out != NULL, VLC_STATUS_INVALID_ARG, "out is NULL");
    *out = NULL;
    VLC_CHECK(g != NULL, VLC_STATUS_INVALID_ARG, "GGUF is NULL");
    VLC_CHECK(n_embd_text >= 1, VLC_STATUS_INVALID_ARG, "n_embd_text = %d, expected >= 1", (int) n_embd_text);
    vlc_vision * v = calloc(1, sizeof(*v));
    VLC_CHECK(v != NULL, VLC_STATUS_OOM, "cannot allocate the vision tower record");
    if (pthread_mutex_init(&v->mu, NULL) != 0) {
        free(v);
        return VLC_ERR(VLC_STATUS_INTERNAL, "cannot create the vision tower's lock");
    }
    v->g = g;
    vlc_status st = read_hparams(v);
    if (st == VLC_STATUS_OK) {
        st = bind_all(v, n_embd_text);
    }
    if (st != VLC_STATUS_OK) {
        vlc_vision_free(v);
        return st;
    }
    *out = v;
    return VLC_STATUS_OK;
}

void vlc_vision_free(vlc_vision * v) {
    if (!v) {
        return;
    }
    if (v->be) {
        v->be->dealloc(v->be, v->slab);
    }
    vlc_backend_free(v->be);
    pthread_mutex_destroy(&v->mu);
    free(v->layers);
    free(v->vec);
    free(v);
}

void vlc_vision_get_info(const vlc_vision * v, vlc_vision_info * out) {
    if (!out) {
        return;
    }
    if (!v) {
        memset(out, 0, sizeof(*out));
        return;
    }
    *out = v->info;
}

// ---------------------------------------------------------------------------
// encode

static size_t round16(size_t n) {
    return (n + 15) & ~(size_t) 15;
}

static size_t max_sz(size_t a, size_t b) {
    return a > b ? a : b;
}

// The scratch of an encode of n_tiles (floats): x, xn, q, k, v, kh, vh, att [R, C] each
// (rc); big = the largest of the patch rows [nt*N, K], the MLP hidden [R, F] and the
// projector hidden [Ro, E1].
typedef struct vis_scratch {
    size_t rc, big, total;
} vis_scratch;

static vis_scratch scratch_of(const vlc_vision * v, int64_t nt) {
    const vlc_vision_info * in = &v->info;
    const int64_t P = in->patch_size, N = (in->image_size / P) * (in->image_size / P), T = N + 1;
    const int64_t C = in->n_embd, F = in->n_ff, K = 3 * P * P, E1 = v->mm0.ne[1];
    const int64_t R = nt * T, Ro = nt * in->n_tokens_per_tile;
    vis_scratch   sc;
    sc.rc    = round16((size_t) (R * C));
    sc.big   = round16(max_sz(max_sz((size_t) (nt * N * K), (size_t) (R * F)), (size_t) (Ro * E1)));
    sc.total = 8 * sc.rc + sc.big;
    return sc;
}

// The kept backend and scratch, ready for an encode of nt tiles on n_threads (v->mu held).
static vlc_status ensure_ctx(vlc_vision * v, int32_t n_threads, int64_t nt) {
    if (v->be && v->be->n_threads != n_threads) {
        v->be->dealloc(v->be, v->slab);
        vlc_backend_free(v->be);
        v->be       = NULL;
        v->slab     = NULL;
        v->slab_cap = 0;
    }
    if (!v->be) {
        VLC_TRY(vlc_backend_cpu_create(n_threads, &v->be));
    }
    const vlc_vision_info * in = &v->info;
    const int64_t P = in->patch_size, N = (in->image_size / P) * (in->image_size / P), T = N + 1;
    const int64_t C = in->n_embd, F = in->n_ff, K = 3 * P * P, E1 = v->mm0.ne[1];
    const uint32_t types[] = { v->patch.type, v->mm0.type, v->mm2.type };
    vlc_backend_need need = { .max_rows = nt * T, .max_in = (int64_t) max_sz(max_sz(K, C), max_sz(F, E1)), .G = 1,
                              .D = (int32_t) (C / in->n_head), .types = types, .n_types = 3 };
    VLC_TRY(v->be->reserve(v->be, &need));
    for (int32_t il = 0; il < in->n_layer; il++) {  // every layer's types (reserve only grows)
        const vis_layer * L    = &v->layers[il];
        const uint32_t    lt[] = { L->wq.type, L->wk.type, L->wv.type, L->wo.type, L->fc1.type, L->fc2.type };
        need.types   = lt;
        need.n_types = (int32_t) (sizeof(lt) / sizeof(lt[0]));
        VLC_TRY(v->be->reserve(v->be, &need));
    }
    const size_t floats = scratch_of(v, nt).total;
    if (v->slab_cap < floats) {
        v->be->dealloc(v->be, v->slab);
        v->slab_cap = 0;
        v->slab     = v->be->alloc(v->be, floats * sizeof(float));
        VLC_CHECK(v->slab != NULL, VLC_STATUS_OOM, "cannot allocate %zu bytes of vision scratch", floats * sizeof(float));
        v->slab_cap = floats;
    }
    return VLC_STATUS_OK;
}

static void encode(const vlc_vision * v, vlc_backend * be, float * slab, const float * pixels, int32_t n_tiles,
                   float * out);

vlc_status vlc_vision_encode_tiles(const vlc_vision * vc, const float * pixels, int32_t n_tiles, int32_t n_threads,
                                   float * out) {
    vlc_vision * v = (vlc_vision *) vc;  // only the kept backend and scratch change, under v->mu
    VLC_CHECK(v != NULL, VLC_STATUS_INVALID_ARG, "vision tower is NULL");
    VLC_CHECK(pixels != NULL && out != NULL, VLC_STATUS_INVALID_ARG, "pixels or out is NULL");
    VLC_CHECK(n_tiles >= 1 && n_tiles <= VIS_MAX_TILES, VLC_STATUS_INVALID_ARG, "n_tiles = %d, expected 1 .. %d",
              (int) n_tiles, VIS_MAX_TILES);
    VLC_CHECK(n_threads >= 0 && n_threads <= 1024, VLC_STATUS_INVALID_ARG,
              "n_threads = %d, expected 0 .. 1024 (0 = all cores)", (int) n_threads);
    if (n_threads == 0) {
        n_threads = vlc_n_cpus();
    }
    pthread_mutex_lock(&v->mu);
    vlc_status st = ensure_ctx(v, n_threads, n_tiles);
    if (st == VLC_STATUS_OK) {
        encode(v, v->be, v->slab, pixels, n_tiles, out);
    }
    pthread_mutex_unlock(&v->mu);
    return st;
}

// y [R, n_out] = x [R, n_in] W^T + b, then act (a ViT / projector linear).
static void linear(vlc_backend * be, float * y, const vlc_weight * w, const float * b, int act, const float * x,
                   int64_t R) {
    const vlc_mm mm = { .y = y, .ldy = w->ne[1], .w = w, .b = b, .act = act };
    be->matmul(be, x, w->ne[0], R, 1, &mm);
}

// The forward pass of vlc_vision_encode_tiles in slab (scratch_of's total floats); pixels
// and out host memory.
static void encode(const vlc_vision * v, vlc_backend * be, float * slab, const float * pixels, int32_t n_tiles,
                   float * out) {
    const vlc_vision_info * in = &v->info;
    const int64_t nt = n_tiles, S = in->image_size, P = in->patch_size, np = S / P, N = np * np, T = N + 1;
    const int64_t C = in->n_embd, H = in->n_head, D = C / H;
    const int64_t R = nt * T, Tout = in->n_tokens_per_tile, Ro = nt * Tout;
    const vis_scratch sc = scratch_of(v, nt);
    const size_t  rc = sc.rc;
    float * x   = slab;        // [R, C] residual stream
    float * xn  = x + rc;      // [R, C] normalised input / sub-block output
    float * q   = xn + rc;     // [R, C]
    float * k   = q + rc;      // [R, C]
    float * vv  = k + rc;      // [R, C]
    float * kh  = vv + rc;     // [nt, H, T, D]
    float * vh  = kh + rc;     // [nt, H, T, D]
    float * att = vh + rc;     // [R, C]
    float * bg  = att + rc;    // big
    const int gelu = in->gelu_exact ? VLC_ACT_GELU_ERF : VLC_ACT_QUICK_GELU;

    // embeddings: [CLS; conv(patches)] + positions, then the pre-LayerNorm
    be->patch_embed(be, x, pixels, nt, (int32_t) S, (int32_t) P, &v->patch, v->patch_b, v->cls, v->pos, bg, q);
    be->layernorm(be, x, x, v->pre_ln_w, v->pre_ln_b, R, C, v->eps);

    for (int32_t il = 0; il < in->n_layer; il++) {
        const vis_layer * L = &v->layers[il];

        // attention block: x += Wo MHA(LN1(x)) + bo
        be->layernorm(be, xn, x, L->ln1_w, L->ln1_b, R, C, v->eps);
        linear(be, q, &L->wq, L->bq, VLC_ACT_NONE, xn, R);
        linear(be, k, &L->wk, L->bk, VLC_ACT_NONE, xn, R);
        linear(be, vv, &L->wv, L->bv, VLC_ACT_NONE, xn, R);
        be->vit_attention(be, att, q, k, vv, nt, T, (int32_t) H, (int32_t) D, kh, vh);
        linear(be, xn, &L->wo, L->bo, VLC_ACT_NONE, att, R);
        be->add(be, x, xn, R, C);

        // MLP block: x += fc2(act(fc1(LN2(x))))
        be->layernorm(be, xn, x, L->ln2_w, L->ln2_b, R, C, v->eps);
        linear(be, bg, &L->fc1, L->b1, gelu, xn, R);
        linear(be, xn, &L->fc2, L->b2, VLC_ACT_NONE, bg, R);
        be->add(be, x, xn, R, C);
    }

    // feature selection: hidden state n_layer, CLS row dropped unless "full"
    const float * sel = x;  // [Ro, C]
    if (!in->select_full) {
        for (int64_t t = 0; t < nt; t++) {
            be->copy(be, xn + t * N * C, x + (t * T + 1) * C, (size_t) (N * C) * sizeof(float));
        }
        sel = xn;
    }

    // projector: Linear -> GELU -> Linear, then out (host)
    linear(be, bg, &v->mm0, v->mm0_b, v->proj_act, sel, Ro);
    linear(be, out, &v->mm2, v->mm2_b, VLC_ACT_NONE, bg, Ro);
}
