"""Image input for LLaVA models: loading, preprocessing and LLaVA-NeXT feature packing.

What it is: Pillow + NumPy code that turns an image (path, bytes, PIL image or uint8 array)
into the pixel tiles a CLIP vision tower takes, computing exactly what Hugging Face
transformers' slow (PIL backend) image processors compute:

- ``CLIPImageProcessor`` (LLaVA-1.5 as published by llava-hf): shortest-edge resize with
  PIL, center crop (zero padding when the image is smaller), rescale, normalize;
- ``LlavaImageProcessor``: the same, after an optional pad-to-square with the mean colour
  (``do_pad``);
- ``LlavaNextImageProcessor`` (LLaVA-1.6 "anyres"): best resolution from
  ``image_grid_pinpoints``, aspect-preserving resize, zero padding, tiles of the crop size,
  and the whole image squashed to one tile first;

plus, for LLaVA-NeXT, the packing of the tiles' features into the sequence the language
model sees (``pack_llava_next_features``, HF's ``LlavaNextModel.pack_image_features``) and
its length (``llava_next_num_tokens``, the ``<image>`` count of HF's LlavaNextProcessor).

What it is not: no torch, no transformers, no vision tower (the C library runs that).
The "fast" (torchvision) Hugging Face processors resize differently and are not matched;
their configs (``...ImageProcessorFast``) are read as the slow ones.

Layout conventions: images are handled as uint8 arrays ``[H, W, 3]`` (channels last) until
the rescale; ``ProcessedImage.pixels`` is float32 ``[n_tiles, 3, S, S]`` (channels first).
Sizes are (height, width) everywhere except in PIL calls, which take (width, height).
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import PIL.Image
import PIL.ImageOps

from .errors import InvalidArgumentError, InvalidTypeError

__all__ = [
    "ImageError", "ImageNotFoundError", "load_image", "ImageProcessor", "ProcessedImage", "select_best_resolution",
    "pack_llava_next_features", "llava_next_num_tokens", "processor_for_model",
    "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD",
]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The largest encoded image read from a file or bytes (decoding is also capped by Pillow's
# decompression-bomb limit, PIL.Image.MAX_IMAGE_PIXELS, which is kept and enforced: an
# image over it is refused, not only warned about as Pillow does up to twice the limit).
MAX_IMAGE_BYTES = 256 << 20

# LlavaNextImageProcessor's default candidate resolutions, (height, width).
DEFAULT_GRID_PINPOINTS = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))


class ImageError(InvalidArgumentError):
    """An image that cannot be used: undecodable data, zero size, wrong array dtype or shape,
    not a regular file or too large, or a preprocessing configuration this module does not
    support. A VlcacheError and a ValueError."""


class ImageNotFoundError(ImageError, FileNotFoundError):
    """An image path that does not exist (also a FileNotFoundError)."""


# ---------------------------------------------------------------------------------------
# Loading and RGB conversion
# ---------------------------------------------------------------------------------------

def _pil_to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """RGB as HF's ``convert_to_rgb`` does it for a PIL image: an image with an alpha band or a
    ``transparency`` entry (palette / grey with tRNS) is composited onto white with Pillow's
    integer ``alpha_composite``; any other mode goes through ``convert("RGB")``."""
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if has_alpha:
        rgba = image.convert("RGBA")
        white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _array_to_rgb(array: np.ndarray) -> PIL.Image.Image:
    """A uint8 array [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] (channels last) as an RGB image,
    converted as HF's ``convert_to_rgb`` converts arrays: grey repeated over 3 channels, RGBA
    blended onto white in float64 and rounded half to even (np.round)."""
    if array.dtype != np.uint8:
        raise ImageError(f"load_image: an image array must be uint8, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(f"load_image: an image array must have shape (H, W), (H, W, 3) or (H, W, 4), "
                         f"got {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"load_image: zero-size image array {array.shape}")
    if array.shape[2] == 1:
        rgb = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        alpha = array[:, :, 3:4] / 255                                   # float64 [H, W, 1]
        rgb = np.round(alpha * array[:, :, :3] + (1 - alpha) * 255).astype(np.uint8)
    else:
        rgb = array
    return PIL.Image.fromarray(np.ascontiguousarray(rgb))  # uint8 [H, W, 3] -> mode "RGB"


def _decode(data, source: str) -> PIL.Image.Image:
    """Open and fully decode an encoded image (file object), then apply its EXIF orientation."""
    try:
        image = PIL.Image.open(data)  # reads the header only
        # Pillow only warns between 1x and 2x its bomb limit and decodes anyway (a 142-byte
        # TIFF of 2 x 50M pixels took 2 GB): the limit is refused here, before decoding
        limit = PIL.Image.MAX_IMAGE_PIXELS
        if limit and image.width * image.height > limit:
            raise PIL.Image.DecompressionBombError(
                f"{image.width}x{image.height} = {image.width * image.height} pixels, more than "
                f"PIL.Image.MAX_IMAGE_PIXELS = {limit}")
        image.load()
        return PIL.ImageOps.exif_transpose(image)
    except MemoryError:
        raise
    except Exception as e:
        # Pillow's decoders raise more than OSError on corrupt data (UnidentifiedImageError
        # and truncation are OSErrors, but a TIFF whose strip offset is a DOUBLE raises
        # TypeError from load(): found by tests/fuzz); whatever the bytes do, it is this
        raise ImageError(f"cannot decode image {source}: {type(e).__name__}: {e}") from None


def load_image(image: Any) -> PIL.Image.Image:
    """The image as a PIL RGB image, converted the way Hugging Face's image processors convert it.

    ``image`` may be:
      - a path (str or os.PathLike) or encoded bytes (bytes, bytearray, memoryview): decoded
        by Pillow, EXIF orientation applied (``PIL.ImageOps.exif_transpose``, as HF's own
        ``load_image`` does);
      - a PIL image: used as is (no EXIF transpose, as when a PIL image is handed to an HF
        processor);
      - a uint8 NumPy array [H, W] (grey), [H, W, 3] (RGB) or [H, W, 4] (RGBA), channels last.

    RGB conversion follows the processors' ``convert_to_rgb``: transparency is composited onto
    white (RGBA, LA, PA, palette or grey with a transparent colour); other modes (L, I;16, I,
    CMYK, YCbCr, 1, ...) go through Pillow's ``convert("RGB")``. (HF's separate
    ``image_utils.load_image``, used for URLs in chat templates, instead drops alpha.)

    A path must name a regular file (checked before it is opened, so a FIFO cannot block)
    and an encoded image be at most MAX_IMAGE_BYTES.

    Raises ImageNotFoundError (a FileNotFoundError) for a missing file; ImageError (a
    ValueError) for a path that is not a regular file, too many bytes, undecodable data, a zero-size image, or an array of the wrong dtype or
    shape; InvalidTypeError (a TypeError) for anything else, e.g. None. All are VlcacheErrors.
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        try:
            st = os.stat(path)  # before opening: opening a FIFO would wait for a writer forever
        except FileNotFoundError:
            raise ImageNotFoundError(f"image file not found: {path!r}") from None
        except (OSError, ValueError) as e:
            raise ImageError(f"cannot read image {path!r}: {e}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"cannot decode image {path!r}: not a regular file (a directory, FIFO or device)")
        if st.st_size > MAX_IMAGE_BYTES:
            raise ImageError(f"image {path!r} is {st.st_size} bytes, more than MAX_IMAGE_BYTES = {MAX_IMAGE_BYTES}")
        try:
            f = open(path, "rb")
        except OSError as e:
            raise ImageError(f"cannot read image {path!r}: {e}") from None
        with f:
            pil = _decode(f, repr(path))
    elif isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise ImageError("cannot decode image from bytes: the data is empty")
        if len(data) > MAX_IMAGE_BYTES:
            raise ImageError(f"image data is {len(data)} bytes, more than MAX_IMAGE_BYTES = {MAX_IMAGE_BYTES}")
        pil = _decode(io.BytesIO(data), f"from {len(data)} bytes")
    elif isinstance(image, PIL.Image.Image):
        pil = image
    elif isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    else:
        raise InvalidTypeError(f"image: expected a path, bytes, a PIL image or a uint8 array, "
                               f"got {type(image).__name__}")
    if pil.width == 0 or pil.height == 0:
        raise ImageError(f"load_image: zero-size image ({pil.width}x{pil.height})")
    return _pil_to_rgb(pil)


# ---------------------------------------------------------------------------------------
# Geometry helpers (HF's image_processing_utils / image_transforms, in Python ints and floats)
# ---------------------------------------------------------------------------------------

def _shortest_edge_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) after a shortest-edge resize: HF get_resize_output_image_size(default_to_square=
    False): the short side becomes ``size``, the long side int(size * long / short) (floor)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def select_best_resolution(image_size: Sequence[int], pinpoints: Sequence[Sequence[int]]) -> tuple[int, int]:
    """HF's select_best_resolution: the (height, width) of ``pinpoints`` that keeps the most
    of the image's pixels when it is fitted inside, ties broken by the least wasted area
    (first wins on a full tie). ``image_size`` is (height, width)."""
    orig_h, orig_w = int(image_size[0]), int(image_size[1])
    best, best_eff, best_waste = None, 0, float("inf")
    for h, w in pinpoints:
        scale = min(w / orig_w, h / orig_h)
        down_w, down_h = int(orig_w * scale), int(orig_h * scale)
        eff = min(down_w * down_h, orig_w * orig_h)
        waste = w * h - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = (int(h), int(w)), eff, waste
    if best is None:  # only with no candidates: a candidate keeping 0 pixels still wins on waste
        raise ImageError(f"select_best_resolution: no candidate resolutions in {pinpoints!r}")
    return best


def _patch_output_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """HF get_patch_output_size: the aspect-preserving size that fits inside ``target``."""
    th, tw = target
    scale_w, scale_h = tw / width, th / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), th), tw
    return th, min(math.ceil(width * scale_h), tw)


def _resize(image: np.ndarray, hw: tuple[int, int], resample: int) -> np.ndarray:
    """uint8 [H, W, 3] resized to hw with Pillow (reducing_gap None), as HF's PIL resize."""
    h, w = int(hw[0]), int(hw[1])
    if h <= 0 or w <= 0:
        raise ImageError(f"resize to {h}x{w}: the image is too thin for this processor")
    if h * w > (PIL.Image.MAX_IMAGE_PIXELS or 2**31):  # an extreme aspect ratio, scaled up by its short side
        raise ImageError(f"a {image.shape[1]}x{image.shape[0]} image would be resized to {w}x{h}: "
                         f"its aspect ratio is too extreme for this processor")
    pil = PIL.Image.fromarray(np.ascontiguousarray(image))
    return np.asarray(pil.resize((w, h), resample=resample, reducing_gap=None))


def _center_crop(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """HF image_transforms.center_crop on [H, W, C]: crop around the centre, zero padding the
    sides where the image is smaller than the crop (top/left pad = ceil of half the excess)."""
    oh, ow = image.shape[:2]
    ch, cw = int(hw[0]), int(hw[1])
    top, left = (oh - ch) // 2, (ow - cw) // 2
    bottom, right = top + ch, left + cw
    if top >= 0 and bottom <= oh and left >= 0 and right <= ow:
        return image[top:bottom, left:right]
    nh, nw = max(ch, oh), max(cw, ow)
    canvas = np.zeros((nh, nw) + image.shape[2:], dtype=image.dtype)
    tp, lp = math.ceil((nh - oh) / 2), math.ceil((nw - ow) / 2)
    canvas[tp:tp + oh, lp:lp + ow] = image
    top, bottom, left, right = top + tp, bottom + tp, left + lp, right + lp
    return canvas[max(0, top):min(nh, bottom), max(0, left):min(nw, right)]


def _pad_to_square(image: np.ndarray, color: Sequence[int]) -> np.ndarray:
    """LlavaImageProcessor.pad_to_square: centre the image on a square of the longest side
    filled with ``color`` (start offset (long - short) // 2)."""
    h, w = image.shape[:2]
    if h == w:
        return image
    side = max(h, w)
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:, :] = np.asarray(color, dtype=np.int64).astype(np.uint8)
    if w > h:
        s = (side - h) // 2
        out[s:s + h, :] = image
    else:
        s = (side - w) // 2
        out[:, s:s + w] = image
    return out


def _unpadded_hw(height: int, width: int, cur_h: int, cur_w: int) -> tuple[int, int, int, int]:
    """HF unpad_image geometry: rows [r0, r1) and columns [c0, c1) of a cur_h x cur_w raster
    that hold the (aspect-preserved, centred) image of original size height x width."""
    if width / height > cur_w / cur_h:
        new_h = int(round(height * (cur_w / width), 7))
        pad = (cur_h - new_h) // 2
        return pad, cur_h - pad, 0, cur_w
    new_w = int(round(width * (cur_h / height), 7))
    pad = (cur_w - new_w) // 2
    return 0, cur_h, pad, cur_w - pad


# ---------------------------------------------------------------------------------------
# LLaVA-NeXT feature packing
# ---------------------------------------------------------------------------------------

def _pinpoints_hw(pinpoints) -> list[tuple[int, int]]:
    pts = [tuple(int(v) for v in p) for p in pinpoints]
    if not pts or any(len(p) != 2 or p[0] <= 0 or p[1] <= 0 for p in pts):
        raise ImageError(f"image_grid_pinpoints must be a non-empty list of positive (height, width) pairs, "
                         f"got {pinpoints!r}")
    return pts


def llava_next_grid(image_size: Sequence[int], grid_pinpoints, tile_size: int) -> tuple[int, int]:
    """(rows, cols) of tiles LLaVA-NeXT cuts an image of size (height, width) into
    (HF get_anyres_image_grid_shape)."""
    bh, bw = select_best_resolution(image_size, _pinpoints_hw(grid_pinpoints))
    return bh // tile_size, bw // tile_size


def llava_next_num_tokens(image_size: Sequence[int], grid_pinpoints, tile_size: int, patch_grid: int) -> int:
    """Number of ``<image>`` tokens HF's LlavaNextProcessor expands one image of size
    (height, width) into, for the "default" select strategy (CLS dropped):
    base tile patch_grid**2, plus the unpadded grid raster, plus one newline per raster row
    (``LlavaNextProcessor._get_number_of_features``). Equals len(pack_llava_next_features(...))."""
    h, w = int(image_size[0]), int(image_size[1])
    bh, bw = select_best_resolution((h, w), _pinpoints_hw(grid_pinpoints))
    cur_h, cur_w = patch_grid * (bh // tile_size), patch_grid * (bw // tile_size)
    if cur_h == 0 or cur_w == 0:
        raise ImageError(f"image_grid_pinpoints resolution {bh}x{bw} is smaller than one {tile_size}-pixel tile")
    r0, r1, c0, c1 = _unpadded_hw(h, w, cur_h, cur_w)
    return (r1 - r0) * (c1 - c0) + (r1 - r0) + patch_grid * patch_grid


def pack_llava_next_features(features: np.ndarray, image_size: Sequence[int], grid_pinpoints, tile_size: int,
                             patch_grid: int, newline: np.ndarray | None) -> np.ndarray:
    """One image's tile features in the order LLaVA-NeXT's language model reads them.

    Equal to HF ``LlavaNextModel.pack_image_features`` ("spatial_unpad") for one image:
    features ``[n_tiles, T, E]`` with tile 0 the base (whole) image and tiles 1.. the grid in
    row-major order, each grid tile T = patch_grid**2 rows. The grid tiles are laid out as
    the full-image raster ``[rows*patch_grid, cols*patch_grid]``, the padding rows/columns
    added by the preprocessing are cut away (``unpad_image`` with the original (height,
    width) ``image_size``), ``newline`` [E] is appended to each raster row, and the raster
    (row-major) follows the base tile's T rows. With a single tile: the tile, then newline.
    Returns ``[n_tokens, E]`` in the features' dtype.
    """
    feats = np.asarray(features)
    if feats.ndim != 3 or feats.shape[0] == 0:
        raise ValueError(f"pack_llava_next_features: features must be [n_tiles, T, E], got {feats.shape}")
    n_tiles, n_tok, dim = feats.shape
    nl = None
    if newline is not None:
        nl = np.asarray(newline).astype(feats.dtype, copy=False).reshape(-1)
        if nl.shape[0] != dim:
            raise ValueError(f"pack_llava_next_features: newline has {nl.shape[0]} elements, features width {dim}")
    if n_tiles == 1:
        return feats[0] if nl is None else np.concatenate([feats[0], nl[None]], axis=0)

    rows, cols = llava_next_grid(image_size, grid_pinpoints, tile_size)
    g = int(patch_grid)
    if n_tiles - 1 != rows * cols or n_tok != g * g:
        raise ValueError(f"pack_llava_next_features: image {tuple(image_size)} needs {rows}x{cols} grid tiles of "
                         f"{g}x{g} rows each, got {n_tiles - 1} tiles of {n_tok} rows")
    # [rows, cols, g, g, E] -> [rows, g, cols, g, E] -> raster [rows*g, cols*g, E]
    grid = feats[1:].reshape(rows, cols, g, g, dim).transpose(0, 2, 1, 3, 4).reshape(rows * g, cols * g, dim)
    r0, r1, c0, c1 = _unpadded_hw(int(image_size[0]), int(image_size[1]), rows * g, cols * g)
    grid = grid[r0:r1, c0:c1]
    if nl is not None:
        grid = np.concatenate([grid, np.broadcast_to(nl, (grid.shape[0], 1, dim))], axis=1)
    return np.concatenate([feats[0], grid.reshape(-1, dim)], axis=0)


# ---------------------------------------------------------------------------------------
# The processor
# ---------------------------------------------------------------------------------------

@dataclass
class ProcessedImage:
    """The result of :class:`ImageProcessor` on one image.

    pixels:          float32 [n_tiles, 3, S, S]; for LLaVA-NeXT tile 0 is the whole image and
                     tiles 1.. the grid, row-major.
    image_size:      (height, width) of the RGB image before any resize (after EXIF transpose).
    kind:            "clip", "llava" or "llava_next".
    best_resolution: LLaVA-NeXT: the chosen (height, width) from image_grid_pinpoints; else None.
    grid:            LLaVA-NeXT: (rows, cols) of grid tiles; else None.
    tile_size:       S.
    """

    pixels: np.ndarray
    image_size: tuple[int, int]
    kind: str
    best_resolution: tuple[int, int] | None = None
    grid: tuple[int, int] | None = None
    tile_size: int = 0

    @property
    def n_tiles(self) -> int:
        return int(self.pixels.shape[0])


_KINDS = {"CLIPImageProcessor": "clip", "LlavaImageProcessor": "llava", "LlavaNextImageProcessor": "llava_next"}

# Class defaults of the HF processors, used for keys absent (or null) in a config.
_DEFAULTS = {
    "do_resize": True, "size": {"shortest_edge": 224}, "resample": 3, "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224}, "do_rescale": True, "rescale_factor": 1 / 255,
    "do_normalize": True, "image_mean": OPENAI_CLIP_MEAN, "image_std": OPENAI_CLIP_STD,
    "do_convert_rgb": True, "default_to_square": False,
}


def _size_dict(value, default_to_square: bool, name: str) -> dict:
    """HF get_size_dict: an int is a square (default_to_square) or a shortest edge, a pair is
    (height, width); only {"shortest_edge"} and {"height", "width"} are supported here."""
    if isinstance(value, bool):
        raise ImageError(f"{name}={value!r} is not a size")
    if isinstance(value, (int, np.integer)):
        d = {"height": int(value), "width": int(value)} if default_to_square else {"shortest_edge": int(value)}
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        d = {"height": int(value[0]), "width": int(value[1])}
    elif isinstance(value, Mapping):
        d = {k: v for k, v in value.items() if v is not None}
    else:
        raise ImageError(f"{name}={value!r} is not a size")
    if set(d) not in ({"shortest_edge"}, {"height", "width"}):
        raise ImageError(f"{name}={value!r}: only {{'shortest_edge'}} or {{'height', 'width'}} sizes are supported")
    if any(int(v) <= 0 for v in d.values()):
        raise ImageError(f"{name}={value!r}: sizes must be positive")
    return {k: int(v) for k, v in d.items()}


class ImageProcessor:
    """Hugging Face image preprocessing for LLaVA models, equal to the slow (PIL) processors.

    Build it from a ``preprocessor_config.json`` dict (:meth:`from_config`, or the
    constructor) or from a llama.cpp mmproj's ``clip.vision.*`` values (:meth:`from_mmproj`);
    call it on an image (anything :func:`load_image` takes) to get a :class:`ProcessedImage`.

    Attributes (after reading the config, HF class defaults filling absent keys): ``kind``
    ("clip", "llava", "llava_next"), ``do_resize``, ``size`` (dict), ``resample`` (Pillow
    filter id), ``do_center_crop``, ``crop_size`` (dict), ``do_rescale``, ``rescale_factor``,
    ``do_normalize``, ``image_mean``, ``image_std``, ``do_pad``, ``image_grid_pinpoints``
    (list of (height, width), LLaVA-NeXT only), ``tile_size`` (S of the output tiles), and
    ``patch_size`` (the ViT patch size, None unless set by the caller; used by
    :meth:`features` and :meth:`num_image_tokens`).

    ``do_convert_rgb`` is read but images are always made RGB (the vision tower takes 3
    channels; HF's default is True for all three processors).
    """

    def __init__(self, config: Mapping[str, Any] | None = None):
        cfg = {k: v for k, v in dict(config or {}).items() if v is not None}
        ptype = str(cfg.get("image_processor_type", "CLIPImageProcessor"))
        for suffix in ("Fast", "Pil"):
            if ptype.endswith(suffix):
                ptype = ptype[: -len(suffix)]
        if ptype not in _KINDS:
            raise ImageError(f"image_processor_type {cfg.get('image_processor_type')!r} is not supported "
                             f"(expected one of {sorted(_KINDS)})")
        self.kind = _KINDS[ptype]
        self.config = dict(config or {})

        def get(key):
            return cfg.get(key, _DEFAULTS.get(key))

        default_to_square = bool(get("default_to_square"))
        self.do_resize = bool(get("do_resize"))
        self.size = _size_dict(get("size"), default_to_square, "size")
        self.resample = int(get("resample"))
        if self.resample not in (0, 1, 2, 3, 4, 5):
            raise ImageError(f"resample={self.resample!r} is not a Pillow filter id (0..5)")
        self.do_center_crop = bool(get("do_center_crop"))
        self.crop_size = _size_dict(get("crop_size"), True, "crop_size")
        if "height" not in self.crop_size:
            raise ImageError(f"crop_size={get('crop_size')!r} must have height and width")
        self.do_rescale = bool(get("do_rescale"))
        self.rescale_factor = float(get("rescale_factor"))
        self.do_normalize = bool(get("do_normalize"))
        self.image_mean = self._channels(get("image_mean"), "image_mean")
        self.image_std = self._channels(get("image_std"), "image_std")
        self.do_convert_rgb = bool(get("do_convert_rgb"))
        # do_pad: LlavaImageProcessor pads to a square first; for the other two it pads a
        # batch to a common shape, a no-op for one image.
        self.do_pad = bool(cfg.get("do_pad", self.kind == "llava_next"))
        if self.kind == "clip" and self.do_pad and cfg.get("pad_size") is not None:
            raise ImageError("CLIPImageProcessor with do_pad and pad_size is not supported")
        self.image_grid_pinpoints = None
        if self.kind == "llava_next":
            self.image_grid_pinpoints = _pinpoints_hw(cfg.get("image_grid_pinpoints", DEFAULT_GRID_PINPOINTS))
        self.patch_size: int | None = None
        self._newline = None

    @staticmethod
    def _channels(value, name: str) -> tuple[float, ...]:
        if isinstance(value, (int, float)):
            return (float(value),) * 3
        vals = tuple(float(v) for v in value)
        if len(vals) != 3:
            raise ImageError(f"{name} must have 3 values (RGB), got {value!r}")
        return vals

    # ---- construction

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | str | bytes) -> "ImageProcessor":
        """From a preprocessor_config.json dict, or its JSON text."""
        if isinstance(config, (str, bytes)):
            config = json.loads(config)
        return cls(config)

    @staticmethod
    def mmproj_config(image_size: int, image_mean: Sequence[float], image_std: Sequence[float],
                      image_grid_pinpoints: Sequence[int] | None = None) -> dict:
        """The preprocessor_config.json Hugging Face uses for the model a llama.cpp mmproj came from.

        Arguments are the mmproj's ``clip.vision.image_size``, ``image_mean``, ``image_std`` and
        ``image_grid_pinpoints`` (llama.cpp's flattened ``[w0, h0, w1, h1, ...]``, (width,
        height) pairs as clip.cpp reads them; absent for LLaVA-1.5). LLaVA-1.5 maps to llava-hf's
        CLIPImageProcessor (shortest-edge resize to image_size, center crop, no pad); LLaVA-1.6 to
        LlavaNextImageProcessor with tiles of image_size.
        """
        s = int(image_size)
        cfg = {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": True, "size": {"shortest_edge": s}, "resample": 3,
            "do_center_crop": True, "crop_size": {"height": s, "width": s},
            "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": [float(v) for v in image_mean],
            "image_std": [float(v) for v in image_std], "do_convert_rgb": True,
        }
        if image_grid_pinpoints is not None and len(image_grid_pinpoints) > 0:
            flat = [int(v) for v in image_grid_pinpoints]
            if len(flat) % 2:
                raise ImageError(f"clip.vision.image_grid_pinpoints must have an even length, got {len(flat)}")
            cfg["image_processor_type"] = "LlavaNextImageProcessor"
            cfg["do_pad"] = True
            cfg["image_grid_pinpoints"] = [[flat[i + 1], flat[i]] for i in range(0, len(flat), 2)]
        return cfg

    @classmethod
    def from_mmproj(cls, image_size: int, image_mean: Sequence[float], image_std: Sequence[float],
                    image_grid_pinpoints: Sequence[int] | None = None) -> "ImageProcessor":
        """From a llama.cpp mmproj's ``clip.vision.*`` values: see :meth:`mmproj_config`."""
        return cls(cls.mmproj_config(image_size, image_mean, image_std, image_grid_pinpoints))

    def __repr__(self) -> str:
        extra = f" pinpoints={self.image_grid_pinpoints}" if self.image_grid_pinpoints else ""
        return (f"<ImageProcessor {self.kind} size={self.size} crop={self.crop_size if self.do_center_crop else None}"
                f" pad={self.do_pad}{extra}>")

    @property
    def tile_size(self) -> int:
        """Side S of the square tiles this processor produces (the vision tower's image_size)."""
        if self.kind == "llava_next":
            return self._anyres_patch_size()
        if self.do_center_crop:
            return self.crop_size["height"]
        return self.size.get("height", self.size.get("shortest_edge"))

    # ---- the pipeline steps (uint8 [H, W, 3] in, as HF's PilBackend)

    def _resize_step(self, image: np.ndarray) -> np.ndarray:
        """PilBackend.resize with ``size``: shortest-edge (aspect kept) or exact (height, width)."""
        if "shortest_edge" in self.size:
            hw = _shortest_edge_size(image.shape[0], image.shape[1], self.size["shortest_edge"])
        else:
            hw = (self.size["height"], self.size["width"])
        return _resize(image, hw, self.resample)

    def _finish(self, image: np.ndarray) -> np.ndarray:
        """resize, center crop, rescale, normalize -> float32 [3, h, w]."""
        if self.do_resize:
            image = self._resize_step(image)
        if self.do_center_crop:
            image = _center_crop(image, (self.crop_size["height"], self.crop_size["width"]))
        chw = np.ascontiguousarray(image.transpose(2, 0, 1))              # [3, h, w] uint8
        if self.do_rescale:  # HF rescale: float64 multiply, then float32
            chw = (chw.astype(np.float64) * self.rescale_factor).astype(np.float32)
        if self.do_normalize:  # HF normalize: float32 (x - mean) / std
            x = chw.astype(np.float32, copy=False)
            mean = np.asarray(self.image_mean, dtype=np.float32)[:, None, None]
            std = np.asarray(self.image_std, dtype=np.float32)[:, None, None]
            chw = (x - mean) / std
        return chw.astype(np.float32, copy=False)

    def _anyres_patch_size(self) -> int:
        """LlavaNextImageProcessor's tile side: crop height, else size height, else shortest edge."""
        if self.crop_size.get("height"):
            return self.crop_size["height"]
        return self.size.get("height", self.size.get("shortest_edge"))

    def __call__(self, image: Any) -> ProcessedImage:
        """Preprocess one image (anything :func:`load_image` takes)."""
        rgb = np.asarray(load_image(image))                               # uint8 [H, W, 3]
        h, w = int(rgb.shape[0]), int(rgb.shape[1])
        if self.kind != "llava_next":
            if self.kind == "llava" and self.do_pad:
                # HF: background = int(m * 255) per channel of image_mean (truncation)
                rgb = _pad_to_square(rgb, [int(m * 255) for m in self.image_mean])
            pixels = self._finish(rgb)[None]
            return ProcessedImage(pixels=pixels, image_size=(h, w), kind=self.kind, tile_size=int(pixels.shape[-1]))

        tile = self._anyres_patch_size()
        best = select_best_resolution((h, w), self.image_grid_pinpoints)
        nh, nw = _patch_output_size(h, w, best)
        resized = _resize(rgb, (nh, nw), self.resample)
        py, ry = divmod(best[0] - nh, 2)
        px, rx = divmod(best[1] - nw, 2)
        padded = np.pad(resized, ((py, py + ry), (px, px + rx), (0, 0)), mode="constant", constant_values=0)
        tiles = [padded[i:i + tile, j:j + tile] for i in range(0, best[0], tile) for j in range(0, best[1], tile)]
        if "height" in self.size:
            base_hw = (self.size["height"], self.size["width"])
        else:
            base_hw = (self.size["shortest_edge"], self.size["shortest_edge"])
        base = _resize(rgb, base_hw, self.resample)
        out = [self._finish(t) for t in [base] + tiles]
        shapes = {o.shape for o in out}
        if len(shapes) != 1:
            raise ImageError(f"LLaVA-NeXT tiles of different shapes {sorted(shapes)}: image_grid_pinpoints "
                             f"{self.image_grid_pinpoints} do not fit tiles of {tile}")
        pixels = np.stack(out)
        return ProcessedImage(pixels=pixels, image_size=(h, w), kind=self.kind, best_resolution=best,
                              grid=(best[0] // tile, best[1] // tile), tile_size=int(pixels.shape[-1]))

    # ---- token counts and features

    def num_image_tokens(self, image_size: Sequence[int] | ProcessedImage, patch_size: int | None = None,
                         select_full: bool = False) -> int:
        """``<image>`` tokens one image of (height, width) ``image_size`` stands for, as HF's
        LlavaProcessor / LlavaNextProcessor count them (``select_full``: CLS row kept)."""
        if isinstance(image_size, ProcessedImage):
            image_size = image_size.image_size
        p = patch_size or self.patch_size
        if not p:
            raise ValueError("num_image_tokens: the ViT patch size is unknown (pass patch_size)")
        g = self.tile_size // int(p)
        if self.kind != "llava_next":
            return g * g + int(select_full)
        return llava_next_num_tokens(image_size, self.image_grid_pinpoints, self.tile_size, g) + int(select_full)

    def features(self, processed: ProcessedImage, tile_features: np.ndarray, newline: Any = None) -> np.ndarray:
        """The image's embeddings ``[n_tokens, E]`` from the vision tower's output per tile
        ``[n_tiles, T, E]``: LLaVA-1.5 takes its one tile as is; LLaVA-NeXT packs them with
        :func:`pack_llava_next_features`. ``newline``: the image_newline vector [E], or a
        vlcache_native Model to read ``v.image_newline`` from (LLaVA-NeXT only)."""
        tf = np.asarray(tile_features)
        if tf.ndim != 3 or tf.shape[0] != processed.n_tiles:
            raise ValueError(f"features: expected [{processed.n_tiles}, T, E] tile features, got {tf.shape}")
        if processed.kind != "llava_next":
            return tf[0]
        if newline is not None and not isinstance(newline, np.ndarray):
            if self._newline is None:
                self._newline = _model_newline(newline, tf.shape[2])
            newline = self._newline
        if self.patch_size:
            g = processed.tile_size // int(self.patch_size)
        else:
            g = math.isqrt(tf.shape[1])
        return pack_llava_next_features(tf, processed.image_size, self.image_grid_pinpoints, processed.tile_size,
                                        g, newline)


# ---------------------------------------------------------------------------------------
# Glue to a vlcache_native Model (imports the native bindings lazily)
# ---------------------------------------------------------------------------------------

def _model_newline(model, dim: int) -> np.ndarray:
    """The model's LLaVA-NeXT image_newline [dim]: ``v.image_newline``, or
    ``model.image_newline`` as llama.cpp's legacy LLaVA-1.6 mmproj files name it."""
    from .errors import InvalidArgumentError
    try:
        return model.tensor("v.image_newline", dim)
    except InvalidArgumentError:
        return model.tensor("model.image_newline", dim)


def processor_for_model(model) -> ImageProcessor:
    """The ImageProcessor of a loaded vlcache_native Model: our one-file GGUF stores HF's
    preprocessor_config.json (``vlcache.image.processor``); a llama.cpp mmproj is mapped with
    :meth:`ImageProcessor.from_mmproj`. Its tile size must equal the vision tower's image_size."""
    v = model.vision_info
    text = model.metadata("vlcache.image.processor")
    if text:
        try:
            proc = ImageProcessor.from_config(text)
        except ImageError:
            raise
        except (ValueError, TypeError) as e:  # not JSON, not an object, a value of the wrong type
            raise ImageError(f"the model's vlcache.image.processor metadata is corrupt: {e}") from None
    else:
        pins = model.metadata_numbers("clip.vision.image_grid_pinpoints")
        proc = ImageProcessor.from_mmproj(v["image_size"], v["image_mean"], v["image_std"],
                                          [int(p) for p in pins] if pins else None)
    proc.patch_size = int(v["patch_size"])
    if proc.tile_size != int(v["image_size"]):
        raise ImageError(f"the image processor makes {proc.tile_size}-pixel tiles but the vision tower takes "
                         f"{v['image_size']}")
    return proc
