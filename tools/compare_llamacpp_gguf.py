#!/usr/bin/env python3
"""compare_llamacpp_gguf.py: side-by-side diff of two GGUF files (metadata and tensors).

What it is:
  - A developer tool to check that two GGUF files describe the same model, typically one
    written by llama.cpp's convert_hf_to_gguf.py (A) and one by ours (B), but any two GGUF
    files work (e.g. F32 vs F16 of the same checkpoint, or two versions of our converter).
  - Metadata: every key of either file, as "only in A", "only in B", "differs" or "same".
    Scalars are printed; arrays are summarised by element type, length and a short hash of
    their values, and for differing arrays the first differing index with both values.
    A value that is equal but stored with another GGUF type (e.g. INT32 vs UINT32) is
    reported as "type".
  - Tensors: name, ggml type and shape (ne, innermost first, as in the GGUF file) in A and
    B, and max |A - B| of the dequantized values (plus max|A - B| / max|A|). Tensors are read
    in row chunks from the memory-mapped file, so large models do not need twice their size
    in RAM. Byte-identical tensors are marked "same".
  - Exit status: 0 if nothing differs (after --ignore and --atol), 1 if something differs,
    2 on a usage or read error.

What it is not:
  - Not a validator of either file against the GGUF spec (the gguf package's reader is
    trusted), and not a model-quality check: it says *what* differs, not whether the
    difference changes the model's output.

Usage:
  python tools/compare_llamacpp_gguf.py A.gguf B.gguf [--all] [--atol 0] [--ignore 'general.*']
         [--no-tensors] [--no-metadata] [--width 60]
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import math
import sys
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

try:
    import gguf
except ImportError as exc:  # pragma: no cover
    raise SystemExit("compare_llamacpp_gguf: the 'gguf' package is required (pip install gguf)") from exc

# About this many elements of a tensor are dequantized at once (bounds memory for big tensors).
CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------
# Metadata values
# --------------------------------------------------------------------------------------

@dataclass
class Value:
    """One metadata value in comparable form."""
    type_name: str             # "UINT32", "STRING", "ARRAY[FLOAT32]", ...
    is_array: bool
    value: Any                 # scalar (str as bytes) or list of scalars


def _field_value(field: "gguf.ReaderField") -> Value:
    """ReaderField -> Value; strings are kept as raw bytes so non-UTF-8 tokens compare exactly."""
    types = field.types
    if not types:
        return Value("?", False, None)
    if types[0] == gguf.GGUFValueType.ARRAY:
        elem = types[1] if len(types) > 1 else None
        elem_name = elem.name if elem is not None else "?"
        if elem == gguf.GGUFValueType.STRING:
            items = [bytes(field.parts[i]) for i in field.data]
        elif elem is None or elem == gguf.GGUFValueType.ARRAY:
            items = [repr(field.parts[i].tolist()) for i in field.data]  # nested: rare, by repr
        else:
            items = [field.parts[i][0].item() for i in field.data]
        return Value(f"ARRAY[{elem_name}]", True, items)
    if types[0] == gguf.GGUFValueType.STRING:
        return Value("STRING", False, bytes(field.parts[field.data[0]]))
    return Value(types[0].name, False, field.parts[field.data[0]][0].item())


def _scalar_equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _first_diff(a: Sequence[Any], b: Sequence[Any]) -> Optional[int]:
    for i, (x, y) in enumerate(zip(a, b)):
        if not _scalar_equal(x, y):
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _values_hash(items: Sequence[Any]) -> str:
    """Short hash of array values that does not depend on the element's GGUF type width."""
    h = hashlib.sha256()
    for x in items:
        if isinstance(x, bytes):
            h.update(b"s%d:" % len(x) + x)
        elif isinstance(x, float):
            h.update(b"f" + repr(x).encode())
        else:
            h.update(b"i" + repr(x).encode())
    return h.hexdigest()[:10]


def _show(x: Any, width: int) -> str:
    if isinstance(x, bytes):
        try:
            s = repr(x.decode("utf-8"))
        except UnicodeDecodeError:
            s = repr(x)
    else:
        s = repr(x)
    return s if len(s) <= width else s[: width - 3] + "..."


def _describe(v: Optional[Value], width: int) -> str:
    if v is None:
        return "-"
    if v.is_array:
        return f"{v.type_name} n={len(v.value)} #{_values_hash(v.value)}"
    return f"{v.type_name} {_show(v.value, width)}"


def compare_metadata(ra: "gguf.GGUFReader", rb: "gguf.GGUFReader", *, ignore: Sequence[str],
                     show_all: bool, width: int) -> Tuple[List[List[str]], int]:
    """Rows [key, status, A, B, note] and the number of differing keys."""
    va = {k: _field_value(f) for k, f in ra.fields.items()}
    vb = {k: _field_value(f) for k, f in rb.fields.items()}
    # Keys in A's order, then B-only keys in B's order.
    keys = list(va) + [k for k in vb if k not in va]
    rows: List[List[str]] = []
    n_diff = 0
    for key in keys:
        if any(fnmatch.fnmatchcase(key, pat) for pat in ignore):
            continue
        a, b = va.get(key), vb.get(key)
        note = ""
        if a is None:
            status = "only B"
        elif b is None:
            status = "only A"
        elif a.is_array != b.is_array:
            status = "differs"
        elif a.is_array:
            i = _first_diff(a.value, b.value)
            if i is None:
                status = "same" if a.type_name == b.type_name else "type"
            else:
                status = "differs"
                if len(a.value) != len(b.value):
                    note = f"len {len(a.value)} vs {len(b.value)}; "
                xa = _show(a.value[i], 24) if i < len(a.value) else "<end>"
                xb = _show(b.value[i], 24) if i < len(b.value) else "<end>"
                n_common = min(len(a.value), len(b.value))
                n_bad = sum(1 for x, y in zip(a.value, b.value) if not _scalar_equal(x, y))
                note += f"first diff [{i}]: {xa} vs {xb}; {n_bad} of {n_common} shared indices differ"
        else:
            if _scalar_equal(a.value, b.value):
                status = "same" if a.type_name == b.type_name else "type"
            else:
                status = "differs"
        if status != "same":
            n_diff += 1
        if status != "same" or show_all:
            rows.append([key, status, _describe(a, width), _describe(b, width), note])
    return rows, n_diff


# --------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------

def _rows2d(t: "gguf.ReaderTensor") -> np.ndarray:
    """Raw tensor data as a 2-D array [rows, bytes-or-elements per row] (a view of the mmap)."""
    data = t.data
    if data.ndim == 0:
        return data.reshape(1, 1)
    return data.reshape(-1, data.shape[-1])


def _dequant(rows: np.ndarray, qtype: "gguf.GGMLQuantizationType") -> np.ndarray:
    return np.asarray(gguf.quants.dequantize(np.ascontiguousarray(rows), qtype),
                      dtype=np.float32).reshape(-1)


def tensor_diff(ta: "gguf.ReaderTensor", tb: "gguf.ReaderTensor") -> Tuple[float, float, bool]:
    """(max |A-B|, max |A|, byte-identical) over the dequantized values of same-shape tensors."""
    ra, rb = _rows2d(ta), _rows2d(tb)
    identical = (ta.tensor_type == tb.tensor_type and ra.shape == rb.shape)
    n_rows = ra.shape[0]
    elems_per_row = max(1, int(ta.n_elements) // max(1, n_rows))
    step = max(1, CHUNK_ELEMENTS // elems_per_row)
    if rb.shape[0] != n_rows:  # same ne, different row split (can't happen for ggml types)
        fa, fb = _dequant(ra, ta.tensor_type), _dequant(rb, tb.tensor_type)
        d = np.abs(fa.astype(np.float64) - fb)
        return float(np.nanmax(d)) if d.size else 0.0, float(np.nanmax(np.abs(fa))), False
    max_d, max_a = 0.0, 0.0
    for r0 in range(0, n_rows, step):
        ca, cb = ra[r0:r0 + step], rb[r0:r0 + step]
        if identical and not np.array_equal(ca.view(np.uint8), cb.view(np.uint8)):
            identical = False
        fa, fb = _dequant(ca, ta.tensor_type), _dequant(cb, tb.tensor_type)
        d = np.abs(fa.astype(np.float64) - fb)
        if d.size:
            if np.isnan(d).any():
                max_d = math.nan
            elif not math.isnan(max_d):
                max_d = max(max_d, float(d.max()))
            max_a = max(max_a, float(np.nanmax(np.abs(fa))))
    return max_d, max_a, identical


def _fmt_float(x: float) -> str:
    return "nan" if math.isnan(x) else ("0" if x == 0 else f"{x:.3g}")


def compare_tensors(ra: "gguf.GGUFReader", rb: "gguf.GGUFReader", *, atol: float,
                    show_all: bool) -> Tuple[List[List[str]], int, List[str]]:
    """Rows [name, status, type A, type B, ne A, ne B, max|d|, rel], #differing, notes."""
    ta = {t.name: t for t in ra.tensors}
    tb = {t.name: t for t in rb.tensors}
    names = list(ta) + [n for n in tb if n not in ta]
    rows: List[List[str]] = []
    n_diff = 0
    for name in names:
        a, b = ta.get(name), tb.get(name)
        ty_a = a.tensor_type.name if a is not None else "-"
        ty_b = b.tensor_type.name if b is not None else "-"
        ne_a = tuple(int(x) for x in a.shape) if a is not None else None
        ne_b = tuple(int(x) for x in b.shape) if b is not None else None
        max_d = rel = ""
        if a is None:
            status = "only B"
        elif b is None:
            status = "only A"
        elif ne_a != ne_b:
            status = "shape"
        else:
            try:
                d, m, identical = tensor_diff(a, b)
            except NotImplementedError as exc:
                status, max_d = "no-deq", str(exc)[:40]
            else:
                max_d = _fmt_float(d)
                rel = _fmt_float(d / m) if m > 0 else ("0" if d == 0 else "inf")
                if identical:
                    status = "same"
                elif ty_a != ty_b:
                    status = "type"
                elif d <= atol:
                    status = "close"
                else:
                    status = "differs"
        if status not in ("same", "close"):
            n_diff += 1
        if status != "same" or show_all:
            rows.append([name, status, ty_a, ty_b, _fmt_ne(ne_a), _fmt_ne(ne_b), max_d, rel])

    notes = []
    common_a = [n for n in ta if n in tb]
    common_b = [n for n in tb if n in ta]
    if common_a != common_b:
        notes.append("tensor order differs (harmless for loaders that look tensors up by name)")
    return rows, n_diff, notes


def _fmt_ne(ne: Optional[Tuple[int, ...]]) -> str:
    return "-" if ne is None else "[" + ",".join(str(x) for x in ne) + "]"


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------

def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], out=sys.stdout) -> None:
    if not rows:
        print("  (no rows)", file=out)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()
    print(line, file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        description="Compare two GGUF files: metadata keys and dequantized tensor values.",
        epilog="Status: same | type (other GGUF/ggml type; for tensors max|A-B| is still shown) | "
               "close (same type, within --atol) | "
               "differs | shape | only A | only B. Exit 0 = no differences, 1 = differences.")
    ap.add_argument("a", help="first GGUF file (A), e.g. written by llama.cpp's converter")
    ap.add_argument("b", help="second GGUF file (B), e.g. written by ours")
    ap.add_argument("--all", action="store_true", help="also list identical keys and tensors")
    ap.add_argument("--atol", type=float, default=0.0,
                    help="max |A-B| at which same-type tensors count as equal (default 0: exact)")
    ap.add_argument("--ignore", action="append", default=[], metavar="PATTERN",
                    help="metadata keys to skip (fnmatch pattern, repeatable), e.g. 'general.*'")
    ap.add_argument("--no-metadata", action="store_true", help="skip the metadata table")
    ap.add_argument("--no-tensors", action="store_true", help="skip the tensor table")
    ap.add_argument("--width", type=int, default=48, help="max characters of a printed value")
    args = ap.parse_args(argv)

    try:
        ra = gguf.GGUFReader(args.a)
        rb = gguf.GGUFReader(args.b)
    except (OSError, ValueError) as exc:
        print(f"compare_llamacpp_gguf: cannot read: {exc}", file=sys.stderr)
        return 2

    print(f"A: {args.a}  ({len(ra.fields)} keys incl. GGUF.*, {len(ra.tensors)} tensors)")
    print(f"B: {args.b}  ({len(rb.fields)} keys incl. GGUF.*, {len(rb.tensors)} tensors)")
    n_diff = 0
    if not args.no_metadata:
        rows, n = compare_metadata(ra, rb, ignore=args.ignore, show_all=args.all, width=args.width)
        n_diff += n
        print(f"\n== metadata: {n} key(s) not identical ==")
        print_table(["key", "status", "A", "B", "note"], rows)
    if not args.no_tensors:
        rows, n, notes = compare_tensors(ra, rb, atol=args.atol, show_all=args.all)
        n_diff += n
        print(f"\n== tensors: {n} tensor(s) differ (atol={args.atol:g}) ==")
        print_table(["tensor", "status", "type A", "type B", "ne A", "ne B", "max|A-B|",
                     "/max|A|"], rows)
        for note in notes:
            print(f"note: {note}")
    print(f"\n{'identical' if n_diff == 0 else f'{n_diff} difference(s)'}")
    return 0 if n_diff == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        sys.exit(1)
