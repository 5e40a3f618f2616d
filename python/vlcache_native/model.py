"""Model: a loaded GGUF (weights mapped in place, vocabulary), its tokenizer and generate()."""

from __future__ import annotations

import codecs
import os
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from ._ffi import ffi, lib
from . import chat as _chat
from ._native import NativeObject, held
from .errors import (ClosedError, ContextFullError, InvalidArgumentError, InvalidTypeError, ModelIOError, check,
                     checked_arguments, float_arg, int_arg, utf8_arg)
from . import kvcache
from .kvcache import CompressReport
from .session import Session, _as_ids, _session_args


@dataclass
class GenerationStats:
    """Timings and memory of one generate() call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    prefill_ms: float = 0.0          # the prompt's forward pass
    decode_ms: float = 0.0           # all single-token forward passes
    decode_steps: int = 0            # how many there were (the first token comes from the prefill)
    ttft_ms: float = 0.0             # call start to the first sampled token
    total_ms: float = 0.0
    kv_bytes: int = 0                # KV bytes the allocator holds at the end
    image_tokens: int = 0            # prompt positions taken by image embeddings
    image_encode_ms: float = 0.0     # preprocessing + vision tower, all images
    kv: "CompressReport | None" = None  # what kv_budget's compression did (None: not compressed)

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / (self.prefill_ms / 1e3) if self.prefill_ms > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_steps / (self.decode_ms / 1e3) if self.decode_ms > 0 else 0.0

    def __str__(self) -> str:
        return (f"prompt {self.prompt_tokens} tok in {self.prefill_ms:.1f} ms "
                f"({self.prefill_tokens_per_s:.1f} tok/s), first token after {self.ttft_ms:.1f} ms, "
                f"{self.completion_tokens} generated ({self.decode_tokens_per_s:.1f} tok/s), "
                f"KV {self.kv_bytes / 2**20:.2f} MiB")


@dataclass
class Completion:
    """The result of :meth:`Model.generate`."""

    text: str
    tokens: list[int]
    finish_reason: str               # "stop" (end-of-generation token or stop string) or "length"
    stats: GenerationStats = field(default_factory=GenerationStats)


class CompletionStream:
    """Iterator of text pieces from ``generate(..., stream=True)``.

    After the iteration ends, :attr:`completion` holds the full :class:`Completion`.
    """

    def __init__(self, gen: Iterator):
        self._gen = gen
        self.completion: Completion | None = None

    def __iter__(self) -> "CompletionStream":
        return self

    def __next__(self) -> str:
        try:
            return next(self._gen)
        except StopIteration as stop:
            self.completion = stop.value
            raise


class Model(NativeObject):
    """A LLaMA-architecture GGUF model run by the vlcache_native C runtime.

    >>> model = Model("model.gguf", n_ctx=2048)
    >>> out = model.generate("The capital of France is", max_tokens=16)
    >>> print(out.text, out.stats)

    Args:
        path: GGUF file, from tools/convert_hf_to_gguf.py or llama.cpp's converter.
        mmproj: llama.cpp's vision-tower GGUF ("mmproj") to pair with a llama.cpp text GGUF.
        n_ctx: tokens of context for sessions made by this model (KV cache size).
        n_threads: CPU threads; None = all cores.
        n_batch: most tokens per prefill chunk (bounds the scratch memory).
        kv_type: "f16" (default) or "f32" KV cache.
        vocab_only: load only the tokenizer.
        use_mmap: map the files (default); False reads them into memory backed by transparent
            huge pages where the kernel allows (llama.cpp's --no-mmap): the load takes
            longer and the weights count as the process's own memory.
        chat_template: "llava-1.5", "llava-1.6-mistral" or "llava-1.6-vicuna"; default: the
            file's vlcache.chat_template, else llava-1.5 for a model with a vision tower.
    """

    _kind = "model"

    @checked_arguments
    def __init__(self, path: str | os.PathLike, mmproj: str | os.PathLike | None = None, *, n_ctx: int = 4096,
                 n_threads: int | None = None, n_batch: int = 512, kv_type: str = "f16", vocab_only: bool = False,
                 chat_template: str | None = None, use_mmap: bool = True):
        for name, p in (("path", path), ("mmproj", mmproj)):
            if not isinstance(p, (str, os.PathLike)) and not (name == "mmproj" and p is None):
                raise InvalidTypeError(f"{name}={p!r}, expected a file path")
        self.path = os.fspath(path)
        self.mmproj = os.fspath(mmproj) if mmproj is not None else None
        n_ctx, n_threads, n_batch, kv_type = _session_args(n_ctx, n_threads, n_batch, kv_type)
        if chat_template is not None and chat_template not in _chat.TEMPLATES:
            raise InvalidArgumentError(f"chat_template={chat_template!r}, expected one of {_chat.TEMPLATES}")
        for p in (self.path, self.mmproj):
            if p is not None and not os.path.exists(p):
                raise ModelIOError(f"model file not found: {p!r}")
        params = ffi.new("vlc_model_params *")
        lib.vlc_model_params_init(params)
        params.vocab_only = int(vocab_only)
        params.no_mmap = int(not use_mmap)
        mmproj_c = ffi.new("char[]", os.fsencode(self.mmproj)) if self.mmproj else ffi.NULL
        params.mmproj_path = mmproj_c
        out = ffi.new("vlc_model **")
        check(lib.vlc_model_load(os.fsencode(self.path), params, out))
        self._adopt(out[0])
        info = ffi.new("vlc_model_info *")
        vinfo = ffi.new("vlc_vision_info *")
        with self._call() as h:
            lib.vlc_model_get_info(h, info)
            lib.vlc_model_get_vision_info(h, vinfo)
        self._info = {name: getattr(info, name) for name, _ in ffi.typeof("vlc_model_info").fields}
        self._vision = {name: getattr(vinfo, name) for name, _ in ffi.typeof("vlc_vision_info").fields}
        for k in ("image_mean", "image_std"):
            self._vision[k] = list(self._vision[k])
        stored = self.metadata("vlcache.chat_template")
        self.chat_template = chat_template or (stored if stored in _chat.TEMPLATES else None) or (
            "llava-1.5" if self.has_vision else None)
        self._processor = None
        self._image_token = None  # (text, id or None), looked up on first use
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_batch = n_batch
        self.kv_type = kv_type
        self.vocab_only = bool(vocab_only)

    # ---- life cycle

    def _free(self, ptr) -> None:
        """Drops the model's reference: the file is unmapped once no session holds it (close()
        has closed this model's sessions first)."""
        lib.vlc_model_free(ptr)

    def __repr__(self) -> str:
        if self.closed:
            return "<vlcache_native.Model closed>"
        i = self._info
        return (f"<vlcache_native.Model {os.path.basename(self.path)!r} layers={i['n_layer']} "
                f"embd={i['n_embd']} heads={i['n_head']}/{i['n_head_kv']} vocab={i['n_vocab']}>")

    # ---- hyperparameters

    @property
    def info(self) -> dict:
        """All hyperparameters read from the file (see vlc_model_info in vlcache.h)."""
        return dict(self._info)

    n_vocab = property(lambda self: self._info["n_vocab"])
    n_ctx_train = property(lambda self: self._info["n_ctx_train"])
    n_embd = property(lambda self: self._info["n_embd"])
    n_layer = property(lambda self: self._info["n_layer"])
    n_head = property(lambda self: self._info["n_head"])
    n_head_kv = property(lambda self: self._info["n_head_kv"])
    head_dim = property(lambda self: self._info["head_dim"])
    n_ff = property(lambda self: self._info["n_ff"])
    bos_id = property(lambda self: self._info["bos_id"])
    eos_id = property(lambda self: self._info["eos_id"])
    n_params = property(lambda self: self._info["n_params"])

    def metadata(self, key: str) -> str | None:
        """A string metadata value of the GGUF (e.g. "tokenizer.chat_template"), or None."""
        k = utf8_arg("key", key)
        with self._call() as h:
            p = lib.vlc_model_meta_str(h, k)
            return None if p == ffi.NULL else ffi.string(p).decode("utf-8", "replace")

    def metadata_numbers(self, key: str) -> list[float] | None:
        """A numeric metadata value or array of the GGUF as floats, or None when absent or not numeric."""
        k = utf8_arg("key", key)
        with self._call() as h:
            n = lib.vlc_model_meta_num(h, k, ffi.NULL, 0)
            if n < 0:
                return None
            buf = ffi.new("double[]", max(n, 1))
            lib.vlc_model_meta_num(h, k, buf, n)
            return [buf[i] for i in range(n)]

    def tensor(self, name: str, n: int) -> np.ndarray:
        """A tensor of the model (or its mmproj) as float32 [n] (n = its element count)."""
        out = np.empty(int_arg("n", n, 0, 2**62), dtype=np.float32)
        with self._call() as h:
            check(lib.vlc_model_tensor_f32(h, utf8_arg("name", name), ffi.from_buffer("float[]", out,
                                                                                     require_writable=True), n))
        return out

    # ---- tokenizer

    def tokenize(self, text: str | bytes, add_bos: bool = True, special: bool = True) -> list[int]:
        """Token ids of ``text``. ``special``: control tokens written in the text ("<s>") are parsed."""
        if isinstance(text, (bytes, bytearray, memoryview)):
            data = bytes(text)
        else:
            data = utf8_arg("text", text)
        n = ffi.new("int32_t *")
        cap = len(data) + 2
        while True:
            buf = ffi.new("int32_t[]", cap)
            with self._call() as h:
                st = check(lib.vlc_tokenize(h, data, len(data), int(add_bos), int(special), buf, cap, n))
            if st == lib.VLC_STATUS_OK:
                return list(ffi.unpack(buf, n[0]))
            cap = n[0]

    def _bytes_call(self, fn, *args) -> bytes:
        n = ffi.new("int32_t *")
        cap = 64
        while True:
            buf = ffi.new("char[]", cap)
            with self._call() as h:
                st = check(fn(h, *args, buf, cap, n))
            if st == lib.VLC_STATUS_OK:
                return ffi.unpack(buf, n[0])
            cap = n[0]

    def detokenize_bytes(self, ids: Sequence[int], special: bool = False) -> bytes:
        arr = _as_ids(ids)
        return self._bytes_call(lib.vlc_detokenize, ffi.from_buffer("int32_t[]", arr), len(arr), 1, int(special))

    def detokenize(self, ids: Sequence[int], special: bool = False) -> str:
        """Text of token ids; BOS and (unless ``special``) control tokens are left out."""
        return self.detokenize_bytes(ids, special).decode("utf-8", "replace")

    def token_to_piece(self, token_id: int, special: bool = False) -> bytes:
        """The bytes of one token (a byte-fallback token gives one byte)."""
        return self._bytes_call(lib.vlc_token_to_piece, int_arg("token_id", token_id), int(special))

    def is_eog(self, token_id: int) -> bool:
        """True for tokens that end generation (EOS, end-of-turn)."""
        token = int_arg("token_id", token_id)
        with self._call() as h:
            return bool(lib.vlc_token_is_eog(h, token))

    # ---- vision

    @property
    def has_vision(self) -> bool:
        """True when the model has a vision tower (a LLaVA file, or a text file + mmproj)."""
        return bool(self._vision["has_vision"])

    @property
    def vision_info(self) -> dict:
        """The vision tower's hyperparameters (see vlc_vision_info in vlcache.h)."""
        return dict(self._vision)

    def _require_vision(self) -> None:
        if self.closed:
            raise ClosedError("the model is closed")
        if not self.has_vision:
            raise InvalidArgumentError(
                "this model has no vision tower: convert a LLaVA checkpoint with tools/convert_hf_to_gguf.py, "
                "or pass llama.cpp's mmproj file as Model(text_gguf, mmproj=...)")

    def encode_tiles(self, pixels: np.ndarray) -> np.ndarray:
        """Vision tower + projector on preprocessed tiles ``[n, 3, S, S]`` -> ``[n, tokens_per_tile, n_embd]``."""
        self._require_vision()
        v = self._vision
        px = np.ascontiguousarray(pixels, dtype=np.float32)
        S = v["image_size"]
        if px.ndim != 4 or px.shape[1:] != (3, S, S) or px.shape[0] == 0:
            raise InvalidArgumentError(f"pixels must have shape [n, 3, {S}, {S}], got {list(px.shape)}")
        out = np.empty((px.shape[0], v["n_tokens_per_tile"], v["n_embd_out"]), dtype=np.float32)
        with self._call() as h:
            check(lib.vlc_vision_encode(h, ffi.from_buffer("float[]", px), px.shape[0], self.n_threads or 0,
                                        ffi.from_buffer("float[]", out, require_writable=True)))
        return out

    def image_processor(self):
        """The :class:`~vlcache_native.image.ImageProcessor` this model's images go through."""
        self._require_vision()
        if self._processor is None:
            from .image import processor_for_model
            self._processor = processor_for_model(self)
        return self._processor

    def encode_image(self, image) -> np.ndarray:
        """Image embeddings ``[n_image_tokens, n_embd]`` as the text model takes them.

        ``image``: a path, bytes, a PIL image or a uint8 array. The result can be kept and
        passed again (in ``images=`` or to :meth:`Session.prefill`) to skip re-encoding.
        """
        proc = self.image_processor()
        processed = proc(image)
        return proc.features(processed, self.encode_tiles(processed.pixels), self)

    # ---- prompts with images

    def _image_token_id(self) -> int | None:
        """Id of the "<image>" placeholder when the vocabulary has it as one token."""
        if self._image_token is None:
            text = self.metadata("vlcache.image.token") or _chat.IMAGE_PLACEHOLDER
            ids = self.tokenize(text, add_bos=False)
            self._image_token = (text, ids[0] if len(ids) == 1 else None)
        return self._image_token[1]

    def prompt_chunks(self, prompt: str, images: Sequence | None = None, add_bos: bool = True) -> list:
        """The prompt as :meth:`Session.prefill` takes it: token-id lists and image embeddings, in order.

        Same rules as :meth:`generate` (placeholders, images first when there is none).
        """
        return self._prompt_chunks(prompt, images, add_bos)[0]

    def _prompt_chunks(self, prompt, images, add_bos: bool) -> tuple[list, GenerationStats]:
        stats = GenerationStats()
        images = list(images or [])
        if not isinstance(prompt, (str, bytes)):
            if images:
                raise InvalidArgumentError("images need a text prompt with <image> placeholders, not token ids")
            return [list(_as_ids(prompt))], stats
        if isinstance(prompt, bytes):
            try:
                prompt = prompt.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InvalidArgumentError(f"prompt: the bytes are not UTF-8 ({e.reason} at offset {e.start})") from None
        utf8_arg("prompt", prompt)  # a lone surrogate is named here, not deep in the tokenizer
        n_marks = prompt.count(_chat.IMAGE_PLACEHOLDER)
        if images and n_marks == 0:  # like llama.cpp's mtmd-cli: a user turn with the images first
            if self.chat_template is None:
                raise InvalidArgumentError("images given, but the prompt has no <image> placeholder "
                                           "and the model no chat template")
            parts = [{"type": "image", "image": im} for im in images] + [{"type": "text", "text": prompt}]
            prompt, _ = _chat.format_chat([{"role": "user", "content": parts}], self.chat_template)
            n_marks = len(images)
        if n_marks != len(images):
            raise InvalidArgumentError(f"the prompt has {n_marks} {_chat.IMAGE_PLACEHOLDER} placeholder(s) "
                                       f"but {len(images)} image(s) were given")
        if images:
            self._require_vision()
        t0 = time.perf_counter()
        feats = [im if isinstance(im, np.ndarray) and im.ndim == 2 and im.dtype.kind == "f"
                 else self.encode_image(im) for im in images]
        stats.image_encode_ms = (time.perf_counter() - t0) * 1e3
        stats.image_tokens = sum(len(f) for f in feats)

        # Tokenize as Hugging Face does: the whole text, the placeholder parsed as its special
        # token, then each placeholder replaced by its image's rows. A vocabulary without
        # the placeholder token (llama.cpp files) is tokenized piece by piece instead.
        image_id = self._image_token_id() if images else None
        if image_id is not None:
            ids = self.tokenize(prompt, add_bos=add_bos)
            cut = [i for i, t in enumerate(ids) if t == image_id]
            if len(cut) != len(feats):
                raise InvalidArgumentError(f"the prompt tokenizes to {len(cut)} image tokens, expected {len(feats)}")
            pieces = [ids[a + 1:b] for a, b in zip([-1] + cut, cut + [len(ids)])]
        else:
            texts = prompt.split(_chat.IMAGE_PLACEHOLDER)
            pieces = [self.tokenize(t, add_bos=add_bos and i == 0) if t or i == 0 else [] for i, t in enumerate(texts)]
        chunks: list = [pieces[0]]
        for f, piece in zip(feats, pieces[1:]):
            chunks += [f, piece]
        return chunks, stats

    # ---- sessions and generation

    @checked_arguments
    def session(self, *, n_ctx: int | None = None, n_threads: int | None = None,
                n_batch: int | None = None, kv_type: str | None = None) -> Session:
        """A new session (KV cache); arguments default to the model's."""
        return Session(self, n_ctx=n_ctx or self.n_ctx, n_threads=n_threads or self.n_threads,
                       n_batch=n_batch or self.n_batch, kv_type=kv_type or self.kv_type)

    def decode_batch(self, sessions: Sequence[Session], tokens: Sequence[int]) -> np.ndarray:
        """One decode step for several sessions of this model at once: ``tokens[i]`` runs at
        position ``n_past`` of ``sessions[i]``. Returns the logits ``[len(sessions), n_vocab]``.

        Every weight matrix is read once for all the rows, so a step of N sequences costs
        far less than N single steps (``tools/bench_batch.py`` measures it); each row
        attends over its own session's cache (any length, compressed or not). The results
        are bit-identical to calling ``sessions[i].decode(tokens[i])`` for each session.
        Runs on the first session's threads. Nothing changes when the batch is refused (a
        session twice, or of another model, a token out of range, a full context).
        """
        sessions, ids = list(sessions), [int_arg(f"tokens[{i}]", t) for i, t in enumerate(tokens)]
        if not sessions:
            raise InvalidArgumentError("decode_batch needs at least one session")
        if len(ids) != len(sessions):
            raise InvalidArgumentError(f"{len(sessions)} sessions but {len(ids)} tokens")
        for i, s in enumerate(sessions):
            if not isinstance(s, Session) or s.model is not self:
                raise InvalidArgumentError(f"session {i} is not a session of this model")
        out = np.empty((len(sessions), self.n_vocab), dtype=np.float32)
        with held(sessions) as hs:  # every session stays open for the step
            handles = ffi.new("vlc_session *[]", hs)
            check(lib.vlc_batch_decode(handles, ffi.new("int32_t[]", ids), len(ids),
                                       ffi.from_buffer("float[]", out, require_writable=True)))
        return out

    @checked_arguments
    def chat(self, messages, **kwargs) -> Completion | CompletionStream:
        """Replies to OpenAI-style ``messages`` (text and image parts, several turns).

        The messages go through the model's chat template (:mod:`vlcache_native.chat`);
        keyword arguments are those of :meth:`generate`.
        """
        if self.chat_template is None:
            raise InvalidArgumentError("the model has no chat template; pass Model(..., chat_template=...)")
        prompt, images = _chat.format_chat(messages, self.chat_template)
        return self.generate(prompt, images=images, **kwargs)

    @checked_arguments
    def generate(self, prompt: str | Sequence[int], *, images: Sequence | None = None, max_tokens: int = 128,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                 repeat_penalty: float = 1.0, repeat_last_n: int = 64, seed: int = 0,
                 stop: str | Sequence[str] | None = None, stream: bool = False,
                 add_bos: bool = True, kv_budget: float | None = None, kv_policy: str = "vl-cache",
                 kv_params: dict | None = None) -> Completion | CompletionStream:
        """Generates a continuation of ``prompt`` (text, or token ids used as they are).

        ``images``: one per ``<image>`` placeholder in the prompt (paths, bytes, PIL images,
        uint8 arrays, or embeddings from :meth:`encode_image`); with no placeholder the
        prompt becomes one user turn of the chat template with the images first.
        Greedy by default (temperature 0). Sampling is seeded: the same seed gives the same
        tokens. Generation ends at an end-of-generation token, at a ``stop`` string (not
        included in the text), after ``max_tokens``, or when the context is full.
        With ``stream=True`` returns a :class:`CompletionStream` yielding text pieces.

        ``kv_budget`` (VL-Cache): after the prompt's prefill, keep only this fraction of
        its KV cache, chosen by ``kv_policy`` (see :mod:`vlcache_native.kvcache`) with
        ``kv_params`` (the policy's parameters, plus ``p`` and ``window`` for the
        statistics); what it did is in ``completion.stats.kv``. None: no compression.
        """
        req = self.request(prompt, images=images, max_tokens=max_tokens, temperature=temperature, top_k=top_k,
                           top_p=top_p, min_p=min_p, repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n,
                           seed=seed, stop=stop, add_bos=add_bos, kv_budget=kv_budget, kv_policy=kv_policy,
                           kv_params=kv_params)
        result = CompletionStream(self._generate(req))
        if stream:
            return result
        for _ in result:
            pass
        return result.completion

    @checked_arguments
    def request(self, prompt: str | Sequence[int], *, images: Sequence | None = None, max_tokens: int = 128,
                temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                repeat_penalty: float = 1.0, repeat_last_n: int = 64, seed: int = 0,
                stop: str | Sequence[str] | None = None, add_bos: bool = True, kv_budget: float | None = None,
                kv_policy: str = "vl-cache", kv_params: dict | None = None,
                chunks: list | None = None) -> "Generation":
        """A checked, ready generation (what :meth:`generate` runs), to drive step by step
        on a session of one's own: ``Generation.start`` prefills, ``Generation.push`` takes
        each step's logits. The server's scheduler runs many at once through
        :meth:`decode_batch`. Arguments as for :meth:`generate`; all errors are raised here.
        ``chunks``: the prompt as :meth:`Session.prefill` takes it (token-id lists and
        ``[n, n_embd]`` embedding arrays), instead of ``prompt`` and ``images``."""
        max_tokens = int_arg("max_tokens", max_tokens, 0)
        kv = None
        if kv_budget is not None:
            params = dict(kv_params or {})
            stats_params = {k: params.pop(k) for k in ("p", "window") if k in params}
            params.setdefault("decode_room", max_tokens)
            kvcache.kv_params(kv_policy, kv_budget, **params)  # policy, budget and names, before any work
            kv = (kv_budget, kv_policy, params, stats_params)
        t_start = time.perf_counter()
        if chunks is None:
            chunks, stats = self._prompt_chunks(prompt, images, add_bos)
        else:
            chunks, stats = list(chunks), GenerationStats()
            stats.image_tokens = sum(len(c) for c in chunks if isinstance(c, np.ndarray) and c.ndim == 2)
        n_prompt = sum(len(c) for c in chunks)
        if n_prompt == 0:
            raise InvalidArgumentError("the prompt is empty (no tokens)")
        if n_prompt > self.n_ctx:
            raise ContextFullError(f"the prompt has {n_prompt} tokens but the context holds {self.n_ctx} (n_ctx)")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if any(not isinstance(s, str) or not s for s in stops):
            raise InvalidArgumentError("stop strings must be non-empty strings")
        params = ffi.new("vlc_sampler_params *")
        lib.vlc_sampler_params_init(params)
        params.temperature = float_arg("temperature", temperature)
        params.top_k = int_arg("top_k", top_k)
        params.top_p = float_arg("top_p", top_p)
        params.min_p = float_arg("min_p", min_p)
        params.repeat_penalty = float_arg("repeat_penalty", repeat_penalty)
        params.repeat_last_n = int_arg("repeat_last_n", repeat_last_n)
        params.seed = int_arg("seed", seed, -2**63, 2**64 - 1) & (2**64 - 1)
        out = ffi.new("vlc_sampler **")
        check(lib.vlc_sampler_create(params, out))
        sampler = ffi.gc(out[0], lib.vlc_sampler_free)
        stats.prompt_tokens = n_prompt
        return Generation(self, chunks, max_tokens, sampler, stops, stats, t_start, kv)

    def _generate(self, req: "Generation"):
        # a session of its own per generation: two generations (threads, or streams taken in
        # turn) never share a KV cache, and the model holds no session (no reference cycle)
        with self.session() as sess:
            logits = req.start(sess)
            while True:
                token = req.push(logits)
                piece = req.take()
                if piece:
                    yield piece
                if token is None:
                    break
                logits = sess.decode(token)
            return req.finish(sess)


class Generation:
    """One request's generation, driven a step at a time (:meth:`Model.request`).

    ``start(session)`` prefills the prompt (and compresses the KV cache when a budget was
    asked for) and returns the logits of its last position; ``push(logits)`` samples the
    next token, updates the text and returns the token to run next, or None when the
    generation is over (end-of-generation token, stop string, max_tokens, full context);
    ``take()`` gives the text ready since the last call (a possible stop string's start is
    held back); ``finish(session)`` returns the :class:`Completion`. The tokens and text do
    not depend on whether the steps ran one by one or in :meth:`Model.decode_batch`.
    """

    def __init__(self, model: Model, chunks: list, max_tokens: int, sampler, stops: list[str],
                 stats: GenerationStats, t_start: float, kv: tuple | None):
        self.model, self.chunks, self.max_tokens, self.sampler = model, chunks, max_tokens, sampler
        self.stops, self.stats, self.t_start, self.kv = stops, stats, t_start, kv
        self.tokens: list[int] = []
        self.text, self.emitted, self.finish_reason, self.stopped, self.done = "", 0, "length", False, False
        # The text is the tokens' pieces joined, less the one leading space detokenize drops
        # (only ever the first byte), each byte decoded once: O(1) per token. The decoder
        # holds back a character whose bytes are still arriving.
        self._utf8, self._head, self._strip = codecs.getincrementaldecoder("utf-8")("replace"), b"", None
        self._longest_stop = max((len(s) for s in stops), default=0)
        self._safe, self._final = 0, False
        self._session = None
        self._tok = ffi.new("int32_t *")

    def start(self, sess: Session) -> np.ndarray:
        """Prefills the prompt into ``sess`` (reset first); the last position's logits."""
        self.begin(sess)
        logits = None
        while logits is None:
            logits = self.advance(None)
        return logits

    def begin(self, sess: Session) -> None:
        """Readies a prefill into ``sess`` (reset first) that :meth:`advance` runs piece by
        piece; the statistics a KV budget needs are set up over the whole prompt here."""
        sess.reset()
        self._session = sess
        for c in self.chunks:
            if not isinstance(c, np.ndarray) or c.ndim == 1:  # text tokens feed the repetition penalty
                for t in c:
                    lib.vlc_sampler_accept(self.sampler, int(t))
        if self.kv is None:
            self._pending = sess.prompt_pieces(self.chunks)
        else:
            _, policy, _, stats_params = self.kv
            self._pending = sess.prompt_pieces(self.chunks, kv_stats=policy, p=stats_params.get("p", 0.01),
                                               window=stats_params.get("window", 32))

    def advance(self, max_rows: int | None) -> np.ndarray | None:
        """Prefills the next piece: at most ``max_rows`` prompt positions of text, or one
        whole image (an image is never split: it is one image span), or everything left
        when ``max_rows`` is None. Returns the last position's logits once the prompt is
        in (after compressing, when a KV budget was asked for), else None. The result is
        the same for any piece sizes: rows do not depend on how a prompt is chunked."""
        sess, pending = self._session, self._pending
        take = []
        rows = 0
        while pending and (max_rows is None or rows < max_rows):
            a = pending[0]
            if a.ndim == 2 or max_rows is None or len(a) <= max_rows - rows:
                if take and a.ndim == 2 and max_rows is not None:
                    break  # an image goes in a piece of its own
                take.append(pending.pop(0))
                rows += len(a)
                if a.ndim == 2 and max_rows is not None:
                    break
            else:
                take.append(a[:max_rows - rows])
                pending[0] = a[max_rows - rows:]
                rows = max_rows
        logits = sess.prefill(take)
        if pending:
            return None
        if self.kv is not None:
            budget, policy, params, _ = self.kv
            self.stats.kv = sess.compress(budget, policy, **params)
        if self.max_tokens == 0:
            self.done = True
        return logits

    def push(self, logits: np.ndarray) -> int | None:
        """Samples from ``logits``; the token to decode next, or None when done."""
        if self.done:
            return None
        model, sess = self.model, self._session
        check(lib.vlc_sampler_sample(self.sampler, ffi.from_buffer("float[]", logits), model.n_vocab, self._tok))
        if not self.tokens:
            self.stats.ttft_ms = (time.perf_counter() - self.t_start) * 1e3
        token = self._tok[0]
        if model.is_eog(token):
            self.finish_reason, self.done = "stop", True
            return None
        self.tokens.append(token)
        lib.vlc_sampler_accept(self.sampler, token)
        piece = model.token_to_piece(token)
        if self._strip is None:  # until the first non-empty piece
            self._head += piece
            if self._head:
                self._strip = len(self._head) - len(model.detokenize_bytes(self.tokens))
                self.text += self._utf8.decode(self._head[self._strip:])
        else:
            self.text += self._utf8.decode(piece)
        hit = -1
        for s in self.stops:
            i = self.text.find(s, max(0, self._safe - len(s)))
            if i >= 0 and (hit < 0 or i < hit):
                hit = i
        if hit >= 0:
            self.text, self.finish_reason, self.stopped, self.done = self.text[:hit], "stop", True, True
            self._safe = len(self.text)
            return None
        # hold back a tail that may still grow into a stop string
        safe = len(self.text)
        for k in range(min(self._longest_stop - 1, len(self.text)), 0, -1):
            if any(s.startswith(self.text[-k:]) for s in self.stops):
                safe = len(self.text) - k
                break
        self._safe = max(self._safe, safe)
        if len(self.tokens) == self.max_tokens or sess.n_past >= sess.n_ctx:
            self.done = True
            return None
        return token

    def take(self) -> str:
        """The text that became final since the last call ('' if none)."""
        if self.done and not self._final:
            self._final = True
            if not self.stopped:
                self.text = self.model.detokenize(self.tokens)  # also the bytes of a character cut off at the end
            self._safe = len(self.text)
        piece = self.text[self.emitted:self._safe]
        self.emitted = max(self.emitted, self._safe)
        return piece

    def finish(self, sess: Session) -> Completion:
        """The completion, with the session's timings and KV bytes."""
        self.take()
        st = sess.stats()
        stats = self.stats
        stats.completion_tokens = len(self.tokens)
        stats.prefill_ms = st["prefill_ms"]
        stats.decode_ms = st["decode_ms"]
        stats.decode_steps = st["decode_tokens"]
        stats.kv_bytes = st["kv_bytes"]
        stats.total_ms = (time.perf_counter() - self.t_start) * 1e3
        return Completion(text=self.text, tokens=self.tokens, finish_reason=self.finish_reason, stats=stats)
