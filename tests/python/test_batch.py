"""Model.decode_batch: one step for several sessions, bit-identical to decoding each alone.

The C test (tests/c/test_batch.c) covers the kernels' paths (quantized weights, chunks,
thread counts); here the public surface: sessions of different lengths, one compressed
by PyramidKV (layers of different lengths), stats and refusals that change nothing."""

import numpy as np
import pytest

import vlcache_native as vc


def _sessions(model, n):
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        s = model.session()
        s.prefill(rng.integers(3, 300, size=5 + 9 * i).tolist(), kv_stats=i == 2)
        if i == 2:
            s.compress(0.3, "pyramidkv", decode_room=4)  # layers keep 13 and 1 entries
        out.append(s)
    return out


def test_batch_decode_is_bit_identical_to_single_decodes(tiny_gguf):
    with vc.Model(tiny_gguf, n_ctx=96, kv_type="f16") as m:
        batch = _sessions(m, 4)
        alone = [s.clone() for s in batch]
        assert batch[2].compressed and len(set(batch[2].kv_lengths().ravel())) > 1  # ragged
        rng = np.random.default_rng(3)
        for step in range(6):  # past the compressed session's decode room: its cache grows
            toks = rng.integers(3, 300, size=4).tolist()
            got = m.decode_batch(batch, toks)
            assert got.shape == (4, 300) and got.dtype == np.float32
            for i, s in enumerate(alone):
                want = s.decode(toks[i])
                assert np.array_equal(got[i], want), f"step {step}, session {i}"
        assert [s.n_past for s in batch] == [s.n_past for s in alone]
        assert [s.stats()["decode_tokens"] for s in batch] == [6] * 4
        for s in batch + alone:
            s.close()


def test_refused_batches_change_nothing(tiny_gguf):
    with vc.Model(tiny_gguf, n_ctx=16) as m, vc.Model(tiny_gguf, n_ctx=16) as other:
        a, b, c = m.session(), m.session(), other.session()
        for s in (a, b, c):
            s.prefill([1, 5, 6])
        with pytest.raises(vc.InvalidArgumentError, match="not a session of this model"):
            m.decode_batch([a, c], [7, 8])
        with pytest.raises(vc.InvalidArgumentError, match="same"):
            m.decode_batch([a, b, a], [7, 8, 9])
        with pytest.raises(vc.InvalidArgumentError, match="out of range"):
            m.decode_batch([a, b], [7, 300])
        with pytest.raises(vc.InvalidArgumentError, match="2 sessions but 1 tokens"):
            m.decode_batch([a, b], [7])
        b.prefill([9] * 13)
        with pytest.raises(vc.ContextFullError):
            m.decode_batch([a, b], [7, 8])
        assert (a.n_past, b.n_past) == (3, 16)
        assert m.decode_batch([a], [7]).shape == (1, 300) and a.n_past == 4
