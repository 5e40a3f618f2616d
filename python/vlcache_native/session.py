"""Session: one KV cache and its position, on top of a loaded :class:`~vlcache_native.Model`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

from . import kvcache
from ._ffi import ffi, lib
from ._native import NativeObject, held
from .errors import ContextFullError, InvalidArgumentError, check, int_arg

if TYPE_CHECKING:
    from .model import Model

KV_TYPES = {"f16": lib.VLC_TYPE_F16, "f32": lib.VLC_TYPE_F32}


def _as_ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    """Token ids as a C-contiguous int32 array (a view when it already is one)."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InvalidArgumentError(f"token ids must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgumentError(f"token ids must be integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
        raise InvalidArgumentError("token id does not fit in int32")
    return np.ascontiguousarray(arr, dtype=np.int32)


# The most worker threads a session may ask for (threads.c refuses more).
MAX_THREADS = 1024


def _session_args(n_ctx, n_threads, n_batch, kv_type) -> tuple:
    """The session parameters checked (Model checks its defaults with this at construction)."""
    if not isinstance(kv_type, str) or kv_type not in KV_TYPES:
        raise InvalidArgumentError(f"kv_type={kv_type!r}, expected one of {sorted(KV_TYPES)}")
    n_ctx = int_arg("n_ctx", n_ctx, 1)
    n_batch = int_arg("n_batch", n_batch, 1)
    if n_threads is not None:
        n_threads = int_arg("n_threads", n_threads, 1, MAX_THREADS)
    return n_ctx, n_threads, n_batch, kv_type


class Session(NativeObject):
    """A KV cache plus position: the state of one conversation.

    Made by :meth:`Model.session`. One thread at a time: use one session per thread
    (sessions of one model run in parallel). The session keeps its model alive (:attr:`model`;
    in C it holds a reference on the weights); closing the model closes its sessions. Closing
    a session from another thread waits for the call running on it.
    """

    _kind = "session"

    def __init__(self, model: "Model", *, n_ctx: int, n_threads: int | None, n_batch: int, kv_type: str):
        n_ctx, n_threads, n_batch, kv_type = _session_args(n_ctx, n_threads, n_batch, kv_type)
        params = ffi.new("vlc_session_params *")
        lib.vlc_session_params_init(params)
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_threads = n_threads or 0
        params.type_kv = KV_TYPES[kv_type]
        out = ffi.new("vlc_session **")
        with held([model]) as (mh,):  # registered before the model can finish closing
            check(lib.vlc_session_create(mh, params, out))
            self._setup(model, out[0], kv_type)

    def _setup(self, model: "Model", ptr, kv_type: str) -> None:
        self._adopt(ptr, parent=model)
        self.model = model
        self.n_vocab = model.n_vocab
        self.kv_type = kv_type
        self.n_ctx = self.stats()["n_ctx"]  # positions the KV cache holds (fixed at creation)

    # ---- life cycle

    def _free(self, ptr) -> None:
        lib.vlc_session_free(ptr)  # drops the session's reference on the model too

    # ---- state

    @property
    def n_past(self) -> int:
        """Tokens in the KV cache (the position the next token takes)."""
        with self._call() as h:
            return lib.vlc_session_n_past(h)

    def stats(self) -> dict:
        """Positions, KV bytes held by the allocator, and summed prefill/decode timings."""
        st = ffi.new("vlc_session_stats *")
        with self._call() as h:
            lib.vlc_session_get_stats(h, st)
        return {
            "n_past": st.n_past,
            "n_ctx": st.n_ctx,
            "kv_bytes": int(st.kv_bytes),
            "prefill_ms": st.prefill_ms,
            "prefill_tokens": st.n_prefill_tokens,
            "decode_ms": st.decode_ms,
            "decode_tokens": st.n_decode_tokens,
        }

    def reset(self) -> None:
        """Empties the KV cache; the next token goes to position 0."""
        with self._call() as h:
            lib.vlc_session_reset(h)

    # ---- compute

    def prefill(self, chunks, all_logits: bool = False, *, kv_stats=None, p: float = 0.01,
                window: int = 32) -> np.ndarray:
        """Runs a prompt through the model at positions ``n_past ..`` and caches it.

        ``chunks`` is a list of token ids (ints), or a list whose items are token ids (an
        int, a list or 1-D int array of ints) and image embeddings (float32 arrays
        ``[n, n_embd]``, e.g. from :meth:`Model.encode_image`); each embedding array takes
        ordinary sequential positions and is remembered as an image span (see
        :attr:`image_spans`). Returns float32 logits: ``[n_vocab]`` for the last
        position, or ``[total, n_vocab]`` for every position when ``all_logits``. The
        whole prompt is checked (ids in range, widths, finite embeddings, context room) before anything
        runs, so on such an error the session is unchanged.

        ``kv_stats`` gathers, during this prefill, the attention statistics that
        :meth:`compress` ranks tokens by: a policy name (the sets it reads), True (every
        set, to compare policies on clones of this session), or None (none). The
        post-vision window (VL-Cache) is the rows after the last image, or the last
        ``window`` rows when there is no image or it ends the prompt; ``p`` is the sparsity
        threshold; SnapKV observes the last ``window`` rows. H2O needs an empty session.
        """
        parts = self._parts(chunks)
        total = sum(len(a) for _, a in parts)
        if total == 0:
            raise InvalidArgumentError("the prompt is empty (no tokens)")
        free = self.n_ctx - self.n_past
        if total > free:
            raise ContextFullError(f"{total} positions do not fit: {self.n_past} of the context's "
                                   f"{self.n_ctx} are used, {free} are free")
        if kv_stats is not None and kv_stats is not False:
            self._start_kv_stats(parts, total, kv_stats, p, window)
        out = np.empty((total if all_logits else 1, self.n_vocab), dtype=np.float32)
        off = 0
        with self._call() as h:
            for i, (kind, arr) in enumerate(parts):
                n = len(arr)
                rows = n if all_logits else (1 if i == len(parts) - 1 else 0)
                dst = out[off:off + n] if all_logits else out
                buf = ffi.from_buffer("float[]", dst, require_writable=True) if rows else ffi.NULL
                if kind == "tokens":
                    check(lib.vlc_session_prefill(h, ffi.from_buffer("int32_t[]", arr), n, buf, rows))
                else:
                    check(lib.vlc_session_prefill_embd(h, ffi.from_buffer("float[]", arr), n, arr.shape[1], buf,
                                                       rows))
                off += n
        return out if all_logits else out[0]

    def prompt_pieces(self, chunks, *, kv_stats=None, p: float = 0.01, window: int = 32) -> list[np.ndarray]:
        """The prompt ``chunks`` (as :meth:`prefill` takes them) checked and normalised into
        pieces, int32 ids ``[n]`` or float32 embeddings ``[n, n_embd]``, for a caller that
        prefills them a piece at a time; with ``kv_stats`` (as in :meth:`prefill`) the
        statistics are turned on over the whole prompt first."""
        parts = self._parts(chunks)
        if kv_stats is not None and kv_stats is not False:
            self._start_kv_stats(parts, sum(len(a) for _, a in parts), kv_stats, p, window)
        return [a for _, a in parts]

    def _start_kv_stats(self, parts: list, total: int, kv_stats, p: float, window: int) -> None:
        """Turns on the statistics sets kv_stats asks for, over the rows of this prefill."""
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
            raise InvalidArgumentError(f"window={window!r}, expected an int >= 1")
        if kv_stats is True:
            sets = set(kvcache.STATS_SETS)
        else:
            names = [kv_stats] if isinstance(kv_stats, str) else list(kv_stats)
            sets = {"scores"}.union(*(kvcache.needs(n) for n in names))
        start, end = self.n_past, self.n_past + total
        v, pos = max((p0 + n for p0, n in self.image_spans), default=0), start
        for kind, arr in parts:
            pos += len(arr)
            if kind == "embd":
                v = pos
        w0 = v if 0 < v < end else end - min(window, end - start)
        self.set_attn_stats(max(w0, start), p=p, h2o="h2o" in sets,
                            snapkv_window=min(window, total) if "snapkv" in sets else 0, window_end=end)

    def _parts(self, chunks) -> list:
        """Normalises prefill input into [("tokens", int32[n]) | ("embd", float32[n, C])]."""
        if isinstance(chunks, np.ndarray) and chunks.ndim == 2:
            chunks = [chunks]
        elif isinstance(chunks, np.ndarray) or all(isinstance(c, (int, np.integer)) for c in chunks):
            chunks = [chunks]
        parts: list = []
        for c in chunks:
            if isinstance(c, np.ndarray) and c.ndim == 2:
                if not np.issubdtype(c.dtype, np.floating):
                    raise InvalidArgumentError(f"image embeddings must be float, got dtype {c.dtype}")
                if c.shape[1] != self.model.n_embd:
                    raise InvalidArgumentError(f"image embeddings have width {c.shape[1]}, the text model's "
                                               f"n_embd is {self.model.n_embd}")
                c = np.ascontiguousarray(c, dtype=np.float32)
                bad = np.argwhere(~np.isfinite(c))
                if len(bad):
                    r, col = bad[0]
                    raise InvalidArgumentError(f"image embeddings: row {r}, column {col} is {c[r, col]}")
                if len(c):
                    parts.append(("embd", c))
                continue
            ids = _as_ids(c)
            if ids.size and (ids.min() < 0 or ids.max() >= self.n_vocab):
                bad = int(ids[(ids < 0) | (ids >= self.n_vocab)][0])
                raise InvalidArgumentError(f"token id {bad} is out of range [0, {self.n_vocab})")
            if parts and parts[-1][0] == "tokens":
                parts[-1] = ("tokens", np.concatenate([parts[-1][1], ids]))
            elif ids.size:
                parts.append(("tokens", ids))
        return parts

    @property
    def image_spans(self) -> list[tuple[int, int]]:
        """(first position, length) of every image prefilled since the last reset, in order."""
        p0, n = ffi.new("int32_t *"), ffi.new("int32_t *")
        spans = []
        with self._call() as h:
            for i in range(lib.vlc_session_n_images(h)):
                check(lib.vlc_session_image_span(h, i, p0, n))
                spans.append((p0[0], n[0]))
        return spans

    # ---- attention statistics

    def set_attn_stats(self, window_start: int | None = None, p: float = 0.01, h2o: bool = False,
                       snapkv_window: int = 0, *, window_end: int | None = None, enabled: bool = True) -> None:
        """Gathers attention statistics (VL-Cache, VLCACHE.md) while the next rows are prefilled.

        ``window_start`` is the absolute position of the first post-vision row (the row
        after the last image token; for a prompt without an image, e.g. its last 32 rows);
        None = ``n_past``, every row still to be run. It must be known before the prefill
        runs that row, so compute it from the prompt (e.g. the end of the last image chunk
        of :meth:`Model.prompt_chunks`). ``window_end`` (exclusive, usually the prompt
        length) stops the rows there; None = open, decode steps included. ``p`` is the
        sparsity threshold relative to each row's max. ``h2o=True`` also sums the weights
        over every row ``[0, window_end)`` (needs ``window_end`` and an empty session);
        ``snapkv_window = w > 0`` over the last ``w`` rows before ``window_end`` (needs
        ``window_end``). ``enabled=False`` turns the statistics off and frees them;
        :meth:`reset` does too. Read them with :meth:`attn_stats`.
        """
        if not enabled:
            with self._call() as h:
                check(lib.vlc_session_set_attn_stats(h, ffi.NULL))
            return
        params = ffi.new("vlc_attn_stats_params *")
        lib.vlc_attn_stats_params_init(params)
        for name, value in (("window_start", self.n_past if window_start is None else window_start),
                            ("window_end", 0 if window_end is None else window_end),
                            ("snapkv_window", snapkv_window)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= value < 2**31:
                raise InvalidArgumentError(f"{name}={value!r}, expected an int >= 0")
            setattr(params, name, int(value))
        if window_end is not None and window_end == 0:
            raise InvalidArgumentError("window_end=0, expected a position > 0 or None (open)")
        params.p = float(p)
        params.h2o = 1 if h2o else 0
        with self._call() as h:
            check(lib.vlc_session_set_attn_stats(h, params))

    def attn_stats(self) -> dict:
        """The attention statistics gathered so far (see :meth:`set_attn_stats`), float64:

        ``sparsity`` [n_layer] (NaN while no window row has run), ``scores`` [n_layer,
        n_head_kv, n_past] post-vision score of each key (sum of its weights over the window
        rows and the KV head's query heads), ``h2o`` / ``snapkv`` the same sums over every
        row / the last ``snapkv_window`` rows (None when not asked for; SnapKV before
        pooling), and ``rows`` the window rows gathered. Raises if the statistics are off.
        """
        with self._call() as h:
            L, Hkv, n = self.model.n_layer, self.model.n_head_kv, self.n_past
            sparsity = np.empty(L, dtype=np.float64)
            check(lib.vlc_session_attn_sparsity(h, lib.VLC_ATTN_WINDOW, ffi.from_buffer("double[]", sparsity,
                                                                                      require_writable=True), L))

            def sums(set_):
                if set_ != lib.VLC_ATTN_WINDOW and lib.vlc_session_attn_stats_rows(h, set_) < 0:
                    return None
                out = np.zeros((L, Hkv, n), dtype=np.float64)
                for il in range(L):
                    buf = ffi.from_buffer("double[]", out[il], require_writable=True) if n else ffi.NULL
                    check(lib.vlc_session_attn_scores(h, set_, il, buf, n))
                return out

            return {"sparsity": sparsity, "scores": sums(lib.VLC_ATTN_WINDOW), "h2o": sums(lib.VLC_ATTN_H2O),
                    "snapkv": sums(lib.VLC_ATTN_SNAPKV),
                    "rows": lib.vlc_session_attn_stats_rows(h, lib.VLC_ATTN_WINDOW)}

    # ---- KV-cache compression

    def compress(self, budget: float = 0.1, policy: str = "vl-cache", *, decode_room: int = 256,
                 **params) -> kvcache.CompressReport:
        """Keeps only the prompt entries a policy chooses, per layer and KV head, and gives the rest back.

        Call once, after the prompt's prefill (with ``kv_stats`` naming this policy or
        True when the policy ranks tokens by attention). ``budget`` in (0, 1] is the
        fraction of the prompt's KV entries kept over all layers; ``policy`` is one of
        :data:`vlcache_native.kvcache.POLICIES`; ``decode_room`` entries per head are
        reserved for the tokens to come (more grow the buffers); ``params`` are the
        policy's (see :func:`vlcache_native.kvcache.kv_params`). Tokens decoded before
        the call are all kept. Decoding then continues at :attr:`n_past`; :meth:`reset`
        makes the session whole again. Returns a :class:`~vlcache_native.kvcache.CompressReport`.

        Edge cases: every layer keeps at least one entry, and when its budget k is
        smaller than the recent window, the window (``ceil(recent_frac * k)``, at most k)
        is all it keeps; a prompt without an image, or whose image ends it, uses its last
        ``window`` rows as the post-vision window; a budget <= 0, > 1 or NaN, a second
        compress, and a compress before any prefill raise InvalidArgumentError and leave
        the session as it was.
        """
        with self._call() as h:
            prm = kvcache.kv_params(policy, budget, decode_room=decode_room, **params)
            L, Hkv = self.model.n_layer, self.model.n_head_kv
            sparsity = None
            if lib.vlc_session_attn_stats_rows(h, lib.VLC_ATTN_WINDOW) > 0:
                sparsity = np.empty(L, dtype=np.float64)
                check(lib.vlc_session_attn_sparsity(h, lib.VLC_ATTN_WINDOW,
                                                    ffi.from_buffer("double[]", sparsity, require_writable=True), L))
            budgets = np.zeros(L, dtype=np.int32)
            rep = ffi.new("vlc_compress_report *")
            check(lib.vlc_session_compress(h, prm, ffi.from_buffer("int32_t[]", budgets, require_writable=True), rep))
            m = rep.n_prompt
            kept = [[pos[pos < m] for pos in (self.kv_positions(l, g) for g in range(Hkv))] for l in range(L)]
            return kvcache.CompressReport(policy=policy, budget=float(budget), n_prompt=m, sparsity=sparsity,
                                          layer_budgets=budgets.astype(np.int64), kept=kept,
                                          kv_bytes_before=int(rep.kv_bytes_before),
                                          kv_bytes_after=int(rep.kv_bytes_after),
                                          seconds=rep.seconds)

    @property
    def compressed(self) -> bool:
        """True after :meth:`compress`, until :meth:`reset`."""
        with self._call() as h:
            return bool(lib.vlc_session_is_compressed(h))

    def kv_positions(self, layer: int, head: int) -> np.ndarray:
        """Original positions of the entries KV head ``head`` of ``layer`` holds (int32, ascending)."""
        with self._call() as h:
            n = lib.vlc_session_kv_len(h, layer, head)
            if n < 0:
                raise InvalidArgumentError(f"layer {layer}, KV head {head}: expected 0 .. {self.model.n_layer - 1}, "
                                           f"0 .. {self.model.n_head_kv - 1}")
            out = np.empty(n, dtype=np.int32)
            n_out = ffi.new("int32_t *")
            check(lib.vlc_session_kv_positions(h, layer, head, ffi.from_buffer("int32_t[]", out, require_writable=True)
                                               if n else ffi.NULL, n, n_out))
            return out

    def kv_lengths(self) -> np.ndarray:
        """Entries each layer and KV head holds, int [n_layer, n_head_kv]."""
        with self._call() as h:
            return np.array([[lib.vlc_session_kv_len(h, l, g) for g in range(self.model.n_head_kv)]
                             for l in range(self.model.n_layer)], dtype=np.int64)

    def clone(self) -> "Session":
        """A new session holding a copy of this one's state (KV cache, position, images, statistics)."""
        out = ffi.new("vlc_session **")
        with held([self.model, self]) as (_, h):  # the model cannot finish closing before s is its session
            check(lib.vlc_session_clone(h, out))
            s = Session.__new__(Session)
            s._setup(self.model, out[0], self.kv_type)
        return s

    def decode(self, token_id: int) -> np.ndarray:
        """Runs one token at position ``n_past``; returns its logits ``[n_vocab]``."""
        token = int_arg("token_id", token_id)
        out = np.empty(self.n_vocab, dtype=np.float32)
        with self._call() as h:
            check(lib.vlc_session_decode(h, token, ffi.from_buffer("float[]", out, require_writable=True)))
        return out

    def __repr__(self) -> str:
        if self._ptr == ffi.NULL:
            return "<vlcache_native.Session closed>"
        return f"<vlcache_native.Session n_past={self.n_past} n_ctx={self.n_ctx} kv_type={self.kv_type}>"
