"""test_image.py: vlcache_native.image against Hugging Face transformers' slow (PIL) processors.

What it checks:
  - load_image: every input kind (path, bytes, PIL, uint8 arrays) and mode (RGBA, LA, P with
    transparency, L, I;16, CMYK), EXIF orientation, and the error cases.
  - ImageProcessor pixel values vs CLIPImageProcessorPil / LlavaImageProcessorPil /
    LlavaNextImageProcessorPil on random and structured images of many shapes. Tolerance:
    exact (max abs diff == 0). Both sides run the same Pillow resize on the same uint8 data
    and the same float64-rescale / float32-normalize arithmetic, so any difference is a bug.
  - pack_llava_next_features vs LlavaNextModel.pack_image_features (called with a minimal
    config object; it uses nothing else of the model) on random features: exact.
  - llava_next_num_tokens vs the <image> expansion of a real LlavaNextProcessor.

What it is not: no C library, no vision tower (those are tested with the models).
"""
from __future__ import annotations

import io
import types

import numpy as np
import pytest
from conftest import oracle
import PIL.Image
import PIL.ImageOps

from vlcache_native.image import (ImageError, ImageProcessor, llava_next_num_tokens, load_image,
                                  pack_llava_next_features, processor_for_model, select_best_resolution)

torch = oracle("torch")
oracle("transformers")
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil  # noqa: E402
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil  # noqa: E402
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil  # noqa: E402
from transformers.models.llava_next import modeling_llava_next as hf_next  # noqa: E402

HF_CLASSES = {"CLIPImageProcessor": CLIPImageProcessorPil, "LlavaImageProcessor": LlavaImageProcessorPil,
              "LlavaNextImageProcessor": LlavaNextImageProcessorPil}
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def clip_cfg(short=32, crop=32, kind="CLIPImageProcessor", **kw):
    cfg = {"image_processor_type": kind, "do_resize": True, "size": {"shortest_edge": short}, "resample": 3,
           "do_center_crop": True, "crop_size": {"height": crop, "width": crop}, "do_rescale": True,
           "rescale_factor": 0.00392156862745098, "do_normalize": True, "image_mean": MEAN, "image_std": STD,
           "do_convert_rgb": True}
    cfg.update(kw)
    return cfg


def next_cfg(tile=32, pinpoints=((32, 64), (64, 32), (64, 64), (96, 32), (32, 96)), **kw):
    return clip_cfg(tile, tile, "LlavaNextImageProcessor", do_pad=True,
                    image_grid_pinpoints=[list(p) for p in pinpoints], **kw)


def hf_pixels(cfg, image):
    """pixel_values [n_tiles, 3, S, S] (float32) and image_sizes of the HF slow processor."""
    kw = {k: v for k, v in cfg.items() if k != "image_processor_type"}
    out = HF_CLASSES[cfg["image_processor_type"]](**kw)(image, return_tensors="np")
    px = np.asarray(out["pixel_values"])
    px = px[0] if cfg["image_processor_type"] == "LlavaNextImageProcessor" else px
    return px, (tuple(int(v) for v in out["image_sizes"][0]) if "image_sizes" in out else None)


def compare(cfg, ours_input, hf_input=None):
    """Max abs difference between our pixels and HF's; shapes and dtype must agree."""
    hf_input = ours_input if hf_input is None else hf_input
    ours = ImageProcessor(cfg)(ours_input)
    ref, sizes = hf_pixels(cfg, hf_input)
    assert ours.pixels.dtype == np.float32 and ref.dtype == np.float32
    assert ours.pixels.shape == ref.shape, (ours.pixels.shape, ref.shape)
    if sizes is not None:
        assert ours.image_size == sizes
    return float(np.abs(ours.pixels - ref).max())


def rand_rgb(rng, h, w):
    return PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def structured(h, w):
    """Smooth gradients + hard edges: exercises the bicubic filter's over/undershoot clipping."""
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // max(w - 1, 1)).astype(np.uint8)
    g = (y * 255 // max(h - 1, 1)).astype(np.uint8)
    b = (((x // 3 + y // 3) % 2) * 255).astype(np.uint8)
    return PIL.Image.fromarray(np.stack([r, g, b], -1))


SHAPES = [(32, 32), (40, 40), (45, 80), (80, 45), (7, 5), (3, 50), (50, 1), (1, 1), (33, 97), (100, 31)]


# ---------------------------------------------------------------------------------------
# Pixel values vs HF
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("h,w", SHAPES)
def test_clip_processor_matches_hf(h, w):
    rng = np.random.default_rng(h * 1000 + w)
    for img in (rand_rgb(rng, h, w), structured(h, w)):
        assert compare(clip_cfg(), img) == 0.0
        # crop larger than the resized short side: HF's center_crop zero-pads
        assert compare(clip_cfg(short=24, crop=30), img) == 0.0


def test_clip_processor_real_336():
    rng = np.random.default_rng(1)
    img = rand_rgb(rng, 480, 640)
    assert compare(clip_cfg(336, 336), img) == 0.0


def test_clip_processor_options_match_hf():
    rng = np.random.default_rng(2)
    img = rand_rgb(rng, 37, 53)
    cases = [
        clip_cfg(size={"height": 20, "width": 28}, do_center_crop=False),       # exact-size resize
        clip_cfg(do_resize=False, crop_size={"height": 40, "width": 60}),      # crop only, padded
        clip_cfg(resample=2),                                                  # bilinear
        clip_cfg(do_normalize=False),
        clip_cfg(do_rescale=False),                                            # normalize uint8
        clip_cfg(size=30, crop_size=30),                                       # int sizes (old configs)
        clip_cfg(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]),
    ]
    for cfg in cases:
        assert compare(cfg, img) == 0.0, cfg


@pytest.mark.parametrize("h,w", [(30, 50), (50, 30), (40, 40), (5, 64), (64, 3)])
def test_llava_pad_to_square_matches_hf(h, w):
    rng = np.random.default_rng(h + w)
    img = rand_rgb(rng, h, w)
    cfg = clip_cfg(kind="LlavaImageProcessor", do_pad=True)
    assert compare(cfg, img) == 0.0
    assert compare(clip_cfg(kind="LlavaImageProcessor", do_pad=False), img) == 0.0
    # the padding is really there: a non-square image padded differs from the unpadded result
    if h != w:
        a = ImageProcessor(cfg)(img).pixels
        b = ImageProcessor(clip_cfg(kind="LlavaImageProcessor", do_pad=False))(img).pixels
        assert np.abs(a - b).max() > 0.1


PINPOINT_SETS = [
    ((32, 64), (64, 32), (64, 64), (96, 32), (32, 96)),            # llava-1.6 layout at tile 32
    ((32, 32), (32, 64), (64, 32), (64, 64), (96, 96), (32, 128)),
    ((64, 96), (96, 64)),
]


@pytest.mark.parametrize("pins", PINPOINT_SETS)
@pytest.mark.parametrize("h,w", [(32, 32), (20, 70), (70, 20), (50, 45), (100, 100), (9, 200), (200, 9), (33, 65),
                                 (1, 500), (500, 1), (1, 1)])
def test_llava_next_processor_matches_hf(pins, h, w):
    rng = np.random.default_rng(h * 7 + w)
    cfg = next_cfg(32, pins)
    img = rand_rgb(rng, h, w)
    assert compare(cfg, img) == 0.0
    p = ImageProcessor(cfg)(img)
    best = select_best_resolution((h, w), [list(x) for x in pins])
    assert p.best_resolution == best and p.grid == (best[0] // 32, best[1] // 32)
    assert p.n_tiles == 1 + p.grid[0] * p.grid[1]
    # the count of tiles agrees with HF's model-side helper
    assert p.n_tiles == hf_next.image_size_to_num_patches((h, w), [list(x) for x in pins], 32)


def test_llava_next_processor_real_336():
    rng = np.random.default_rng(3)
    cfg = next_cfg(336, ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)))
    for h, w in ((480, 640), (300, 1000)):
        assert compare(cfg, rand_rgb(rng, h, w)) == 0.0


def test_from_mmproj():
    p = ImageProcessor.from_mmproj(336, MEAN, STD)
    assert p.kind == "clip" and p.size == {"shortest_edge": 336} and p.tile_size == 336 and not p.do_pad
    img = structured(60, 90)
    ref = hf_pixels(clip_cfg(336, 336), img)[0]
    assert np.array_equal(p(img).pixels, ref)
    # llama.cpp flattens pinpoints as (width, height) pairs
    q = ImageProcessor.from_mmproj(32, MEAN, STD, [64, 32, 32, 64, 96, 32])
    assert q.kind == "llava_next" and q.image_grid_pinpoints == [(32, 64), (64, 32), (32, 96)]
    assert np.array_equal(q(img).pixels, hf_pixels(next_cfg(32, ((32, 64), (64, 32), (32, 96))), img)[0])


# ---------------------------------------------------------------------------------------
# Image kinds and modes vs HF (HF gets the PIL image / array; we get the same input)
# ---------------------------------------------------------------------------------------

def _rgba(rng, h, w):
    a = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    a[: h // 3, :, 3] = 0        # fully transparent band
    a[h // 3: h // 2, :, 3] = 255
    return a


@pytest.mark.parametrize("cfg", [clip_cfg(), next_cfg()], ids=["clip", "next"])
def test_modes_match_hf(cfg):
    rng = np.random.default_rng(5)
    rgba = _rgba(rng, 30, 41)
    grey = rng.integers(0, 256, (30, 41), dtype=np.uint8)
    pal = PIL.Image.fromarray(rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)).quantize(16)
    pal.info["transparency"] = 3
    pal_opaque = pal.copy()
    pal_opaque.info.pop("transparency")
    l_trns = PIL.Image.fromarray(grey, "L")
    l_trns.info["transparency"] = 7
    images = {
        "RGBA": PIL.Image.fromarray(rgba, "RGBA"),
        "LA": PIL.Image.fromarray(rgba[..., [0, 3]], "LA"),
        "P+transparency": pal,
        "P": pal_opaque,
        "L": PIL.Image.fromarray(grey, "L"),
        "L+transparency": l_trns,
        "I;16": PIL.Image.fromarray((grey.astype(np.uint16) * 257)).convert("I;16"),
        "CMYK": PIL.Image.fromarray(rgba, "RGBA").convert("RGB").convert("CMYK"),
        "1": PIL.Image.fromarray(grey, "L").convert("1"),
    }
    for name, img in images.items():
        assert compare(cfg, img) == 0.0, name
    # alpha really was composited onto white (not dropped): fully transparent rows are white
    assert np.all(np.asarray(load_image(images["RGBA"]))[: 10] == 255)


@pytest.mark.parametrize("cfg", [clip_cfg(), next_cfg()], ids=["clip", "next"])
def test_arrays_match_hf(cfg):
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)
    rgba = _rgba(rng, 30, 41)
    grey = rng.integers(0, 256, (30, 41), dtype=np.uint8)
    assert compare(cfg, rgb) == 0.0
    assert compare(cfg, rgba) == 0.0                      # HF: float64 blend onto white, np.round
    assert compare(cfg, grey, grey[..., None]) == 0.0     # HF takes grey as [H, W, 1]
    # the array RGBA path rounds in float64: check it against the formula directly
    a = rgba[..., 3:4] / 255
    want = np.round(a * rgba[..., :3] + (1 - a) * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(load_image(rgba)), want)


def test_bytes_and_path_match_hf(tmp_path):
    rng = np.random.default_rng(7)
    img = rand_rgb(rng, 45, 70)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    data = buf.getvalue()
    (tmp_path / "a.png").write_bytes(data)
    for src in (data, bytearray(data), tmp_path / "a.png", str(tmp_path / "a.png")):
        assert compare(clip_cfg(), src, img) == 0.0
        assert compare(next_cfg(), src, img) == 0.0


def test_exif_orientation(tmp_path):
    rng = np.random.default_rng(8)
    img = rand_rgb(rng, 30, 50)                            # stored landscape
    exif = PIL.Image.Exif()
    exif[0x0112] = 6                                        # rotate 90 CW to display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, quality=95)
    data = buf.getvalue()
    loaded = load_image(data)
    assert loaded.size == (30, 50)                          # (w, h): displayed portrait
    upright = PIL.ImageOps.exif_transpose(PIL.Image.open(io.BytesIO(data)))
    assert np.array_equal(np.asarray(loaded), np.asarray(upright.convert("RGB")))
    assert compare(clip_cfg(), data, upright) == 0.0
    assert compare(next_cfg(), data, upright) == 0.0
    p = ImageProcessor(next_cfg())(data)
    assert p.image_size == (50, 30)
    # a PIL image is taken as given (as HF does): no transpose
    assert load_image(PIL.Image.open(io.BytesIO(data))).size == (50, 30)


# ---------------------------------------------------------------------------------------
# LLaVA-NeXT packing and token counts vs HF
# ---------------------------------------------------------------------------------------

def hf_pack(feats, image_size, pins, tile, patch, newline):
    cfg = types.SimpleNamespace(vision_config=types.SimpleNamespace(image_size=tile, patch_size=patch),
                                image_grid_pinpoints=[list(p) for p in pins])
    out, lens = hf_next.LlavaNextModel.pack_image_features(
        types.SimpleNamespace(config=cfg), [torch.from_numpy(feats)], torch.tensor([list(image_size)]),
        "default", None if newline is None else torch.from_numpy(newline))
    return out[0].numpy(), int(lens[0])


@pytest.mark.parametrize("pins", PINPOINT_SETS)
@pytest.mark.parametrize("h,w", [(32, 32), (20, 70), (70, 20), (50, 45), (100, 100), (9, 200), (33, 65), (64, 63),
                                 (1, 500)])
def test_pack_matches_hf(pins, h, w):
    tile, patch, dim = 32, 8, 6
    g = tile // patch
    rng = np.random.default_rng(h * 3 + w)
    n_tiles = hf_next.image_size_to_num_patches((h, w), [list(p) for p in pins], tile)
    feats = rng.standard_normal((n_tiles, g * g, dim)).astype(np.float32)
    newline = rng.standard_normal(dim).astype(np.float32)
    for nl in (newline, None):
        ref, n_ref = hf_pack(feats, (h, w), pins, tile, patch, nl)
        ours = pack_llava_next_features(feats, (h, w), pins, tile, g, nl)
        assert ours.shape == ref.shape and np.array_equal(ours, ref)
        if nl is not None:  # the token count includes the newlines
            assert llava_next_num_tokens((h, w), pins, tile, g) == n_ref == len(ours)


def test_pack_single_tile_and_errors():
    rng = np.random.default_rng(9)
    feats = rng.standard_normal((1, 16, 4)).astype(np.float32)
    nl = rng.standard_normal(4).astype(np.float32)
    out = pack_llava_next_features(feats, (10, 10), [(32, 32)], 32, 4, nl)
    assert np.array_equal(out, hf_pack(feats, (10, 10), [(32, 32)], 32, 8, nl)[0])
    with pytest.raises(ValueError, match="grid tiles"):
        pack_llava_next_features(np.zeros((4, 16, 4), np.float32), (30, 60), [(32, 64)], 32, 4, nl)
    with pytest.raises(ValueError, match="newline"):
        pack_llava_next_features(np.zeros((3, 16, 4), np.float32), (30, 60), [(32, 64)], 32, 4, nl[:3])


def _image_token_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    tk = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tok


def test_num_tokens_matches_llava_next_processor():
    from transformers import LlavaNextProcessor
    tok = _image_token_tokenizer()
    pins = [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]]
    ip = LlavaNextImageProcessorPil(**{k: v for k, v in next_cfg(32, pins).items() if k != "image_processor_type"})
    hp = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                            num_additional_image_tokens=1)
    image_id = tok.convert_tokens_to_ids("<image>")
    ours_proc = ImageProcessor(next_cfg(32, pins))
    ours_proc.patch_size = 8
    rng = np.random.default_rng(10)
    for h, w in [(32, 32), (20, 70), (70, 20), (50, 45), (100, 100), (9, 200), (33, 65)]:
        img = rand_rgb(rng, h, w)
        ids = hp(images=img, text="hello <image> hello", return_tensors="np")["input_ids"][0]
        n_hf = int((ids == image_id).sum())
        assert llava_next_num_tokens((h, w), pins, 32, 4) == n_hf
        assert ours_proc.num_image_tokens(ours_proc(img)) == n_hf
    clip = ImageProcessor(clip_cfg(32, 32))
    assert clip.num_image_tokens((10, 20), patch_size=8) == 16
    assert clip.num_image_tokens((10, 20), patch_size=8, select_full=True) == 17


def test_features_glue():
    """ImageProcessor.features: LLaVA-1.5 passes the tile through; NeXT packs with the newline."""
    rng = np.random.default_rng(11)
    img = rand_rgb(rng, 20, 70)
    clip = ImageProcessor(clip_cfg())
    pc = clip(img)
    tf = rng.standard_normal((1, 16, 5)).astype(np.float32)
    assert np.array_equal(clip.features(pc, tf), tf[0])
    nxt = ImageProcessor(next_cfg())
    nxt.patch_size = 8
    pn = nxt(img)
    tf = rng.standard_normal((pn.n_tiles, 16, 5)).astype(np.float32)
    nl = rng.standard_normal(5).astype(np.float32)
    got = nxt.features(pn, tf, nl)
    assert np.array_equal(got, pack_llava_next_features(tf, (20, 70), nxt.image_grid_pinpoints, 32, 4, nl))
    assert len(got) == nxt.num_image_tokens(pn)


def test_processor_for_model_one_file():
    """A one-file GGUF carries HF's preprocessor_config.json; the ViT patch size comes from the model."""
    import json
    cfg = next_cfg(32)
    fake = types.SimpleNamespace(vision_info={"image_size": 32, "patch_size": 8, "image_mean": MEAN, "image_std": STD},
                                 metadata=lambda k: json.dumps(cfg) if k == "vlcache.image.processor" else None)
    p = processor_for_model(fake)
    assert p.kind == "llava_next" and p.patch_size == 8 and p.tile_size == 32
    fake.vision_info = dict(fake.vision_info, image_size=48)
    with pytest.raises(ImageError, match="48"):
        processor_for_model(fake)


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------

def test_load_errors(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(missing)
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="cannot decode image.*bad.png"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(ImageError, match="cannot decode image"):
        load_image(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageError, match="cannot decode image"):
        load_image(b"")
    buf = io.BytesIO()
    rand_rgb(np.random.default_rng(0), 40, 40).save(buf, "PNG")
    with pytest.raises(ImageError, match="cannot decode image"):   # truncated file
        load_image(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="zero-size"):
        load_image(PIL.Image.new("RGB", (0, 5)))
    with pytest.raises(ImageError, match="zero-size"):
        load_image(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ImageError, match="uint8"):
        load_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(TypeError):
        load_image(12)
    assert issubclass(ImageError, ValueError)


def test_config_errors():
    with pytest.raises(ImageError, match="image_processor_type"):
        ImageProcessor({"image_processor_type": "SiglipImageProcessor"})
    with pytest.raises(ImageError, match="size"):
        ImageProcessor(clip_cfg(size={"longest_edge": 30}))
    with pytest.raises(ImageError, match="image_mean"):
        ImageProcessor(clip_cfg(image_mean=[0.5, 0.5]))
    with pytest.raises(ImageError, match="pinpoints"):
        ImageProcessor(next_cfg(pinpoints=()))
    with pytest.raises(ImageError, match="no candidate"):
        select_best_resolution((10, 10), [])
    # a Fast config reads as the slow one; null keys take HF's class defaults
    p = ImageProcessor({"image_processor_type": "CLIPImageProcessorFast", "size": None})
    assert p.kind == "clip" and p.size == {"shortest_edge": 224} and p.crop_size == {"height": 224, "width": 224}
