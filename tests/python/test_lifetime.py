"""Handles across threads and collection orders: a session keeps its model's memory (a
reference counted in C), close() waits for a call running in another thread, a call on a
closed handle raises, and the Python objects form no reference cycles.

The cases that crashed the process before run in a child interpreter, so a crash is a
failed test and not a lost test run.
"""

import gc
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import numpy as np
import pytest

import vlcache_native as vc


def run_child(code: str, *args, timeout=60) -> str:
    """Runs code in a fresh interpreter (argv[1:] = args); fails on a crash or an exit != 0."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def test_generate_leaves_no_reference_cycle(tiny_gguf):
    # a cycle would leave the model to the collector, which picks the finalizers' order
    gc.collect()
    m = vc.Model(tiny_gguf, n_ctx=64, n_threads=1)
    m.generate("ab", max_tokens=3)
    stream = m.generate("ab", max_tokens=3, stream=True)
    next(stream, None)
    del stream
    ref = weakref.ref(m)
    del m
    assert ref() is None, "the model was kept alive by a reference cycle"


def test_session_outlives_its_model_object(tiny_gguf):
    m = vc.Model(tiny_gguf, n_ctx=64, n_threads=1)
    s = m.session()
    want = s.prefill([1, 5, 6])
    s.reset()
    assert s.model is m
    del m
    gc.collect()
    np.testing.assert_array_equal(s.prefill([1, 5, 6]), want)
    s.close()


def test_collection_in_any_order_is_safe(tiny_gguf):
    # sessions and models dropped in every order, cycles through them included, at exit too
    run_child("""
        import gc, sys
        import vlcache_native as vc
        keep = []
        for order in range(6):
            m = vc.Model(sys.argv[1], n_ctx=64, n_threads=1)
            out = m.generate("ab", max_tokens=4)
            s, t = m.session(), m.session()
            s.prefill([1, 5, 6])
            u = s.clone()
            cyc = [m, s, t, u]
            cyc.append(cyc)              # a cycle through all of them: the collector picks the order
            if order % 2:
                keep.append(cyc)         # freed at interpreter exit
            del m, s, t, u, cyc
            gc.collect()
        print("ok")
    """, tiny_gguf)


def _long_prefill_session(tiny_gguf, n=1500):
    m = vc.Model(tiny_gguf, n_ctx=n + 8, n_threads=1)
    return m, m.session(), [1] + [5 + i % 250 for i in range(n - 1)]


def test_close_waits_for_a_call_in_another_thread(tiny_gguf):
    m, s, prompt = _long_prefill_session(tiny_gguf)
    t0 = time.perf_counter()
    s.prefill(prompt)
    took = time.perf_counter() - t0
    s.reset()
    started, finished, result = threading.Event(), threading.Event(), {}

    def work():
        started.set()
        result["logits"] = s.prefill(prompt)
        finished.set()

    th = threading.Thread(target=work)
    th.start()
    started.wait()
    time.sleep(min(0.02, took / 4))   # the prefill is running (cffi released the GIL)
    s.close()
    assert finished.is_set(), "close() returned while prefill was still running on the session"
    th.join()
    assert np.isfinite(result["logits"]).all()
    with pytest.raises(vc.ClosedError, match="session is closed"):
        s.decode(5)
    with pytest.raises(vc.VlcacheError, match="closed"):
        s.n_past
    m.close()


def test_model_close_waits_for_its_sessions_calls(tiny_gguf):
    m, s, prompt = _long_prefill_session(tiny_gguf)
    finished, errors = threading.Event(), []

    def work():
        try:
            s.prefill(prompt)
        except Exception as e:  # noqa: BLE001 - recorded, the test fails on it
            errors.append(e)
        finished.set()

    th = threading.Thread(target=work)
    th.start()
    time.sleep(0.01)
    m.close()            # closes its sessions: each waits for the call on it
    assert finished.is_set()
    th.join()
    assert not errors
    with pytest.raises(vc.ClosedError):
        s.prefill([1])
    with pytest.raises(vc.ClosedError, match="model is closed"):
        m.session()
    with pytest.raises(vc.ClosedError):
        m.metadata("general.architecture")


def test_close_during_calls_in_a_child(tiny_gguf):
    # many closes racing running calls: every call either finishes or raises ClosedError
    out = run_child("""
        import sys, threading, time
        import vlcache_native as vc
        m = vc.Model(sys.argv[1], n_ctx=256, n_threads=1)
        counts = {"ok": 0, "closed": 0}
        lock = threading.Lock()
        def work(s):
            try:
                s.prefill([1] + [5] * 150)
                while True:
                    s.decode(7)
                    with lock:
                        counts["ok"] += 1
            except vc.ClosedError:
                with lock:
                    counts["closed"] += 1
            except vc.ContextFullError:
                pass
        for round in range(20):
            ss = [m.session() for _ in range(3)]
            ths = [threading.Thread(target=work, args=(s,)) for s in ss]
            for t in ths:
                t.start()
            time.sleep(0.002 * (round % 4))
            for s in ss:
                s.close()
            for t in ths:
                t.join()
        m.close()
        print(counts["ok"], counts["closed"])
    """, tiny_gguf)
    ok, closed = map(int, out.split())
    assert closed > 0


def test_close_is_idempotent_from_many_threads(tiny_gguf):
    m = vc.Model(tiny_gguf, n_ctx=32, n_threads=1)
    ss = [m.session() for _ in range(4)]
    ths = [threading.Thread(target=x.close) for x in ss + [m] + ss + [m]]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    assert all("closed" in repr(x) for x in ss + [m])


def test_closing_the_model_ends_a_stream_with_closed_error(tiny_gguf):
    m = vc.Model(tiny_gguf, n_ctx=64, n_threads=1)
    stream = m.generate([1, 40, 41], max_tokens=30, stream=True)
    next(stream)
    m.close()            # the stream's session is the model's: closed with it
    with pytest.raises(vc.ClosedError, match="session is closed"):
        for _ in stream:
            pass
    with pytest.raises(vc.ClosedError, match="model is closed"):
        m.generate([1, 2], max_tokens=2)
