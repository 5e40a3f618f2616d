"""Smoke test of tools/bench_kv.py: the KV-policy benchmark end to end on a tiny random model."""

import json

from conftest import load_tool

N_PROMPT, N_DECODE, BUDGET = 128, 4, 0.1
TINY_L, TINY_HKV = 2, 2  # bench_kv.TINY: 2 layers, 2 KV heads


def test_bench_kv_tiny_rows(tmp_path, capsys):
    bk = load_tool("bench_kv")
    out = tmp_path / "kv.json"
    rc = bk.main(["--tiny", "--cache-dir", str(tmp_path), "--lengths", str(N_PROMPT), "--policies", "full,vl-cache",
                  "--budgets", str(BUDGET), "--decode-tokens", str(N_DECODE), "--threads", "1", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    (length,) = res["lengths"]

    # the prompt: every image became an image span of the stated size, the question follows the last
    assert length["n_prompt"] == N_PROMPT
    spans = length["image_spans"]
    assert len(spans) == length["n_images"] >= 1
    assert all(n == length["image_tokens"] for _, n in spans)
    assert spans[-1][0] + spans[-1][1] == N_PROMPT - length["question_tokens"]
    assert length["prefill_s"] > 0 and length["stats_overhead_pct"] is not None

    rows = {r["policy"]: r for r in length["rows"]}
    assert set(rows) == {"full", "vl-cache"}
    full, vl = rows["full"], rows["vl-cache"]
    assert full["budget"] == 1.0 and vl["budget"] == BUDGET
    # full keeps every prompt entry; VL-Cache keeps T = floor(alpha L m + 0.5) tokens summed over
    # layers, per KV head (exact_total, vlcache.h), counted before the decode
    assert full["kv_entries"] == N_PROMPT * TINY_L * TINY_HKV
    assert vl["kv_entries"] == int(BUDGET * TINY_L * N_PROMPT + 0.5) * TINY_HKV
    assert vl["kv_bytes"] < full["kv_bytes"]
    for r in (full, vl):
        assert len(r["tokens"]) == N_DECODE and r["decode_tok_s"] > 0 and r["compress_ms"] >= 0
        assert r["rss_mib"] > 0 and r["peak_rss_mib"] >= r["rss_mib"]
    # the byte bound: 1 for full itself (same bytes), above 1 when fewer KV entries are read
    assert abs(full["bound"] - 1.0) < 1e-12 and vl["bound"] > 1.0
    assert full["speedup"] == 1.0

    printed = capsys.readouterr().out
    assert "| policy" in printed and "| vl-cache" in printed and "machine:" in printed
