"""The demo VLM's architecture, exported as the shipped model is (Q8_0), against Hugging Face.

The model is demomodel.make_demo_gguf's (a few training steps of tools/train_demo_vlm.py);
tools/parity_demo.py on the shipped, fully trained file is the same check at 50 prompts.
tools/parity_demo.py rebuilds the HF LlavaForConditionalGeneration from the GGUF's
dequantized weights and gives our runtime the same weights as an F32 twin of the file;
four held-out shapes_world prompts (1 picture, 4 pictures, each with and without a
follow-up turn) then run through both.

Tolerances: with an f32 KV cache both sides compute float32 math on identical weights,
pixels and token ids; only the order of accumulation differs (our blocked SIMD dot
products vs torch's kernels), which moves the logits by ~1e-6 relative, so greedy tokens
must be identical and the logits (every prompt position and every decode step) within the
issue's 1e-4. An f16 KV cache rounds K and V to 11 bits (~1e-4 on the logits): only the
greedy tokens are asserted.
"""


import gguf
import numpy as np
import pytest

from conftest import load_tool, oracle

torch = oracle("torch")
oracle("transformers")

N_PROMPTS = 4
MAX_NEW = 24


@pytest.fixture(scope="module")
def model_path(demo_gguf):
    return demo_gguf


@pytest.fixture(scope="module")
def P():
    return load_tool("parity_demo")


@pytest.fixture(scope="module")
def results(P, model_path, tmp_path_factory):
    """compare() on the four prompts (f32 and f16 KV)."""
    return P.compare(model_path, examples=P.parity_examples(N_PROMPTS), kv_types=("f32", "f16"), max_new=MAX_NEW,
                     workdir=tmp_path_factory.mktemp("parity"), threads=1)


def test_prompt_mix(P, results):
    assert [(r.n_pictures > 1, r.follow_up) for r in results] == [(False, False), (True, False),
                                                                   (False, True), (True, True)]
    assert all(r.n_prompt > 36 * r.n_pictures for r in results)


def test_inputs_match_hf(results):
    """Our preprocessing equals HF's CLIPImageProcessor; the image rows agree like the logits."""
    for r in results:
        assert r.pixel_diff == 0.0
        assert r.feature_err <= 1e-4, (r.index, r.feature_err)


def test_f32_kv_parity(results):
    for r in results:
        run = r.runs["f32"]
        print(f"\nprompt {r.index} ({r.group}, {r.n_prompt} tokens): prefill {run.prefill_err:.2e}, "
              f"decode {run.decode_err:.2e}, {len(r.hf_tokens)} tokens")
        assert run.tokens == r.hf_tokens, r.index
        assert run.prefill_err <= 1e-4 and (np.isnan(run.decode_err) or run.decode_err <= 1e-4), r.index
        assert len(r.hf_tokens) > 1  # decode steps were compared, not just the prefill


def test_f16_kv_greedy(results):
    for r in results:
        assert r.runs["f16"].tokens == r.hf_tokens, r.index


def test_f32_twin(P, model_path, tmp_path):
    """The twin keeps every key byte for byte and stores each tensor as its dequantized F32."""
    src = gguf.GGUFReader(str(model_path))
    twin = gguf.GGUFReader(str(P.f32_twin(model_path, tmp_path / "twin.gguf")))
    raw = lambda r: {k: b"".join(bytes(p.tobytes()) for p in f.parts) for k, f in r.fields.items()  # noqa: E731
                     if not k.startswith("GGUF.")}
    assert list(raw(twin).items()) == list(raw(src).items())
    assert [t.name for t in twin.tensors] == [t.name for t in src.tensors]
    assert any(t.tensor_type != gguf.GGMLQuantizationType.F32 for t in src.tensors)
    for a, b in zip(src.tensors, twin.tensors):
        assert b.tensor_type == gguf.GGMLQuantizationType.F32 and list(a.shape) == list(b.shape)
        np.testing.assert_array_equal(gguf.quants.dequantize(b.data, b.tensor_type),
                                      gguf.quants.dequantize(a.data, a.tensor_type), err_msg=a.name)


def test_vision_feature_layer_equivalent(P, model_path):
    """The GGUF stores the ViT up to the feature layer k. HF built with those k layers and
    vision_feature_layer=-1 gives exactly the features of the training layout (k+1 layers,
    -2), whatever the unstored last layer holds."""
    k = P.hf_model_from_gguf(model_path)
    deeper = [P.hf_model_from_gguf(model_path, extra_vision_layers=1, seed=s) for s in (1, 2)]
    assert k.config.vision_feature_layer == -1 and deeper[0].config.vision_feature_layer == -2
    n = k.config.vision_config.num_hidden_layers
    assert deeper[0].config.vision_config.num_hidden_layers == n + 1
    rng = np.random.default_rng(0)
    S = k.config.vision_config.image_size
    pv = torch.from_numpy(rng.standard_normal((2, 3, S, S)).astype(np.float32))
    with torch.no_grad():
        feats = [torch.cat(list(m.model.get_image_features(pixel_values=pv).pooler_output)) for m in [k] + deeper]
        last = [m.model.vision_tower(pv, output_hidden_states=True).hidden_states[-1] for m in deeper]
    assert torch.equal(feats[0], feats[1]) and torch.equal(feats[0], feats[2])
    assert not torch.equal(last[0], last[1])  # the extra layers do differ
