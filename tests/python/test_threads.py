"""A loaded model is immutable: its readers (metadata, info, tokenizer, tensors) give the same
answers from any number of threads at once, also beside sessions decoding, and cost no
memory per call (the metadata strings are copied once, at load)."""

import threading

import numpy as np
import pytest

import vlcache_native as vc
from vlcache_native._ffi import ffi, lib
from test_lifetime import run_child


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_metadata_costs_no_memory_per_call(tiny_gguf):
    with vc.Model(tiny_gguf, n_ctx=32) as m:
        h = m._handle()
        first = lib.vlc_model_meta_str(h, b"general.architecture")
        for _ in range(1000):  # warm the allocator
            lib.vlc_model_meta_str(h, b"general.architecture")
        before = rss_bytes()
        for _ in range(100_000):
            p = lib.vlc_model_meta_str(h, b"general.architecture")
        grown = rss_bytes() - before
        assert p == first, "each call hands out a new copy"
        assert ffi.string(p) == b"llama"
        assert grown < 1 << 20, f"100k metadata() calls grew the process by {grown / 2**20:.1f} MiB"


def test_metadata_from_many_threads(tiny_gguf):
    # a heap corrupted by racing calls ends the process: run it in a child
    out = run_child("""
        import sys, threading
        import vlcache_native as vc
        m = vc.Model(sys.argv[1], n_ctx=32)
        keys = ["general.architecture", "general.name", "tokenizer.ggml.model", "no.such.key"]
        want = {k: m.metadata(k) for k in keys}
        bad = []
        def work(i):
            for j in range(3000):
                k = keys[(i + j) % len(keys)]
                if m.metadata(k) != want[k]:
                    bad.append(k)
        ths = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        m.close()
        print(len(bad), want["general.architecture"])
    """, tiny_gguf)
    assert out.split() == ["0", "llama"]


def test_readers_from_threads_beside_decoding_sessions(tiny_gguf):
    m = vc.Model(tiny_gguf, n_ctx=128, n_threads=1)
    text = "t5 t17 t200 x"

    def answers():
        return (m.metadata("general.architecture"), m.info, m.tokenize(text), m.detokenize(list(range(3, 40))),
                m.token_to_piece(300 - 1), m.is_eog(2), m.metadata_numbers("llama.context_length"),
                m.tensor("output_norm.weight", m.n_embd).tobytes())

    want = answers()
    s0 = m.session()
    want_logits = s0.prefill([1, 7, 8, 9, 10])
    s0.close()
    errors, stop = [], threading.Event()

    def reader():
        try:
            for _ in range(150):
                assert answers() == want
        except Exception as e:  # noqa: BLE001 - recorded, the test fails on it
            errors.append(e)

    def decoder():
        try:
            s = m.session()
            while not stop.is_set():
                s.reset()
                np.testing.assert_array_equal(s.prefill([1, 7, 8, 9, 10]), want_logits)
                for _ in range(5):
                    s.decode(11)
            s.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    decoders = [threading.Thread(target=decoder) for _ in range(2)]
    for t in decoders + readers:
        t.start()
    for t in readers:
        t.join()
    stop.set()
    for t in decoders:
        t.join()
    m.close()
    assert not errors, errors[:3]
