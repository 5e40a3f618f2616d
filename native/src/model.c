// model.c: the llama-architecture text model's hyperparameters (llama.* GGUF keys) and
// the binding of its tensors by llama.cpp's names (GGUF_LLAVA.md §1.5, §1.6).
//
// Is: key reading with defaults as llama.cpp applies them, and a check of every tensor's
// presence, shape and type; weights are views into the GGUF mapping (nothing is copied).
// Is not: the forward pass (text.c), the tokenizer (tokenizer.c) or the file reader
// (gguf.c). Letters: C = n_embd, H = n_head, Hkv = n_head_kv, D = head_dim, F = n_ff,
// V = n_vocab, L = n_layer.
#include "model.h"

#include "error.h"
#include "ops_cpu.h"
#include "quant.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

// Upper bounds that keep every size product far from overflow; no real model comes close.
enum {
    VLC_MAX_DIM   = 1 << 20,  // n_embd, n_ff, head_dim * heads
    VLC_MAX_VOCAB = 1 << 24,
    VLC_MAX_LAYER = 4096,
    VLC_MAX_HEADS = 4096,
};

// ---------------------------------------------------------------------------
// hyperparameters


static vlc_status read_hparams(vlc_model * m) {
    const vlc_gguf * g  = m->gguf;
    vlc_hparams *    hp = &m->hp;
    memset(hp, 0, sizeof(*hp));

    vlc_gguf_str arch = { 0 };
    VLC_TRY(vlc_gguf_get_str(g, "general.architecture", 1, &arch));
    // "llava" is our one-file LLaVA (tools/GGUF_FORMAT.md): the text model keeps llama.* keys
    if (!vlc_gguf_str_eq(arch, "llama") && !vlc_gguf_str_eq(arch, "llava")) {
        int n = arch.len > 64 ? 64 : (int) arch.len;
        return VLC_ERR(VLC_STATUS_UNSUPPORTED, "unknown architecture '%.*s' (llama and llava run)", n, arch.data);
    }

    VLC_TRY(vlc_gguf_get_i32(g, "llama.embedding_length", 1, &hp->n_embd, 1, VLC_MAX_DIM));
    VLC_TRY(vlc_gguf_get_i32(g, "llama.block_count", 1, &hp->n_layer, 1, VLC_MAX_LAYER));
    VLC_TRY(vlc_gguf_get_i32(g, "llama.feed_forward_length", 1, &hp->n_ff, 1, VLC_MAX_DIM));
    VLC_TRY(vlc_gguf_get_i32(g, "llama.attention.head_count", 1, &hp->n_head, 1, VLC_MAX_HEADS));
    VLC_TRY(vlc_gguf_get_i32(g, "llama.context_length", 1, &hp->n_ctx_train, 1, INT32_MAX));
    hp->n_head_kv = hp->n_head;
    VLC_TRY(vlc_gguf_get_i32(g, "llama.attention.head_count_kv", 0, &hp->n_head_kv, 1, VLC_MAX_HEADS));
    VLC_CHECK(hp->n_head % hp->n_head_kv == 0, VLC_STATUS_FORMAT,
              "llama.attention.head_count = %d is not a multiple of head_count_kv = %d", hp->n_head, hp->n_head_kv);

    double eps = 0.0;
    VLC_TRY(vlc_gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", 1, &eps));
    VLC_CHECK(eps >= 0.0 && eps < 1.0, VLC_STATUS_FORMAT, "llama.attention.layer_norm_rms_epsilon = %g, expected [0, 1)", eps);
    hp->rms_eps = (float) eps;

    // head dim: key_length, default n_embd / n_head
    if (!vlc_gguf_find_kv(g, "llama.attention.key_length")) {
        VLC_CHECK(hp->n_embd % hp->n_head == 0, VLC_STATUS_FORMAT,
                  "llama.embedding_length = %d is not a multiple of head_count = %d (and no attention.key_length)",
                  hp->n_embd, hp->n_head);
        hp->head_dim = hp->n_embd / hp->n_head;
    }
    VLC_TRY(vlc_gguf_get_i32(g, "llama.attention.key_length", 0, &hp->head_dim, 1, VLC_MAX_DIM));
    int32_t head_dim_v = hp->head_dim;
    VLC_TRY(vlc_gguf_get_i32(g, "llama.attention.value_length", 0, &head_dim_v, 1, VLC_MAX_DIM));
    VLC_CHECK(head_dim_v == hp->head_dim, VLC_STATUS_UNSUPPORTED,
              "llama.attention.value_length = %d differs from key_length = %d, not supported", head_dim_v, hp->head_dim);
    VLC_CHECK(hp->head_dim % 2 == 0, VLC_STATUS_FORMAT, "head_dim = %d is odd: RoPE needs pairs", hp->head_dim);
    VLC_CHECK((int64_t) hp->head_dim * hp->n_head <= VLC_MAX_DIM, VLC_STATUS_FORMAT,
              "head_dim %d x head_count %d is too large", hp->head_dim, hp->n_head);
    int32_t n_rot = hp->head_dim;
    VLC_TRY(vlc_gguf_get_i32(g, "llama.rope.dimension_count", 0, &n_rot, 1, VLC_MAX_DIM));
    VLC_CHECK(n_rot == hp->head_dim, VLC_STATUS_UNSUPPORTED,
              "llama.rope.dimension_count = %d differs from head_dim = %d (partial RoPE), not supported",
              n_rot, hp->head_dim);

    // RoPE frequencies; scaling as llama.cpp reads it: type default "linear", factor from
    // rope.scaling.factor (or the older rope.scale_linear), 0 or absent = no scaling
    double base = 10000.0;
    VLC_TRY(vlc_gguf_get_float(g, "llama.rope.freq_base", 0, &base));
    VLC_CHECK(base > 1.0 && base < 1e30, VLC_STATUS_FORMAT, "llama.rope.freq_base = %g, expected > 1", base);
    hp->rope_freq_base = (float) base;

    vlc_gguf_str stype = { "linear", 6 };
    VLC_TRY(vlc_gguf_get_str(g, "llama.rope.scaling.type", 0, &stype));
    double factor = 0.0;
    VLC_TRY(vlc_gguf_get_float(g, "llama.rope.scale_linear", 0, &factor));
    VLC_TRY(vlc_gguf_get_float(g, "llama.rope.scaling.factor", 0, &factor));
    hp->rope_freq_scale = 1.0f;
    if (vlc_gguf_str_eq(stype, "linear")) {
        VLC_CHECK(factor == 0.0 || (factor > 0.0 && factor < 1e6), VLC_STATUS_FORMAT,
                  "llama.rope.scaling.factor = %g, expected > 0", factor);
        if (factor != 0.0) {
            hp->rope_freq_scale = (float) (1.0 / factor);
        }
    } else if (!vlc_gguf_str_eq(stype, "none")) {
        int n = stype.len > 32 ? 32 : (int) stype.len;
        return VLC_ERR(VLC_STATUS_UNSUPPORTED, "llama.rope.scaling.type '%.*s' is not supported (linear or none)",
                       n, stype.data);
    }

    // vocabulary size: llama.vocab_size, else the rows of token_embd
    const vlc_gguf_tensor * te = vlc_gguf_find_tensor(g, "token_embd.weight");
    hp->n_vocab = te ? (int32_t) (te->ne[1] < VLC_MAX_VOCAB ? te->ne[1] : VLC_MAX_VOCAB) : 0;
    VLC_TRY(vlc_gguf_get_i32(g, "llama.vocab_size", 0, &hp->n_vocab, 1, VLC_MAX_VOCAB));
    return VLC_STATUS_OK;
}

// ---------------------------------------------------------------------------
// tensors

// Binds tensor `name` with shape [ne0] (ne1 == 0) or [ne0, ne1] into *w. A missing
// tensor is VLC_STATUS_FORMAT unless optional (then *w is zeroed and OK is returned).
static vlc_status bind(const vlc_model * m, const char * name, int64_t ne0, int64_t ne1, int optional,
                       vlc_weight * w) {
    memset(w, 0, sizeof(*w));
    const int64_t           want[2] = { ne0, ne1 };
    const vlc_gguf_tensor * t       = NULL;
    VLC_TRY(vlc_gguf_find_shaped(m->gguf, name, ne1 ? 2 : 1, want, optional, &t));
    if (!t) {
        return VLC_STATUS_OK;  // optional and absent
    }
    VLC_TRY(vlc_tensor_type_check(name, t->type, ne0));
    w->data  = t->data;
    w->type  = t->type;
    w->ne[0] = ne0;
    w->ne[1] = ne1 ? ne1 : 1;
    return VLC_STATUS_OK;
}

vlc_status vlc_tensor_type_check(const char * name, uint32_t type, int64_t ne0) {
    const vlc_type_traits * tt = vlc_type_traits_of(type);
    VLC_CHECK(tt != NULL, VLC_STATUS_UNSUPPORTED,
              "tensor '%s' has type %s, not supported (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K are)",
              name, vlc_ggml_type_name(type));
    VLC_CHECK(ne0 % tt->blck == 0, VLC_STATUS_FORMAT, "tensor '%s': rows of %lld elements are not whole %s blocks of %d",
              name, (long long) ne0, tt->name, tt->blck);
    return VLC_STATUS_OK;
}

static vlc_status bind_layer(vlc_model * m, int32_t il) {
    const vlc_hparams * hp = &m->hp;
    const int64_t       C = hp->n_embd, F = hp->n_ff;
    const int64_t       HD = (int64_t) hp->n_head * hp->head_dim, KD = (int64_t) hp->n_head_kv * hp->head_dim;
    vlc_layer *         L  = &m->layers[il];
    char                name[64];

#define VLC_BIND(field, suffix, ne0, ne1)                                 \
    do {                                                                  \
        snprintf(name, sizeof(name), "blk.%d." suffix ".weight", (int) il); \
        VLC_TRY(bind(m, name, (ne0), (ne1), 0, &L->field));               \
    } while (0)

    VLC_BIND(attn_norm, "attn_norm", C, 0);
    VLC_BIND(wq, "attn_q", C, HD);
    VLC_BIND(wk, "attn_k", C, KD);
    VLC_BIND(wv, "attn_v", C, KD);
    VLC_BIND(wo, "attn_output", HD, C);
    VLC_BIND(ffn_norm, "ffn_norm", C, 0);
    VLC_BIND(w_gate, "ffn_gate", C, F);
    VLC_BIND(w_up, "ffn_up", C, F);
    VLC_BIND(w_down, "ffn_down", F, C);
#undef VLC_BIND

    // llama-arch files may carry attention / MLP biases (e.g. some fine-tunes); running
    // without them would be silently wrong
    static const char * const biased[] = { "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down" };
    for (size_t i = 0; i < sizeof(biased) / sizeof(biased[0]); i++) {
        snprintf(name, sizeof(name), "blk.%d.%s.bias", (int) il, biased[i]);
        VLC_CHECK(vlc_gguf_find_tensor(m->gguf, name) == NULL, VLC_STATUS_UNSUPPORTED,
                  "tensor '%s': biases are not supported", name);
    }
    return VLC_STATUS_OK;
}

static vlc_status bind_all(vlc_model * m) {
    const vlc_hparams * hp = &m->hp;
    VLC_TRY(bind(m, "token_embd.weight", hp->n_embd, hp->n_vocab, 0, &m->tok_embd));
    VLC_TRY(bind(m, "output_norm.weight", hp->n_embd, 0, 0, &m->output_norm));
    VLC_TRY(bind(m, "output.weight", hp->n_embd, hp->n_vocab, 1, &m->output));
    m->tied_embeddings = m->output.data == NULL;
    if (m->tied_embeddings) {
        m->output = m->tok_embd;
    }
    VLC_CHECK(vlc_gguf_find_tensor(m->gguf, "rope_freqs.weight") == NULL, VLC_STATUS_UNSUPPORTED,
              "tensor 'rope_freqs.weight' (llama3-style RoPE frequency factors) is not supported yet");

    const int64_t stored = vlc_gguf_n_blocks(m->gguf, "blk.");
    VLC_CHECK(stored == hp->n_layer, VLC_STATUS_FORMAT,
              "llama.block_count = %d, but the file stores %" PRId64 " layers (tensors 'blk.N.*')",
              hp->n_layer, stored);
    m->layers = calloc((size_t) hp->n_layer, sizeof(vlc_layer));
    VLC_CHECK(m->layers != NULL, VLC_STATUS_OOM, "cannot allocate %d layer records (%zu bytes)",
              hp->n_layer, (size_t) hp->n_layer * sizeof(vlc_layer));
    for (int32_t il = 0; il < hp->n_layer; il++) {
        VLC_TRY(bind_layer(m, il));
    }
    return VLC_STATUS_OK;
}

// ---------------------------------------------------------------------------
// life cycle

vlc_status vlc_text_model_init(vlc_model * m) {
    VLC_CHECK(m != NULL && m->gguf != NULL, VLC_STATUS_INVALID_ARG, "model or its GGUF is NULL");
    vlc_status st = read_hparams(m);
    if (st == VLC_STATUS_OK) {
        st = bind_all(m);
    }
    if (st != VLC_STATUS_OK) {
        vlc_text_model_free(m);
    }
    return st;
}

void vlc_text_model_free(vlc_model * m) {
    if (!m) {
        return;
    }
    free(m->layers);
    m->layers = NULL;
}
