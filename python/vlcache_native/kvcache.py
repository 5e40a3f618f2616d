"""KV-cache policies: VL-Cache and the baselines it is compared with (shared/docs/VLCACHE.md).

A policy decides, after the prompt's prefill, which prompt entries each layer and KV head
keeps. :meth:`Session.compress` applies one to a session; :func:`plan` runs the same C
planner on statistics you supply (for studies of the policies themselves).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ._ffi import ffi, lib
from .errors import InvalidArgumentError, check

#: policy name -> vlc_kv_policy, read from the C library's policy table (kvpolicy.c)
POLICIES = {ffi.string(lib.vlc_kv_policy_name(i)).decode(): i for i in range(lib.VLC_KV_N_POLICIES)}

#: statistics set name (Session.attn_stats keys) -> vlc_attn_set
STATS_SETS = {"scores": lib.VLC_ATTN_WINDOW, "h2o": lib.VLC_ATTN_H2O, "snapkv": lib.VLC_ATTN_SNAPKV}

# Python parameter -> (struct field, type); "clip" is the pair (clip_lo, clip_hi).
_PARAMS = {
    "recent_frac": float, "clip": tuple, "exact_total": bool, "pool_kernel": int, "n_sink": int,
    "floor_alpha": float, "pyramid_beta": float, "seed": int, "decode_room": int,
}


def policy_id(policy: str) -> int:
    """The vlc_kv_policy of a policy name; InvalidArgumentError names the known ones."""
    try:
        return POLICIES[policy]
    except (KeyError, TypeError):
        raise InvalidArgumentError(f"unknown KV policy {policy!r}; expected one of {list(POLICIES)}") from None


def needs(policy: str) -> list[str]:
    """The statistics sets ("scores", "h2o", "snapkv") a policy reads."""
    mask = lib.vlc_kv_policy_needs(policy_id(policy))
    return [name for name, s in STATS_SETS.items() if mask & (1 << s)]


def kv_params(policy: str = "vl-cache", budget: float = 0.1, **params: Any):
    """A filled ``vlc_kv_params *`` (cffi); unknown parameter names raise TypeError.

    Parameters (defaults in brackets): ``recent_frac`` [0.1], ``clip`` [(0.01, 1.0)],
    ``exact_total`` [True], ``pool_kernel`` [7], ``n_sink`` [4], ``floor_alpha`` [0.2],
    ``pyramid_beta`` [20], ``seed`` [0], ``decode_room`` [256; -1 = up to n_ctx].
    Values are range-checked by the C library.
    """
    unknown = set(params) - set(_PARAMS)
    if unknown:
        raise TypeError(f"unknown KV policy parameters {sorted(unknown)}; expected some of {sorted(_PARAMS)}")
    p = ffi.new("vlc_kv_params *")
    lib.vlc_kv_params_init(p)
    p.policy = policy_id(policy)
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.floating, np.integer)):
        raise InvalidArgumentError(f"budget={budget!r}, expected a number in (0, 1]")
    if not 0.0 < float(budget) <= 1.0:  # NaN fails too
        raise InvalidArgumentError(f"budget={budget!r}, expected a fraction of the prompt's KV cache in (0, 1]")
    p.budget = float(budget)
    for name, value in params.items():
        if name == "clip":
            lo, hi = value
            p.clip_lo, p.clip_hi = float(lo), float(hi)
        elif name == "seed":
            p.seed = int(value) & (2**64 - 1)
        elif _PARAMS[name] is float:
            setattr(p, name, float(value))
        else:
            v = int(value)
            if not -(2**31) <= v < 2**31:
                raise InvalidArgumentError(f"{name}={value!r} does not fit in int32")
            setattr(p, name, v)
    return p


@dataclasses.dataclass
class CompressReport:
    """What :meth:`Session.compress` did.

    ``sparsity`` [n_layer] post-vision sparsity per layer (None when no statistics were
    gathered); ``layer_budgets`` [n_layer] prompt tokens kept per KV head of each layer;
    ``kept[l][h]`` the original prompt positions layer l, KV head h kept (ascending);
    ``kv_bytes_before`` / ``kv_bytes_after`` what the KV allocator held; ``seconds`` the
    time compress took; ``n_prompt`` the prompt entries ranked.
    """

    policy: str
    budget: float
    n_prompt: int
    sparsity: np.ndarray | None
    layer_budgets: np.ndarray
    kept: list
    kv_bytes_before: int
    kv_bytes_after: int
    seconds: float

    @property
    def kept_fraction(self) -> float:
        """Prompt entries kept over all layers and heads, as a fraction of the prompt's."""
        n = sum(len(h) for layer in self.kept for h in layer)
        total = self.n_prompt * sum(len(layer) for layer in self.kept)
        return n / total if total else 1.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def plan(policy: str, budget: float, *, m: int, n_layer: int, n_head_kv: int, sparsity=None, scores=None,
         **params: Any) -> dict:
    """Runs the C planner on given statistics, without a model.

    ``sparsity`` [n_layer] and ``scores`` [n_layer, n_head_kv, m] (float64) are what the
    policy reads (see :func:`needs`: post-vision sums, H2O sums, or SnapKV sums before
    pooling). Returns ``dict(layer_budgets=int32 [n_layer], keep=bool [n_layer, n_head_kv,
    m], kept=[n_layer][n_head_kv] sorted positions)``.
    """
    p = kv_params(policy, budget, **params)
    for name, v in (("m", m), ("n_layer", n_layer), ("n_head_kv", n_head_kv)):
        if not isinstance(v, (int, np.integer)) or not 0 < v < 2**31:
            raise InvalidArgumentError(f"{name}={v!r}, expected an int > 0")
    sp = sc = ffi.NULL
    if sparsity is not None:
        sparsity = np.ascontiguousarray(sparsity, dtype=np.float64)
        if sparsity.shape != (n_layer,):
            raise InvalidArgumentError(f"sparsity has shape {sparsity.shape}, expected ({n_layer},)")
        sp = ffi.from_buffer("double[]", sparsity)
    if scores is not None:
        scores = np.ascontiguousarray(scores, dtype=np.float64)
        if scores.shape != (n_layer, n_head_kv, m):
            raise InvalidArgumentError(f"scores has shape {scores.shape}, expected {(n_layer, n_head_kv, m)}")
        sc = ffi.from_buffer("double[]", scores)
    keep = np.zeros((n_layer, n_head_kv, m), dtype=np.uint8)
    budgets = np.zeros(n_layer, dtype=np.int32)
    check(lib.vlc_kv_plan(p, n_layer, n_head_kv, m, sp, sc, ffi.from_buffer("uint8_t[]", keep, require_writable=True),
                          ffi.from_buffer("int32_t[]", budgets, require_writable=True)))
    keep = keep.astype(bool)
    kept = [[np.flatnonzero(keep[l, h]) for h in range(n_head_kv)] for l in range(n_layer)]
    return {"layer_budgets": budgets, "keep": keep, "kept": kept}
