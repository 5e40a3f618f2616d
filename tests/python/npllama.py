"""npllama.py: a float64 NumPy Llama decoder, the reference for KV-cache compression tests.

What it is:
  - NpLlama.from_hf(model): the text decoder of a Hugging Face LlamaForCausalLM, MistralForCausalLM
    or LlavaForConditionalGeneration (its language model and lm_head), weights copied to float64.
  - prefill(ids=..., embeds=...): the causal forward of a whole prompt (token ids, or input
    embeddings such as LLaVA's inputs_embeds with the image features already merged), returning
    every layer's post-RoPE Q [H, m, D], K and V [Hkv, m, D] and the explicit causal attention
    weights A[l] [H, m, m] (softmax of Q K^T / sqrt(D) computed from the model's own Q and K;
    query head h reads KV head h // G), plus logits [m, V].
  - cache(pre, kept): a per-layer, per-KV-head cache holding only the kept prompt positions
    (kept[l][g], any ascending subset of 0..m-1; None = all) with their K and V as computed in
    the prefill, i.e. at their original RoPE rotation.
  - step(cache, token): one decode step at position cache.pos (m, m+1, ...): the new token's K/V
    are appended to every head (generated tokens are never evicted) and each query head attends
    to exactly what its KV head holds. greedy(...) chains steps.

What it is not: fast, batched, or a tokenizer. Only the default RoPE (rotate-half layout, as
HF's Llama) is supported; other rope types raise. No sliding window (our runtime has none).

Arithmetic is float64 throughout, so against our float32 runtime the reference error is
negligible and the differences measured are the runtime's own float32 rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np


def _np(t) -> np.ndarray:
    """A torch tensor as a float64 NumPy array (a copy)."""
    return t.detach().double().cpu().numpy()


@dataclass
class Layer:
    attn_norm: np.ndarray   # [E]
    wq: np.ndarray          # [H * D, E]
    wk: np.ndarray          # [Hkv * D, E]
    wv: np.ndarray          # [Hkv * D, E]
    wo: np.ndarray          # [E, H * D]
    ffn_norm: np.ndarray    # [E]
    w_gate: np.ndarray      # [F, E]
    w_up: np.ndarray        # [F, E]
    w_down: np.ndarray      # [E, F]


@dataclass
class Prefill:
    """Everything one prompt's forward produced (float64)."""
    logits: np.ndarray          # [m, V]
    q: List[np.ndarray]         # L x [H, m, D] post-RoPE
    k: List[np.ndarray]         # L x [Hkv, m, D] post-RoPE
    v: List[np.ndarray]         # L x [Hkv, m, D]
    A: List[np.ndarray]         # L x [H, m, m] causal softmax weights (0 above the diagonal)

    @property
    def m(self) -> int:
        return self.logits.shape[0]


class Cache:
    """Per layer and KV head: original positions [n], K [n, D], V [n, D]; plus the next position."""

    def __init__(self, pos, k, v, next_pos: int):
        self.pos = pos          # L x Hkv x int64 [n]
        self.k = k              # L x Hkv x [n, D]
        self.v = v              # L x Hkv x [n, D]
        self.next_pos = next_pos

    def lengths(self) -> np.ndarray:
        return np.array([[len(p) for p in layer] for layer in self.pos], dtype=np.int64)

    def prune(self, kept, m: int) -> None:
        """Keeps, per layer and KV head, the prompt positions in kept[l][g] and every entry at a
        position >= m (tokens decoded after the prompt are never evicted)."""
        for il, layer in enumerate(self.pos):
            for g, p in enumerate(layer):
                sel = np.isin(p, np.asarray(kept[il][g])) | (p >= m)
                self.pos[il][g], self.k[il][g], self.v[il][g] = p[sel], self.k[il][g][sel], self.v[il][g][sel]


class NpLlama:
    def __init__(self, embed, layers, out_norm, lm_head, *, n_head, n_head_kv, head_dim, eps, rope_theta):
        self.embed = embed          # [V, E]
        self.layers = layers        # L x Layer
        self.out_norm = out_norm    # [E]
        self.lm_head = lm_head      # [V, E]
        self.H, self.Hkv, self.D = n_head, n_head_kv, head_dim
        self.G = n_head // n_head_kv
        self.eps = eps
        self.inv_freq = 1.0 / rope_theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # [D/2]

    @property
    def n_layer(self) -> int:
        return len(self.layers)

    # ---- construction

    @classmethod
    def from_hf(cls, model) -> "NpLlama":
        """From a loaded HF causal LM or LLaVA model (any float dtype; copied to float64)."""
        cfg = model.config.get_text_config()
        inner = model.model
        lm = getattr(inner, "language_model", inner)   # LLaVA: model.model.language_model
        rope = getattr(cfg, "rope_parameters", None) or {}
        rope_type = rope.get("rope_type", "default")
        if rope_type != "default":
            raise ValueError(f"npllama: only the default RoPE is supported, got {rope_type!r}")
        theta = float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))
        H, Hkv = cfg.num_attention_heads, cfg.num_key_value_heads
        D = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
        layers = []
        for blk in lm.layers:
            a, f = blk.self_attn, blk.mlp
            for proj in (a.q_proj, a.k_proj, a.v_proj, a.o_proj):
                if proj.bias is not None:
                    raise ValueError("npllama: attention biases are not supported")
            layers.append(Layer(attn_norm=_np(blk.input_layernorm.weight), wq=_np(a.q_proj.weight),
                                wk=_np(a.k_proj.weight), wv=_np(a.v_proj.weight), wo=_np(a.o_proj.weight),
                                ffn_norm=_np(blk.post_attention_layernorm.weight), w_gate=_np(f.gate_proj.weight),
                                w_up=_np(f.up_proj.weight), w_down=_np(f.down_proj.weight)))
        return cls(_np(lm.embed_tokens.weight), layers, _np(lm.norm.weight), _np(model.lm_head.weight),
                   n_head=H, n_head_kv=Hkv, head_dim=D, eps=float(cfg.rms_norm_eps), rope_theta=theta)

    # ---- pieces

    def _rms(self, x, w):
        """x [n, E] -> x / sqrt(mean(x^2) + eps) * w."""
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def _rope(self, x, pos):
        """x [h, n, D] at positions pos [n] -> rotated (HF rotate_half layout: pairs (i, i + D/2))."""
        ang = np.asarray(pos, dtype=np.float64)[:, None] * self.inv_freq[None, :]   # [n, D/2]
        cos, sin = np.cos(ang), np.sin(ang)
        x1, x2 = x[..., : self.D // 2], x[..., self.D // 2:]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

    def _qkv(self, lay, h, pos):
        """h [n, E] (already normed) -> q [H, n, D], k [Hkv, n, D], v [Hkv, n, D] (q, k rotated)."""
        n = h.shape[0]
        q = (h @ lay.wq.T).reshape(n, self.H, self.D).transpose(1, 0, 2)
        k = (h @ lay.wk.T).reshape(n, self.Hkv, self.D).transpose(1, 0, 2)
        v = (h @ lay.wv.T).reshape(n, self.Hkv, self.D).transpose(1, 0, 2)
        return self._rope(q, pos), self._rope(k, pos), v

    def _ffn(self, lay, x):
        h = self._rms(x, lay.ffn_norm)
        g = h @ lay.w_gate.T
        return ((g / (1.0 + np.exp(-g))) * (h @ lay.w_up.T)) @ lay.w_down.T

    def _logits(self, x):
        return self._rms(x, self.out_norm) @ self.lm_head.T

    # ---- prompt

    def prefill(self, ids: Optional[Sequence[int]] = None, embeds: Optional[np.ndarray] = None) -> Prefill:
        """The whole prompt at positions 0..m-1 from token ids or input embeddings [m, E]."""
        if (ids is None) == (embeds is None):
            raise ValueError("npllama.prefill: give exactly one of ids and embeds")
        x = self.embed[np.asarray(ids, dtype=np.int64)] if ids is not None else np.asarray(embeds, np.float64)
        m = x.shape[0]
        pos = np.arange(m)
        upper = np.triu(np.ones((m, m), dtype=bool), 1)
        scale = 1.0 / math.sqrt(self.D)
        Q, K, V, A = [], [], [], []
        for lay in self.layers:
            q, k, v = self._qkv(lay, self._rms(x, lay.attn_norm), pos)
            kr, vr = np.repeat(k, self.G, axis=0), np.repeat(v, self.G, axis=0)    # [H, m, D]
            s = np.einsum("hid,hjd->hij", q, kr) * scale                           # [H, m, m]
            s[:, upper] = -np.inf
            s -= s.max(axis=-1, keepdims=True)
            a = np.exp(s)
            a /= a.sum(axis=-1, keepdims=True)                                     # 0 above the diagonal
            o = np.einsum("hij,hjd->hid", a, vr).transpose(1, 0, 2).reshape(m, self.H * self.D)
            x = x + o @ lay.wo.T
            x = x + self._ffn(lay, x)
            Q.append(q), K.append(k), V.append(v), A.append(a)
        return Prefill(logits=self._logits(x), q=Q, k=K, v=V, A=A)

    # ---- decoding on a (possibly pruned) cache

    def cache(self, pre: Prefill, kept=None) -> Cache:
        """A cache of the kept prompt entries: kept[l][g] ascending positions (None = every one)."""
        m = pre.m
        pos, ks, vs = [], [], []
        for il in range(self.n_layer):
            pl, kl, vl = [], [], []
            for g in range(self.Hkv):
                idx = np.arange(m) if kept is None else np.asarray(kept[il][g], dtype=np.int64)
                if idx.size and (np.any(np.diff(idx) <= 0) or idx[0] < 0 or idx[-1] >= m):
                    raise ValueError(f"kept[{il}][{g}] must be ascending positions in [0, {m})")
                pl.append(idx.copy()), kl.append(pre.k[il][g][idx]), vl.append(pre.v[il][g][idx])
            pos.append(pl), ks.append(kl), vs.append(vl)
        return Cache(pos, ks, vs, next_pos=m)

    def step(self, cache: Cache, token: int) -> np.ndarray:
        """Decodes one token at cache.next_pos; appends its K/V everywhere; returns logits [V]."""
        p = cache.next_pos
        x = self.embed[int(token)][None, :]                                  # [1, E]
        scale = 1.0 / math.sqrt(self.D)
        for il, lay in enumerate(self.layers):
            q, k, v = self._qkv(lay, self._rms(x, lay.attn_norm), [p])      # q [H, 1, D], k/v [Hkv, 1, D]
            out = np.empty((self.H, self.D))
            for g in range(self.Hkv):
                cache.pos[il][g] = np.append(cache.pos[il][g], p)
                cache.k[il][g] = np.concatenate([cache.k[il][g], k[g]], axis=0)
                cache.v[il][g] = np.concatenate([cache.v[il][g], v[g]], axis=0)
                for h in range(g * self.G, (g + 1) * self.G):
                    s = cache.k[il][g] @ q[h, 0] * scale                     # [n]
                    w = np.exp(s - s.max())
                    out[h] = (w / w.sum()) @ cache.v[il][g]
            x = x + out.reshape(1, -1) @ lay.wo.T
            x = x + self._ffn(lay, x)
        cache.next_pos = p + 1
        return self._logits(x)[0]

    def greedy(self, cache: Cache, first_logits: np.ndarray, n: int):
        """n greedy tokens: token i = argmax of the logits before it (the first from first_logits,
        usually the prompt's last row); returns (tokens [n], logits [n, V] of the steps that decoded
        tokens 0..n-1, each row the logits *after* that token)."""
        toks, outs = [], []
        logits = np.asarray(first_logits, dtype=np.float64)
        for _ in range(n):
            t = int(np.argmax(logits))
            toks.append(t)
            logits = self.step(cache, t)
            outs.append(logits)
        return toks, np.array(outs)
