// vision.h: the CLIP vision tower and LLaVA projector (vision.c).
// Reads clip.* keys and v.* / mm.* tensors from a GGUF (our one-file LLaVA, or a
// llama.cpp mmproj), and encodes preprocessed tiles into text-model embeddings the way
// Hugging Face's LlavaForConditionalGeneration does: [CLS; patches] + positions ->
// pre-LayerNorm -> encoder layers up to the feature layer -> drop CLS ("default") or
// keep it ("full") -> Linear -> GELU (erf) -> Linear.
// Letters: S = image side, P = patch size, N = (S/P)^2 patches, T = N + 1 tokens,
// C = ViT width, F = ViT MLP width, E = projector output (text n_embd).
#pragma once

#include "gguf.h"

typedef struct vlc_vision vlc_vision;

// Loads the vision tower from g (which must outlive it). Errors name the key or tensor:
// VLC_STATUS_FORMAT (missing/inconsistent), VLC_STATUS_UNSUPPORTED (projector type other
// than "mlp", unknown tensor types). n_embd_text is the text model's width: a projector
// whose output differs is a VLC_STATUS_FORMAT error naming both widths.
vlc_status vlc_vision_load(const vlc_gguf * g, int32_t n_embd_text, vlc_vision ** out);
void       vlc_vision_free(vlc_vision * v);
void       vlc_vision_get_info(const vlc_vision * v, vlc_vision_info * out);
// Same contract as vlc_vision_encode in vlcache.h. The tower keeps its thread pool and
// scratch between calls (created by the first call that needs them, recreated when the
// thread count changes, grown when the tiles do), so a call like an earlier one creates
// no thread and allocates nothing. Calls on one tower run one at a time (a lock).
vlc_status vlc_vision_encode_tiles(const vlc_vision * v, const float * pixels, int32_t n_tiles,
                                   int32_t n_threads, float * out);
