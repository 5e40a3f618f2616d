"""demomodel.py: a briefly trained demo-architecture LLaVA for tests of the demo tools.

make_demo_gguf(dir) runs tools/train_demo_vlm.py for a few steps (its tokenizer, its
architecture, its data) and exports the Q8_0 GGUF the way the shipped model is exported.
A few steps make the logits confident enough that greedy decoding has no near-ties; the
answers are still wrong (tests of accuracy need the trained model). About 15 s on 2 cores.
"""

from pathlib import Path

from conftest import load_tool


def make_demo_gguf(out_dir, steps: int = 4) -> Path:
    T = load_tool("train_demo_vlm")
    out_dir = Path(out_dir)
    common = ["--out", str(out_dir), "--threads", "2"]
    T.main(common + ["--steps", str(steps), "--eval-every", "100000", "--eval-n", "1", "--save-every", "100000"])
    path = out_dir / "demo-q8_0.gguf"
    T.main(common + ["--export", str(path)])
    return path
