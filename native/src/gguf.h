// gguf.h: GGUF v3 reader. Maps a file (or reads a caller's buffer), parses the metadata
// and the tensor table, and checks every count, length, offset, size and dimension
// against the bytes that exist, so a truncated or hostile file is an error, never a crash.
// Knows nothing about models: model.c and tokenizer.c look keys and tensors up by name.
#pragma once

#include "vlcache.h"

#include <stddef.h>
#include <stdint.h>

// Metadata value types (GGUF spec).
enum {
    VLC_GGUF_UINT8 = 0, VLC_GGUF_INT8 = 1, VLC_GGUF_UINT16 = 2, VLC_GGUF_INT16 = 3,
    VLC_GGUF_UINT32 = 4, VLC_GGUF_INT32 = 5, VLC_GGUF_FLOAT32 = 6, VLC_GGUF_BOOL = 7,
    VLC_GGUF_STRING = 8, VLC_GGUF_ARRAY = 9, VLC_GGUF_UINT64 = 10, VLC_GGUF_INT64 = 11,
    VLC_GGUF_FLOAT64 = 12,
    VLC_GGUF_N_TYPES
};

// A string inside the mapped file: not NUL-terminated.
typedef struct vlc_gguf_str {
    const char * data;
    uint64_t     len;
} vlc_gguf_str;

typedef struct vlc_gguf_kv {
    char *         key;       // NUL-terminated copy
    uint32_t       type;      // VLC_GGUF_*
    uint32_t       arr_type;  // element type when type == VLC_GGUF_ARRAY
    uint64_t       n;         // element count for arrays, 1 otherwise
    const uint8_t *data;      // raw little-endian bytes of the value / array elements (non-string)
    vlc_gguf_str * strs;      // parsed strings: [n] for string arrays, [1] for a string value
} vlc_gguf_kv;

typedef struct vlc_gguf_tensor {
    char         name[64];    // NUL-terminated
    uint32_t     type;        // ggml type id (vlc_type values for F32/F16/BF16)
    int32_t      n_dims;      // 1..4
    int64_t      ne[4];       // ne[0] innermost (row length); unused dims are 1
    uint64_t     offset;      // from the start of the data section
    size_t       nbytes;
    const void * data;        // points into the mapping
} vlc_gguf_tensor;

typedef struct vlc_gguf {
    void *            map;        // mmap base (NULL when reading a caller buffer)
    size_t            map_size;   // bytes mapped at map (the file's, or rounded up to huge pages)
    size_t            size;       // bytes of the file / buffer
    const uint8_t *   base;       // first byte of the file
    uint32_t          version;
    uint32_t          alignment;
    size_t            data_offset;
    int64_t           n_kv;
    vlc_gguf_kv *     kv;
    int64_t           n_tensors;
    vlc_gguf_tensor * tensors;
} vlc_gguf;

// Errors: VLC_STATUS_IO (open/stat/mmap), VLC_STATUS_FORMAT (anything wrong with the
// bytes, message names the key / tensor / offset), VLC_STATUS_UNSUPPORTED (version,
// unknown tensor type), VLC_STATUS_OOM. On failure *out is NULL.
vlc_status vlc_gguf_open(const char * path, vlc_gguf ** out);
// Same, with use_mmap = 0: the file is read into anonymous memory (2 MiB aligned, with
// transparent huge pages asked for, then made read-only) instead of being mapped.
vlc_status vlc_gguf_open_file(const char * path, int use_mmap, vlc_gguf ** out);
// Same over a caller buffer that must outlive the handle (tests, fuzzing).
vlc_status vlc_gguf_open_buffer(const void * buf, size_t size, vlc_gguf ** out);
void       vlc_gguf_close(vlc_gguf * g);

const vlc_gguf_kv *     vlc_gguf_find_kv(const vlc_gguf * g, const char * key);     // NULL if absent
const vlc_gguf_tensor * vlc_gguf_find_tensor(const vlc_gguf * g, const char * name); // NULL if absent

// Typed getters. Absent key: VLC_STATUS_OK with *out untouched when required == 0,
// VLC_STATUS_FORMAT "missing required key 'k'" when required != 0. A value of the wrong
// type is VLC_STATUS_FORMAT naming the key and both types.
vlc_status vlc_gguf_get_int(const vlc_gguf * g, const char * key, int required, int64_t * out);  // any integer type
vlc_status vlc_gguf_get_float(const vlc_gguf * g, const char * key, int required, double * out); // float or integer
vlc_status vlc_gguf_get_bool(const vlc_gguf * g, const char * key, int required, int * out);
vlc_status vlc_gguf_get_str(const vlc_gguf * g, const char * key, int required, vlc_gguf_str * out);
// An integer key that must lie in [lo, hi], into an int32 (absent optional key: *out keeps
// its default). Errors name the key and the range.
vlc_status vlc_gguf_get_i32(const vlc_gguf * g, const char * key, int required, int32_t * out,
                            int64_t lo, int64_t hi);
// 1 when s holds exactly the NUL-terminated text lit.
int vlc_gguf_str_eq(vlc_gguf_str s, const char * lit);

// Tensor `name` with exactly the shape ne[n_dims] (GGUF order; the dimensions after n_dims
// are 1). Missing: VLC_STATUS_FORMAT "missing tensor" unless optional (then *out = NULL);
// another shape: VLC_STATUS_FORMAT naming both shapes. The type is the caller's business.
vlc_status vlc_gguf_find_shaped(const vlc_gguf * g, const char * name, int n_dims, const int64_t * ne,
                                int optional, const vlc_gguf_tensor ** out);

// Layers stored: 1 + the largest N of the tensors named "<prefix>N.<rest>" (prefix "blk.",
// "v.blk."), 0 when there is none. The loaders compare it with their block_count key.
int64_t vlc_gguf_n_blocks(const vlc_gguf * g, const char * prefix);

// Element i of a numeric array (any integer or float element type), converted.
int64_t vlc_gguf_arr_int(const vlc_gguf_kv * kv, uint64_t i);
double  vlc_gguf_arr_float(const vlc_gguf_kv * kv, uint64_t i);

// ggml type table: 1 and the block size / bytes when known, 0 for unknown ids.
int          vlc_ggml_type_info(uint32_t type, int64_t * block_elems, size_t * block_bytes);
const char * vlc_ggml_type_name(uint32_t type); // "Q4_K", "type 99" style for unknown (static buffer not used)
const char * vlc_gguf_type_name(uint32_t type); // metadata value type name
