"""tools/bench.py side-by-side mode: llama-bench JSON parsing, the table, decode efficiency,
the bytes a decode step reads, and one tiny end-to-end run against a stand-in llama-bench
(a script printing canned JSON), so that no llama.cpp build is needed."""

import json
import sys

import pytest
from conftest import load_tool

# What llama-bench 0.3.x `-o json` prints for `-p 512 -n 128 -r 1` (fields trimmed; the
# parser must ignore the ones it does not read)
LLAMA_BENCH_JSON = """[
  {
    "build_commit": "abc1234",
    "build_number": 1,
    "cpu_info": "Some CPU",
    "model_filename": "m.gguf",
    "model_type": "llama 1B F16",
    "model_size": 1687183360,
    "n_threads": 2,
    "type_k": "f16",
    "type_v": "f16",
    "n_prompt": 512,
    "n_gen": 0,
    "n_depth": 0,
    "avg_ns": 12000000000,
    "avg_ts": 42.666667,
    "stddev_ts": 0.000000,
    "samples_ns": [ 12000000000 ],
    "samples_ts": [ 42.666667 ]
  },
  {
    "build_commit": "abc1234",
    "build_number": 1,
    "model_type": "llama 1B F16",
    "n_threads": 2,
    "type_k": "f16",
    "type_v": "f16",
    "n_prompt": 0,
    "n_gen": 128,
    "n_depth": 0,
    "avg_ns": 16000000000,
    "avg_ts": 8.000000,
    "stddev_ts": 0.000000,
    "samples_ns": [ 16000000000 ],
    "samples_ts": [ 8.000000 ]
  }
]
"""

# the tests' tiny_gguf (conftest): hidden 64, 2 layers, 4 heads, 2 KV heads, FFN 96, vocab 300, F32
H, L, NH, NKV, FF, V = 64, 2, 4, 2, 96, 300
HD = H // NH


@pytest.fixture(scope="module")
def bench():
    return load_tool("bench")


def test_parse_llama_bench_json(bench):
    r = bench.parse_llama_bench_json(LLAMA_BENCH_JSON)
    assert r["pp"] == pytest.approx(42.666667, rel=1e-12) and r["n_prompt"] == 512
    assert r["tg"] == pytest.approx(8.0, rel=1e-12) and r["n_gen"] == 128
    assert r["type_k"] == "f16" and r["n_threads"] == 2 and r["build"] == "abc1234 (1)"
    # a pp-only run: no tg
    only_pp = json.dumps(json.loads(LLAMA_BENCH_JSON)[:1])
    assert bench.parse_llama_bench_json(only_pp)["tg"] is None
    with pytest.raises(ValueError):
        bench.parse_llama_bench_json("[]")
    pg = json.loads(LLAMA_BENCH_JSON)[:1]
    pg[0]["n_gen"] = 16  # a combined pp+tg test is not what the table reads
    with pytest.raises(ValueError):
        bench.parse_llama_bench_json(json.dumps(pg))


def test_llama_bench_cmd(bench):
    cmd = bench.llama_bench_cmd("lb", "m.gguf", 2, 512, 128)
    assert cmd == ["lb", "-m", "m.gguf", "-t", "2", "-p", "512", "-n", "128", "-r", "1", "-o", "json"]
    assert bench.llama_bench_cmd("lb", "m.gguf", 2, 512, 128, depth=1024)[-2:] == ["-d", "1024"]


def test_ratio_efficiency_and_table(bench):
    assert bench.fmt_ratio(150.0, 100.0) == "1.50x"
    assert bench.fmt_ratio(None, 100.0) == "-" and bench.fmt_ratio(1.0, None) == "-"
    assert bench.best([None, 3.0, 5.0]) == 5.0 and bench.best([None]) is None
    # 1.5 GB per token at 10 tok/s from 30 GB/s: half the bandwidth
    assert bench.decode_efficiency(1.5e9, 10.0, 30e9) == pytest.approx(0.5, rel=1e-12)
    assert bench.decode_efficiency(1.5e9, None, 30e9) is None
    row = dict(type="Q8_0", threads=2, size_mib=1024.0, pp_ours=50.0, pp_lcpp=100.0, tg_ours=9.0, tg_lcpp=6.0,
               eff_ours=0.5, eff_lcpp=1 / 3)
    lines = bench.compare_table([row, dict(row, type="F16", pp_lcpp=None, tg_lcpp=None, eff_lcpp=None)], 512, 128)
    assert lines[0].startswith("| type | thr | MiB | pp512 ours | pp512 llama.cpp | ratio | tg128 ours")
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells == ["Q8_0", "2", "1024", "50.0", "100.0", "0.50x", "9.00", "6.00", "1.50x", "50%", "33%"]
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells[4:6] == ["-", "-"] and cells[8] == "-" and cells[10] == "-"
    bw = {2: {"threads": 2, "bytes": 1 << 30, "copy": 20e9, "read": 15e9}}
    assert bench.bandwidth_lines(bw) == ["memory bandwidth, 2 threads (NumPy, 1024 MiB): copy 20.0 GB/s "
                                         "(read + written), read-only sum 15.0 GB/s"]


def test_gguf_facts_bytes_per_token(bench, tiny_gguf):
    f = bench.gguf_facts(tiny_gguf)
    assert f["type"] == "F32" and (f["n_layer"], f["n_head_kv"], f["head_dim"]) == (L, NKV, HD)
    # every F32 tensor of the writer, counted from the shape
    layer = 2 * H + H * H + 2 * NKV * HD * H + H * H + 3 * FF * H
    total = 4 * (V * H + L * layer + H + V * H)
    assert f["tensor_bytes"] == total
    assert f["weight_bytes_per_token"] == total - 4 * V * H + 4 * H  # one embedding row, not the table
    assert bench.kv_bytes_read(f, 10, "f16") == 2 * L * NKV * HD * 2 * 10
    assert bench.tg_mean_ctx(0, 128) == 64.5 and bench.tg_mean_ctx(100, 1) == 101


def test_measure_bandwidth_small(bench):
    bw = bench.measure_bandwidth(4 << 20, n_threads=2, reps=1)
    assert bw["bytes"] == 4 << 20 and bw["threads"] == 2
    # a 4 MiB copy on any machine of this decade: far above 100 MB/s, far below 10 TB/s
    for k in ("copy", "read"):
        assert 1e8 < bw[k] < 1e13


def test_compare_models_same_type_needs_no_quantizing(bench, tiny_gguf, tmp_path):
    assert bench.compare_models([tiny_gguf], ["F32"], tmp_path) == [("F32", tiny_gguf)]
    assert bench.compare_models([tiny_gguf], [], tmp_path) == [(None, tiny_gguf)]


def test_side_by_side_tiny_end_to_end(bench, tiny_gguf, tmp_path, capsys):
    """Our side for real on the tiny model, llama-bench replaced by a script printing the canned JSON."""
    log = tmp_path / "calls.txt"
    fake = tmp_path / "llama-bench"
    fake.write_text(f"#!{sys.executable}\nimport sys\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                    f"print({LLAMA_BENCH_JSON!r})\n")
    fake.chmod(0o755)
    out = tmp_path / "cmp.json"
    reps = 2
    rc = bench.main(["--llama-bench", str(fake), "--model", str(tiny_gguf), "--prompt", "16", "--gen", "4",
                     "--reps", str(reps), "--threads", "1", "--bw-mib", "4", "--bw-reps", "1", "--json", str(out)])
    assert rc == 0
    calls = log.read_text().splitlines()
    assert calls == [f"-m {tiny_gguf} -t 1 -p 16 -n 4 -r 1 -o json"] * reps  # one call per round, same threads
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    assert row["type"] == "F32" and row["threads"] == 1
    assert len(row["samples_ours"]) == reps and len(row["samples_lcpp"]) == reps
    assert row["pp_ours"] == max(s["pp"] for s in row["samples_ours"]) > 0
    assert row["tg_ours"] == max(s["tg"] for s in row["samples_ours"]) > 0
    assert row["pp_lcpp"] == pytest.approx(42.666667) and row["tg_lcpp"] == pytest.approx(8.0)
    read_bw = res["bandwidth"]["1"]["read"]
    f = bench.gguf_facts(tiny_gguf)
    per_token = f["weight_bytes_per_token"] + bench.kv_bytes_read(f, bench.tg_mean_ctx(0, 4), "f16")
    assert row["bytes_per_token_ours"] == pytest.approx(per_token, rel=1e-12)
    assert row["eff_ours"] == pytest.approx(per_token * row["tg_ours"] / read_bw, rel=1e-12)
    assert row["eff_lcpp"] == pytest.approx(per_token * 8.0 / read_bw, rel=1e-12)
    printed = capsys.readouterr().out
    assert "llama-bench build abc1234 (1)" in printed and "memory bandwidth, 1 thread" in printed
    assert f"| {bench.fmt_ratio(row['tg_ours'], 8.0)} |" in printed


def test_compare_our_side_only(bench, tiny_gguf, capsys):
    rc = bench.main(["--compare", "--model", str(tiny_gguf), "--prompt", "8", "--gen", "2", "--reps", "1",
                     "--threads", "2", "--bw-mib", "4", "--bw-reps", "1"])
    assert rc == 0
    printed = capsys.readouterr().out.splitlines()
    # the bandwidth on 1 thread and on the benchmark's threads
    assert sum(x.startswith("memory bandwidth, 1 thread ") for x in printed) == 1
    assert sum(x.startswith("memory bandwidth, 2 threads ") for x in printed) == 1
    (line,) = [x for x in printed if x.startswith("| F32 ")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "2" and float(cells[3]) > 0 and float(cells[6]) > 0
    assert cells[4] == cells[7] == cells[10] == "-"  # no llama.cpp columns without --llama-bench


def test_bad_llama_bench_path(bench, tiny_gguf, tmp_path):
    with pytest.raises(FileNotFoundError):
        bench.main(["--llama-bench", str(tmp_path / "nope"), "--model", str(tiny_gguf), "--bw-mib", "4"])
