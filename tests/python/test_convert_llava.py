"""test_convert_llava.py: tools/convert_hf_to_gguf.py on tiny LLaVA-1.5 / LLaVA-1.6 models.

What it checks (gguf.GGUFReader only; no C library needed):
  - every key of tools/GGUF_FORMAT.md's one-file LLaVA table is present with the type the doc
    gives (the table is parsed from the doc, so doc and converter cannot drift apart) and the
    value Hugging Face's config/processor implies;
  - the tensor set is exactly text + v.* / mm.* (only the layers up to the feature layer, no
    post_layernorm), names/ne/types as the doc says, values EXACTLY equal to the HF weights
    (f32) or to torch's own rounding (f16/bf16); ffn_up = fc1; image_newline for 1.6;
  - all three checkpoint naming schemes (transformers' save, >= 4.52 in-memory names, llava-hf
    hub names), and hub-style sparse configs completed with transformers' defaults;
  - a NumPy CLIP + projector run from the GGUF tensors and keys alone reproduces HF's image
    features (rel. err <= 1e-4 in f32: same math, different summation order), which checks
    the feature-layer count, CLS handling, select strategy and activations the file states;
  - chat template defaults and overrides; the stored processor JSON round-trips to an HF image
    processor giving identical pixel values; vocab padding with [PAD{id}] and "<image>" typed
    CONTROL; clear errors (multiple feature layers, non-CLIP tower, missing tensors, ...).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import oracle

import hfmodels as H
from hfmodels import expected_bits, gguf_row_source
import llavamodels as L

torch = oracle("torch")
transformers = oracle("transformers")
import gguf

conv = H.converter_module()
GGML = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
FORMAT_DOC = H.REPO_ROOT / "tools" / "GGUF_FORMAT.md"


# ---------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return H.train_spm(tmp_path_factory.mktemp("tok"), vocab_size=512, seed=0)


def doc_key_types(next_keys: bool):
    """{key: type string} from GGUF_FORMAT.md's one-file LLaVA key table.

    A cell like "`clip.vision.image_size` / `patch_size`" names clip.vision.patch_size too;
    a type cell "str / u32" pairs up with two keys. LLaVA-1.6-only rows say "LLaVA-1.6:".
    """
    text = FORMAT_DOC.read_text(encoding="utf-8")
    section = text.split("## One-file LLaVA", 1)[1].split("Vision tensors", 1)[0]
    out = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([^`]+)`", cells[0])
        if any("*" in n for n in names):
            continue  # llama.* / tokenizer.ggml.*: checked against HF separately
        if "LLaVA-1.6" in cells[2] and not next_keys:
            continue
        full, parent = [], ""
        for n in names:
            if n.startswith(("general.", "clip.", "vlcache.")):
                parent = n.rsplit(".", 1)[0]
                full.append(n)
            else:
                full.append(parent + "." + n)
        types = [t.strip() for t in cells[1].split(" / ")]
        if len(types) == 1:
            types = types * len(full)
        assert len(types) == len(full), line
        out.update(zip(full, types))
    return out


DOC_TYPE = {  # doc type string -> (GGUF value type, array element type)
    "str": ("STRING", None), "u32": ("UINT32", None), "f32": ("FLOAT32", None), "bool": ("BOOL", None),
}


def doc_type(t: str):
    if t in DOC_TYPE:
        return DOC_TYPE[t]
    m = re.match(r"(i32|f32|u32) array", t)
    assert m, f"unparsed type {t!r} in GGUF_FORMAT.md"
    return "ARRAY", {"i32": "INT32", "f32": "FLOAT32", "u32": "UINT32"}[m.group(1)]


def read_kv_types(path):
    r = gguf.GGUFReader(str(path))
    out = {}
    for key, f in r.fields.items():
        out[key] = (f.types[0].name, f.types[1].name if len(f.types) > 1 else None)
    return out


def vision_names(n_layers: int, next_: bool):
    """GGUF vision tensor -> (canonical HF name (llavamodels.load_state), follows outtype?)."""
    names = {"v.patch_embd.weight": ("vision.embeddings.patch_embedding.weight", True),
             "v.class_embd": ("vision.embeddings.class_embedding", False),
             "v.position_embd.weight": ("vision.embeddings.position_embedding.weight", False),
             "v.pre_ln.weight": ("vision.pre_layrnorm.weight", False),
             "v.pre_ln.bias": ("vision.pre_layrnorm.bias", False),
             "mm.0.weight": ("projector.linear_1.weight", True), "mm.0.bias": ("projector.linear_1.bias", False),
             "mm.2.weight": ("projector.linear_2.weight", True), "mm.2.bias": ("projector.linear_2.bias", False)}
    for i in range(n_layers):
        p = f"vision.encoder.layers.{i}."
        for g, h in (("ln1", "layer_norm1"), ("ln2", "layer_norm2")):
            names[f"v.blk.{i}.{g}.weight"] = (p + h + ".weight", False)
            names[f"v.blk.{i}.{g}.bias"] = (p + h + ".bias", False)
        for g, h in (("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"), ("attn_v", "self_attn.v_proj"),
                     ("attn_out", "self_attn.out_proj"), ("ffn_up", "mlp.fc1"), ("ffn_down", "mlp.fc2")):
            names[f"v.blk.{i}.{g}.weight"] = (p + h + ".weight", True)
            names[f"v.blk.{i}.{g}.bias"] = (p + h + ".bias", False)
    if next_:
        names["v.image_newline"] = ("image_newline", False)
    return names


def text_names(n_layers: int, tied: bool):
    names = {"token_embd.weight": "text.embed_tokens.weight", "output_norm.weight": "text.norm.weight"}
    if not tied:
        names["output.weight"] = "lm_head.weight"
    for i in range(n_layers):
        p = f"text.layers.{i}."
        names.update({f"blk.{i}.attn_norm.weight": p + "input_layernorm.weight",
                      f"blk.{i}.attn_q.weight": p + "self_attn.q_proj.weight",
                      f"blk.{i}.attn_k.weight": p + "self_attn.k_proj.weight",
                      f"blk.{i}.attn_v.weight": p + "self_attn.v_proj.weight",
                      f"blk.{i}.attn_output.weight": p + "self_attn.o_proj.weight",
                      f"blk.{i}.ffn_norm.weight": p + "post_attention_layernorm.weight",
                      f"blk.{i}.ffn_gate.weight": p + "mlp.gate_proj.weight",
                      f"blk.{i}.ffn_up.weight": p + "mlp.up_proj.weight",
                      f"blk.{i}.ffn_down.weight": p + "mlp.down_proj.weight"})
    return names


def check_llava(hf_dir: Path, path: Path, outtype: str):
    """Every key and tensor of a converted LLaVA file against the HF directory."""
    cfg = transformers.AutoConfig.from_pretrained(str(hf_dir))
    tc, vc = cfg.text_config, cfg.vision_config
    next_ = cfg.model_type == "llava_next"
    kv, tensors = H.read_gguf(path)
    types = read_kv_types(path)

    # Keys of the format doc: present, typed as documented.
    for key, t in doc_key_types(next_).items():
        assert key in kv, key
        assert types[key] == doc_type(t), (key, types[key], t)
    if not next_:
        assert "clip.vision.image_grid_pinpoints" not in kv and "clip.vision.mm_patch_merge_type" not in kv

    k_layers = cfg.vision_feature_layer
    k_layers = k_layers if k_layers >= 0 else vc.num_hidden_layers + k_layers + 1
    assert kv["general.architecture"] == "llava"
    assert kv["general.file_type"] == {"f32": 0, "f16": 1, "bf16": 32}[outtype]
    assert kv["vlcache.format_version"] == 1
    assert kv["llama.vocab_size"] == tc.vocab_size
    assert kv["llama.embedding_length"] == tc.hidden_size
    assert kv["llama.block_count"] == tc.num_hidden_layers
    assert kv["llama.feed_forward_length"] == tc.intermediate_size
    assert kv["llama.attention.head_count"] == tc.num_attention_heads
    assert kv["llama.attention.head_count_kv"] == tc.num_key_value_heads
    assert kv["llama.attention.layer_norm_rms_epsilon"] == np.float32(tc.rms_norm_eps)
    assert kv["llama.context_length"] == tc.max_position_embeddings
    assert len(kv["tokenizer.ggml.tokens"]) == tc.vocab_size
    assert kv["clip.has_vision_encoder"] is True
    assert kv["clip.projector_type"] == "mlp"
    assert kv["clip.vision.image_size"] == vc.image_size
    assert kv["clip.vision.patch_size"] == vc.patch_size
    assert kv["clip.vision.embedding_length"] == vc.hidden_size
    assert kv["clip.vision.feed_forward_length"] == vc.intermediate_size
    assert kv["clip.vision.projection_dim"] == vc.projection_dim
    assert kv["clip.vision.attention.head_count"] == vc.num_attention_heads
    assert kv["clip.vision.attention.layer_norm_epsilon"] == np.float32(vc.layer_norm_eps)
    assert kv["clip.vision.block_count"] == k_layers
    assert kv["clip.vision.feature_layer"] == [k_layers]
    assert kv["clip.use_gelu"] is (vc.hidden_act == "gelu")
    assert kv["vlcache.vision.select_strategy"] == cfg.vision_feature_select_strategy
    assert kv["vlcache.projector.act"] == cfg.projector_hidden_act
    assert kv["vlcache.image.token"] == "<image>"
    assert kv["vlcache.image.token_id"] == cfg.image_token_id
    tok = kv["tokenizer.ggml.tokens"]
    assert tok[cfg.image_token_id] == "<image>"
    assert kv["tokenizer.ggml.token_type"][cfg.image_token_id] == 3  # CONTROL (special added token)
    proc = json.loads(kv["vlcache.image.processor"])
    pre = hf_dir / "preprocessor_config.json"
    if pre.is_file():
        assert kv["vlcache.image.processor"] == pre.read_text(encoding="utf-8")  # verbatim
    assert kv["clip.vision.image_mean"] == [float(np.float32(x)) for x in proc["image_mean"]]
    assert kv["clip.vision.image_std"] == [float(np.float32(x)) for x in proc["image_std"]]
    if next_:
        assert kv["clip.vision.image_grid_pinpoints"] == [x for p in cfg.image_grid_pinpoints for x in p]
        assert kv["clip.vision.mm_patch_merge_type"] == "spatial_unpad"

    # Tensors: exact set, ne, type, values.
    sd = L.load_state(hf_dir)
    tied = bool(getattr(tc, "tie_word_embeddings", False))
    vnames = vision_names(k_layers, next_)
    tnames = text_names(tc.num_hidden_layers, tied)
    assert set(tensors) == set(vnames) | set(tnames)
    for gname, (hname, follows) in vnames.items():
        ttype, ne, data = tensors[gname]
        ref = sd[hname]
        assert ne == tuple(reversed(ref.shape)), gname
        if follows:
            assert ttype == GGML[outtype], gname
            want = expected_bits(ref, outtype)
        else:
            assert ttype == "F32", gname
            want = ref.float().numpy()
        assert np.array_equal(data.view(np.uint8), np.ascontiguousarray(want).view(np.uint8)), gname
    for gname, hname in tnames.items():
        ttype, ne, data = tensors[gname]
        ref = sd[hname]
        assert ne == tuple(reversed(ref.shape)), gname
        want = ref.float().numpy() if ref.ndim == 1 else expected_bits(ref, outtype)
        assert ttype == ("F32" if ref.ndim == 1 else GGML[outtype]), gname
        if ".attn_q." in gname or ".attn_k." in gname:
            heads = tc.num_attention_heads if ".attn_q." in gname else tc.num_key_value_heads
            want = want[gguf_row_source(want.shape[0], heads)]
        assert np.array_equal(data.view(np.uint8), np.ascontiguousarray(want).view(np.uint8)), gname
    return kv, tensors


# ---------------------------------------------------------------------------------------
# Keys and tensors: both LLaVA versions x naming schemes x output types
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("outtype", ["f32", "f16"])
@pytest.mark.parametrize("naming", ["saved", "new", "legacy"])
@pytest.mark.parametrize("version", ["1.5", "1.6"])
def test_convert_llava(version, naming, outtype, tok_dir, tmp_path):
    make = L.make_llava15 if version == "1.5" else L.make_llava16
    hf_dir = make(tmp_path / "hf", tokenizer_dir=tok_dir, naming=naming, seed=1)
    names = set(conv.read_safetensors_header(hf_dir / "model.safetensors"))
    probe = {"new": "model.language_model.embed_tokens.weight",
             "legacy": "language_model.model.embed_tokens.weight"}.get(naming)
    if probe:
        assert probe in names  # the fixture really wrote that scheme
    kv, tensors = check_llava(hf_dir, conv.convert(hf_dir, tmp_path / "m.gguf", outtype, progress=False), outtype)
    assert "v.blk.2.ln1.weight" not in tensors and "v.blk.1.ln1.weight" in tensors  # 3 layers, k = 2
    assert kv["vlcache.chat_template"] == ("llava-1.5" if version == "1.5" else "llava-1.6-vicuna")


def test_bf16_checkpoint_bf16_out(tok_dir, tmp_path):
    hf_dir = L.make_llava16(tmp_path / "hf", tokenizer_dir=tok_dir, dtype=torch.bfloat16)
    check_llava(hf_dir, L.convert(hf_dir, tmp_path / "m.gguf", "bf16"), "bf16")


@pytest.mark.parametrize("fl,k", [(-1, 3), (1, 1), (0, 0), ([-2], 2)])
def test_feature_layer_selects_stored_layers(fl, k, tok_dir, tmp_path):
    hf_dir = L.make_llava15(tmp_path / "hf", tokenizer_dir=tok_dir, feature_layer=fl)
    kv, tensors = H.read_gguf(L.convert(hf_dir, tmp_path / "m.gguf"))
    assert kv["clip.vision.block_count"] == k and kv["clip.vision.feature_layer"] == [k]
    stored = {int(n.split(".")[2]) for n in tensors if n.startswith("v.blk.")}
    assert stored == set(range(k))


def test_options_full_strategy_gelu_mistral_padded_vocab(tok_dir, tmp_path):
    hf_dir = L.make_llava16(tmp_path / "hf", tokenizer_dir=tok_dir, strategy="full", pad_token=True,
                            text=dict(arch="mistral", vocab=520), vision=dict(act="gelu", layers=2),
                            grid_pinpoints=[[32, 96], [96, 32], [64, 64]])
    kv, tensors = check_llava(hf_dir, L.convert(hf_dir, tmp_path / "m.gguf"), "f32")
    assert kv["vlcache.vision.select_strategy"] == "full" and kv["clip.use_gelu"] is True
    assert kv["vlcache.chat_template"] == "llava-1.6-mistral"
    assert kv["clip.vision.image_grid_pinpoints"] == [32, 96, 96, 32, 64, 64]
    toks, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    assert len(toks) == 520 and tensors["token_embd.weight"][1] == (64, 520)
    assert (toks[512], types[512]) == ("<image>", 3)
    assert (toks[513], types[513]) == ("<pad>", 3)
    assert kv["tokenizer.ggml.padding_token_id"] == 513
    assert toks[514:] == [f"[PAD{i}]" for i in range(514, 520)] and set(types[514:]) == {5}


# ---------------------------------------------------------------------------------------
# Semantics: the file alone reproduces HF's image features
# ---------------------------------------------------------------------------------------

def _numpy_llava_features(kv, t, pixels):
    """CLIP ViT + projector in NumPy (float64) from GGUF tensors/keys only, as GGUF_FORMAT.md
    describes it: [CLS; patches] + positions -> pre-LN -> block_count layers -> select ->
    mm.0 -> act -> mm.2. pixels [n, 3, S, S] -> [n, tokens, E]."""
    from math import erf
    g = {n: d.astype(np.float64) for n, (_, _, d) in t.items() if n.startswith(("v.", "mm."))}
    P, C = kv["clip.vision.patch_size"], kv["clip.vision.embedding_length"]
    nh, eps = kv["clip.vision.attention.head_count"], kv["clip.vision.attention.layer_norm_epsilon"]
    verf = np.vectorize(erf)

    def ln(x, w, b):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / np.sqrt(v + eps) * w + b

    def act(x, name):
        if name == "gelu":
            return 0.5 * x * (1 + verf(x / np.sqrt(2)))
        assert name == "quick_gelu"
        return x / (1 + np.exp(-1.702 * x))

    outs = []
    for img in pixels.astype(np.float64):
        S = img.shape[-1]
        n = S // P
        patches = img.reshape(3, n, P, n, P).transpose(1, 3, 0, 2, 4).reshape(n * n, 3 * P * P)
        x = patches @ g["v.patch_embd.weight"].reshape(C, -1).T
        x = np.concatenate([g["v.class_embd"][None], x]) + g["v.position_embd.weight"]
        x = ln(x, g["v.pre_ln.weight"], g["v.pre_ln.bias"])
        for i in range(kv["clip.vision.block_count"]):
            b = f"v.blk.{i}."
            h = ln(x, g[b + "ln1.weight"], g[b + "ln1.bias"])
            q, k, v = (h @ g[b + f"attn_{z}.weight"].T + g[b + f"attn_{z}.bias"] for z in "qkv")
            d = C // nh
            q, k, v = (a.reshape(-1, nh, d).transpose(1, 0, 2) for a in (q, k, v))
            s = q @ k.transpose(0, 2, 1) / np.sqrt(d)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = (s @ v).transpose(1, 0, 2).reshape(-1, C)
            x = x + o @ g[b + "attn_out.weight"].T + g[b + "attn_out.bias"]
            h = ln(x, g[b + "ln2.weight"], g[b + "ln2.bias"])
            h = act(h @ g[b + "ffn_up.weight"].T + g[b + "ffn_up.bias"],
                    "gelu" if kv["clip.use_gelu"] else "quick_gelu")
            x = x + h @ g[b + "ffn_down.weight"].T + g[b + "ffn_down.bias"]
        if kv["vlcache.vision.select_strategy"] == "default":
            x = x[1:]
        y = act(x @ g["mm.0.weight"].T + g["mm.0.bias"], kv["vlcache.projector.act"])
        outs.append(y @ g["mm.2.weight"].T + g["mm.2.bias"])
    return np.stack(outs)


@pytest.mark.parametrize("opts", [dict(), dict(strategy="full", vision=dict(act="gelu"), feature_layer=-1),
                                  dict(feature_layer=1, naming="legacy")])
def test_file_reproduces_hf_image_features(opts, tok_dir, tmp_path):
    hf_dir = L.make_llava15(tmp_path / "hf", tokenizer_dir=tok_dir, **opts)
    kv, t = H.read_gguf(L.convert(hf_dir, tmp_path / "m.gguf", "f32"))
    model, proc = L.load_hf(hf_dir)
    ref = L.hf_run(model, proc, "USER: <image>\n<image>\nHi ASSISTANT:",
                   [L.make_image(45, 30, seed=2), L.make_image(20, 33, seed=3)])
    got = _numpy_llava_features(kv, t, ref["pixel_values"]).reshape(-1, kv["llama.embedding_length"])
    want = ref["image_embeds"]
    assert got.shape == want.shape
    # f32 torch vs float64 NumPy: only rounding/summation order differ.
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel <= 1e-4, rel


# ---------------------------------------------------------------------------------------
# Chat template, processor JSON, CLI
# ---------------------------------------------------------------------------------------

def test_chat_template_override_and_errors(tok_dir, tmp_path):
    hf_dir = L.make_llava16(tmp_path / "hf", tokenizer_dir=tok_dir, text=dict(arch="mistral"))
    kv, _ = H.read_gguf(L.convert(hf_dir, tmp_path / "a.gguf"))
    assert kv["vlcache.chat_template"] == "llava-1.6-mistral"
    kv, _ = H.read_gguf(L.convert(hf_dir, tmp_path / "b.gguf", chat_template="llava-1.6-vicuna"))
    assert kv["vlcache.chat_template"] == "llava-1.6-vicuna"
    with pytest.raises(conv.ConvertError, match="unknown chat template 'chatml'"):
        L.convert(hf_dir, tmp_path / "c.gguf", chat_template="chatml")
    llama = H.make_llama(tmp_path / "llama", tokenizer_dir=tok_dir, layers=1)
    with pytest.raises(conv.ConvertError, match="LLaVA models only"):
        L.convert(llama, tmp_path / "d.gguf", chat_template="llava-1.5")


def test_cli_chat_template(tok_dir, tmp_path):
    hf_dir = L.make_llava15(tmp_path / "hf", tokenizer_dir=tok_dir)
    out = tmp_path / "cli.gguf"
    res = subprocess.run([sys.executable, str(H.CONVERTER_PATH), str(hf_dir), "--outfile", str(out),
                          "--outtype", "f16", "--chat-template", "llava-1.6-vicuna"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stderr
    kv, tensors = H.read_gguf(out)
    assert kv["vlcache.chat_template"] == "llava-1.6-vicuna" and tensors["mm.0.weight"][0] == "F16"


def _pixels(processor_json: str, tmp_path: Path, image):
    d = tmp_path / "ip"
    d.mkdir(exist_ok=True)
    (d / "preprocessor_config.json").write_text(processor_json)
    ip = transformers.AutoImageProcessor.from_pretrained(str(d))
    return ip(images=image, return_tensors="np")["pixel_values"]


# A synthesized config cannot know about LLaVA-1.5 padding, so ("synthesized", "1.5pad") is left out.
@pytest.mark.parametrize("source,version", [(s, v) for s in ("preprocessor", "processor_config", "synthesized")
                                            for v in ("1.5", "1.5pad", "1.6")
                                            if (s, v) != ("synthesized", "1.5pad")])
def test_processor_json_round_trips(source, version, tok_dir, tmp_path):
    """The stored JSON rebuilds an HF image processor whose pixel values equal the original
    processor's exactly (synthesized: equal to the fixture's default-settings processor)."""
    if version == "1.6":
        hf_dir = L.make_llava16(tmp_path / "hf", tokenizer_dir=tok_dir)
    else:
        hf_dir = L.make_llava15(tmp_path / "hf", tokenizer_dir=tok_dir, pad=(version == "1.5pad"))
    proc = transformers.AutoProcessor.from_pretrained(str(hf_dir))
    pc = json.loads((hf_dir / "processor_config.json").read_text())
    if source != "preprocessor":
        (hf_dir / "preprocessor_config.json").unlink()
    if source == "synthesized":
        (hf_dir / "processor_config.json").unlink()
    kv, _ = H.read_gguf(L.convert(hf_dir, tmp_path / "m.gguf"))
    stored = json.loads(kv["vlcache.image.processor"])
    if source == "processor_config":
        assert stored == pc["image_processor"]
    if source == "synthesized":
        assert stored["image_processor_type"] == ("LlavaNextImageProcessor" if version == "1.6"
                                                  else "CLIPImageProcessor")
    img = L.make_image(50, 30, seed=4)
    want = proc.image_processor(images=img, return_tensors="np")["pixel_values"]
    got = _pixels(kv["vlcache.image.processor"], tmp_path, img)
    assert got.shape == want.shape and np.array_equal(got, want)


# ---------------------------------------------------------------------------------------
# Hub-style configs (sparse text_config/vision_config relying on transformers' defaults)
# ---------------------------------------------------------------------------------------

# Shaped like llava-hf/llava-1.5-7b-hf and llava-hf/llava-v1.6-mistral-7b-hf config.json files
# (transformers 4.36-4.39 era): most text/vision keys are left to the config classes' defaults.
HUB_15 = {
    "architectures": ["LlavaForConditionalGeneration"], "ignore_index": -100, "image_token_index": 32000,
    "model_type": "llava", "pad_token_id": 32001, "projector_hidden_act": "gelu",
    "text_config": {"_name_or_path": "lmsys/vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"],
                    "max_position_embeddings": 4096, "model_type": "llama", "rms_norm_eps": 1e-05,
                    "torch_dtype": "float16", "vocab_size": 32064},
    "tie_word_embeddings": False, "torch_dtype": "float16",
    "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                      "model_type": "clip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 24,
                      "patch_size": 14, "projection_dim": 768, "vocab_size": 32000},
    "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064,
}
HUB_16_MISTRAL = {
    "architectures": ["LlavaNextForConditionalGeneration"], "ignore_index": -100,
    "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
    "image_token_index": 32000, "model_type": "llava_next", "projector_hidden_act": "gelu",
    "text_config": {"_name_or_path": "mistralai/Mistral-7B-Instruct-v0.2", "architectures": ["MistralForCausalLM"],
                    "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
                    "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
                    "sliding_window": None, "torch_dtype": "bfloat16", "vocab_size": 32064},
    "torch_dtype": "float16", "use_image_newline_parameter": True,
    "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                      "model_type": "clip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 24,
                      "patch_size": 14, "projection_dim": 768, "vocab_size": 32000},
    "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064,
}


@pytest.mark.parametrize("cfg", [HUB_15, HUB_16_MISTRAL], ids=["1.5", "1.6-mistral"])
def test_hub_config_defaults_match_transformers(cfg):
    """Our completion of sparse hub configs equals what transformers' config classes make of them."""
    hp, vp = conv.read_llava_hparams(cfg, Path("config.json"), cfg["architectures"][0], None)
    ref = transformers.AutoConfig.for_model(**cfg)
    tc, vc = ref.text_config, ref.vision_config
    assert (hp.n_vocab, hp.n_embd, hp.n_layer, hp.n_ff, hp.n_head, hp.n_head_kv, hp.n_ctx) == (
        tc.vocab_size, tc.hidden_size, tc.num_hidden_layers, tc.intermediate_size, tc.num_attention_heads,
        tc.num_key_value_heads, tc.max_position_embeddings)
    theta = (getattr(tc, "rope_parameters", None) or {}).get("rope_theta", getattr(tc, "rope_theta", None))
    assert np.float32(hp.rope_theta) == np.float32(theta) and hp.rms_eps == tc.rms_norm_eps
    assert (vp.image_size, vp.patch_size, vp.n_embd, vp.n_ff, vp.n_head, vp.n_layer_hf, vp.eps,
            vp.projection_dim) == (vc.image_size, vc.patch_size, vc.hidden_size, vc.intermediate_size,
                                   vc.num_attention_heads, vc.num_hidden_layers, vc.layer_norm_eps, vc.projection_dim)
    assert vp.use_gelu is (vc.hidden_act == "gelu") and vp.feature_layer == 23
    assert vp.image_token_id == ref.image_token_id == 32000
    if vp.is_next:
        assert vp.chat_template == "llava-1.6-mistral" and hp.arch == "MistralForCausalLM"
        assert [list(p) for p in vp.grid_pinpoints] == ref.image_grid_pinpoints
    else:
        assert vp.chat_template == "llava-1.5" and vp.grid_pinpoints is None


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------

def _edit_config(hf_dir: Path, fn):
    cfg = json.loads((hf_dir / "config.json").read_text())
    fn(cfg)
    (hf_dir / "config.json").write_text(json.dumps(cfg))


@pytest.fixture
def small15(tok_dir, tmp_path):
    return L.make_llava15(tmp_path / "hf", tokenizer_dir=tok_dir)


def _raises(hf_dir, out, pattern):
    with pytest.raises(conv.ConvertError, match=pattern):
        L.convert(hf_dir, out)
    assert not out.exists() and not out.with_name(out.name + ".part").exists()


def test_error_multiple_feature_layers(tok_dir, tmp_path):
    hf_dir = L.make_llava15(tmp_path / "hf", tokenizer_dir=tok_dir, feature_layer=[-3, -2])
    _raises(hf_dir, tmp_path / "x.gguf", r"vision_feature_layer=\[-3, -2\]: multiple feature layers not supported")


def test_error_vision_tower_not_clip(small15, tmp_path):
    _edit_config(small15, lambda c: c["vision_config"].update(model_type="siglip_vision_model"))
    _raises(small15, tmp_path / "x.gguf", "vision tower 'siglip_vision_model'.*only CLIP")


@pytest.mark.parametrize("change,pattern", [
    (lambda c: c["text_config"].update(model_type="qwen2"), "text model 'qwen2'"),
    (lambda c: c["vision_config"].update(hidden_act="gelu_pytorch_tanh"), "hidden_act 'gelu_pytorch_tanh'"),
    (lambda c: c.update(vision_feature_layer=-7), "vision_feature_layer=-7 is outside"),
    (lambda c: c.update(vision_feature_select_strategy="cls"), "select_strategy 'cls'"),
    (lambda c: c.update(image_token_index=5, image_token_id=5), "image_token_id 5 is '<0x02>' in the tokenizer, expected '<image>'"),
    (lambda c: c["vision_config"].update(intermediate_size=48), r"fc1.weight' has shape \[64, 32\], expected \[48, 32\]"),
])
def test_error_bad_config(change, pattern, small15, tmp_path):
    _edit_config(small15, change)
    _raises(small15, tmp_path / "x.gguf", pattern)


def test_error_missing_vision_tensor_names_checkpoint(small15, tmp_path):
    from safetensors.torch import load_file, save_file
    st = small15 / "model.safetensors"
    sd = load_file(str(st))
    name = next(n for n in sd if n.endswith("encoder.layers.1.mlp.fc2.weight"))
    del sd[name]
    save_file(sd, str(st), metadata={"format": "pt"})
    _raises(small15, tmp_path / "x.gguf", "missing tensor.*" + re.escape(name))


def test_error_llava16_without_image_newline(tok_dir, tmp_path):
    from safetensors.torch import load_file, save_file
    hf_dir = L.make_llava16(tmp_path / "hf", tokenizer_dir=tok_dir, naming="legacy")
    st = hf_dir / "model.safetensors"
    sd = load_file(str(st))
    del sd["image_newline"]
    save_file(sd, str(st), metadata={"format": "pt"})
    _raises(hf_dir, tmp_path / "x.gguf", "missing tensor.*image_newline")


def test_error_unexpected_tensor(small15, tmp_path):
    from safetensors.torch import load_file, save_file
    st = small15 / "model.safetensors"
    sd = load_file(str(st))
    sd["multi_modal_projector.linear_3.weight"] = torch.zeros(4, 4)
    save_file(sd, str(st), metadata={"format": "pt"})
    _raises(small15, tmp_path / "x.gguf", "unexpected tensor.*linear_3")
