"""Shared fixtures: tiny models written with NumPy + gguf (no torch needed)."""

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/python helpers (hfmodels)


def oracle(name):
    """Imports an independent oracle (torch, transformers, sentencepiece, ...): a test module
    that needs one is skipped where it is not installed, but fails under CI
    (VLC_REQUIRE_ORACLES=1, set by .ci/run), where a missing oracle must not pass as a skip."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        if os.environ.get("VLC_REQUIRE_ORACLES") == "1":
            raise ImportError(f"oracle {name!r} is required here (VLC_REQUIRE_ORACLES=1): {e}") from e
        pytest.skip(f"oracle {name!r} not installed", allow_module_level=True)


def load_tool(name):
    """Imports tools/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """A random llama GGUF (hidden 64, 2 layers, GQA 4:2, vocab 300, f32) with a synthetic vocab."""
    bench = load_tool("bench")
    path = tmp_path_factory.mktemp("tiny") / "tiny.gguf"
    return bench.write_random_llama(path, hidden=64, layers=2, heads=4, kv_heads=2, ff=96, vocab=300, outtype="f32")


@pytest.fixture(scope="session")
def demo_gguf(tmp_path_factory):
    """A briefly trained model of the demo VLM's architecture, exported as Q8_0 (demomodel.py)."""
    oracle("torch")
    from demomodel import make_demo_gguf
    return make_demo_gguf(tmp_path_factory.mktemp("demo"))
