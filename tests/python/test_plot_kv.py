"""tools/plot_kv.py: the keep map's pixels follow the report; the CLI draws the demo model's run."""

import numpy as np
import pytest
from PIL import Image

from conftest import load_tool
from vlcache_native.kvcache import CompressReport

N_PROMPT, IMAGE_SPAN = 40, (8, 20)  # image tokens at positions 8..27, text around them


def report(kept, n_prompt=N_PROMPT, sparsity=(0.9, 0.5, 0.7)):
    L = len(kept)
    return CompressReport(policy="vl-cache", budget=0.1, n_prompt=n_prompt,
                          sparsity=None if sparsity is None else np.array(sparsity[:L]),
                          layer_budgets=np.array([max(len(h) for h in layer) for layer in kept], dtype=np.int32),
                          kept=[[np.array(h, dtype=np.int32) for h in layer] for layer in kept],
                          kv_bytes_before=1 << 20, kv_bytes_after=1 << 17, seconds=0.001)


# layer 0: image positions only (10-12 by both KV heads, 20 by one); layer 1: text only; layer 2: one
# head keeps position 5
KEPT = [
    [[10, 11, 12, 20], [10, 11, 12]],
    [[0, 1, 35, 36, 37, 38, 39], [0, 39]],
    [[], [5]],
]


def cell(pic, layer, col):
    """The colour at the centre of a keep-map cell (clear of the grid lines on the cells' edges)."""
    m = pic.info["map"]
    left, top = m["box"][:2]
    xe = m["x_edges"]
    x = left + (xe[col] + xe[col + 1] - 1) // 2
    y = top + layer * m["row_h"] + (m["row_h"] - 1) // 2
    return pic.getpixel((x, y))


def test_keep_map_pixels_follow_the_report():
    pk = load_tool("plot_kv")
    pic = pk.draw(report(KEPT), [IMAGE_SPAN], N_PROMPT, "synthetic")
    assert pic.mode == "RGB" and pic.width == 1200
    m = pic.info["map"]
    assert m["bin"] == 1 and m["cols"] == N_PROMPT and m["box"][3] - m["box"][1] == 3 * m["row_h"]
    assert 0 < m["box"][0] < m["box"][2] <= pic.width and m["box"][3] < pic.height

    image_cols = set(range(IMAGE_SPAN[0], IMAGE_SPAN[0] + IMAGE_SPAN[1]))
    # what each cell must be: (hue, fraction of the 2 KV heads), None = evicted (background exactly)
    want = {(0, p): (pk.IMAGE, 1.0) for p in (10, 11, 12)} | {(0, 20): (pk.IMAGE, 0.5)}
    want |= {(1, p): (pk.TEXT, 1.0) for p in (0, 39)} | {(1, p): (pk.TEXT, 0.5) for p in (1, 35, 36, 37, 38)}
    want |= {(2, 5): (pk.TEXT, 0.5)}
    for layer in range(3):
        for p in range(N_PROMPT):
            got = cell(pic, layer, p)
            if (layer, p) not in want:
                assert got == pk.BG, (layer, p, got)
                continue
            hue, frac = want[layer, p]
            assert (p in image_cols) == (hue == pk.IMAGE)
            # exact but for rounding of the blend to 8 bits
            assert np.abs(np.subtract(got, pk._shade(hue, frac))).max() <= 1, (layer, p, got)
    assert cell(pic, 0, 10) == pk.IMAGE and cell(pic, 1, 0) == pk.TEXT  # every head: the full colour
    # the band above the map: orange over the image columns only
    band_y = m["box"][1] - 12
    for p in (0, 7, 8, 27, 28, 39):
        xe = m["x_edges"]
        colour = pic.getpixel((m["box"][0] + (xe[p] + xe[p + 1]) // 2, band_y))
        assert (colour == pk.IMAGE) == (p in image_cols), (p, colour)
    # panel (a) drew bars of both series
    px = np.asarray(pic).reshape(-1, 3)
    for colour in (pk.SPARSITY, pk.BUDGET):
        assert (px == colour).all(axis=1).sum() > 100


def test_wide_prompt_is_binned():
    pk = load_tool("plot_kv")
    n = 5000
    kept = [[list(range(5)) + [7], list(range(5))], [[n - 1], []]]
    spans = [(0, 4000)]
    pic = pk.draw(report(kept, n, sparsity=None), spans, n, "wide", width=900)
    m = pic.info["map"]
    assert pic.width == 900 and m["bin"] > 1 and m["cols"] == -(-n // m["bin"]) and len(m["x_edges"]) == m["cols"] + 1
    assert m["x_edges"][-1] == m["box"][2] - m["box"][0]
    fi, ft, binw = pk.keep_map(report(kept, n, sparsity=None), spans, n, m["cols"])
    assert binw == m["bin"] and fi.shape == ft.shape == (2, m["cols"])
    last = (n - 1) // binw
    # column 0 holds positions [0, bin): 0-4 by both heads, 7 by one when bin > 7; all image
    assert fi[0, 0] == pytest.approx((10 + (7 < binw)) / (2 * binw))
    assert fi[0, 1] == pytest.approx((7 >= binw) / (2 * binw))
    # the last position is text, kept by one head of two, in the last (maybe shorter) column
    assert ft[1, last] == pytest.approx(1 / (2 * (n - last * binw)))
    assert np.count_nonzero(ft) == 1 and np.count_nonzero(fi[1]) == 0
    assert cell(pic, 1, 1) == pk.BG and cell(pic, 0, 0) != pk.BG and cell(pic, 1, last) != pk.BG


def test_draw_rejects_an_empty_prompt():
    pk = load_tool("plot_kv")
    with pytest.raises(ValueError):
        pk.draw(report(KEPT), [], 0, "empty")


def test_cli_on_the_demo_model(tmp_path, capsys):
    pk = load_tool("plot_kv")
    out = tmp_path / "kv.png"
    assert pk.main(["--demo-dir", str(tmp_path), "--threads", "1", "--budget", "0.2", "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    with Image.open(out) as pic:
        pic.load()
        assert pic.width == 1200 and pic.height > 400
        px = np.asarray(pic.convert("RGB")).reshape(-1, 3)
    # the demo prompt has its picture: the image band and some kept image tokens are orange
    assert (px == pk.IMAGE).all(axis=1).sum() > 1000
