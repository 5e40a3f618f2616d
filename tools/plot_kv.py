#!/usr/bin/env python3
"""What a KV-cache policy kept, as one PNG: per-layer sparsity and budgets, and a keep map.

Prefills a prompt (with its image) gathering the attention statistics the policy needs,
compresses the session, and draws the :class:`~vlcache_native.kvcache.CompressReport`:

(a) per layer, the post-vision sparsity and the budget the policy gave the layer (prompt
    entries kept per KV head, as a share of the prompt and in tokens);
(b) a map with one row per layer and one column per prompt position (several positions per
    column when the prompt is wider than the picture): the colour says whether the
    position is an image or a text token, its strength what fraction of the layer's KV
    heads kept it; white is evicted by every head. A band above the map marks the image.

With no model it writes the tiny random LLaVA of tools/demo.py and draws its picture, so it
runs after a plain ``pip install .``:

    python tools/plot_kv.py [MODEL.gguf] [--mmproj F] [--image PATH] [--prompt TEXT]
                            [--policy vl-cache] [--budget 0.1] [-o kv.png]

:func:`draw` is the drawing alone (a report in, a PIL image out); it needs Pillow only.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TOOLS = Path(__file__).resolve().parent

# ---- look

BG = (255, 255, 255)            # page and map background: an evicted position is this colour
INK = (40, 40, 48)
MUTED = (110, 112, 122)
GRID = (228, 230, 236)
FRAME = (170, 172, 180)
IMAGE = (224, 104, 32)          # image tokens: orange
TEXT = (36, 98, 196)            # text tokens: blue
SPARSITY = (150, 154, 166)      # panel (a): grey bars
BUDGET = (112, 62, 170)         # panel (a): purple bars
MIN_SHADE = 0.18                # a position kept by a single head still shows


def _font(size: int, bold: bool = False) -> ImageFont.ImageFont:
    """DejaVu Sans when the system has it (wide glyph coverage), else Pillow's own font."""
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf", size)
    except OSError:
        try:
            return ImageFont.load_default(size)
        except TypeError:  # Pillow without FreeType: the fixed bitmap font
            return ImageFont.load_default()


def _text_size(d: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    x0, y0, x1, y1 = d.textbbox((0, 0), text, font=font)
    return x1 - x0, y1 - y0


def _wrap(parts: list[str], sep: str, font, max_w: int) -> list[str]:
    """The parts joined by sep into lines no wider than max_w (a part too wide stands alone)."""
    d = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[str] = []
    for part in parts:
        if lines and _text_size(d, lines[-1] + sep + part, font)[0] <= max_w:
            lines[-1] += sep + part
        else:
            lines.append(part)
    return lines


def _shade(color: tuple, f: float) -> tuple:
    """``color`` at strength f in [0, 1] over the background (0 = background exactly)."""
    if f <= 0:
        return BG
    s = MIN_SHADE + (1 - MIN_SHADE) * min(f, 1.0)
    return tuple(round(b + (c - b) * s) for b, c in zip(BG, color))


def _nice_step(span: float, n: int) -> float:
    """The 1-2-5 step nearest (in ratio) to span / n: about n ticks over span."""
    raw = max(span / max(n, 1), 1e-12)
    mag = 10 ** math.floor(math.log10(raw))
    return min((k * mag for k in (1, 2, 5, 10)), key=lambda s: abs(math.log(s / raw)))


def _fmt_bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def _vertical_text(img: Image.Image, xy_bottom_center: tuple[int, int], text: str, font, fill) -> None:
    """Text rotated 90 degrees (reading upwards), its bottom centred on the point."""
    d = ImageDraw.Draw(img)
    w, h = _text_size(d, text, font)
    tile = Image.new("RGBA", (w + 2, h + 4), (0, 0, 0, 0))
    ImageDraw.Draw(tile).text((1, -d.textbbox((0, 0), text, font=font)[1] + 1), text, font=font, fill=fill)
    tile = tile.rotate(90, expand=True)
    x, y = xy_bottom_center
    img.paste(tile, (x - tile.width // 2, y - tile.height), tile)


# ---- the data behind the map

def keep_map(report, image_spans, n_prompt: int, n_cols: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Per layer and column, the share of (KV head, position) cells kept, split image / text.

    Column c holds positions ``[c * bin, (c + 1) * bin)``, ``bin = ceil(n_prompt / n_cols)``.
    Returns ``(image_frac [L, cols], text_frac [L, cols], bin)``; image_frac + text_frac is the
    fraction of the column's (head, position) cells kept, so a column of one position kept by
    every head sums to 1 and an evicted one to 0.
    """
    L = len(report.kept)
    binw = max(1, math.ceil(n_prompt / max(n_cols, 1)))
    cols = math.ceil(n_prompt / binw) if n_prompt else 0
    is_image = np.zeros(n_prompt, dtype=bool)
    for p0, n in image_spans:
        is_image[max(p0, 0):max(min(p0 + n, n_prompt), 0)] = True
    img = np.zeros((L, cols))
    txt = np.zeros((L, cols))
    for l, heads in enumerate(report.kept):
        counts = np.zeros(n_prompt)
        for pos in heads:
            pos = np.asarray(pos, dtype=np.int64)
            np.add.at(counts, pos[(pos >= 0) & (pos < n_prompt)], 1)
        col = np.arange(n_prompt) // binw                                       # [n_prompt]
        cells = np.bincount(col, minlength=cols) * max(len(heads), 1)           # [cols]
        img[l] = np.bincount(col, weights=counts * is_image, minlength=cols) / np.maximum(cells, 1)
        txt[l] = np.bincount(col, weights=counts * ~is_image, minlength=cols) / np.maximum(cells, 1)
    return img, txt, binw


# ---- the picture

def draw(report, image_spans, n_prompt: int, title: str, *, width: int = 1200) -> Image.Image:
    """The report as one RGB image ``width`` pixels wide (height follows the layer count).

    ``report``: a CompressReport (policy, budget, sparsity [L] or None, layer_budgets [L],
    kept[l][h] positions, kv_bytes_before / after, seconds); ``image_spans``: (first
    position, length) of each image in the prompt; ``n_prompt``: prompt length; ``title``:
    the first line (e.g. the model); the second line is made from the report.

    The returned image's ``info["map"]`` gives the keep map's geometry: ``box`` (left, top,
    right, bottom) in pixels, ``x_edges`` [cols + 1] (column edges from ``left``), ``row_h``
    (pixels of a layer row), ``bin`` (positions per column) and ``cols``; column c of layer l
    fills ``x in [left + x_edges[c], left + x_edges[c+1])``, ``y in [top + l*row_h, top +
    (l+1)*row_h)``, and holds positions ``[c*bin, (c+1)*bin)``.
    """
    L = len(report.kept)
    n_prompt = int(n_prompt)
    if L == 0 or n_prompt <= 0:
        raise ValueError(f"nothing to draw: {L} layers, n_prompt={n_prompt}")
    if width < 800:
        raise ValueError(f"width={width}, expected at least 800 pixels")
    budgets = np.asarray(report.layer_budgets, dtype=np.float64).reshape(-1)
    sparsity = None if report.sparsity is None else np.asarray(report.sparsity, dtype=np.float64).reshape(-1)
    spans = [(int(p0), int(n)) for p0, n in image_spans]
    n_image = sum(max(0, min(p0 + n, n_prompt) - max(p0, 0)) for p0, n in spans)

    f_title, f_sub, f_head = _font(22, True), _font(14), _font(15, True)
    f_lab, f_tick, f_val = _font(13), _font(12), _font(11)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    th = _text_size(probe, "Ag0", f_tick)[1]

    ml, mr = 78, 78                              # left: layer labels, y axis; right: token axis
    plot_w = width - ml - mr

    # the text lines that wrap when the picture is narrow
    kv = (f"KV {_fmt_bytes(report.kv_bytes_before)} \u2192 {_fmt_bytes(report.kv_bytes_after)}"
          + (f" ({report.kv_bytes_after / report.kv_bytes_before:.1%})" if report.kv_bytes_before else ""))
    sub_lines = _wrap([f"policy {report.policy}", f"budget \u03b1 = {report.budget:g}",
                       f"prompt {n_prompt} tokens ({f'{n_image} image' if spans else 'no image'})", kv,
                       *([f"kept {report.kept_fraction:.1%} of prompt entries"] if hasattr(report, "kept_fraction")
                         else []), f"compress {report.seconds * 1e3:.1f} ms"], "   \u00b7   ", f_sub, width - ml)
    binw = max(1, math.ceil(n_prompt / plot_w))
    b_lines = _wrap(([f"{binw} positions per column (averaged)"] if binw > 1 else [])
                    + ["colour strength = fraction of the layer's KV heads that kept the position",
                       "white = evicted by every head"], "; ", f_lab, width - ml)

    # panel (a)'s legend, in as many lines as the width needs: [(x, line, colour, label)]
    legend_a, lx, line = [], ml, 0
    for color, label in ((SPARSITY, "post-vision sparsity (share of window attention weights < p \u00b7 row max)")
                         if sparsity is not None else (MUTED, "(sparsity not gathered)"),
                         (BUDGET, "layer budget: prompt tokens kept per KV head"),
                         (None, f"target \u03b1 = {report.budget:g}")):
        w = 22 + _text_size(probe, label, f_lab)[0]
        if lx > ml and lx + w > width - 20:
            lx, line = ml, line + 1
        legend_a.append((lx, line, color, label))
        lx += w + 26

    # keep-map geometry: columns share the plot width (whole pixels, sizes differing by at
    # most one), at least one pixel each
    cols = math.ceil(n_prompt / binw)
    map_w = plot_w
    x_edges = [round(c * map_w / cols) for c in range(cols + 1)]   # [cols + 1], relative to the map
    row_h = max(3, min(34, 420 // L))

    # vertical layout
    y = 18
    y_title = y
    y += 30
    y_sub = y
    y += 32 + 18 * (len(sub_lines) - 1)
    y_a_head = y
    y += 24
    y_a_legend = y
    y += 26 + 20 * line
    a_top = y + 30                               # room for value labels above 100 %
    a_h = 220
    a_bot = a_top + a_h
    y = a_bot + th + 34                          # layer ticks and axis label
    y_b_head = y
    y += 24
    y_b_sub = y
    y += 26 + 17 * (len(b_lines) - 1)
    band_top = y
    band_h = 20
    m_top = band_top + band_h + 4
    m_bot = m_top + L * row_h
    y = m_bot + th + 34                          # position ticks and axis label
    y_legend = y
    height = y_legend + 44

    img = Image.new("RGB", (width, height), BG)
    d = ImageDraw.Draw(img)

    # ---- title
    d.text((ml - 40, y_title), title, font=f_title, fill=INK)
    for i, line in enumerate(sub_lines):
        d.text((ml - 40, y_sub + 18 * i), line, font=f_sub, fill=MUTED)

    # ---- (a) sparsity and budgets per layer on one 0-100 % axis; the budget in tokens on the right
    d.text((ml - 40, y_a_head), "(a) Post-vision sparsity and the budget each layer got", font=f_head, fill=INK)
    for lx, line, color, label in legend_a:
        ly = y_a_legend + 20 * line
        if color is None:                       # the dashed target line
            for x in range(lx, lx + 18, 6):
                d.line([x, ly + 8, x + 3, ly + 8], fill=BUDGET, width=2)
        elif color != MUTED:
            d.rectangle([lx, ly + 2, lx + 14, ly + 14], fill=color)
        d.text((lx + 22, ly), label, font=f_lab, fill=INK if color != MUTED else MUTED)

    def ya(frac: float) -> int:
        return round(a_bot - max(0.0, min(frac, 1.0)) * a_h)

    for k in range(5):                          # left axis: percent, with grid lines
        v = k / 4
        yy = ya(v)
        d.line([ml, yy, ml + plot_w, yy], fill=GRID if k else FRAME)
        lab = f"{v:.0%}"
        w, _ = _text_size(d, lab, f_tick)
        d.text((ml - 8 - w, yy - th // 2 - 2), lab, font=f_tick, fill=MUTED)
    tstep = max(1, int(_nice_step(n_prompt, 4)))
    for tok in range(0, n_prompt + 1, tstep):   # right axis: tokens kept per KV head
        yy = ya(tok / n_prompt)
        d.line([ml + plot_w, yy, ml + plot_w + 4, yy], fill=BUDGET)
        d.text((ml + plot_w + 8, yy - th // 2 - 2), str(tok), font=f_tick, fill=BUDGET)
    d.line([ml + plot_w, a_top, ml + plot_w, a_bot], fill=BUDGET)
    _vertical_text(img, (ml - 58, (a_top + a_bot) // 2 + 10), "%", f_lab, MUTED)
    _vertical_text(img, (ml + plot_w + 60, (a_top + a_bot) // 2 + 50), "tokens / KV head", f_lab, BUDGET)

    group = plot_w / L
    bar = min(max(1.0, group * 0.36), 56.0)
    vw, vh = _text_size(d, "100%", f_val)
    val_fits = bar >= vw + 2
    val_fits_v = not val_fits and bar >= vh + 1
    label_every = max(1, math.ceil(_text_size(d, str(L - 1), f_tick)[0] * 1.8 / group))
    for l in range(L):
        cx = ml + group * (l + 0.5)
        bars = []
        if sparsity is not None and l < len(sparsity) and np.isfinite(sparsity[l]):
            bars.append((cx - bar - 1, float(sparsity[l]), SPARSITY, f"{sparsity[l]:.0%}"))
        if l < len(budgets):
            b = float(budgets[l])
            bars.append((cx + 1, b / n_prompt, BUDGET, f"{b:.0f}"))
        for x0, frac, color, lab in bars:
            top = ya(frac)
            d.rectangle([round(x0), top, max(round(x0), round(x0 + bar) - 1), a_bot], fill=color)
            if val_fits:
                w, _ = _text_size(d, lab, f_val)
                d.text((round(x0 + bar / 2 - w / 2), top - th - 4), lab, font=f_val, fill=INK)
            elif val_fits_v:
                _vertical_text(img, (round(x0 + bar / 2), top - 2), lab, f_val, INK)
        if l % label_every == 0:
            lab = str(l)
            w, _ = _text_size(d, lab, f_tick)
            d.text((round(cx - w / 2), a_bot + 5), lab, font=f_tick, fill=MUTED)
    yb = ya(report.budget)                      # the target: alpha of the prompt per head on average
    for x in range(ml, ml + plot_w, 12):
        d.line([x, yb, min(x + 6, ml + plot_w), yb], fill=BUDGET, width=1)
    w, _ = _text_size(d, "layer", f_lab)
    d.text((ml + (plot_w - w) // 2, a_bot + th + 12), "layer", font=f_lab, fill=MUTED)

    # ---- (b) the keep map
    d.text((ml - 40, y_b_head), "(b) Prompt tokens each layer kept", font=f_head, fill=INK)
    for i, line in enumerate(b_lines):
        d.text((ml - 40, y_b_sub + 17 * i), line, font=f_lab, fill=MUTED)

    x0m = ml
    # region band: text grey-blue, image orange, labelled where there is room
    d.rectangle([x0m, band_top, x0m + map_w - 1, band_top + band_h - 1], fill=_shade(TEXT, 0.25))
    for i, (p0, n) in enumerate(spans):
        a, b = max(p0, 0), min(p0 + n, n_prompt)
        if b <= a:
            continue
        xa, xb = x0m + x_edges[a // binw], x0m + x_edges[(b - 1) // binw + 1]
        d.rectangle([xa, band_top, xb - 1, band_top + band_h - 1], fill=IMAGE)
        lab = f"image {i + 1}: {n} tokens" if len(spans) > 1 else f"image: {n} tokens"
        w, h = _text_size(d, lab, f_tick)
        if w + 8 <= xb - xa:
            d.text(((xa + xb - w) // 2, band_top + (band_h - h) // 2 - 2), lab, font=f_tick, fill=BG)
    # text labels in the text gaps that are wide enough
    edges = sorted((max(p0, 0), min(p0 + n, n_prompt)) for p0, n in spans)
    gaps, pos = [], 0
    for a, b in edges:
        if a > pos:
            gaps.append((pos, a))
        pos = max(pos, b)
    if pos < n_prompt:
        gaps.append((pos, n_prompt))
    for a, b in gaps:
        xa, xb = x0m + x_edges[a // binw], x0m + x_edges[(b - 1) // binw + 1]
        for lab in (f"text: {b - a} tokens", "text"):
            w, h = _text_size(d, lab, f_tick)
            if w + 8 <= xb - xa:
                d.text(((xa + xb - w) // 2, band_top + (band_h - h) // 2 - 2), lab, font=f_tick, fill=INK)
                break

    fi, ft, _ = keep_map(report, spans, n_prompt, cols)
    px = np.empty((L * row_h, map_w, 3), dtype=np.uint8)
    bg = np.array(BG, dtype=np.float64)
    tot = fi + ft                                                     # [L, cols]
    strength = np.where(tot > 0, MIN_SHADE + (1 - MIN_SHADE) * np.minimum(tot, 1), 0.0)
    share_i = np.divide(fi, tot, out=np.zeros_like(fi), where=tot > 0)
    hue = share_i[..., None] * np.array(IMAGE) + (1 - share_i[..., None]) * np.array(TEXT)  # [L, cols, 3]
    rgb = np.rint(bg + (hue - bg) * strength[..., None]).astype(np.uint8)
    px[:] = np.repeat(np.repeat(rgb, row_h, axis=0), np.diff(x_edges), axis=1)
    if map_w // cols >= 6:                                            # token boundaries
        px[:, np.array(x_edges[1:-1]) - 1] = np.minimum(px[:, np.array(x_edges[1:-1]) - 1],
                                                         np.array(GRID, dtype=np.uint8))
    if row_h >= 8:                                                    # layer boundaries
        px[row_h - 1::row_h] = np.minimum(px[row_h - 1::row_h], np.array(GRID, dtype=np.uint8))
    img.paste(Image.fromarray(px, "RGB"), (x0m, m_top))
    d.rectangle([x0m - 1, m_top - 1, x0m + map_w, m_bot], outline=FRAME)

    # layer labels
    label_every = max(1, math.ceil((th + 3) / row_h))
    for l in range(0, L, label_every):
        lab = f"L{l}"
        w, _ = _text_size(d, lab, f_tick)
        d.text((x0m - 8 - w, m_top + l * row_h + (row_h - th) // 2 - 2), lab, font=f_tick, fill=MUTED)
    _vertical_text(img, (ml - 56, (m_top + m_bot) // 2 + 20), "layer", f_lab, MUTED)
    # position ticks
    step = max(1, int(_nice_step(n_prompt, max(2, map_w // 90))))
    for p in range(0, n_prompt + 1, step):
        xx = x0m + round(p / (cols * binw) * map_w) if p < cols * binw else x0m + map_w
        d.line([xx, m_bot, xx, m_bot + 4], fill=FRAME)
        lab = str(p)
        w, _ = _text_size(d, lab, f_tick)
        d.text((min(xx - w // 2, x0m + map_w + mr - w - 4), m_bot + 6), lab, font=f_tick, fill=MUTED)
    lab = "prompt position"
    w, _ = _text_size(d, lab, f_lab)
    d.text((x0m + (map_w - w) // 2, m_bot + th + 14), lab, font=f_lab, fill=MUTED)

    # legend: a ramp per hue, 0 -> every KV head
    lx = x0m
    for color, name in ((IMAGE, "image token kept"), (TEXT, "text token kept"))[0 if spans else 1:]:
        for k in range(60):
            c = _shade(color, (k + 1) / 60)
            d.line([lx + k, y_legend + 2, lx + k, y_legend + 16], fill=c)
        d.rectangle([lx - 1, y_legend + 1, lx + 60, y_legend + 17], outline=FRAME)
        d.text((lx + 68, y_legend + 1), f"{name}  (1 head \u2192 all)", font=f_lab, fill=INK)
        lx += 68 + _text_size(d, f"{name}  (1 head \u2192 all)", f_lab)[0] + 36
    d.rectangle([lx, y_legend + 1, lx + 16, y_legend + 17], fill=BG, outline=FRAME)
    d.text((lx + 24, y_legend + 1), "evicted", font=f_lab, fill=INK)

    img.info["map"] = {"box": (x0m, m_top, x0m + map_w, m_bot), "x_edges": x_edges, "row_h": row_h,
                       "bin": binw, "cols": cols}
    return img


# ---- the run: model, prefill with statistics, compress

def _load_demo():
    spec = importlib.util.spec_from_file_location("demo", TOOLS / "demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# The demo's tower, at 112 px: 64 image tokens, so the map shows an image region worth looking at.
DEMO_VISION = dict(image=112, patch=14, hidden=64, layers=2, heads=4, ff=128)
DEMO_PROMPT = "What is in this picture? Tell me about the sun, the river and the trees by the water."
TEXT_PROMPT = ("Once upon a time there was a little cat who lived in a small house by the river. Every morning "
               "the cat looked out of the window at the boats, the birds and the people walking along the water.")


def build_demo(outdir: Path) -> tuple[Path, Path]:
    """The tiny random LLaVA of tools/demo.py as a GGUF, and its picture."""
    demo = _load_demo()
    hf_dir = demo.write_model(outdir / "hf-llava", vision=DEMO_VISION)
    gguf_path = outdir / "tiny-llava-f16.gguf"
    demo.load_converter().convert(hf_dir, gguf_path, "f16")
    return gguf_path, demo.draw_picture(outdir / "picture.png")


def run(model_path, *, mmproj=None, image=None, prompt: str | None = None, policy: str = "vl-cache",
        budget: float = 0.1, threads=None, n_ctx: int = 4096, picture_dir=None):
    """Prefill with the policy's statistics, compress once; returns (report, image_spans, n_prompt, title).

    With no ``image`` a model with vision gets the demo's drawing (written to ``picture_dir``).
    """
    import vlcache_native as vc

    with vc.Model(model_path, mmproj, n_ctx=n_ctx, n_threads=threads) as model:
        if image is None and model.has_vision:
            image = _load_demo().draw_picture(Path(picture_dir or tempfile.gettempdir()) / "plot_kv-picture.png")
        if prompt is None:
            prompt = DEMO_PROMPT if image is not None else TEXT_PROMPT
        chunks = model.prompt_chunks(prompt, [image] if image is not None else [])
        n_prompt = sum(len(c) for c in chunks)
        with model.session() as sess:
            sess.prefill(chunks, kv_stats=policy)
            report = sess.compress(budget, policy)
            spans = sess.image_spans
        i = model.info
        name = os.path.basename(os.fspath(model_path))
        title = f"{name}  \u2014  {i['n_layer']} layers, {i['n_head']} heads, {i['n_head_kv']} KV heads"
    return report, spans, n_prompt, title


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", help="GGUF model (default: write the tiny demo LLaVA)")
    ap.add_argument("--mmproj", help="llama.cpp vision-tower GGUF for a text GGUF")
    ap.add_argument("--image", help="picture for the prompt (default: the demo's drawing when the model has vision)")
    ap.add_argument("--prompt", default=None, help="the question (default: one about the demo picture)")
    ap.add_argument("--policy", default="vl-cache", help="KV policy (vlcache_native.kvcache.POLICIES)")
    ap.add_argument("--budget", type=float, default=0.1, help="share of the prompt's KV entries to keep, in (0, 1]")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--width", type=int, default=1200, help="picture width in pixels")
    ap.add_argument("--demo-dir", default=None, help="where the demo model goes (default: a temporary folder)")
    ap.add_argument("-o", "--output", default="kv.png")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="plot_kv-") as tmp:
        model, image = args.model, args.image
        if model is None:
            outdir = Path(args.demo_dir or tmp)
            outdir.mkdir(parents=True, exist_ok=True)
            model, picture = build_demo(outdir)
            image = image or picture
        report, spans, n_prompt, title = run(model, mmproj=args.mmproj, image=image, prompt=args.prompt,
                                             policy=args.policy, budget=args.budget, threads=args.threads,
                                             n_ctx=args.n_ctx, picture_dir=tmp)
    pic = draw(report, spans, n_prompt, title, width=args.width)
    out = Path(args.output)
    pic.save(out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
