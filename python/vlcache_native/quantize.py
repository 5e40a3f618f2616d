"""Quantize an F32 / F16 / BF16 GGUF to llama.cpp's block types (GGUF_LLAVA.md §4).

    vlcache-native quantize IN.gguf OUT.gguf TYPE [--vision-type T] [--threads N]
    python tools/quantize.py IN.gguf OUT.gguf TYPE ...          (the same, as a script)

TYPE is a file type (a mix of tensor types):

- ``Q8_0``, ``Q4_0``, ``Q4_1``, ``Q5_0``, ``Q5_1``, ``Q4_K``, ``Q5_K``, ``Q6_K``: "pure" mixes
  (like ``llama-quantize --pure``): every quantizable text weight in that type,
  ``token_embd`` and ``output`` included.
- ``Q4_K_M``, ``Q5_K_M``: llama.cpp's mixes (``llama_tensor_get_type`` for a llama model):
  ``output.weight`` Q6_K (or ``token_embd`` when the model ties them: no ``output.weight``);
  ``attn_v`` and ``ffn_down`` Q6_K in the layers ``use_more_bits`` picks (the first n/8,
  the last n/8, and every third layer in between: i < n/8 or i >= 7n/8 or
  (i - n/8) % 3 == 2); every other text weight, ``token_embd`` included, Q4_K (Q4_K_M) or
  Q5_K (Q5_K_M). (llama.cpp's 70B / MoE / Falcon special cases are not reproduced.)

Quantizable: 2-D ``*.weight`` tensors stored as F32 / F16 / BF16. Kept in their type:
1-D tensors (norms, biases, ``v.class_embd``, ``v.image_newline``), tensors of 3 or more
dimensions (``v.patch_embd.weight``, the patch conv), ``v.position_embd.weight``, tensors
already quantized (no requantization), and integer tensors.

Vision (``v.*``, ``mm.*``; our one-file LLaVA, tools/GGUF_FORMAT.md): the 2-D weights of
the CLIP encoder and the projector become ``--vision-type`` (default Q8_0, for every
TYPE; ``keep`` leaves them F16 / F32 as stored). llama.cpp ships the mmproj as a separate
file, usually F16 or Q8_0: the encoder is small beside the language model (0.3B of 7B)
and sees the image once per prompt, so 8 bits cost little and keep CLIP accurate.

Row lengths: a tensor's rows (``ne[0]``) must be whole blocks. Under a K type a row that
is not a multiple of 256 falls back as llama.cpp does (Q4_K -> Q5_0, Q5_K -> Q5_1,
Q6_K -> Q8_0; ``output.weight`` under a K_M mix -> Q8_0); a row that is not a multiple of
32 either keeps its original type. Each fallback is printed.

The metadata is copied key by key (``general.alignment`` honoured), with
``general.file_type`` set to llama.cpp's ``LlamaFileType`` of the mix (``Q4_K`` is
written as ``MOSTLY_Q4_K_S``, ``Q5_K`` as ``MOSTLY_Q5_K_S``: the closest llama.cpp
file types) and ``general.quantization_version`` = 2. Quantization is the C reference
quantizer (``vlc_quantize`` of libvlcache, through cffi); the tool streams tensor by
tensor (the input is memory-mapped; one output tensor is held at a time) and splits a
tensor's rows over ``--threads`` threads (the C call releases the GIL).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import LlamaFileType as FT

TENSOR_TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
MIXES = TENSOR_TYPES + ["Q4_K_M", "Q5_K_M"]

FILE_TYPE = {
    "Q8_0": FT.MOSTLY_Q8_0, "Q4_0": FT.MOSTLY_Q4_0, "Q4_1": FT.MOSTLY_Q4_1, "Q5_0": FT.MOSTLY_Q5_0,
    "Q5_1": FT.MOSTLY_Q5_1, "Q4_K": FT.MOSTLY_Q4_K_S, "Q5_K": FT.MOSTLY_Q5_K_S, "Q6_K": FT.MOSTLY_Q6_K,
    "Q4_K_M": FT.MOSTLY_Q4_K_M, "Q5_K_M": FT.MOSTLY_Q5_K_M,
}
BASE_TYPE = {"Q4_K_M": QT.Q4_K, "Q5_K_M": QT.Q5_K}
K_FALLBACK = {QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0}
FLOAT_TYPES = (QT.F32, QT.F16, QT.BF16)
KEEP_NAMES = ("v.position_embd.weight",)
QUANTIZATION_VERSION = 2


def use_more_bits(i_layer: int, n_layer: int) -> bool:
    """llama.cpp's choice of the layers whose attn_v / ffn_down get more bits."""
    return i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2


@dataclass
class Choice:
    """What happens to one tensor: new_type None = copied unchanged; note says why."""

    new_type: QT | None
    note: str = ""


def block_size(t: QT) -> int:
    return gguf.GGML_QUANT_SIZES[t][0]


def choose(name: str, ne: list[int], src: QT, mix: str, *, n_layer: int, has_output: bool,
           vision_type: QT | None) -> Choice:
    """The type of tensor ``name`` (GGUF ne order, source type src) under ``mix``."""
    if src not in FLOAT_TYPES:
        return Choice(None, "not a float type (quantized tensors are not requantized)")
    if len(ne) != 2:
        return Choice(None, f"{len(ne)}-D")
    if not name.endswith(".weight") or name in KEEP_NAMES:
        return Choice(None, "kept by name")
    vision = name.startswith(("v.", "mm."))
    if vision:
        if vision_type is None:
            return Choice(None, "vision, --vision-type keep")
        want = vision_type
    elif mix in BASE_TYPE:
        want = BASE_TYPE[mix]
        m = re.match(r"blk\.(\d+)\.(attn_v|ffn_down)\.weight$", name)
        if name == "output.weight" or (not has_output and name == "token_embd.weight"):
            want = QT.Q6_K if ne[0] % block_size(QT.Q6_K) == 0 else QT.Q8_0
        elif m and use_more_bits(int(m.group(1)), n_layer):
            want = QT.Q6_K
    else:
        want = QT[mix]
    note = ""
    if ne[0] % block_size(want) != 0 and want in K_FALLBACK:
        note = f"rows of {ne[0]} not a multiple of 256: {want.name} -> {K_FALLBACK[want].name}"
        want = K_FALLBACK[want]
    if ne[0] % block_size(want) != 0:
        return Choice(None, f"rows of {ne[0]} not a multiple of {block_size(want)} ({want.name}): kept")
    return Choice(want, note)


def text_layer_count(reader: gguf.GGUFReader) -> int:
    layers = {int(m.group(1)) for t in reader.tensors if (m := re.match(r"blk\.(\d+)\.", t.name))}
    return max(layers) + 1 if layers else 0


def plan(reader: gguf.GGUFReader, mix: str, vision_type: QT | None = QT.Q8_0) -> dict[str, Choice]:
    """name -> Choice for every tensor of the file, in file order."""
    if mix not in MIXES:
        raise ValueError(f"unknown type {mix!r}: one of {', '.join(MIXES)}")
    n_layer = text_layer_count(reader)
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    return {t.name: choose(t.name, [int(x) for x in t.shape], QT(int(t.tensor_type)), mix, n_layer=n_layer,
                           has_output=has_output, vision_type=vision_type)
            for t in reader.tensors}


def to_f32_rows(t, r0: int, r1: int) -> np.ndarray:
    """Rows r0 .. r1 of a 2-D F32 / F16 / BF16 reader tensor as float32 [r1 - r0, ne0]."""
    src = QT(int(t.tensor_type))
    data = t.data[r0:r1]
    if src == QT.F32:
        return np.ascontiguousarray(data, np.float32)
    if src == QT.F16:
        return data.astype(np.float32)
    u16 = np.ascontiguousarray(data).view(np.uint16)  # BF16: the top half of an f32
    return (u16.astype(np.uint32) << 16).view(np.float32)


def quantize_tensor(t, qtype: QT, pool: ThreadPoolExecutor | None, chunk_rows: int) -> np.ndarray:
    """A 2-D reader tensor -> uint8 [rows, row_bytes] of qtype, through vlc_quantize."""
    from ._ffi import ffi, lib
    from .errors import check

    ne0, rows = int(t.shape[0]), int(t.shape[1])
    row_bytes = lib.vlc_type_row_bytes(int(qtype), ne0)
    out = np.empty((rows, row_bytes), np.uint8)

    def work(r0: int) -> None:
        r1 = min(rows, r0 + chunk_rows)
        x = to_f32_rows(t, r0, r1)
        dst = out[r0:r1]
        check(lib.vlc_quantize(int(qtype), ffi.from_buffer("float[]", x), x.size,
                               ffi.from_buffer(dst, require_writable=True), dst.nbytes))

    starts = range(0, rows, chunk_rows)
    if pool is None:
        for r0 in starts:
            work(r0)
    else:
        for f in [pool.submit(work, r0) for r0 in starts]:
            f.result()
    return out


def copy_metadata(reader: gguf.GGUFReader, writer: gguf.GGUFWriter, mix: str) -> None:
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == gguf.Keys.General.ARCHITECTURE:
            continue  # virtual fields, and the one GGUFWriter writes itself
        if field.name in (gguf.Keys.General.FILE_TYPE, gguf.Keys.General.QUANTIZATION_VERSION):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
        if field.name == gguf.Keys.General.ALIGNMENT:
            writer.data_alignment = int(field.contents())
    writer.add_file_type(int(FILE_TYPE[mix]))
    writer.add_quantization_version(QUANTIZATION_VERSION)


def quantize_file(src: str | os.PathLike, dst: str | os.PathLike, mix: str, *, vision_type: QT | None = QT.Q8_0,
                  threads: int = 0, chunk_elems: int = 1 << 20, log=print) -> dict[str, Choice]:
    """Writes dst = src under mix; returns the plan (name -> Choice)."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    choices = plan(reader, mix, vision_type)
    writer = gguf.GGUFWriter(dst, arch)
    copy_metadata(reader, writer, mix)

    out_nbytes = {}
    for t in reader.tensors:
        c = choices[t.name]
        if c.new_type is None:
            writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, raw_dtype=t.tensor_type)
            out_nbytes[t.name] = t.data.nbytes
        else:
            ne0, rows = int(t.shape[0]), int(t.shape[1])
            nbytes = rows * gguf.GGML_QUANT_SIZES[c.new_type][1] * ne0 // block_size(c.new_type)
            shape = (rows, nbytes // rows)
            writer.add_tensor_info(t.name, shape, np.dtype(np.uint8), nbytes, raw_dtype=c.new_type)
            out_nbytes[t.name] = nbytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()

    threads = threads or os.cpu_count() or 1
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    t_start, n = time.perf_counter(), len(reader.tensors)
    total_in = total_out = 0
    try:
        for i, t in enumerate(reader.tensors):
            c = choices[t.name]
            src_type = QT(int(t.tensor_type)).name
            shape = "x".join(str(int(x)) for x in t.shape)
            if c.new_type is None:
                writer.write_tensor_data(t.data)
                what = f"{src_type} kept" + (f" ({c.note})" if c.note else "")
            else:
                chunk_rows = max(1, chunk_elems // int(t.shape[0]))
                writer.write_tensor_data(quantize_tensor(t, c.new_type, pool, chunk_rows))
                what = f"{src_type} -> {c.new_type.name}" + (f" ({c.note})" if c.note else "")
            total_in += t.data.nbytes
            total_out += out_nbytes[t.name]
            log(f"[{i + 1:4d}/{n}] {t.name:36s} {shape:>16s}  {what}  "
                f"{t.data.nbytes / 2**20:8.2f} -> {out_nbytes[t.name] / 2**20:8.2f} MiB", flush=True)
    finally:
        if pool is not None:
            pool.shutdown()
        writer.close()
    counts: dict[str, int] = {}
    for t in reader.tensors:
        c = choices[t.name]
        key = c.new_type.name if c.new_type is not None else QT(int(t.tensor_type)).name
        counts[key] = counts.get(key, 0) + 1
    log(f"{mix}: {total_in / 2**20:.1f} MiB -> {total_out / 2**20:.1f} MiB in {time.perf_counter() - t_start:.1f} s; "
        "tensors per type: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), flush=True)
    return choices


def parse_vision_type(text: str) -> QT | None:
    if text.lower() == "keep":
        return None
    if text.upper() not in TENSOR_TYPES:
        raise argparse.ArgumentTypeError(f"{text!r}: one of {', '.join(TENSOR_TYPES)}, keep")
    return QT[text.upper()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("input", type=Path, help="F32 / F16 / BF16 GGUF")
    ap.add_argument("output", type=Path, help="quantized GGUF to write")
    ap.add_argument("type", choices=MIXES, metavar="TYPE", help="one of " + ", ".join(MIXES))
    ap.add_argument("--vision-type", type=parse_vision_type, default=QT.Q8_0,
                    help="type of the 2-D vision / projector weights: a TYPE without _M, or 'keep' "
                         "(stored type); default Q8_0")
    ap.add_argument("--threads", type=int, default=0, help="quantizer threads (default: all cores)")
    args = ap.parse_args(argv)
    if args.input.resolve() == args.output.resolve():
        ap.error("input and output are the same file")
    quantize_file(args.input, args.output, args.type, vision_type=args.vision_type, threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
