"""tools/quantize.py: every type and mix on a tiny random llama, the mix rules on a
synthetic file (vision tensors, odd rows, BF16 / F32 sources, kept tensors), metadata
copy, and the quantized files loading in vlcache_native."""

import numpy as np
import pytest

import gguf
from conftest import load_tool
from gguf import GGMLQuantizationType as QT

qz = load_tool("quantize")

N_LAYER = 8
MORE_BITS = {0, 3, 6, 7}  # use_more_bits(i, 8): i < 1, i >= 7, (i - 1) % 3 == 2

# Relative RMS error of a dequantized tensor against its original, per tensor type: the
# Gaussian figures of test_quant.py (0.0054 Q8_0 .. 0.086 Q4_0) with ~25% room, since a
# tensor of 32k-130k values spreads a little more than the 65k-value measurement.
REL_BOUND = {"Q8_0": 0.007, "Q4_0": 0.11, "Q4_1": 0.10, "Q5_0": 0.055, "Q5_1": 0.05,
             "Q4_K": 0.09, "Q5_K": 0.045, "Q6_K": 0.022}


@pytest.fixture(scope="module")
def llama_f16(tmp_path_factory):
    """Random llama, hidden 256 / ff 512 (rows whole 256-blocks), 8 layers, F16 weights."""
    bench = load_tool("bench")
    path = tmp_path_factory.mktemp("qtool") / "llama-f16.gguf"
    return bench.write_random_llama(path, hidden=256, layers=N_LAYER, heads=4, kv_heads=2, ff=512, vocab=300,
                                    outtype="f16")


@pytest.fixture(scope="module")
def quantized(llama_f16, tmp_path_factory):
    """mix -> path of llama_f16 quantized to it (made once per mix)."""
    out, d = {}, tmp_path_factory.mktemp("qtool-out")

    def get(mix):
        if mix not in out:
            out[mix] = d / f"llama-{mix}.gguf"
            qz.quantize_file(llama_f16, out[mix], mix, threads=2, log=lambda *a, **k: None)
        return out[mix]

    return get


def expected_type(name: str, mix: str) -> str:
    """The mix rule of the tool's docstring, for the tiny llama's tensors."""
    if name.endswith("_norm.weight"):
        return "F32"
    if mix not in ("Q4_K_M", "Q5_K_M"):
        return mix
    if name == "output.weight":
        return "Q6_K"
    parts = name.split(".")
    if parts[0] == "blk" and parts[2] in ("attn_v", "ffn_down") and int(parts[1]) in MORE_BITS:
        return "Q6_K"
    return mix[:4]


def field_values(reader):
    return {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}


@pytest.mark.parametrize("mix", qz.MIXES)
def test_mix_types_metadata_and_error(llama_f16, quantized, mix):
    src, dst = gguf.GGUFReader(llama_f16), gguf.GGUFReader(quantized(mix))

    # metadata: every key copied, file type and quantization version set
    a, b = field_values(src), field_values(dst)
    assert b.pop("general.file_type") == int(qz.FILE_TYPE[mix])
    assert b.pop("general.quantization_version") == 2
    a.pop("general.file_type")
    assert a == b

    # tensors: same names, order and shapes; types per the mix; values close
    assert [t.name for t in dst.tensors] == [t.name for t in src.tensors]
    for ts, td in zip(src.tensors, dst.tensors):
        assert list(td.shape) == list(ts.shape), td.name
        want = expected_type(td.name, mix)
        assert QT(int(td.tensor_type)).name == want, td.name
        x = np.asarray(ts.data, np.float32).reshape(-1)
        y = gguf.quants.dequantize(td.data, QT(int(td.tensor_type))).reshape(-1)
        if want == "F32":
            np.testing.assert_array_equal(y, x)
            continue
        rel = np.sqrt(np.mean((y - x) ** 2) / np.mean(x**2))
        assert rel < REL_BOUND[want], f"{td.name} {want}: relative RMS error {rel:.4f}"


def test_mix_sizes(llama_f16, quantized):
    """Bits per weight order as the types say (file sizes)."""
    size = {mix: quantized(mix).stat().st_size for mix in ("Q4_0", "Q4_K", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")}
    assert size["Q4_0"] == size["Q4_K"] < size["Q4_K_M"] < size["Q5_K_M"] < size["Q6_K"] < size["Q8_0"]
    assert size["Q8_0"] < llama_f16.stat().st_size


def write_synthetic(path, rng):
    """A llama-arch file with the awkward cases: vision tensors, odd rows, BF16 / F32
    sources, a 4-D conv, an already quantized tensor, a custom alignment."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_custom_alignment(64)
    w.add_array("test.floats", [0.5, -1.25])
    w.add_string("test.text", "héllo")
    t = {}

    def add(name, arr, raw_dtype=None):
        t[name] = arr
        w.add_tensor(name, arr, raw_dtype=raw_dtype)

    g = lambda *shape: (rng.standard_normal(shape) * 0.02).astype(np.float32)  # noqa: E731
    add("token_embd.weight", g(50, 256))
    add("blk.0.attn_v.weight", g(64, 256).astype(np.float16))       # use_more_bits(0, 2) false
    add("blk.1.attn_v.weight", g(64, 96))                             # layer 1: Q6_K, ne0 96 -> Q8_0
    add("blk.1.ffn_down.weight", g(64, 100))                          # ne0 100: kept
    bf = g(32, 512)
    add("blk.1.ffn_up.weight", gguf.quants.quantize(bf, QT.BF16), raw_dtype=QT.BF16)
    add("blk.0.attn_norm.weight", np.ones(256, np.float32))
    q8 = gguf.quants.quantize(g(8, 64), QT.Q8_0)
    add("blk.1.attn_q.weight", q8, raw_dtype=QT.Q8_0)                 # already quantized
    add("output.weight", g(50, 96))                                   # ne0 96: Q6_K -> Q8_0
    add("v.patch_embd.weight", g(64, 3, 14, 14).astype(np.float16))   # 4-D conv: kept
    add("v.position_embd.weight", g(257, 64))                         # kept by name
    add("v.blk.0.attn_q.weight", g(64, 64).astype(np.float16))        # vision
    add("v.blk.0.attn_q.bias", g(64))
    add("mm.0.weight", g(256, 64).astype(np.float16))                 # projector
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    bf32 = gguf.quants.dequantize(gguf.quants.quantize(bf, QT.BF16), QT.BF16)
    return t, bf32


SYNTH_K_M = {
    "token_embd.weight": "Q4_K", "blk.0.attn_v.weight": "Q4_K", "blk.1.attn_v.weight": "Q8_0",
    "blk.1.ffn_down.weight": "F32", "blk.1.ffn_up.weight": "Q4_K", "blk.0.attn_norm.weight": "F32",
    "blk.1.attn_q.weight": "Q8_0", "output.weight": "Q8_0", "v.patch_embd.weight": "F16",
    "v.position_embd.weight": "F32", "v.blk.0.attn_q.weight": "Q8_0", "v.blk.0.attn_q.bias": "F32",
    "mm.0.weight": "Q8_0",
}


@pytest.mark.parametrize("mix,vision,changes", [
    ("Q4_K_M", "default", {}),
    ("Q5_K_M", "default", {"token_embd.weight": "Q5_K", "blk.0.attn_v.weight": "Q5_K",
                           "blk.1.ffn_up.weight": "Q5_K"}),
    ("Q4_K", "default", {"blk.1.attn_v.weight": "Q5_0", "output.weight": "Q5_0"}),
    ("Q6_K", "keep", {"token_embd.weight": "Q6_K", "blk.0.attn_v.weight": "Q6_K", "blk.1.ffn_up.weight": "Q6_K",
                      "v.blk.0.attn_q.weight": "F16", "mm.0.weight": "F16"}),
    ("Q4_0", "Q4_1", {"token_embd.weight": "Q4_0", "blk.0.attn_v.weight": "Q4_0", "blk.1.attn_v.weight": "Q4_0",
                      "blk.1.ffn_up.weight": "Q4_0", "output.weight": "Q4_0", "v.blk.0.attn_q.weight": "Q4_1",
                      "mm.0.weight": "Q4_1"}),
])
def test_rules_on_synthetic_file(tmp_path, mix, vision, changes):
    rng = np.random.default_rng(4)
    src = tmp_path / "synth.gguf"
    orig, bf32 = write_synthetic(src, rng)
    dst = tmp_path / "out.gguf"
    lines = []
    kw = {} if vision == "default" else {"vision_type": None if vision == "keep" else QT[vision]}
    qz.quantize_file(src, dst, mix, threads=1, log=lambda *a, **k: lines.append(a[0]), **kw)
    want = dict(SYNTH_K_M, **changes)

    r = gguf.GGUFReader(dst)
    assert r.fields["general.alignment"].contents() == 64
    assert r.fields["test.text"].contents() == "héllo"
    assert r.fields["test.floats"].contents() == [0.5, -1.25]
    got = {t.name: QT(int(t.tensor_type)).name for t in r.tensors}
    assert got == want
    for t in r.tensors:
        y = gguf.quants.dequantize(t.data, QT(int(t.tensor_type)))
        x = orig[t.name]
        if t.name == "blk.1.attn_q.weight":
            np.testing.assert_array_equal(t.data.reshape(-1), x.reshape(-1))  # copied bytes
            continue
        x = bf32 if t.name == "blk.1.ffn_up.weight" else np.asarray(x, np.float32)
        assert y.shape == x.shape, t.name
        if got[t.name] in ("F32", "F16"):
            np.testing.assert_array_equal(y, x)
        else:
            rel = np.sqrt(np.mean((y - x) ** 2) / np.mean(x**2))
            assert rel < 1.5 * REL_BOUND[got[t.name]], (t.name, rel)  # small tensors: more spread
    text = "\n".join(lines)
    assert "rows of 100 not a multiple of 32" in text
    if mix.startswith(("Q4_K", "Q5_K", "Q6_K")):
        assert "rows of 96 not a multiple of 256" in text


def test_plan_and_cli_errors(llama_f16, tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown type"):
        qz.plan(gguf.GGUFReader(llama_f16), "Q3_K")
    with pytest.raises(SystemExit):
        qz.main([str(llama_f16), str(tmp_path / "x.gguf"), "Q2_K"])
    with pytest.raises(SystemExit):
        qz.main([str(llama_f16), str(llama_f16), "Q8_0"])  # would overwrite the input
    with pytest.raises(SystemExit):
        qz.main([str(llama_f16), str(tmp_path / "x.gguf"), "Q8_0", "--vision-type", "F16"])
    capsys.readouterr()
    assert qz.main([str(llama_f16), str(tmp_path / "x.gguf"), "Q8_0", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "token_embd.weight" in out and "F16 -> Q8_0" in out and "tensors per type" in out


@pytest.mark.parametrize("mix,bound", [("Q8_0", 0.05), ("Q4_K_M", 0.35)])
def test_quantized_model_runs(llama_f16, quantized, mix, bound):
    """Logits of the quantized model against the F16 model, on a short prompt. Measured
    relative L2 error: 0.022 (Q8_0), 0.19 (Q4_K_M) (weights and 8-bit activations, over 8
    layers of a random model)."""
    import vlcache_native as vc

    ids = [1, 295, 270, 280, 290, 260]

    def logits(path):
        with vc.Model(path, n_ctx=32) as m:
            return m.session(n_ctx=32).prefill(ids, all_logits=True)

    ref, got = logits(llama_f16), logits(quantized(mix))
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert rel < bound, rel
