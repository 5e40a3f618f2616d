"""The vlcache-native command (python -m vlcache_native): info, run, chat; errors exit 1 with
a message, never a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import vlcache_native as vc

def _cli(*args, stdin: str | None = None):
    env = dict(os.environ)  # the package this test imported: the installed one, or the tree's with VLC_LIBRARY
    env["PYTHONPATH"] = str(Path(vc.__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "vlcache_native", *map(str, args)], input=stdin,
                          capture_output=True, text=True, env=env, timeout=300)


def test_info(tiny_gguf):
    r = _cli("info", tiny_gguf)
    assert r.returncode == 0, r.stderr
    assert "n_layer: 2" in r.stdout and "n_vocab: 300" in r.stdout


def test_run_streams_what_generate_gives(tiny_gguf):
    r = _cli("run", "-m", tiny_gguf, "-c", "128", "-t", "2", "-n", "12", "--raw", "-p", "a b c")
    assert r.returncode == 0, r.stderr
    want = vc.Model(tiny_gguf, n_ctx=128, n_threads=2).generate("a b c", max_tokens=12).text
    assert r.stdout == want + "\n"
    assert "tok/s" in r.stderr  # the timings line


def test_chat_keeps_history_and_images(demo_gguf, tmp_path):
    import PIL.Image
    pic = tmp_path / "pic.png"
    PIL.Image.new("RGB", (96, 96), (200, 30, 30)).save(pic)
    script = f"/image {pic}\nWhat colour is the star?\nHow many stars are there?\n/quit\n"
    r = _cli("chat", "-m", demo_gguf, "-c", "512", "-t", "2", "-n", "10", stdin=script)
    assert r.returncode == 0, r.stderr
    m = vc.Model(demo_gguf, n_ctx=512, n_threads=2)
    first = [{"role": "user", "content": [{"type": "image", "image": str(pic)},
                                          {"type": "text", "text": "What colour is the star?"}]}]
    a1 = m.chat(first, max_tokens=10).text
    second = first + [{"role": "assistant", "content": a1}, {"role": "user", "content": "How many stars are there?"}]
    a2 = m.chat(second, max_tokens=10).text
    assert r.stdout.count("> ") == 4  # one prompt per line read
    assert a1 + "\n" in r.stdout and a2 + "\n" in r.stdout
    assert "(attached" in r.stderr


def test_errors_exit_1_with_a_message(tmp_path):
    r = _cli("run", "-m", tmp_path / "missing.gguf", "-p", "hi")
    assert r.returncode == 1
    assert "model file not found" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 10)
    r = _cli("info", bad)
    assert r.returncode == 1 and "error:" in r.stderr and "Traceback" not in r.stderr


def test_quantize_and_convert_subcommands(tiny_gguf, tmp_path):
    out = tmp_path / "tiny-q8_0.gguf"
    r = _cli("quantize", tiny_gguf, out, "Q8_0")
    assert r.returncode == 0, r.stderr
    m = vc.Model(out, n_ctx=64, n_threads=1)
    assert m.info["n_layer"] == 2
    r = _cli("convert", tmp_path / "no-such-dir", "--outfile", tmp_path / "x.gguf")
    assert r.returncode == 1 and "error" in r.stderr and "Traceback" not in r.stderr
