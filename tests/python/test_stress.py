"""Stress: many threads x sessions on one model with closes under load, load / generate /
close cycles in bounded memory, and generations that run at the same time (two threads,
or two streams taken in turn in one thread) each giving the text they give alone. Each
test runs for a few seconds at most; the C side of the same (threads dropping the last
reference of a model) is tests/c/test_lifetime.c, under the sanitizers."""

import os
import random
import threading
import time

import numpy as np
import pytest

import vlcache_native as vc

PROMPT = [1, 17, 33, 48, 90, 121]


def greedy_run(s, steps: int) -> list:
    """Prefills PROMPT into s (reset first) and decodes greedily; the logits of every step."""
    s.reset()
    out = [s.prefill(PROMPT)]
    for _ in range(steps):
        out.append(s.decode(int(out[-1].argmax())))
    return out


def test_threads_sessions_and_closes_under_load(tiny_gguf):
    m = vc.Model(tiny_gguf, n_ctx=64, n_threads=1)
    with m.session() as s:
        want = greedy_run(s, 8)
    live, lock = [], threading.Lock()
    counts = {"runs": 0, "closed_under_load": 0, "sessions": 0, "refused": 0}
    errors = []

    def worker(seed):
        rng = random.Random(seed)
        while True:
            try:
                s = m.session()
            except vc.ClosedError:          # the model is closed: done
                with lock:
                    counts["refused"] += 1
                return
            with lock:
                live.append(s)
                counts["sessions"] += 1
            try:
                for _ in range(rng.randint(1, 3)):
                    got = greedy_run(s, 8)
                    for a, b in zip(got, want):
                        np.testing.assert_array_equal(a, b)
                    with lock:
                        counts["runs"] += 1
                s.close()
            except vc.ClosedError:          # another thread closed it under us
                with lock:
                    counts["closed_under_load"] += 1
            except Exception as e:  # noqa: BLE001 - recorded, the test fails on it
                errors.append(e)
                return
            finally:
                with lock:
                    live.remove(s)

    def closer():
        rng = random.Random(7)
        while not m.closed:
            time.sleep(rng.uniform(0, 0.004))
            with lock:
                victim = rng.choice(live) if live else None
            if victim is not None:
                victim.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)] + [threading.Thread(target=closer)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    m.close()                               # under load: waits for the calls running, closes the rest
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a thread hangs"
    assert not errors, errors[:3]
    print(counts)
    assert counts["runs"] > 10 and counts["closed_under_load"] > 0 and counts["refused"] == 6


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_load_generate_close_cycles_keep_memory_flat(tiny_gguf):
    def cycle(i):
        m = vc.Model(tiny_gguf, n_ctx=64, n_threads=1)
        s = m.session()                     # one session left open: the model's close closes it
        s.prefill([1, 5])
        text = m.generate(PROMPT, max_tokens=4, seed=i, temperature=0.8).text
        if i % 2:
            m.close()
        else:
            del m, s                        # or left to the collector
        return text

    for i in range(100):                     # warm the allocator and the caches
        cycle(i)
    base, n, t0 = rss_bytes(), 0, time.perf_counter()
    while time.perf_counter() - t0 < 5.0 or n < 200:
        cycle(n)
        n += 1
    grown = rss_bytes() - base
    print(f"{n} cycles: RSS grew {grown / 2**10:.0f} KiB")
    assert grown < 2 << 20, f"{n} load/generate/close cycles grew the process by {grown / 2**20:.1f} MiB"


def alone(m, prompt, **kw):
    return m.generate(prompt, **kw).text


def test_two_generations_in_two_threads(tiny_gguf):
    m = vc.Model(tiny_gguf, n_ctx=128, n_threads=1)
    prompts = [[1, 40, 41, 42], [1, 200, 7, 9, 250, 3]]
    want = [alone(m, p, max_tokens=40) for p in prompts]
    assert want[0] != want[1]
    got, errors = [[] for _ in prompts], []

    def work(i):
        try:
            for _ in range(6):
                got[i].append(m.generate(prompts[i], max_tokens=40).text)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ths = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    assert not errors, errors
    assert got == [[w] * 6 for w in want]
    m.close()


def test_two_streams_interleaved_in_one_thread(tiny_gguf):
    m = vc.Model(tiny_gguf, n_ctx=128, n_threads=1)
    prompts = [[1, 40, 41, 42], [1, 200, 7, 9, 250, 3]]
    want = [alone(m, p, max_tokens=40) for p in prompts]
    streams = [m.generate(p, max_tokens=40, stream=True) for p in prompts]
    pieces = [[], []]
    active = [0, 1]
    while active:
        for i in list(active):
            try:
                pieces[i].append(next(streams[i]))
            except StopIteration:
                active.remove(i)
    assert ["".join(p) for p in pieces] == want
    assert [s.completion.text for s in streams] == want
    m.close()
