"""Bad input gives a specific exception whose message names the problem; the process survives.

Malformed files are made by re-serialising a valid tiny GGUF (read with gguf.GGUFReader)
with one thing changed, so each case breaks exactly one rule.
"""


import numpy as np
import pytest

import vlcache_native as vc
from ggufedit import Parts


def _load(tmp_path, data: bytes, name="bad.gguf"):
    p = tmp_path / name
    p.write_bytes(data)
    return vc.Model(p)


def test_roundtrip_of_the_editor_loads(tiny_gguf, tmp_path):
    m = _load(tmp_path, Parts(tiny_gguf).bytes())   # the unmodified re-serialisation is valid
    assert m.n_layer == 2
    m.close()


def test_missing_file(tmp_path):
    with pytest.raises(vc.ModelIOError, match="missing.gguf"):
        vc.Model(tmp_path / "missing.gguf")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(vc.VlcacheError):
        vc.Model(tmp_path)


def test_truncated_at_many_offsets(tiny_gguf, tmp_path):
    data = open(tiny_gguf, "rb").read()
    cuts = sorted(set([0, 3, 4, 8, 16, 23, 24, 25] + list(np.linspace(30, len(data) - 1, 60).astype(int))))
    for cut in cuts:
        with pytest.raises(vc.ModelFormatError) as e:
            _load(tmp_path, data[:cut])
        assert str(e.value), f"empty message at cut {cut}"
    m = vc.Model(tiny_gguf)          # the process and the library are fine
    assert m.n_vocab == 300
    m.close()


def test_wrong_magic(tiny_gguf, tmp_path):
    with pytest.raises(vc.ModelFormatError, match="magic"):
        _load(tmp_path, Parts(tiny_gguf).bytes(magic=b"GGML"))


def test_unsupported_version(tiny_gguf, tmp_path):
    with pytest.raises(vc.UnsupportedError, match="version"):
        _load(tmp_path, Parts(tiny_gguf).bytes(version=7))


def test_tensor_data_past_end_of_file(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    p.offsets = {len(p.tensors) - 1: 1 << 30}
    with pytest.raises(vc.ModelFormatError, match=p.tensors[-1][0]):
        _load(tmp_path, p.bytes())


def test_absurd_dimensions(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    p.tensor("blk.0.ffn_up.weight")[2] = [64, 1 << 62]
    with pytest.raises(vc.ModelFormatError, match="blk.0.ffn_up.weight"):
        _load(tmp_path, p.bytes())


def test_unknown_tensor_type(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    p.tensor("blk.1.attn_v.weight")[1] = 99
    with pytest.raises(vc.UnsupportedError, match="99"):
        _load(tmp_path, p.bytes())


def test_missing_required_key(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    del p.kvs["llama.embedding_length"]
    with pytest.raises(vc.ModelFormatError, match="llama.embedding_length"):
        _load(tmp_path, p.bytes())


def test_unknown_architecture(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    p.set_str("general.architecture", "mamba")
    with pytest.raises(vc.UnsupportedError, match="mamba"):
        _load(tmp_path, p.bytes())


def test_missing_tensor(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    p.tensors = [t for t in p.tensors if t[0] != "blk.1.ffn_down.weight"]
    with pytest.raises(vc.ModelFormatError, match="blk.1.ffn_down.weight"):
        _load(tmp_path, p.bytes())


def test_wrong_tensor_shape(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    t = p.tensor("blk.0.ffn_up.weight")
    t[2] = t[2][::-1]                 # same bytes, transposed shape
    with pytest.raises(vc.ModelFormatError, match="blk.0.ffn_up.weight"):
        _load(tmp_path, p.bytes())


def test_missing_tokenizer(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    del p.kvs["tokenizer.ggml.tokens"]
    with pytest.raises(vc.ModelFormatError, match="tokenizer.ggml.tokens"):
        _load(tmp_path, p.bytes())


def test_token_to_piece_out_of_range(tiny_gguf):
    with vc.Model(tiny_gguf, vocab_only=True) as m:
        with pytest.raises(vc.InvalidArgumentError, match="300"):
            m.token_to_piece(300)
        with pytest.raises(vc.InvalidArgumentError, match="vocab_only"):
            m.session()


def test_image_given_to_a_text_only_model(tiny_gguf, tmp_path):
    with vc.Model(tiny_gguf, n_ctx=64) as m:
        assert not m.has_vision and m.vision_info["has_vision"] == 0
        with pytest.raises(vc.InvalidArgumentError, match="no vision tower"):
            m.generate("<image>\nWhat is it?", images=[np.zeros((8, 8, 3), np.uint8)])
        with pytest.raises(vc.InvalidArgumentError, match="no vision tower"):
            m.encode_image(np.zeros((8, 8, 3), np.uint8))
        assert m.generate([1, 5], max_tokens=2).tokens is not None  # still usable


def test_placeholder_and_image_counts_must_agree(tiny_gguf):
    with vc.Model(tiny_gguf, n_ctx=64) as m:
        with pytest.raises(vc.InvalidArgumentError, match="2 <image> placeholder"):
            m.generate("<image> and <image>", images=[np.zeros((8, 8, 3), np.uint8)])
        with pytest.raises(vc.InvalidArgumentError, match="1 <image> placeholder"):
            m.generate("just <image>", images=[])
        with pytest.raises(vc.InvalidArgumentError, match="token ids"):
            m.generate([1, 2, 3], images=[np.zeros((8, 8, 3), np.uint8)])


def test_prefill_chunk_errors_leave_session_unchanged(tiny_gguf):
    with vc.Model(tiny_gguf, n_ctx=16) as m, m.session() as s:
        with pytest.raises(vc.InvalidArgumentError, match="width 3"):
            s.prefill([[1, 2], np.zeros((2, 3), np.float32)])
        with pytest.raises(vc.InvalidArgumentError, match="out of range"):
            s.prefill([[1, 2], np.zeros((2, 64), np.float32), [999]])
        with pytest.raises(vc.ContextFullError):
            s.prefill([[1, 2], np.zeros((20, 64), np.float32)])
        assert s.n_past == 0 and s.image_spans == []
        s.prefill([[1, 2], np.zeros((3, 64), np.float32), 7, 8])
        assert s.n_past == 7 and s.image_spans == [(2, 3)]
        s.reset()
        assert s.image_spans == []


# ---- bad arguments at the Python boundary: each raises a VlcacheError subclass naming it

def test_image_errors_are_vlcache_errors(tmp_path):
    from vlcache_native.image import ImageError, ImageNotFoundError, load_image
    assert issubclass(ImageError, vc.VlcacheError) and issubclass(ImageError, ValueError)
    with pytest.raises(ImageNotFoundError, match="nope.png") as e:
        load_image(tmp_path / "nope.png")
    assert isinstance(e.value, (vc.VlcacheError, FileNotFoundError))
    with pytest.raises(vc.InvalidArgumentError, match="NoneType") as e:
        load_image(None)
    assert isinstance(e.value, TypeError)


@pytest.mark.parametrize("messages, match", [
    ([{"role": "user", "content": None}], "message 0: content must be a str or a list"),
    ([{"role": "user", "content": [5]}], "message 0: content part 0 must be a dict"),
    ([{"role": "user", "content": [{"type": "text"}]}], "message 0: content part 0: a text part needs a str"),
    ([{"role": "user", "content": [{"type": "text", "text": None}]}], "a text part needs a str"),
    (["hello"], "message 0 must be a dict"),
    ("hello", "messages must be a list"),
])
def test_malformed_chat_messages(tiny_gguf, messages, match):
    with vc.Model(tiny_gguf, n_ctx=64, chat_template="llava-1.5") as m:
        with pytest.raises(vc.InvalidArgumentError, match=match):
            m.chat(messages, max_tokens=1)


def test_ints_that_do_not_fit_int32(tiny_gguf):
    with pytest.raises(vc.InvalidArgumentError, match="n_ctx=1099511627776"):
        vc.Model(tiny_gguf, n_ctx=2**40)
    with vc.Model(tiny_gguf, n_ctx=64) as m, m.session() as s:
        with pytest.raises(vc.InvalidArgumentError, match="top_k=1099511627776"):
            m.generate([1, 2], max_tokens=1, top_k=2**40)
        with pytest.raises(vc.InvalidArgumentError, match="token_id=1099511627776"):
            m.token_to_piece(2**40)
        with pytest.raises(vc.InvalidArgumentError, match="token_id=-1099511627776"):
            m.is_eog(-2**40)
        with pytest.raises(vc.InvalidArgumentError, match="token_id=1099511627776"):
            s.decode(2**40)
        with pytest.raises(vc.InvalidArgumentError, match=r"tokens\[0\]=1099511627776"):
            m.decode_batch([s], [2**40])
        with pytest.raises(vc.InvalidArgumentError, match="int32"):
            m.generate([1, 2**40], max_tokens=1)
        assert s.n_past == 0


def test_nan_token_ids(tiny_gguf):
    nan = float("nan")
    with vc.Model(tiny_gguf, n_ctx=64) as m, m.session() as s:
        with pytest.raises(vc.InvalidArgumentError, match="token_id=nan"):
            s.decode(nan)
        with pytest.raises(vc.InvalidArgumentError, match="token_id=nan"):
            m.token_to_piece(nan)
        with pytest.raises(vc.InvalidArgumentError, match=r"tokens\[0\]=nan"):
            m.decode_batch([s], [nan])
        with pytest.raises(vc.InvalidArgumentError, match="integers"):
            m.generate([1, nan], max_tokens=1)
        with pytest.raises(vc.InvalidArgumentError, match="integers"):
            s.prefill([1, nan])


def test_lone_surrogates_and_non_utf8_bytes(tiny_gguf):
    with vc.Model(tiny_gguf, n_ctx=64) as m:
        with pytest.raises(vc.InvalidArgumentError, match="prompt is not valid Unicode.*index 2"):
            m.generate("ab\ud800cd", max_tokens=1)
        with pytest.raises(vc.InvalidArgumentError, match="text is not valid Unicode"):
            m.tokenize("\udfff")
        with pytest.raises(vc.InvalidArgumentError, match="key is not valid Unicode"):
            m.metadata("general.\ud800")
        with pytest.raises(vc.InvalidArgumentError, match="not UTF-8.*offset 1"):
            m.generate(b"a\xff\xfe", max_tokens=1)
        with pytest.raises(vc.InvalidArgumentError, match="must be a str"):
            m.tokenize(5)
        assert m.tokenize(b"a\xff") is not None  # raw bytes are the byte-level input: allowed


def test_unknown_keyword_arguments(tiny_gguf):
    with pytest.raises(vc.InvalidArgumentError, match="n_cxt") as e:
        vc.Model(tiny_gguf, n_cxt=64)
    assert isinstance(e.value, TypeError)
    with vc.Model(tiny_gguf, n_ctx=64, chat_template="llava-1.5") as m:
        with pytest.raises(vc.InvalidArgumentError, match="max_token"):
            m.generate([1, 2], max_token=3)
        with pytest.raises(vc.InvalidArgumentError, match="temprature"):
            m.chat([{"role": "user", "content": "hi"}], temprature=0.5)
        with pytest.raises(vc.InvalidArgumentError, match="n_cxt"):
            m.session(n_cxt=5)
        with pytest.raises(vc.InvalidArgumentError, match="max_tokens='5'"):
            m.generate([1, 2], max_tokens="5")


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_ctx=0), "n_ctx=0"), (dict(n_ctx=-8), "n_ctx=-8"), (dict(n_batch=0), "n_batch=0"),
    (dict(n_threads=0), "n_threads=0"), (dict(n_threads=5000), "n_threads=5000"), (dict(n_ctx=1.5), "n_ctx=1.5"),
    (dict(kv_type="q4"), "kv_type='q4'"),
])
def test_bad_session_parameters_refused_at_construction(tiny_gguf, kwargs, match):
    with pytest.raises(vc.InvalidArgumentError, match=match):
        vc.Model(tiny_gguf, **kwargs)


def test_thread_limit_is_a_resource_error(tiny_gguf):
    # The child caps its address space, so the 999 worker stacks cannot all be mapped:
    # pthread_create says EAGAIN, a resource limit, not a bug (InternalError).
    import subprocess
    import sys
    code = f"""
import resource, vlcache_native as vc
m = vc.Model({str(tiny_gguf)!r}, n_ctx=64)
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + (1 << 30), resource.RLIM_INFINITY))
try:
    m.session(n_threads=1000)
except vc.OutOfMemoryError as e:
    print("OOM", e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "OOM" in out.stdout and "n_threads = 1000" in out.stdout, out.stdout + out.stderr


def test_corrupt_image_processor_metadata():
    from vlcache_native.image import ImageError, processor_for_model

    class Stub:  # what processor_for_model reads of a model
        vision_info = {"image_size": 32, "patch_size": 8, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}

        def __init__(self, text):
            self.text = text

        def metadata(self, key):
            return self.text

    for text in ("{not json", "[1, 2]", '{"resample": "bicubic"}'):
        with pytest.raises(ImageError, match="vlcache.image.processor"):
            processor_for_model(Stub(text))


# ---- files: image paths, inconsistent GGUFs

def test_image_path_that_is_a_fifo_does_not_hang(tmp_path):
    import os
    import threading
    from vlcache_native.image import ImageError, load_image
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    result = []

    def run():
        try:
            load_image(fifo)
        except ImageError as e:
            result.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # blocked in open(): a writer lets it go, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("load_image blocked on a FIFO")
    assert result and "not a regular file" in str(result[0])
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(tmp_path)


def test_image_size_cap(tmp_path, monkeypatch):
    import PIL.Image
    from vlcache_native import image
    path = tmp_path / "big.png"
    PIL.Image.new("RGB", (64, 64), (1, 2, 3)).save(path)
    assert image.load_image(path).size == (64, 64)
    monkeypatch.setattr(image, "MAX_IMAGE_BYTES", 16)
    with pytest.raises(image.ImageError, match="MAX_IMAGE_BYTES"):
        image.load_image(path)
    with pytest.raises(image.ImageError, match="MAX_IMAGE_BYTES"):
        image.load_image(path.read_bytes())


def test_image_over_the_bomb_limit_is_refused_before_decoding(monkeypatch):
    """Pillow only warns between 1x and 2x MAX_IMAGE_PIXELS and decodes anyway; found by
    tests/fuzz (atheris, image): a 142-byte TIFF of 2 x 50,397,751 pixels took over 2 GB."""
    import base64
    import io
    import PIL.Image
    from vlcache_native.image import ImageError, load_image
    tiff = base64.b64decode(
        "SUkqAAgAAAAJAAABBAABAAAAAgAAAAEBBAABAAAANwIBAwABAAAAEAAAAAMBAwABAAAAAQAAAAYBAwYBAwABAAAAAQAAABEB"
        "BAABAAAAegAAABYBBAABAAAABQAAABcBBAABAAAAFAChABwBAwABAAAAAQAAAAAAAAASAFQATACLAFYAnAB0AMUAqgD6AA==")
    with pytest.raises(ImageError, match="MAX_IMAGE_PIXELS"):
        load_image(tiff)
    png = io.BytesIO()
    PIL.Image.new("RGB", (20, 10)).save(png, "PNG")
    assert load_image(png.getvalue()).size == (20, 10)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 150)  # 200 pixels: between 1x and 2x
    with pytest.raises(ImageError, match="200 pixels, more than PIL.Image.MAX_IMAGE_PIXELS = 150"):
        load_image(png.getvalue())


def test_corrupt_tiff_that_pillow_fails_with_a_type_error():
    """Found by tests/fuzz (atheris, image): a TIFF whose strip offsets are stored as DOUBLE
    made Pillow's load() raise TypeError, which escaped as a non-VlcacheError."""
    import base64
    from vlcache_native.image import ImageError, load_image
    tiff = base64.b64decode(
        "SUkqAAgAAAAJAAABBAABAAAAAgAAAAEBBAABAAAABQAAAAIBAwABAAAAEAAAAAMBAwABAAAAAQAAAAYBAwABAAAAAQAAABEB"
        "DAABAAAAegAAABYBBAABAAAABQAAABcBBAABAAAAFAAAABwBAwABAAAAAQAAAAAAAAASAFQATACLAFYAnAB0AMUAqgD6AA==")
    with pytest.raises(ImageError, match="cannot decode image from 142 bytes: TypeError"):
        load_image(tiff)


def test_extreme_aspect_ratio_is_refused_before_the_resize():
    """Found by tests/fuzz (atheris, image): a 1-pixel-wide picture under the pixel limit,
    scaled up by its short side, asked Pillow for a resize of hundreds of millions of
    pixels (MemoryError). The processor now refuses it; an ordinary picture still runs."""
    from vlcache_native.image import ImageError, ImageProcessor
    proc = ImageProcessor()
    thin = np.zeros((400_000, 1, 3), np.uint8)  # 400k x 1 -> would be 134M x 336
    with pytest.raises(ImageError, match="aspect ratio is too extreme"):
        proc(thin)
    assert proc(np.zeros((40, 30, 3), np.uint8)).pixels.shape[-1] > 0


def test_alignment_smaller_than_the_types_need(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)                     # f32 tensors: 4-byte alignment needed
    for align in (1, 2):
        p.set_u32("general.alignment", align)
        with pytest.raises(vc.ModelFormatError, match=f"general.alignment = {align} is smaller than the 4 bytes"):
            _load(tmp_path, p.bytes(align=align))
    p.set_u32("general.alignment", 4)
    with _load(tmp_path, p.bytes(align=4)) as m:  # enough for f32: loads and runs
        assert np.isfinite(m.session().prefill([1, 2, 3])).all()


def test_overlapping_tensor_data(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    p.offsets = {2: 0}                       # tensor 2 placed over tensor 0
    with pytest.raises(vc.ModelFormatError, match="overlap"):
        _load(tmp_path, p.bytes())


def test_block_count_must_match_the_layers_stored(tiny_gguf, tmp_path):
    p = Parts(tiny_gguf)
    p.set_u32("llama.block_count", 1)       # 2 layers stored: one would be ignored
    with pytest.raises(vc.ModelFormatError, match="llama.block_count = 1, but the file stores 2 layers"):
        _load(tmp_path, p.bytes())
    p.set_u32("llama.block_count", 3)
    with pytest.raises(vc.ModelFormatError, match="llama.block_count = 3, but the file stores 2 layers"):
        _load(tmp_path, p.bytes())


# ---- numbers: non-finite values never pass silently

def _with_nan(tiny_gguf, tmp_path, name, rows=None):
    """The tiny model with NaN in tensor `name` (rows: only those rows of a matrix)."""
    p = Parts(tiny_gguf)
    t = p.tensor(name)
    w = np.frombuffer(t[3], dtype=np.float32).reshape(-1, t[2][0]).copy()
    w[slice(None) if rows is None else rows] = np.nan
    t[3] = w.tobytes()
    return _load(tmp_path, p.bytes(), name="nan.gguf")


def test_nan_weights_raise_numeric_error_naming_the_layer(tiny_gguf, tmp_path):
    with _with_nan(tiny_gguf, tmp_path, "blk.1.ffn_down.weight") as m, m.session() as s:
        with pytest.raises(vc.NumericError, match=r"position 2 \(token 3\).*layer 1 \(blk.1\)"):
            s.prefill([1, 2, 3])
        assert s.n_past == 0 and s.kv_lengths().max() == 0   # nothing was kept
        with pytest.raises(vc.NumericError, match=r"position 0 \(token 7\)"):
            s.decode(7)
        assert s.n_past == 0
        with pytest.raises(vc.NumericError):
            m.generate([1, 2], max_tokens=3)


def test_nan_embedding_row_names_the_input(tiny_gguf, tmp_path):
    with _with_nan(tiny_gguf, tmp_path, "token_embd.weight", rows=5) as m, m.session() as s:
        s.prefill([1, 2])                                  # other tokens are fine
        with pytest.raises(vc.NumericError, match=r"position 2 \(token 5\).*input embedding"):
            s.decode(5)
        assert s.n_past == 2
        s.decode(3)                                        # the session goes on
        with m.session() as s2:
            s2.prefill([1])
            with pytest.raises(vc.NumericError, match="session 1 .token 5 at position 1"):
                m.decode_batch([s, s2], [4, 5])
            assert (s.n_past, s2.n_past) == (3, 1)         # no session advanced
            assert m.decode_batch([s, s2], [4, 6]).shape == (2, 300)


def test_non_finite_input_embeddings_are_refused(tiny_gguf):
    from vlcache_native._ffi import ffi, lib
    with vc.Model(tiny_gguf, n_ctx=16) as m, m.session() as s:
        embd = np.zeros((3, 64), np.float32)
        embd[1, 3] = np.inf
        with pytest.raises(vc.InvalidArgumentError, match="row 1, column 3 is inf"):
            s.prefill([[1, 2], embd])
        assert s.n_past == 0 and s.image_spans == []
        st = lib.vlc_session_prefill_embd(  # the C library checks too
            s._handle(), ffi.from_buffer("float[]", embd), 3, 64, ffi.NULL, 0)
        assert st == lib.VLC_STATUS_INVALID_ARG and b"row 1, column 3 is inf" in ffi.string(lib.vlc_last_error())
        assert s.n_past == 0


def test_sampler_refuses_all_non_finite_logits():
    from vlcache_native._ffi import ffi, lib
    from vlcache_native.errors import check
    for temperature in (0.0, 0.8):
        params = ffi.new("vlc_sampler_params *")
        lib.vlc_sampler_params_init(params)
        params.temperature = temperature
        out = ffi.new("vlc_sampler **")
        check(lib.vlc_sampler_create(params, out))
        sampler = ffi.gc(out[0], lib.vlc_sampler_free)
        tok = ffi.new("int32_t *", -7)

        def sample(values):
            arr = np.asarray(values, dtype=np.float32)
            return check(lib.vlc_sampler_sample(sampler, ffi.from_buffer("float[]", arr), len(arr), tok))

        for bad in ([np.nan] * 4, [np.inf, -np.inf, np.nan]):
            with pytest.raises(vc.InvalidArgumentError, match="none of the .* logits is finite"):
                sample(bad)
            assert tok[0] == -7                            # no token written
        sample([np.nan, 1.0, np.nan, 0.5])                 # NaN is never picked
        assert tok[0] in (1, 3) if temperature else tok[0] == 1
        sample([0.0, np.inf, 2.0])                         # +inf is the largest
        assert tok[0] == 1
