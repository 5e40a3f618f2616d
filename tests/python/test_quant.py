"""The reference quantization layer (native/src/quant.c) against gguf-py and NumPy.

- dequantize: bit-identical to gguf.quants.dequantize for every type, on random blocks
  (random bytes with finite f16 scales), so every bit pattern of the quants is covered;
- quantize Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1: byte-identical to gguf.quants.quantize (which
  mirrors llama.cpp's quantize_row_*_ref) on Gaussian rows, zeros, constants, exact ties,
  huge and tiny magnitudes;
- quantize Q4_K / Q5_K / Q6_K (our own scale search): round-trip error bounds measured on
  Gaussian data (and sanity on zeros, constants and offsets);
- activation blocks (vlc_quantize_act_row) equal to their definition computed in NumPy;
- vlc_vec_dot_ref against a float64 dot of the dequantized weight with the dequantized
  activation, within a bound derived from f32 rounding (see _dot_tolerance);
- vlc_type_name / block_size / row_bytes and every bad argument of vlc_quantize /
  vlc_dequantize.

The internal functions (vlc_act_kind, vlc_act_row_bytes, vlc_quantize_act_row,
vlc_vec_dot_ref) are exported by the library for this test (quant.c) but are not in
vlcache.h, so they are declared here on a second cffi FFI.
"""

import cffi
import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as GT

import vlcache_native._ffi as vffi
from vlcache_native._ffi import ffi, lib

_iffi = cffi.FFI()
_iffi.cdef("""
    int    vlc_act_kind(uint32_t wtype);
    size_t vlc_act_row_bytes(uint32_t wtype, int64_t n);
    void   vlc_quantize_act_row(uint32_t wtype, const float * x, void * dst, int64_t n);
    float  vlc_vec_dot_ref(uint32_t wtype, const void * w, const void * xq, int64_t n);
""")
ilib = _iffi.dlopen(str(vffi.library_path))

LEGACY = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]
KQUANTS = ["Q4_K", "Q5_K", "Q6_K"]
QTYPES = LEGACY + KQUANTS

# Offsets of the f16 scale fields in each block (the rest of the block is free bits).
F16_FIELDS = {"Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2],
              "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}

# Relative RMS error of dequantize(quantize(x)) on N(0, 1) data (65536 values, seed 0).
# Measured: Q8_0 0.00537, Q4_0 0.0862, Q4_1 0.0782, Q5_0 0.0428, Q5_1 0.0380,
#           Q4_K 0.0703, Q5_K 0.0349, Q6_K 0.0169.
# (llama.cpp's reference quantizers, for scale: Q4_K ~0.09-0.1, Q5_K ~0.045, Q6_K ~0.02.)
# Bounds ~5% above the measurement: a regression of the search shows, noise does not.
REL_RMS_BOUND = {"Q8_0": 0.0057, "Q4_0": 0.090, "Q4_1": 0.082, "Q5_0": 0.045, "Q5_1": 0.040,
                 "Q4_K": 0.074, "Q5_K": 0.037, "Q6_K": 0.0178}

Q8A = np.dtype([("d", "<f4"), ("s", "<f4"), ("qs", "i1", 32)])
Q8K = np.dtype([("d", "<f4"), ("qs", "i1", 256), ("bsums", "<i2", 16)])


def tid(name):
    return int(GT[name])


def blck(name):
    return gguf.GGML_QUANT_SIZES[GT[name]][0]


def quantize(name, x):
    x = np.ascontiguousarray(x, np.float32).ravel()
    n = lib.vlc_type_row_bytes(tid(name), x.size)
    out = np.full(n + 8, 0xAB, np.uint8)  # 8 guard bytes
    st = lib.vlc_quantize(tid(name), ffi.from_buffer("float[]", x), x.size, ffi.from_buffer(out), n)
    assert st == 0, ffi.string(lib.vlc_last_error()).decode()
    assert (out[n:] == 0xAB).all(), "wrote past cap"
    return out[:n]


def dequantize(name, data, n):
    y = np.empty(n, np.float32)
    st = lib.vlc_dequantize(tid(name), ffi.from_buffer(np.ascontiguousarray(data)), n, ffi.from_buffer("float[]", y))
    assert st == 0, ffi.string(lib.vlc_last_error()).decode()
    return y


def gguf_dequantize(name, data):
    return gguf.quants.dequantize(np.ascontiguousarray(data, np.uint8).reshape(1, -1), GT[name]).ravel()


def gguf_quantize(name, x):
    with np.errstate(over="ignore"):  # 'huge' rows: f16 scales overflow to inf (in both)
        return gguf.quants.quantize(np.asarray(x, np.float32).reshape(-1, blck(name)), GT[name]).ravel()


def random_blocks(name, nb, rng, scale=0.05):
    """nb blocks of random bytes whose f16 fields are finite (either sign, some subnormal)."""
    size = gguf.GGML_QUANT_SIZES[GT[name]][1]
    b = rng.integers(0, 256, size=(nb, size), dtype=np.uint8)
    for off in F16_FIELDS[name]:
        h = (rng.standard_normal(nb) * scale).astype(np.float16)
        h[::7] = (rng.standard_normal(len(h[::7])) * 1e-6).astype(np.float16)  # subnormal halves
        b[:, off:off + 2] = h.view(np.uint8).reshape(nb, 2)
    return b.ravel()


def bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


# ---------------------------------------------------------------------------
# traits


def test_type_traits_match_gguf():
    for name in QTYPES + ["F32", "F16", "BF16"]:
        t = tid(name)
        bs, ts = gguf.GGML_QUANT_SIZES[GT[name]]
        assert ffi.string(lib.vlc_type_name(t)).decode() == name
        assert lib.vlc_type_block_size(t) == bs
        for nblocks in (0, 1, 7):
            assert lib.vlc_type_row_bytes(t, nblocks * bs) == nblocks * ts
        if bs > 1:
            assert lib.vlc_type_row_bytes(t, bs + 1) == 0  # not whole blocks
        assert lib.vlc_type_row_bytes(t, -bs) == 0
    for bad in (-1, 4, 5, 9, 10, 11, 15, 16, 29, 31, 39, 1000):
        assert lib.vlc_type_name(bad) == ffi.NULL
        assert lib.vlc_type_block_size(bad) == 0
        assert lib.vlc_type_row_bytes(bad, 256) == 0


def test_activation_kinds():
    for name in LEGACY:
        assert ilib.vlc_act_kind(tid(name)) == 1  # VLC_ACT_Q8A
        assert ilib.vlc_act_row_bytes(tid(name), 96) == 3 * Q8A.itemsize == 120
    for name in KQUANTS:
        assert ilib.vlc_act_kind(tid(name)) == 2  # VLC_ACT_Q8K
        assert ilib.vlc_act_row_bytes(tid(name), 512) == 2 * Q8K.itemsize == 584
    for name in ("F32", "F16", "BF16"):
        assert ilib.vlc_act_kind(tid(name)) == 0
        assert ilib.vlc_act_row_bytes(tid(name), 512) == 0


# ---------------------------------------------------------------------------
# dequantize


@pytest.mark.parametrize("name", QTYPES)
def test_dequantize_bit_identical_to_gguf(name):
    rng = np.random.default_rng(tid(name))
    nb = 96 if blck(name) == 32 else 24
    data = random_blocks(name, nb, rng)
    y = dequantize(name, data, nb * blck(name))
    np.testing.assert_array_equal(bits(y), bits(gguf_dequantize(name, data)))


def test_dequantize_float_types():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(301).astype(np.float32) * 100
    x[:4] = [0.0, -0.0, 1e-42, 7e4]  # subnormal f32, f16 overflow
    np.testing.assert_array_equal(bits(dequantize("F32", x.view(np.uint8), x.size)), bits(x))
    with np.errstate(over="ignore"):
        h = x.astype(np.float16)  # 7e4 -> inf, as vlc_f32_to_f16
    np.testing.assert_array_equal(bits(dequantize("F16", h.view(np.uint8), x.size)), bits(h.astype(np.float32)))
    b = gguf.quants.quantize(x, GT.BF16)
    np.testing.assert_array_equal(bits(dequantize("BF16", b, x.size)), bits(gguf.quants.dequantize(b, GT.BF16)))
    # and the other way (vlc_quantize to the float types)
    np.testing.assert_array_equal(quantize("F16", x).view(np.float16).view(np.uint16), h.view(np.uint16))
    np.testing.assert_array_equal(quantize("BF16", x), b.view(np.uint8).ravel())
    np.testing.assert_array_equal(quantize("F32", x).view(np.float32), x)


# ---------------------------------------------------------------------------
# quantize: legacy types byte for byte


def legacy_inputs():
    rng = np.random.default_rng(11)
    g = rng.standard_normal(8 * 256).astype(np.float32)
    per_block_scale = (rng.standard_normal((64, 32)) * 10.0 ** rng.uniform(-6, 6, (64, 1))).astype(np.float32)
    ties = (rng.integers(-64, 65, 32 * 16) / 8).astype(np.float32)  # many x * id + 8.5 on .0 / .5
    twin = rng.standard_normal((4, 32)).astype(np.float32)
    twin[:, 3], twin[:, 20] = 5.0, -5.0  # largest |x| twice, opposite signs: the first one wins
    posmax = np.abs(rng.standard_normal(64)).astype(np.float32)
    return {
        "gaussian": g,
        "zeros": np.zeros(64, np.float32),
        "constant+": np.full(64, 0.37, np.float32),
        "constant-": np.full(64, -2.5, np.float32),
        "huge": g[:256] * np.float32(1e30),
        "tiny": g[:256] * np.float32(1e-30),
        "mixed_scales": per_block_scale.ravel(),
        "ties": ties,
        "twin_max": twin.ravel(),
        "positive": posmax,
        "one_hot": np.eye(32, dtype=np.float32).ravel()[:128] * 3,
    }


@pytest.mark.parametrize("name", LEGACY)
def test_legacy_quantize_bytes_equal_gguf(name):
    for label, x in legacy_inputs().items():
        got = quantize(name, x)
        want = gguf_quantize(name, x)
        assert got.tobytes() == want.tobytes(), f"{name} {label}: first diff at byte {np.argmax(got != want)}"


def test_quantize_blocks_are_independent():
    """Quantizing rows one by one gives the bytes of quantizing them together."""
    x = np.random.default_rng(3).standard_normal((4, 512)).astype(np.float32)
    for name in QTYPES:
        whole = quantize(name, x)
        rows = np.concatenate([quantize(name, r) for r in x])
        assert whole.tobytes() == rows.tobytes(), name


# ---------------------------------------------------------------------------
# quantize: error bounds (all types; the K-quants have no byte reference)


@pytest.mark.parametrize("name", QTYPES)
def test_round_trip_error_gaussian(name):
    x = np.random.default_rng(0).standard_normal(65536).astype(np.float32)
    data = quantize(name, x)
    y = dequantize(name, data, x.size)
    np.testing.assert_array_equal(bits(y), bits(gguf_dequantize(name, data)))  # gguf-py reads our bytes alike
    rel = np.sqrt(np.mean((y.astype(np.float64) - x) ** 2) / np.mean(x.astype(np.float64) ** 2))
    assert rel < REL_RMS_BOUND[name], f"{name}: relative RMS error {rel:.5f}"
    assert rel > 0.5 * REL_RMS_BOUND[name], f"{name}: {rel:.5f} suspiciously small (bounds stale?)"


def test_kquants_beat_legacy_of_same_bits():
    x = np.random.default_rng(1).standard_normal(16384).astype(np.float32)

    def err(name):
        return float(np.sqrt(np.mean((dequantize(name, quantize(name, x), x.size) - x) ** 2)))

    assert err("Q4_K") < err("Q4_1") < err("Q4_0")
    assert err("Q5_K") < err("Q5_1") < err("Q5_0")
    assert err("Q8_0") < err("Q6_K") < err("Q5_K")


@pytest.mark.parametrize("name", KQUANTS)
def test_kquant_special_inputs(name):
    rng = np.random.default_rng(7)
    n = 512
    zeros = np.zeros(n, np.float32)
    assert (dequantize(name, quantize(name, zeros), n) == 0).all()
    for c in (0.37, -2.5, 1e-3):
        y = dequantize(name, quantize(name, np.full(n, c, np.float32)), n)
        # f16 scales: a few 1e-4 relative; 1e-3 makes the f16 super-block scale subnormal
        # (few bits), the codes compensate to ~0.2% (measured 2.2e-3)
        assert np.abs(y - c).max() <= 3e-3 * abs(c), (name, c)
    # all values far above zero: no format has a positive offset (Q4_K / Q5_K mins are
    # -dmin * m <= 0), so the step is ~max / nmax (nmax 15, 31, 32) and the RMS error about
    # step / sqrt(12) ~ 0.019, 0.0093, 0.009 of RMS(x); bounds 15% above
    x = (5.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    y = dequantize(name, quantize(name, x), n)
    bound = {"Q4_K": 0.022, "Q5_K": 0.011, "Q6_K": 0.0105}[name]
    assert np.sqrt(np.mean((y - x) ** 2)) < bound * np.sqrt(np.mean(x**2)), name
    # ... and far below zero: the mins take the offset and the error follows the spread,
    # a little above the Gaussian figure (the 6-bit min codes round a large min): measured
    # 0.085 (Q4_K), 0.054 (Q5_K) of std(x)
    if name != "Q6_K":
        y = dequantize(name, quantize(name, -x), n)
        bound = {"Q4_K": 0.095, "Q5_K": 0.060}[name]
        assert np.sqrt(np.mean((y + x) ** 2)) < bound * np.std(x), name
    # huge and tiny values stay finite and scale-accurate
    g = rng.standard_normal(n).astype(np.float32)
    for s in (1e4, 1e-4):
        xs = g * np.float32(s)
        y = dequantize(name, quantize(name, xs), n)
        assert np.isfinite(y).all()
        assert np.sqrt(np.mean((y - xs) ** 2)) < 2 * REL_RMS_BOUND[name] * np.sqrt(np.mean(xs**2)), (name, s)
    # one outlier (100 sigma) in the first super-block: it is kept to 1%, and the other
    # sub-blocks keep their own scales (6-bit codes against a d set by the outlier cost a
    # little: measured 0.082 / 0.041 / 0.023 vs 0.062 / 0.034 / 0.019 in the clean block)
    x = rng.standard_normal(n).astype(np.float32)
    x[0] = 100.0
    y = dequantize(name, quantize(name, x), n)
    sub = 16 if name == "Q6_K" else 32
    assert abs(y[0] - 100.0) < 1.0, name
    assert np.sqrt(np.mean((y - x)[sub:256] ** 2)) < 1.4 * REL_RMS_BOUND[name], name
    assert np.sqrt(np.mean((y - x)[256:] ** 2)) < REL_RMS_BOUND[name] * 1.1, name


def test_non_finite_input_does_not_crash():
    """NaN / inf weights are bad data, not bad arguments: quantize returns and the output
    stays in range (no undefined float -> int conversion)."""
    x = np.random.default_rng(2).standard_normal(512).astype(np.float32)
    x[3], x[300], x[301] = np.nan, np.inf, -np.inf
    for name in QTYPES:
        y = dequantize(name, quantize(name, x), x.size)
        assert y.shape == (512,)
    xq = quantize_act("Q4_K", x)
    assert xq.size == 2 * Q8K.itemsize


# ---------------------------------------------------------------------------
# activation blocks


def act_expected(name, x):
    """The activation row of the definition (quant.h), computed in NumPy."""
    w = 32 if ilib.vlc_act_kind(tid(name)) == 1 else 256
    xb = x.reshape(-1, w)
    amax = np.abs(xb).max(axis=1, keepdims=True)
    d = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        qs = np.where(d == 0, 0, np.rint(xb / d)).astype(np.int8)  # x / d in f32, ties to even
    out = np.zeros(len(xb), Q8A if w == 32 else Q8K)
    out["d"] = d[:, 0]
    out["qs"] = qs
    if w == 32:
        out["s"] = d[:, 0] * qs.astype(np.int32).sum(axis=1).astype(np.float32)
    else:
        out["bsums"] = qs.reshape(len(xb), 16, 16).astype(np.int32).sum(axis=2)
    return out


def quantize_act(name, x):
    x = np.ascontiguousarray(x, np.float32)
    n = ilib.vlc_act_row_bytes(tid(name), x.size)
    buf = np.zeros(n, np.uint8)
    ilib.vlc_quantize_act_row(tid(name), _iffi.from_buffer("float[]", x), _iffi.from_buffer(buf), x.size)
    return buf


@pytest.mark.parametrize("name", ["Q4_0", "Q4_K"])
def test_activation_blocks_match_definition(name):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(1024).astype(np.float32)
    x[256:512] = 0.0                                        # an all-zero block: d = 0, qs = 0
    x[512:768] = rng.integers(-254, 255, 256) / 2  # halves: with d = 1 exactly, x / d ties
    x[512:768:32] = 127.0                            # amax 127 in each block: d = 1
    got = quantize_act(name, x).view(Q8A if ilib.vlc_act_kind(tid(name)) == 1 else Q8K)
    want = act_expected(name, x)
    for field in want.dtype.names:
        np.testing.assert_array_equal(got[field], want[field], err_msg=field)


# ---------------------------------------------------------------------------
# reference dot products


def act_values(name, xq):
    """The activation row's values d * qs, float64."""
    a = xq.view(Q8A if ilib.vlc_act_kind(tid(name)) == 1 else Q8K)
    return (a["d"].astype(np.float64)[:, None] * a["qs"].astype(np.float64)).ravel()


def min_terms(name, data):
    """|min| of each weight element's block / sub-block (0 for the symmetric types), float64."""
    size = gguf.GGML_QUANT_SIZES[GT[name]][1]
    b = data.reshape(-1, size)
    if name in ("Q4_1", "Q5_1"):
        m = np.abs(b[:, 2:4].copy().view(np.float16).astype(np.float64))
        return np.repeat(m, 32, axis=1).ravel()
    if name in ("Q4_K", "Q5_K"):
        dmin = np.abs(b[:, 2:4].copy().view(np.float16).astype(np.float64))
        _, m = gguf.quants.Q4_K.get_scale_min(b[:, 4:16].copy())
        return np.repeat(dmin * m.astype(np.float64), 32, axis=1).ravel()
    return np.zeros(b.shape[0] * blck(name))


def dot_tolerance(name, w, m, x):
    """Bound on |vec_dot_ref - exact dot| from f32 rounding.

    Per block the integer sums are exact; at most ~6 f32 roundings (scale products, int ->
    float conversion of sums above 2^24, the products, the min-term subtraction) each of
    relative size 2^-24 of the block's term magnitudes, plus one rounding per accumulation
    step of the running sum (nb steps, each bounded by the total magnitude). The term
    magnitudes are bounded by sum_i (|w_i| + 2 |m_i|) |x_i| (|d q| <= |w| + |m|).
    Doubled for margin: (nb + 8) * 2^-23 * that sum.
    """
    nb = w.size // blck(name)
    mag = float(np.sum((np.abs(w) + 2 * m) * np.abs(x)))
    return (nb + 8) * 2.0**-23 * mag


@pytest.mark.parametrize("name", QTYPES)
def test_vec_dot_ref_matches_float64(name):
    rng = np.random.default_rng(100 + tid(name))
    for n in (blck(name), 3 * blck(name), 4096 if blck(name) == 32 else 2048):
        nb = n // blck(name)
        for kind in ("random_bytes", "quantized"):
            if kind == "random_bytes":
                wdata = random_blocks(name, nb, rng)
            else:
                wdata = quantize(name, rng.standard_normal(n).astype(np.float32) * 0.02)
            x = rng.standard_normal(n).astype(np.float32)
            x[: n // 8] *= 30  # uneven magnitudes across blocks
            xq = quantize_act(name, x)
            got = ilib.vlc_vec_dot_ref(tid(name), _iffi.from_buffer(wdata), _iffi.from_buffer(xq), n)
            w = gguf_dequantize(name, wdata).astype(np.float64)
            xv = act_values(name, xq)
            exact = float(np.dot(w, xv))
            tol = dot_tolerance(name, w, min_terms(name, wdata), xv)
            assert abs(got - exact) <= tol, f"{name} n={n} {kind}: {got} vs {exact} (tol {tol:.3g})"
    # a zero activation row dots to exactly 0
    xq = quantize_act(name, np.zeros(blck(name) * 2, np.float32))
    wdata = random_blocks(name, 2, rng)
    assert ilib.vlc_vec_dot_ref(tid(name), _iffi.from_buffer(wdata), _iffi.from_buffer(xq), 2 * blck(name)) == 0.0


def test_vec_dot_ref_unknown_type_is_nan():
    buf = np.zeros(1024, np.uint8)
    assert np.isnan(ilib.vlc_vec_dot_ref(tid("F16"), _iffi.from_buffer(buf), _iffi.from_buffer(buf), 32))


# ---------------------------------------------------------------------------
# bad arguments


def last_error():
    return ffi.string(lib.vlc_last_error()).decode()


def test_bad_arguments():
    x = np.ones(256, np.float32)
    xp = ffi.from_buffer("float[]", x)
    out = np.zeros(1024, np.uint8)
    op = ffi.from_buffer(out)
    y = np.zeros(256, np.float32)
    yp = ffi.from_buffer("float[]", y)

    for bad in (9, 15, 99, -1):  # Q8_1, Q8_K, nonsense, negative
        assert lib.vlc_quantize(bad, xp, 256, op, 1024) == lib.VLC_STATUS_UNSUPPORTED
        assert "vlc_quantize" in last_error() and f"type {bad}" in last_error()
        assert lib.vlc_dequantize(bad, op, 256, yp) == lib.VLC_STATUS_UNSUPPORTED
        assert "vlc_dequantize" in last_error() and f"type {bad}" in last_error()

    q4k = tid("Q4_K")
    assert lib.vlc_quantize(q4k, ffi.NULL, 256, op, 1024) == lib.VLC_STATUS_INVALID_ARG
    assert "src is NULL" in last_error()
    assert lib.vlc_quantize(q4k, xp, 256, ffi.NULL, 1024) == lib.VLC_STATUS_INVALID_ARG
    assert "dst is NULL" in last_error()
    assert lib.vlc_dequantize(q4k, ffi.NULL, 256, yp) == lib.VLC_STATUS_INVALID_ARG
    assert lib.vlc_dequantize(q4k, op, 256, ffi.NULL) == lib.VLC_STATUS_INVALID_ARG

    for n in (255, 32, -256):
        assert lib.vlc_quantize(q4k, xp, n, op, 1024) == lib.VLC_STATUS_INVALID_ARG
        assert f"n = {n}" in last_error() and "Q4_K" in last_error()
        assert lib.vlc_dequantize(q4k, op, n, yp) == lib.VLC_STATUS_INVALID_ARG
        assert f"n = {n}" in last_error()
    assert lib.vlc_quantize(tid("Q8_0"), xp, 33, op, 1024) == lib.VLC_STATUS_INVALID_ARG

    out[:] = 0xAB
    assert lib.vlc_quantize(q4k, xp, 256, op, 143) == lib.VLC_STATUS_INVALID_ARG
    assert "cap = 143" in last_error() and "144" in last_error()
    assert (out == 0xAB).all(), "nothing written on error"
    assert lib.vlc_quantize(q4k, xp, 256, op, 144) == lib.VLC_STATUS_OK
    assert lib.vlc_quantize(q4k, xp, 0, op, 0) == lib.VLC_STATUS_OK  # empty is fine
    assert lib.vlc_dequantize(q4k, op, 0, yp) == lib.VLC_STATUS_OK
