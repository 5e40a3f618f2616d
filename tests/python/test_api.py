"""The Python surface: ABI checks, exported symbols, life cycle, sessions, generate()."""

import subprocess
import sys

import numpy as np
import pytest

import vlcache_native as vc
from vlcache_native._ffi import ffi, lib, library_path


def test_abi_check_names_a_stale_library():
    from vlcache_native import _ffi
    _ffi.check_abi(lib, ffi, library_path)  # the real pair agrees

    class Stale:  # the library as a stale build would answer, one struct or the version off
        def __init__(self, struct=None, abi=0):
            self.VLC_ABI_VERSION, self._struct, self._abi = lib.VLC_ABI_VERSION, struct, abi

        def vlc_abi_version(self):
            return lib.vlc_abi_version() + self._abi

        def __getattr__(self, name):
            real = getattr(lib, name)
            return (lambda: real() + 8) if name == f"{self._struct}_size" else real

    with pytest.raises(ImportError, match=r"sizeof\(vlc_kv_params\) is \d+ in the library"):
        _ffi.check_abi(Stale("vlc_kv_params"), ffi, "libx.so")
    with pytest.raises(ImportError, match="has ABI .* rebuild"):
        _ffi.check_abi(Stale(abi=1), ffi, "libx.so")
    sized = {n[:-len("_size")] for n in dir(lib)  # every vlc_<struct>_size() the header declares
             if n.endswith("_size") and not ffi.typeof(getattr(lib, n)).args}
    assert set(_ffi.STRUCTS) == sized


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nm -D is the Linux way to list exports")
def test_only_vlc_symbols_are_exported():
    out = subprocess.run(["nm", "-D", "--defined-only", str(library_path)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("nm not available")
    names = [line.split()[-1] for line in out.stdout.splitlines() if line.split()[-2:-1] in (["T"], ["D"], ["B"])]
    assert names, "no exported symbols found"
    assert [n for n in names if not n.startswith("vlc_")] == []
    assert "vlc_model_load" in names and "vlc_gguf_open" not in names


def test_model_properties_and_repr(tiny_gguf):
    with vc.Model(tiny_gguf, n_ctx=64) as m:
        assert (m.n_vocab, m.n_embd, m.n_layer, m.n_head, m.n_head_kv, m.head_dim) == (300, 64, 2, 4, 2, 16)
        assert m.bos_id == 1 and m.eos_id == 2
        assert "layers=2" in repr(m)
        assert m.metadata("general.architecture") == "llama"
        assert m.metadata("no.such.key") is None
    assert "closed" in repr(m)


def test_close_is_idempotent_and_use_after_close_raises(tiny_gguf):
    m = vc.Model(tiny_gguf, n_ctx=32)
    s = m.session()
    m.close()
    m.close()
    with pytest.raises(vc.VlcacheError, match="closed"):
        s.prefill([1, 5])          # the model closed its sessions
    with pytest.raises(vc.VlcacheError, match="closed"):
        m.tokenize("x")
    s.close()


def test_prefill_decode_shapes_and_state(tiny_gguf):
    with vc.Model(tiny_gguf, n_ctx=32, kv_type="f32") as m, m.session() as s:
        last = s.prefill([1, 10, 11, 12])
        assert last.shape == (300,) and last.dtype == np.float32 and np.isfinite(last).all()
        assert s.n_past == 4
        nxt = s.decode(int(last.argmax()))
        assert nxt.shape == (300,) and s.n_past == 5
        allrows = s.prefill(np.array([13, 14], dtype=np.int64), all_logits=True)
        assert allrows.shape == (2, 300) and s.n_past == 7
        st = s.stats()
        assert st["kv_bytes"] > 0 and st["prefill_tokens"] == 6 and st["decode_tokens"] == 1
        s.reset()
        assert s.n_past == 0
        again = s.prefill([1, 10, 11, 12])
        np.testing.assert_array_equal(again, last)   # same positions, same cache contents


def test_context_full_and_bad_ids_leave_session_usable(tiny_gguf):
    with vc.Model(tiny_gguf, n_ctx=8) as m, m.session() as s:
        with pytest.raises(vc.ContextFullError, match="do not fit"):
            s.prefill(list(range(3, 12)))
        assert s.n_past == 0
        with pytest.raises(vc.InvalidArgumentError, match="out of range"):
            s.prefill([1, 300])
        with pytest.raises(vc.InvalidArgumentError, match="-5"):
            s.decode(-5)
        assert s.n_past == 0
        s.prefill([1, 2, 3])
        assert s.n_past == 3
        with pytest.raises(vc.ContextFullError):
            m.generate(list(range(3, 12)))
        with pytest.raises(vc.InvalidArgumentError):
            s.prefill([])


def test_generate_greedy_is_reproducible_and_matches_manual_loop(tiny_gguf):
    with vc.Model(tiny_gguf, n_ctx=64, kv_type="f32") as m:
        out = m.generate([1, 20, 21, 22], max_tokens=10)
        assert out.finish_reason in ("length", "stop") and len(out.tokens) <= 10
        with m.session(kv_type="f32") as s:
            logits, manual = s.prefill([1, 20, 21, 22]), []
            for _ in range(len(out.tokens)):
                t = int(np.argmax(logits))
                if m.is_eog(t):
                    break
                manual.append(t)
                logits = s.decode(t)
        assert manual == out.tokens
        assert out.text == m.detokenize(out.tokens)
        assert out.stats.prompt_tokens == 4 and out.stats.completion_tokens == len(out.tokens)


def test_no_mmap_reads_the_same_weights(tiny_gguf, tmp_path):
    """use_mmap=False reads the file into anonymous memory: the same logits bit for bit,
    and a truncated file still fails cleanly on that path."""
    ids = [1, 20, 21, 22]
    with vc.Model(tiny_gguf, n_ctx=64) as a, vc.Model(tiny_gguf, n_ctx=64, use_mmap=False) as b:
        with a.session() as sa, b.session() as sb:
            assert np.array_equal(sa.prefill(ids), sb.prefill(ids))
            assert np.array_equal(sa.decode(5), sb.decode(5))
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(open(tiny_gguf, "rb").read()[:-100])
    with pytest.raises(vc.ModelFormatError):
        vc.Model(cut, use_mmap=False)


def test_sampling_seeded_and_streaming_equals_text(tiny_gguf):
    with vc.Model(tiny_gguf, n_ctx=64) as m:
        a = m.generate([1, 30], max_tokens=12, temperature=1.0, top_k=40, top_p=0.9, seed=7)
        b = m.generate([1, 30], max_tokens=12, temperature=1.0, top_k=40, top_p=0.9, seed=7)
        c = m.generate([1, 30], max_tokens=12, temperature=1.0, top_k=40, top_p=0.9, seed=8)
        assert a.tokens == b.tokens
        assert a.tokens != c.tokens or len(a.tokens) < 3
        stream = m.generate([1, 30], max_tokens=12, temperature=1.0, top_k=40, top_p=0.9, seed=7, stream=True)
        pieces = list(stream)
        assert "".join(pieces) == stream.completion.text == a.text


def test_streaming_decodes_each_byte_once(tiny_gguf, monkeypatch):
    """generate() builds its text incrementally: the bytes it decodes are the pieces' bytes,
    once each (decoding all the text so far at every token made a long answer O(n^2))."""
    import codecs
    import vlcache_native.model as vm
    fed = []
    real = codecs.getincrementaldecoder

    def counting(name):
        cls = real(name)

        class Counting(cls):
            def decode(self, data, final=False):
                fed.append(len(data))
                return super().decode(data, final)
        return Counting

    monkeypatch.setattr(vm.codecs, "getincrementaldecoder", counting)
    with vc.Model(tiny_gguf, n_ctx=128) as m:
        stream = m.generate([1, 30], max_tokens=48, temperature=1.0, seed=3, stream=True)
        text = "".join(stream)
        out = stream.completion
        assert text == out.text == m.detokenize(out.tokens)
        n_bytes = len(b"".join(m.token_to_piece(t) for t in out.tokens))
        assert len(out.tokens) > 20 and sum(fed) in (n_bytes, n_bytes - 1)  # less the dropped leading space


def test_stop_string_truncates(tiny_gguf):
    with vc.Model(tiny_gguf, n_ctx=64) as m:
        full = m.generate([1, 40], max_tokens=12)
        assert len(full.text) > 3
        stop = full.text[2:4]
        out = m.generate([1, 40], max_tokens=12, stop=[stop])
        assert out.finish_reason == "stop" and out.text == full.text[: full.text.find(stop)]
        pieces = list(m.generate([1, 40], max_tokens=12, stop=stop, stream=True))
        assert "".join(pieces) == out.text


def test_bad_parameters_raise(tiny_gguf):
    with vc.Model(tiny_gguf, n_ctx=16) as m:
        with pytest.raises(vc.InvalidArgumentError, match="kv_type"):
            m.session(kv_type="q4")
        with pytest.raises(vc.InvalidArgumentError, match="min_p"):
            m.generate([1], min_p=3.0)
        with pytest.raises(vc.InvalidArgumentError, match="max_tokens"):
            m.generate([1], max_tokens=-1)
        assert m.generate([1], max_tokens=0).tokens == []
