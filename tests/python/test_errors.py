"""Bad input gives a specific exception whose message names the problem; the process survives.

Malformed files are made by re-serialising a valid tiny GGUF (read with gguf.GGUFReader)
with one thing changed, so each case breaks exactly one rule.
"""


import numpy as np
import pytest

import vlcache_native as vc
from ggufedit import Parts


def _load(tmp_path, data: bytes, name="bad.gguf"):
    p = tmp_path / name
    p.write_bytes(data)
    return vc.Model(p)


def test_roundtrip_of_the_editor_loads(tiny_gguf, tmp_path):
    m = _load(tmp_path, Parts(tiny_gguf).bytes())   # the unmodified re-serialisation is valid
    assert m.n_layer == 2
    m.close()


def test_missing_file(tmp_path):
    with pytest.raises(vc.ModelIOError, match="missing.gguf"):
        vc.Model(tmp_path / "missing.gguf")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(vc.VlcacheError):
        vc.Model(tmp_path)


def test_truncated_at_many_offsets(tiny_gguf, tmp_path):
    data = open(tiny_gguf, "rb").read()
    cuts = sorted(set([0, 3, 4, 8, 16, 23, 24, 25] + list(np.linspace(30, len(data) - 1, 60).astype(int))))
    for cut in cuts:
        with pytest.raises(vc.ModelFormatError) as e:
            _load(tmp_path, data[:cut])
        assert str(e.value), f"empty message at cut {cut}"
    m = vc.Model(tiny_gguf)          # the process and the library are fine
    assert m.n_vocab == 300
    m.close()


def test_wrong_magic(tiny_gguf, tmp_path):
    with pytest.raises(vc.ModelFormatError, match="magic"):
        _load(tmp_path, Parts(tiny_gguf).bytes(magic=b"GGML"))


def test_unsupported_version(tiny_gguf, tmp_path):
    with pytest.raises(vc.UnsupportedError, match="version"):
        _load(tmp_path, Parts(tiny_gguf).bytes(version=7))


def test_tensor_data_past_end_of_file(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    p.offsets = {len(p.tensors) - 1: 1 << 30}
    with pytest.raises(vc.ModelFormatError, match=p.tensors[-1][0]):
        _load(tmp_path, p.bytes())


def test_absurd_dimensions(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    p.tensor("blk.0.ffn_up.weight")[2] = [64, 1 << 62]
    with pytest.raises(vc.ModelFormatError, match="blk.0.ffn_up.weight"):
        _load(tmp_path, p.bytes())


def test_unknown_tensor_type(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    p.tensor("blk.1.attn_v.weight")[1] = 99
    with pytest.raises(vc.UnsupportedError, match="99"):
        _load(tmp_path, p.bytes())


def test_missing_required_key(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    del p.kvs["llama.embedding_length"]
    with pytest.raises(vc.ModelFormatError, match="llama.embedding_length"):
        _load(tmp_path, p.bytes())


def test_unknown_architecture(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    p.set_str("general.architecture", "mamba")
    with pytest.raises(vc.UnsupportedError, match="mamba"):
        _load(tmp_path, p.bytes())


def test_missing_tensor(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    p.tensors = [t for t in p.tensors if t[0] != "blk.1.ffn_down.weight"]
    with pytest.raises(vc.ModelFormatError, match="blk.1.ffn_down.weight"):
        _load(tmp_path, p.bytes())


def test_wrong_tensor_shape(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    t = p.tensor("blk.0.ffn_up.weight")
    t[2] = t[2][::-1]                 # same bytes, transposed shape
    with pytest.raises(vc.ModelFormatError, match="blk.0.ffn_up.weight"):
        _load(tmp_path, p.bytes())


def test_missing_tokenizer(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    del p.kvs["tokenizer.ggml.tokens"]
    with pytest.raises(vc.ModelFormatError, match="tokenizer.ggml.tokens"):
        _load(tmp_path, p.bytes())


def test_token_to_piece_out_of_range(tiny_gguf):
    with vc.Model(tiny_gguf, vocab_only=True) as m:
        with pytest.raises(vc.InvalidArgumentError, match="300"):
            m.token_to_piece(300)
        with pytest.raises(vc.InvalidArgumentError, match="vocab_only"):
            m.session()


def test_image_given_to_a_text_only_model(tiny_gguf, tmp_path):
    with vc.Model(tiny_gguf, n_ctx=64) as m:
        assert not m.has_vision and m.vision_info["has_vision"] == 0
        with pytest.raises(vc.InvalidArgumentError, match="no vision tower"):
            m.generate("<image>\nWhat is it?", images=[np.zeros((8, 8, 3), np.uint8)])
        with pytest.raises(vc.InvalidArgumentError, match="no vision tower"):
            m.encode_image(np.zeros((8, 8, 3), np.uint8))
        assert m.generate([1, 5], max_tokens=2).tokens is not None  # still usable


def test_placeholder_and_image_counts_must_agree(tiny_gguf):
    with vc.Model(tiny_gguf, n_ctx=64) as m:
        with pytest.raises(vc.InvalidArgumentError, match="2 <image> placeholder"):
            m.generate("<image> and <image>", images=[np.zeros((8, 8, 3), np.uint8)])
        with pytest.raises(vc.InvalidArgumentError, match="1 <image> placeholder"):
            m.generate("just <image>", images=[])
        with pytest.raises(vc.InvalidArgumentError, match="token ids"):
            m.generate([1, 2, 3], images=[np.zeros((8, 8, 3), np.uint8)])


def test_prefill_chunk_errors_leave_session_unchanged(tiny_gguf):
    with vc.Model(tiny_gguf, n_ctx=16) as m, m.session() as s:
        with pytest.raises(vc.InvalidArgumentError, match="width 3"):
            s.prefill([[1, 2], np.zeros((2, 3), np.float32)])
        with pytest.raises(vc.InvalidArgumentError, match="out of range"):
            s.prefill([[1, 2], np.zeros((2, 64), np.float32), [999]])
        with pytest.raises(vc.ContextFullError):
            s.prefill([[1, 2], np.zeros((20, 64), np.float32)])
        assert s.n_past == 0 and s.image_spans == []
        s.prefill([[1, 2], np.zeros((3, 64), np.float32), 7, 8])
        assert s.n_past == 7 and s.image_spans == [(2, 3)]
        s.reset()
        assert s.image_spans == []
