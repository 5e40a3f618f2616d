// gguf.c: GGUF v2/v3 reader (little-endian files only).
//
// What it is: one parser over (base, size) with a bounds-checked cursor, used both for an
// mmap'ed file (vlc_gguf_open) and for a caller's buffer (vlc_gguf_open_buffer). Every read
// checks the bytes left; every count and length is checked against the bytes left before
// anything is allocated; every size computation is checked for overflow. A truncated or
// hostile file therefore gives VLC_STATUS_FORMAT with a message naming the key, tensor,
// offset or value at fault, never a crash and never a huge allocation.
//
// What it is not: it knows no model. It does not require llama.cpp's strictly contiguous
// tensor layout (only that every tensor lies inside the file, aligned for its type, and
// that no two tensors share bytes), and it loads any tensor type in the ggml table,
// including ones the model code cannot compute (model.c rejects those).
#include "gguf.h"
#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#    error "gguf.c reads little-endian GGUF files with memcpy and assumes a little-endian host"
#endif

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS          4
#define GGUF_MIN_KV_BYTES      (8 + 1 + 4 + 1)     // key length, 1-byte key, value type, 1-byte value
#define GGUF_MIN_TENSOR_BYTES  (8 + 4 + 8 + 4 + 8) // name length, n_dims, ne[0], type, offset

// ---------------------------------------------------------------------------------------
// Type tables

typedef struct ggml_type_entry {
    const char * name;  // NULL: id unused / removed
    int64_t      block; // elements per block
    size_t       bytes; // bytes per block
} ggml_type_entry;

// Indexed by ggml type id (gguf-py constants.py GGML_QUANT_SIZES).
static const ggml_type_entry k_ggml_types[] = {
    [0]  = { "F32",     1,   4   }, [1]  = { "F16",     1,   2   },
    [2]  = { "Q4_0",    32,  18  }, [3]  = { "Q4_1",    32,  20  },
    [6]  = { "Q5_0",    32,  22  }, [7]  = { "Q5_1",    32,  24  },
    [8]  = { "Q8_0",    32,  34  }, [9]  = { "Q8_1",    32,  40  },
    [10] = { "Q2_K",    256, 84  }, [11] = { "Q3_K",    256, 110 },
    [12] = { "Q4_K",    256, 144 }, [13] = { "Q5_K",    256, 176 },
    [14] = { "Q6_K",    256, 210 }, [15] = { "Q8_K",    256, 292 },
    [16] = { "IQ2_XXS", 256, 66  }, [17] = { "IQ2_XS",  256, 74  },
    [18] = { "IQ3_XXS", 256, 98  }, [19] = { "IQ1_S",   256, 50  },
    [20] = { "IQ4_NL",  32,  18  }, [21] = { "IQ3_S",   256, 110 },
    [22] = { "IQ2_S",   256, 82  }, [23] = { "IQ4_XS",  256, 136 },
    [24] = { "I8",      1,   1   }, [25] = { "I16",     1,   2   },
    [26] = { "I32",     1,   4   }, [27] = { "I64",     1,   8   },
    [28] = { "F64",     1,   8   }, [29] = { "IQ1_M",   256, 56  },
    [30] = { "BF16",    1,   2   },
    [34] = { "TQ1_0",   256, 54  }, [35] = { "TQ2_0",   256, 66  },
    [39] = { "MXFP4",   32,  17  }, [40] = { "NVFP4",   64,  36  },
    [41] = { "Q1_0",    128, 18  },
};
#define N_GGML_TYPES (sizeof(k_ggml_types) / sizeof(k_ggml_types[0]))

int vlc_ggml_type_info(uint32_t type, int64_t * block_elems, size_t * block_bytes) {
    if (type >= N_GGML_TYPES || k_ggml_types[type].name == NULL) {
        return 0;
    }
    if (block_elems) { *block_elems = k_ggml_types[type].block; }
    if (block_bytes) { *block_bytes = k_ggml_types[type].bytes; }
    return 1;
}

const char * vlc_ggml_type_name(uint32_t type) {
    return vlc_ggml_type_info(type, NULL, NULL) ? k_ggml_types[type].name : "unknown";
}

// Bytes a tensor of a known type must be aligned to in memory. A block's C alignment divides
// its size, and no ggml block holds a field wider than 8 bytes, so the largest power of two
// dividing the block size, capped at 8, is enough (F32 4, F16 2, Q8_0 2; Q4_K 8, more than
// its 2, which only refuses files with general.alignment < 8 that nobody writes).
static size_t ggml_type_align(uint32_t type) {
    const size_t bytes = k_ggml_types[type].bytes;
    const size_t pow2  = bytes & (~bytes + 1);  // lowest set bit
    return pow2 < 8 ? pow2 : 8;
}

static const char * const k_value_names[VLC_GGUF_N_TYPES] = {
    "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL",
    "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64",
};

// Bytes per value; 0 for the variable-length STRING and ARRAY.
static const uint8_t k_value_size[VLC_GGUF_N_TYPES] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };

const char * vlc_gguf_type_name(uint32_t type) {
    return type < VLC_GGUF_N_TYPES ? k_value_names[type] : "unknown";
}

// ---------------------------------------------------------------------------------------
// Bounds-checked cursor. `what` names the item being read, for the error message.

typedef struct gguf_cursor {
    const uint8_t * base;
    size_t          size;
    size_t          pos;  // invariant: pos <= size
} gguf_cursor;

static size_t gguf_left(const gguf_cursor * c) { return c->size - c->pos; }

static vlc_status gguf_take(gguf_cursor * c, uint64_t n, const char * what, const uint8_t ** out) {
    if (n > gguf_left(c)) {
        return VLC_ERR(VLC_STATUS_FORMAT, "truncated or corrupt: %s at offset %zu needs %" PRIu64
                       " bytes, only %zu left", what, c->pos, n, gguf_left(c));
    }
    *out = c->base + c->pos;
    c->pos += (size_t) n;
    return VLC_STATUS_OK;
}

static vlc_status gguf_read_u32(gguf_cursor * c, const char * what, uint32_t * v) {
    const uint8_t * p = NULL;
    VLC_TRY(gguf_take(c, sizeof(*v), what, &p));
    memcpy(v, p, sizeof(*v));
    return VLC_STATUS_OK;
}

static vlc_status gguf_read_u64(gguf_cursor * c, const char * what, uint64_t * v) {
    const uint8_t * p = NULL;
    VLC_TRY(gguf_take(c, sizeof(*v), what, &p));
    memcpy(v, p, sizeof(*v));
    return VLC_STATUS_OK;
}

// u64 length + bytes; the result points into the buffer and is not NUL-terminated.
static vlc_status gguf_read_str(gguf_cursor * c, const char * what, vlc_gguf_str * s) {
    const uint8_t * p = NULL;
    VLC_TRY(gguf_read_u64(c, what, &s->len));
    VLC_TRY(gguf_take(c, s->len, what, &p));
    s->data = (const char *) p;
    return VLC_STATUS_OK;
}

// ---------------------------------------------------------------------------------------
// Metadata

static vlc_status gguf_parse_value(gguf_cursor * c, vlc_gguf_kv * kv) {
    char what[160];
    snprintf(what, sizeof(what), "value of key '%.100s'", kv->key);

    uint32_t elem = kv->type;
    kv->n         = 1;
    if (kv->type == VLC_GGUF_ARRAY) {
        VLC_TRY(gguf_read_u32(c, what, &kv->arr_type));
        VLC_TRY(gguf_read_u64(c, what, &kv->n));
        elem = kv->arr_type;
        if (elem == VLC_GGUF_ARRAY) {
            return VLC_ERR(VLC_STATUS_FORMAT, "key '%s': nested arrays are not supported (offset %zu)",
                           kv->key, c->pos);
        }
        if (elem >= VLC_GGUF_N_TYPES) {
            return VLC_ERR(VLC_STATUS_FORMAT, "key '%s': unknown array element type %" PRIu32
                           " (offset %zu)", kv->key, elem, c->pos);
        }
    } else if (kv->type >= VLC_GGUF_N_TYPES) {
        return VLC_ERR(VLC_STATUS_FORMAT, "key '%s': unknown value type %" PRIu32 " (offset %zu)",
                       kv->key, kv->type, c->pos);
    }

    if (elem == VLC_GGUF_STRING) {
        // every string takes at least its 8-byte length: bound n before allocating
        if (kv->n > gguf_left(c) / 8) {
            return VLC_ERR(VLC_STATUS_FORMAT, "key '%s': %" PRIu64 " strings at offset %zu cannot fit"
                           " in the %zu bytes left", kv->key, kv->n, c->pos, gguf_left(c));
        }
        kv->strs = calloc(kv->n > 0 ? (size_t) kv->n : 1, sizeof(vlc_gguf_str));
        if (!kv->strs) {
            return VLC_ERR(VLC_STATUS_OOM, "key '%s': cannot allocate %" PRIu64 " strings", kv->key, kv->n);
        }
        for (uint64_t i = 0; i < kv->n; i++) {
            VLC_TRY(gguf_read_str(c, what, &kv->strs[i]));
        }
        return VLC_STATUS_OK;
    }

    const size_t esize = k_value_size[elem];
    if (kv->n > gguf_left(c) / esize) {
        return VLC_ERR(VLC_STATUS_FORMAT, "key '%s': %" PRIu64 " %s values at offset %zu cannot fit"
                       " in the %zu bytes left", kv->key, kv->n, k_value_names[elem], c->pos, gguf_left(c));
    }
    const size_t at = c->pos;
    VLC_TRY(gguf_take(c, kv->n * esize, what, &kv->data));
    if (elem == VLC_GGUF_BOOL) {
        for (uint64_t i = 0; i < kv->n; i++) {
            if (kv->data[i] > 1) {
                return VLC_ERR(VLC_STATUS_FORMAT, "key '%s': bool %" PRIu64 " at offset %zu is %u,"
                               " must be 0 or 1", kv->key, i, at + (size_t) i, kv->data[i]);
            }
        }
    }
    return VLC_STATUS_OK;
}

static vlc_status gguf_parse_kv(gguf_cursor * c, int64_t index, vlc_gguf_kv * kv) {
    char what[64];
    snprintf(what, sizeof(what), "key %" PRId64, index);
    const size_t at = c->pos;
    vlc_gguf_str key = { 0 };
    VLC_TRY(gguf_read_str(c, what, &key));
    if (key.len == 0) {
        return VLC_ERR(VLC_STATUS_FORMAT, "key %" PRId64 " at offset %zu is empty", index, at);
    }
    if (memchr(key.data, 0, (size_t) key.len)) {
        return VLC_ERR(VLC_STATUS_FORMAT, "key %" PRId64 " at offset %zu ('%s') contains a NUL byte",
                       index, at, key.data);
    }
    kv->key = malloc((size_t) key.len + 1);
    if (!kv->key) {
        return VLC_ERR(VLC_STATUS_OOM, "key %" PRId64 ": cannot allocate %" PRIu64 " bytes", index, key.len + 1);
    }
    memcpy(kv->key, key.data, (size_t) key.len);
    kv->key[key.len] = '\0';

    snprintf(what, sizeof(what), "type of key '%.40s'", kv->key);
    VLC_TRY(gguf_read_u32(c, what, &kv->type));
    return gguf_parse_value(c, kv);
}

static int gguf_cmp_names(const void * a, const void * b) {
    return strcmp(*(const char * const *) a, *(const char * const *) b);
}

// Duplicate keys (tensors == 0) or tensor names (tensors == 1), in O(n log n): sort
// pointers to the names and compare neighbours.
static vlc_status gguf_check_unique(const vlc_gguf * g, int tensors) {
    const size_t n    = (size_t) (tensors ? g->n_tensors : g->n_kv);
    const char * what = tensors ? "tensor name" : "key";
    if (n < 2) {
        return VLC_STATUS_OK;
    }
    const char ** names = malloc(n * sizeof(*names));
    if (!names) {
        return VLC_ERR(VLC_STATUS_OOM, "cannot allocate %zu %s pointers", n, what);
    }
    for (size_t i = 0; i < n; i++) {
        names[i] = tensors ? g->tensors[i].name : g->kv[i].key;
    }
    qsort(names, n, sizeof(*names), gguf_cmp_names);
    vlc_status st = VLC_STATUS_OK;
    for (size_t i = 1; i < n && st == VLC_STATUS_OK; i++) {
        if (strcmp(names[i - 1], names[i]) == 0) {
            st = VLC_ERR(VLC_STATUS_FORMAT, "duplicate %s '%s'", what, names[i]);
        }
    }
    free(names);
    return st;
}

// ---------------------------------------------------------------------------------------
// Tensor infos

// Reads one tensor info and checks everything that does not depend on the data section.
static vlc_status gguf_parse_tensor_info(gguf_cursor * c, int64_t index, uint32_t alignment,
                                         vlc_gguf_tensor * t) {
    char what[96];
    snprintf(what, sizeof(what), "tensor %" PRId64 " name", index);
    const size_t at = c->pos;
    vlc_gguf_str name = { 0 };
    VLC_TRY(gguf_read_str(c, what, &name));
    if (name.len == 0 || name.len >= sizeof(t->name) || memchr(name.data, 0, (size_t) name.len)) {
        return VLC_ERR(VLC_STATUS_FORMAT, "tensor %" PRId64 " at offset %zu: name '%.*s' must be 1..%zu"
                       " bytes without NUL (it is %" PRIu64 " bytes)", index, at,
                       (int) (name.len < 64 ? name.len : 64), name.data, sizeof(t->name) - 1, name.len);
    }
    memcpy(t->name, name.data, (size_t) name.len);
    t->name[name.len] = '\0';

    snprintf(what, sizeof(what), "tensor '%s' info", t->name);
    uint32_t n_dims = 0;
    VLC_TRY(gguf_read_u32(c, what, &n_dims));
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) {
        return VLC_ERR(VLC_STATUS_FORMAT, "tensor '%s' has n_dims = %" PRIu32 " (must be 1..%d)",
                       t->name, n_dims, GGUF_MAX_DIMS);
    }
    t->n_dims = (int32_t) n_dims;
    uint64_t ne[GGUF_MAX_DIMS] = { 1, 1, 1, 1 };
    for (uint32_t d = 0; d < n_dims; d++) {
        VLC_TRY(gguf_read_u64(c, what, &ne[d]));
    }
    VLC_TRY(gguf_read_u32(c, what, &t->type));
    VLC_TRY(gguf_read_u64(c, what, &t->offset));

    // every dim >= 1 and the element count must fit int64 (the byte size is checked below)
    int absurd = 0;
    uint64_t n_elems = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        if (ne[d] == 0 || ne[d] > (uint64_t) INT64_MAX || n_elems > (uint64_t) INT64_MAX / ne[d]) {
            absurd = 1;
            break;
        }
        n_elems *= ne[d];
        t->ne[d] = (int64_t) ne[d];
    }

    int64_t block = 1;
    size_t  block_bytes = 1;
    if (!vlc_ggml_type_info(t->type, &block, &block_bytes)) {
        return VLC_ERR(VLC_STATUS_UNSUPPORTED, "tensor '%s' has unknown type %" PRIu32, t->name, t->type);
    }
    if (!absurd && t->ne[0] % block != 0) {
        return VLC_ERR(VLC_STATUS_FORMAT, "tensor '%s': ne[0] = %" PRId64 " is not a multiple of the %s"
                       " block size %" PRId64, t->name, t->ne[0], vlc_ggml_type_name(t->type), block);
    }
    // nbytes = (ne[0] / block) * block_bytes * ne[1] * ne[2] * ne[3], each step overflow-checked
    size_t nbytes = 0;
    if (!absurd) {
        const uint64_t n_blocks = (uint64_t) t->ne[0] / (uint64_t) block;
        absurd = n_blocks > SIZE_MAX / block_bytes;
        nbytes = (size_t) n_blocks * block_bytes;
        for (int d = 1; d < GGUF_MAX_DIMS && !absurd; d++) {
            absurd = (uint64_t) t->ne[d] > SIZE_MAX / nbytes;
            nbytes *= (size_t) t->ne[d];
        }
    }
    if (absurd) {
        return VLC_ERR(VLC_STATUS_FORMAT, "tensor '%s' has absurd dimensions [%" PRIu64 ", %" PRIu64
                       ", %" PRIu64 ", %" PRIu64 "] for type %s", t->name, ne[0], ne[1], ne[2], ne[3],
                       vlc_ggml_type_name(t->type));
    }
    t->nbytes = nbytes;

    if (t->offset % alignment != 0) {
        return VLC_ERR(VLC_STATUS_FORMAT, "tensor '%s' has offset %" PRIu64 ", not a multiple of the"
                       " alignment %" PRIu32, t->name, t->offset, alignment);
    }
    // the data section and every offset are multiples of the alignment: it must suit the type
    if (alignment < ggml_type_align(t->type)) {
        return VLC_ERR(VLC_STATUS_FORMAT, "general.alignment = %" PRIu32 " is smaller than the %zu bytes"
                       " tensor '%s' of type %s needs", alignment, ggml_type_align(t->type), t->name,
                       vlc_ggml_type_name(t->type));
    }
    return VLC_STATUS_OK;
}

// Orders tensor pointers by data offset.
static int tensor_offset_cmp(const void * a, const void * b) {
    const vlc_gguf_tensor * x = *(const vlc_gguf_tensor * const *) a;
    const vlc_gguf_tensor * y = *(const vlc_gguf_tensor * const *) b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

// No two tensors may share a byte: sorted by offset, each must end where the next starts
// or before. (Ends are inside the file, checked before, so they do not overflow.)
static vlc_status gguf_check_overlap(const vlc_gguf * g) {
    if (g->n_tensors < 2) {
        return VLC_STATUS_OK;
    }
    const vlc_gguf_tensor ** order = malloc((size_t) g->n_tensors * sizeof(*order));
    VLC_CHECK(order != NULL, VLC_STATUS_OOM, "cannot allocate %" PRId64 " tensor pointers", g->n_tensors);
    for (int64_t i = 0; i < g->n_tensors; i++) {
        order[i] = &g->tensors[i];
    }
    qsort(order, (size_t) g->n_tensors, sizeof(*order), tensor_offset_cmp);
    vlc_status st = VLC_STATUS_OK;
    for (int64_t i = 1; i < g->n_tensors && st == VLC_STATUS_OK; i++) {
        const vlc_gguf_tensor * a = order[i - 1];
        const vlc_gguf_tensor * b = order[i];
        if (a->offset + a->nbytes > b->offset) {
            st = VLC_ERR(VLC_STATUS_FORMAT, "tensors '%s' [%" PRIu64 ", %" PRIu64 ") and '%s' [%" PRIu64 ", %" PRIu64
                         ") overlap in the data section", a->name, a->offset, a->offset + (uint64_t) a->nbytes,
                         b->name, b->offset, b->offset + (uint64_t) b->nbytes);
        }
    }
    free(order);
    return st;
}

// ---------------------------------------------------------------------------------------
// Whole file

static vlc_status gguf_parse_header(gguf_cursor * c, vlc_gguf * g, uint64_t * n_tensors, uint64_t * n_kv) {
    const uint8_t * magic = NULL;
    VLC_TRY(gguf_take(c, 4, "magic", &magic));
    if (memcmp(magic, "GGUF", 4) != 0) {
        return VLC_ERR(VLC_STATUS_FORMAT, "not a GGUF file: magic is %02x %02x %02x %02x, expected 'GGUF'",
                       magic[0], magic[1], magic[2], magic[3]);
    }
    VLC_TRY(gguf_read_u32(c, "version", &g->version));
    if ((g->version & 0xFFFF) == 0) {
        return VLC_ERR(VLC_STATUS_FORMAT, "version field 0x%08" PRIx32 ": big-endian or corrupt file",
                       g->version);
    }
    if (g->version < 2 || g->version > 3) {
        return VLC_ERR(VLC_STATUS_UNSUPPORTED, "GGUF version %" PRIu32 " is not supported (only 2 and 3)",
                       g->version);
    }
    VLC_TRY(gguf_read_u64(c, "tensor count", n_tensors));
    VLC_TRY(gguf_read_u64(c, "metadata count", n_kv));
    return VLC_STATUS_OK;
}

// general.alignment: optional UINT32 power of two, default 32.
static vlc_status gguf_parse_alignment(vlc_gguf * g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const vlc_gguf_kv * kv = vlc_gguf_find_kv(g, "general.alignment");
    if (!kv) {
        return VLC_STATUS_OK;
    }
    if (kv->type != VLC_GGUF_UINT32) {
        return VLC_ERR(VLC_STATUS_FORMAT, "key 'general.alignment' has type %s, expected UINT32",
                       vlc_gguf_type_name(kv->type));
    }
    memcpy(&g->alignment, kv->data, sizeof(g->alignment));
    if (g->alignment == 0 || (g->alignment & (g->alignment - 1)) != 0) {
        return VLC_ERR(VLC_STATUS_FORMAT, "key 'general.alignment' is %" PRIu32 ", not a power of two",
                       g->alignment);
    }
    return VLC_STATUS_OK;
}

static vlc_status gguf_parse(vlc_gguf * g) {
    gguf_cursor c = { g->base, g->size, 0 };
    uint64_t n_tensors = 0, n_kv = 0;
    VLC_TRY(gguf_parse_header(&c, g, &n_tensors, &n_kv));

    if (n_kv > gguf_left(&c) / GGUF_MIN_KV_BYTES) {
        return VLC_ERR(VLC_STATUS_FORMAT, "metadata count %" PRIu64 " cannot fit in the %zu bytes left",
                       n_kv, gguf_left(&c));
    }
    g->kv = calloc(n_kv > 0 ? (size_t) n_kv : 1, sizeof(vlc_gguf_kv));
    if (!g->kv) {
        return VLC_ERR(VLC_STATUS_OOM, "cannot allocate %" PRIu64 " metadata entries", n_kv);
    }
    g->n_kv = (int64_t) n_kv;
    for (int64_t i = 0; i < g->n_kv; i++) {
        VLC_TRY(gguf_parse_kv(&c, i, &g->kv[i]));
    }
    VLC_TRY(gguf_check_unique(g, 0));
    VLC_TRY(gguf_parse_alignment(g));

    if (n_tensors > gguf_left(&c) / GGUF_MIN_TENSOR_BYTES) {
        return VLC_ERR(VLC_STATUS_FORMAT, "tensor count %" PRIu64 " at offset %zu cannot fit in the"
                       " %zu bytes left", n_tensors, c.pos, gguf_left(&c));
    }
    g->tensors = calloc(n_tensors > 0 ? (size_t) n_tensors : 1, sizeof(vlc_gguf_tensor));
    if (!g->tensors) {
        return VLC_ERR(VLC_STATUS_OOM, "cannot allocate %" PRIu64 " tensor infos", n_tensors);
    }
    g->n_tensors = (int64_t) n_tensors;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        VLC_TRY(gguf_parse_tensor_info(&c, i, g->alignment, &g->tensors[i]));
    }
    VLC_TRY(gguf_check_unique(g, 1));

    // The data section starts at the next multiple of the alignment. A file without tensors
    // may end before that padding; a tensor never can (its end is checked against the size).
    g->data_offset = c.pos + (g->alignment - c.pos % g->alignment) % g->alignment;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        vlc_gguf_tensor * t = &g->tensors[i];
        const uint64_t begin = (uint64_t) g->data_offset + t->offset; // wrap caught just below
        if (t->offset > (uint64_t) SIZE_MAX - g->data_offset || begin > g->size ||
            t->nbytes > g->size - (size_t) begin) {
            return VLC_ERR(VLC_STATUS_FORMAT, "tensor '%s' data [%" PRIu64 ", %" PRIu64 ") extends past the"
                           " end of the file (size %zu)", t->name, begin, begin + (uint64_t) t->nbytes, g->size);
        }
        t->data = g->base + begin;
    }
    return gguf_check_overlap(g);
}

// Allocates the handle around (base, size) and parses; frees everything on failure.
static vlc_status gguf_open_mem(const uint8_t * base, size_t size, vlc_gguf ** out) {
    vlc_gguf * g = calloc(1, sizeof(*g));
    if (!g) {
        return VLC_ERR(VLC_STATUS_OOM, "cannot allocate the GGUF handle");
    }
    g->base = base;
    g->size = size;
    vlc_status st = gguf_parse(g);
    if (st != VLC_STATUS_OK) {
        vlc_gguf_close(g);
        return st;
    }
    *out = g;
    return VLC_STATUS_OK;
}

vlc_status vlc_gguf_open_buffer(const void * buf, size_t size, vlc_gguf ** out) {
    VLC_CHECK(out != NULL, VLC_STATUS_INVALID_ARG, "out is NULL");
    *out = NULL;
    VLC_CHECK(buf != NULL || size == 0, VLC_STATUS_INVALID_ARG, "buf is NULL with size %zu", size);
    static const uint8_t empty[1] = { 0 };
    return gguf_open_mem(buf ? buf : empty, size, out);
}

// The whole file read into fresh anonymous memory, 2 MiB aligned so that the kernel can back
// it with transparent huge pages (fewer TLB misses when decode streams the weights).
static vlc_status read_whole(int fd, const char * path, size_t size, void ** out, size_t * out_size) {
    const size_t huge = (size_t) 2 << 20;
    const size_t len = (size + huge - 1) / huge * huge;
    uint8_t * raw = mmap(NULL, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        return VLC_ERR(VLC_STATUS_OOM, "cannot allocate %zu bytes to read '%s' into", len, path);
    }
    uint8_t * buf = (uint8_t *) (((uintptr_t) raw + huge - 1) & ~(uintptr_t) (huge - 1));
    if (buf > raw) {
        munmap(raw, (size_t) (buf - raw));
    }
    munmap(buf + len, (size_t) (raw + huge - buf)); // the tail past the aligned length
#ifdef MADV_HUGEPAGE
    madvise(buf, len, MADV_HUGEPAGE); // a hint: without THP the pages are 4 KiB, no error
#endif
    size_t done = 0;
    while (done < size) {
        const ssize_t n = pread(fd, buf + done, size - done, (off_t) done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            const int e = n < 0 ? errno : 0;
            munmap(buf, len);
            return VLC_ERR(VLC_STATUS_IO, "cannot read '%s' at byte %zu of %zu: %s", path, done, size,
                           e ? strerror(e) : "the file ended early");
        }
        done += (size_t) n;
    }
    mprotect(buf, len, PROT_READ); // the weights are never written, as with the mapping
    *out = buf;
    *out_size = len;
    return VLC_STATUS_OK;
}

vlc_status vlc_gguf_open(const char * path, vlc_gguf ** out) {
    return vlc_gguf_open_file(path, 1, out);
}

vlc_status vlc_gguf_open_file(const char * path, int use_mmap, vlc_gguf ** out) {
    VLC_CHECK(out != NULL, VLC_STATUS_INVALID_ARG, "out is NULL");
    *out = NULL;
    VLC_CHECK(path != NULL, VLC_STATUS_INVALID_ARG, "path is NULL");

    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return VLC_ERR(VLC_STATUS_IO, "cannot open '%s': %s", path, strerror(errno));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        const int e = errno;
        close(fd);
        return VLC_ERR(VLC_STATUS_IO, "cannot stat '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return VLC_ERR(VLC_STATUS_IO, "'%s' is not a regular file", path);
    }
    if (sb.st_size == 0) { // mmap cannot map 0 bytes
        close(fd);
        return VLC_ERR(VLC_STATUS_FORMAT, "'%s' is empty, not a GGUF file", path);
    }
    if ((uint64_t) sb.st_size > SIZE_MAX) {
        close(fd);
        return VLC_ERR(VLC_STATUS_IO, "'%s' is too large to map (%lld bytes)", path, (long long) sb.st_size);
    }
    const size_t size = (size_t) sb.st_size;
    void * map = NULL;
    size_t map_size = size;
    if (use_mmap) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        const int e = errno;
        close(fd); // the mapping keeps the file alive
        if (map == MAP_FAILED) {
            return VLC_ERR(VLC_STATUS_IO, "cannot mmap '%s' (%zu bytes): %s", path, size, strerror(e));
        }
    } else {
        const vlc_status rs = read_whole(fd, path, size, &map, &map_size);
        close(fd);
        if (rs != VLC_STATUS_OK) {
            return rs;
        }
    }

    vlc_status st = gguf_open_mem(map, size, out);
    if (st != VLC_STATUS_OK) {
        munmap(map, map_size);
        char msg[768];
        snprintf(msg, sizeof(msg), "%s", vlc_last_error());
        return VLC_ERR(st, "'%s': %s", path, msg);
    }
    (*out)->map = map;
    (*out)->map_size = map_size;
    return VLC_STATUS_OK;
}

void vlc_gguf_close(vlc_gguf * g) {
    if (!g) {
        return;
    }
    if (g->kv) {
        for (int64_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].key);
            free(g->kv[i].strs);
        }
        free(g->kv);
    }
    free(g->tensors);
    if (g->map) {
        munmap(g->map, g->map_size);
    }
    free(g);
}

// ---------------------------------------------------------------------------------------
// Lookup and typed getters

const vlc_gguf_kv * vlc_gguf_find_kv(const vlc_gguf * g, const char * key) {
    for (int64_t i = 0; i < g->n_kv; i++) {
        if (g->kv[i].key && strcmp(g->kv[i].key, key) == 0) {
            return &g->kv[i];
        }
    }
    return NULL;
}

const vlc_gguf_tensor * vlc_gguf_find_tensor(const vlc_gguf * g, const char * name) {
    for (int64_t i = 0; i < g->n_tensors; i++) {
        if (strcmp(g->tensors[i].name, name) == 0) {
            return &g->tensors[i];
        }
    }
    return NULL;
}

enum { GGUF_NUM_NONE, GGUF_NUM_SIGNED, GGUF_NUM_UNSIGNED, GGUF_NUM_FLOAT };

typedef struct gguf_num {
    int      kind; // GGUF_NUM_*
    int64_t  s;
    uint64_t u;
    double   f;
} gguf_num;

// Decodes one numeric value of metadata type `type` at p (any alignment).
static gguf_num gguf_num_at(uint32_t type, const uint8_t * p) {
    gguf_num n = { GGUF_NUM_NONE, 0, 0, 0.0 };
#define GGUF_LOAD(T, kind_, field) { T v_; memcpy(&v_, p, sizeof(v_)); n.kind = (kind_); n.field = v_; } break
    switch (type) {
        case VLC_GGUF_UINT8:   GGUF_LOAD(uint8_t,  GGUF_NUM_UNSIGNED, u);
        case VLC_GGUF_INT8:    GGUF_LOAD(int8_t,   GGUF_NUM_SIGNED,   s);
        case VLC_GGUF_UINT16:  GGUF_LOAD(uint16_t, GGUF_NUM_UNSIGNED, u);
        case VLC_GGUF_INT16:   GGUF_LOAD(int16_t,  GGUF_NUM_SIGNED,   s);
        case VLC_GGUF_UINT32:  GGUF_LOAD(uint32_t, GGUF_NUM_UNSIGNED, u);
        case VLC_GGUF_INT32:   GGUF_LOAD(int32_t,  GGUF_NUM_SIGNED,   s);
        case VLC_GGUF_UINT64:  GGUF_LOAD(uint64_t, GGUF_NUM_UNSIGNED, u);
        case VLC_GGUF_INT64:   GGUF_LOAD(int64_t,  GGUF_NUM_SIGNED,   s);
        case VLC_GGUF_FLOAT32: GGUF_LOAD(float,    GGUF_NUM_FLOAT,    f);
        case VLC_GGUF_FLOAT64: GGUF_LOAD(double,   GGUF_NUM_FLOAT,    f);
        default: break;
    }
#undef GGUF_LOAD
    return n;
}

// Shared front of the getters: finds the key, handles absent / required.
static vlc_status gguf_get(const vlc_gguf * g, const char * key, int required, const vlc_gguf_kv ** kv,
                           const char * func) {
    *kv = vlc_gguf_find_kv(g, key);
    if (!*kv && required) {
        return vlc_error_set(VLC_STATUS_FORMAT, func, "missing required key '%s'", key);
    }
    return VLC_STATUS_OK;
}

static vlc_status gguf_wrong_type(const vlc_gguf_kv * kv, const char * expected, const char * func) {
    return vlc_error_set(VLC_STATUS_FORMAT, func, "key '%s' has type %s%s%s%s, expected %s", kv->key,
                         vlc_gguf_type_name(kv->type), kv->type == VLC_GGUF_ARRAY ? "[" : "",
                         kv->type == VLC_GGUF_ARRAY ? vlc_gguf_type_name(kv->arr_type) : "",
                         kv->type == VLC_GGUF_ARRAY ? "]" : "", expected);
}

vlc_status vlc_gguf_get_int(const vlc_gguf * g, const char * key, int required, int64_t * out) {
    const vlc_gguf_kv * kv;
    VLC_TRY(gguf_get(g, key, required, &kv, __func__));
    if (!kv) {
        return VLC_STATUS_OK;
    }
    const gguf_num n = kv->type == VLC_GGUF_ARRAY ? (gguf_num) { 0 } : gguf_num_at(kv->type, kv->data);
    if (n.kind == GGUF_NUM_SIGNED) {
        *out = n.s;
    } else if (n.kind == GGUF_NUM_UNSIGNED) {
        VLC_CHECK(n.u <= (uint64_t) INT64_MAX, VLC_STATUS_FORMAT, "key '%s' = %" PRIu64 " does not fit int64",
                  key, n.u);
        *out = (int64_t) n.u;
    } else {
        return gguf_wrong_type(kv, "an integer type", __func__);
    }
    return VLC_STATUS_OK;
}

vlc_status vlc_gguf_get_float(const vlc_gguf * g, const char * key, int required, double * out) {
    const vlc_gguf_kv * kv;
    VLC_TRY(gguf_get(g, key, required, &kv, __func__));
    if (!kv) {
        return VLC_STATUS_OK;
    }
    const gguf_num n = kv->type == VLC_GGUF_ARRAY ? (gguf_num) { 0 } : gguf_num_at(kv->type, kv->data);
    switch (n.kind) {
        case GGUF_NUM_SIGNED:   *out = (double) n.s; return VLC_STATUS_OK;
        case GGUF_NUM_UNSIGNED: *out = (double) n.u; return VLC_STATUS_OK;
        case GGUF_NUM_FLOAT:    *out = n.f;          return VLC_STATUS_OK;
        default:                return gguf_wrong_type(kv, "a float or integer type", __func__);
    }
}

vlc_status vlc_gguf_get_bool(const vlc_gguf * g, const char * key, int required, int * out) {
    const vlc_gguf_kv * kv;
    VLC_TRY(gguf_get(g, key, required, &kv, __func__));
    if (!kv) {
        return VLC_STATUS_OK;
    }
    if (kv->type != VLC_GGUF_BOOL) {
        return gguf_wrong_type(kv, "BOOL", __func__);
    }
    *out = kv->data[0];
    return VLC_STATUS_OK;
}

vlc_status vlc_gguf_get_str(const vlc_gguf * g, const char * key, int required, vlc_gguf_str * out) {
    const vlc_gguf_kv * kv;
    VLC_TRY(gguf_get(g, key, required, &kv, __func__));
    if (!kv) {
        return VLC_STATUS_OK;
    }
    if (kv->type != VLC_GGUF_STRING) {
        return gguf_wrong_type(kv, "STRING", __func__);
    }
    *out = kv->strs[0];
    return VLC_STATUS_OK;
}

// Element i of a numeric array (or i = 0 of a numeric scalar). Non-numeric element types
// and i out of range give 0: callers check kv->arr_type and kv->n first.
static gguf_num gguf_elem(const vlc_gguf_kv * kv, uint64_t i) {
    const uint32_t type = kv->type == VLC_GGUF_ARRAY ? kv->arr_type : kv->type;
    if (type >= VLC_GGUF_N_TYPES || k_value_size[type] == 0 || type == VLC_GGUF_BOOL || i >= kv->n) {
        return (gguf_num) { GGUF_NUM_NONE, 0, 0, 0.0 };
    }
    return gguf_num_at(type, kv->data + i * k_value_size[type]);
}

// Floats are truncated toward zero and saturated (NaN -> 0); UINT64 above INT64_MAX saturates.
int64_t vlc_gguf_arr_int(const vlc_gguf_kv * kv, uint64_t i) {
    const gguf_num n = gguf_elem(kv, i);
    switch (n.kind) {
        case GGUF_NUM_SIGNED:   return n.s;
        case GGUF_NUM_UNSIGNED: return n.u > (uint64_t) INT64_MAX ? INT64_MAX : (int64_t) n.u;
        case GGUF_NUM_FLOAT:
            if (isnan(n.f))            { return 0; }
            if (n.f >= 0x1p63)         { return INT64_MAX; }
            if (n.f < -0x1p63)         { return INT64_MIN; }
            return (int64_t) n.f;
        default: return 0;
    }
}

double vlc_gguf_arr_float(const vlc_gguf_kv * kv, uint64_t i) {
    const gguf_num n = gguf_elem(kv, i);
    switch (n.kind) {
        case GGUF_NUM_SIGNED:   return (double) n.s;
        case GGUF_NUM_UNSIGNED: return (double) n.u;
        case GGUF_NUM_FLOAT:    return n.f;
        default:                return 0.0;
    }
}

// ---------------------------------------------------------------------------
// helpers for the model loaders

vlc_status vlc_gguf_get_i32(const vlc_gguf * g, const char * key, int required, int32_t * out,
                            int64_t lo, int64_t hi) {
    if (!required && !vlc_gguf_find_kv(g, key)) {
        return VLC_STATUS_OK;  // absent optional key: the default stays in *out
    }
    int64_t v = *out;
    VLC_TRY(vlc_gguf_get_int(g, key, required, &v));
    VLC_CHECK(v >= lo && v <= hi, VLC_STATUS_FORMAT, "key '%s' = %" PRId64 ", expected %" PRId64 " .. %" PRId64,
              key, v, lo, hi);
    *out = (int32_t) v;
    return VLC_STATUS_OK;
}

int vlc_gguf_str_eq(vlc_gguf_str s, const char * lit) {
    return s.len == strlen(lit) && memcmp(s.data, lit, s.len) == 0;
}

static void shape_str(char * buf, size_t cap, int n_dims, const int64_t * ne) {
    size_t o = (size_t) snprintf(buf, cap, "[");
    for (int i = 0; i < n_dims && o < cap; i++) {
        o += (size_t) snprintf(buf + o, cap - o, "%s%" PRId64, i ? ", " : "", ne[i]);
    }
    if (o < cap) {
        snprintf(buf + o, cap - o, "]");
    }
}

vlc_status vlc_gguf_find_shaped(const vlc_gguf * g, const char * name, int n_dims, const int64_t * ne,
                                int optional, const vlc_gguf_tensor ** out) {
    *out                      = NULL;
    const vlc_gguf_tensor * t = vlc_gguf_find_tensor(g, name);
    if (!t) {
        VLC_CHECK(optional, VLC_STATUS_FORMAT, "missing tensor '%s'", name);
        return VLC_STATUS_OK;
    }
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        ok &= t->ne[i] == (i < n_dims ? ne[i] : 1);
    }
    if (!ok) {
        char got[96], exp[96];
        shape_str(got, sizeof(got), t->n_dims, t->ne);
        shape_str(exp, sizeof(exp), n_dims, ne);
        return VLC_ERR(VLC_STATUS_FORMAT, "tensor '%s' has shape %s, expected %s", name, got, exp);
    }
    *out = t;
    return VLC_STATUS_OK;
}

int64_t vlc_gguf_n_blocks(const vlc_gguf * g, const char * prefix) {
    const size_t plen = strlen(prefix);
    int64_t      n    = 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const char * name = g->tensors[i].name;
        if (strncmp(name, prefix, plen) != 0) {
            continue;
        }
        int64_t      index = 0;
        const char * p     = name + plen;
        for (; *p >= '0' && *p <= '9' && p - (name + plen) < 9; p++) {  // 9 digits: no overflow
            index = index * 10 + (*p - '0');
        }
        if (p > name + plen && *p == '.' && index + 1 > n) {
            n = index + 1;
        }
    }
    return n;
}
