#!/usr/bin/env python3
"""Train the demo VLM: a small LLaVA-1.5 on the synthetic shapes world (tools/shapes_world.py).

The model is a Hugging Face ``LlavaForConditionalGeneration`` (CLIP ViT + 2-layer GELU MLP
projector + Llama with grouped-query attention), so transformers is the oracle for our
runtime and tools/convert_hf_to_gguf.py converts it. The tokenizer is a SentencePiece BPE
trained on the world's text (Llama's options: byte fallback, split digits, dummy prefix) plus
``<image>`` as an added special token.

    python tools/train_demo_vlm.py --out demo-train --steps 2000 --seed 0     # trains (resumes)
    python tools/train_demo_vlm.py --out demo-train --export models/shapes-llava-q8_0.gguf

Training is deterministic in --seed: the data of step s comes from Random(seed, s), so a run
stopped at any point and resumed (the default, from OUT/ckpt.pt, saved every --save-every
steps) sees the same data as an uninterrupted one. It prints the loss with a progress bar and
the greedy exact-match accuracy on a held-out set every --eval-every steps. torch,
transformers and sentencepiece are tools here, never dependencies of the runtime.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
import shapes_world as W  # noqa: E402

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The architecture (about 5.8M parameters; 6.0 MB as Q8_0): 36 image tokens per picture, each
# grid cell 2x2 patches.
TEXT = dict(hidden=256, layers=6, heads=4, kv_heads=2, ff=704, ctx=1024)
VISION = dict(image=W.IMAGE_SIZE, patch=16, hidden=128, layers=5, heads=4, ff=512)  # layer -2 is used
N_IMAGE_TOKENS = (VISION["image"] // VISION["patch"]) ** 2
VOCAB = 512


def train_tokenizer(out: Path, seed: int):
    """SentencePiece BPE on the world's text, saved as tokenizer.model + HF tokenizer files."""
    import sentencepiece as spm
    from transformers import AddedToken, AutoTokenizer, LlamaTokenizer

    lines = W.corpus(random.Random(seed), 20000)
    with tempfile.TemporaryDirectory() as tmp:
        prefix = str(Path(tmp) / "spm")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_prefix=prefix, vocab_size=VOCAB, model_type="bpe",
            byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True,
            normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
            character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1,
            hard_vocab_limit=False, minloglevel=2)
        src = Path(tmp) / "src"
        src.mkdir()
        shutil.copy(prefix + ".model", src / "tokenizer.model")
        tok = LlamaTokenizer.from_pretrained(str(src), add_bos_token=True, add_eos_token=False)
        tok.save_pretrained(str(out))
        shutil.copy(prefix + ".model", out / "tokenizer.model")
    tok = AutoTokenizer.from_pretrained(str(out))
    tok.add_tokens([AddedToken(W.IMAGE, special=True, normalized=False)], special_tokens=True)
    tok.save_pretrained(str(out))
    return AutoTokenizer.from_pretrained(str(out))


def build_model(tok, seed: int):
    import torch
    import transformers as tf

    t, v = TEXT, VISION
    tcfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=t["hidden"], num_hidden_layers=t["layers"],
                          num_attention_heads=t["heads"], num_key_value_heads=t["kv_heads"],
                          intermediate_size=t["ff"], head_dim=t["hidden"] // t["heads"], rms_norm_eps=1e-5,
                          max_position_embeddings=t["ctx"], tie_word_embeddings=False, bos_token_id=1,
                          eos_token_id=2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    vcfg = tf.CLIPVisionConfig(image_size=v["image"], patch_size=v["patch"], hidden_size=v["hidden"],
                               num_hidden_layers=v["layers"], num_attention_heads=v["heads"],
                               intermediate_size=v["ff"], hidden_act="quick_gelu", layer_norm_eps=1e-5,
                               projection_dim=v["hidden"])
    cfg = tf.LlavaConfig(vision_config=vcfg, text_config=tcfg, image_token_id=tok.convert_tokens_to_ids(W.IMAGE),
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", tie_word_embeddings=False,
                         image_seq_length=N_IMAGE_TOKENS)
    torch.manual_seed(seed)
    return tf.LlavaForConditionalGeneration(cfg)


class Aux:
    """Training-only help for the vision tower, dropped at export (the model stays LLaVA-1.5).

    Trained from scratch through the language model alone, the ViT gets almost no signal:
    in a first run (no Aux) the LM learned the answers' wording by step 1000 and still
    ignored the pictures at step 1450, while the image rows' RMS grew to 350 (text
    embeddings: 0.03), which scales the gradient reaching the ViT through the LM's RMSNorm
    by 1/350. So:
    - a linear probe on every patch of the feature layer (the ViT output LLaVA reads)
      predicts the patch's grid cell and the shape, colour and size of the object in that
      cell (or "none"): dense, direct supervision of what the questions ask about;
    - a penalty holds each projected image row's RMS near the token embeddings' RMS;
    - an alignment loss (``align``, a cosine distance) pulls each projected image row
      towards the sum of the token embeddings of the words that describe its cell: the
      place ("top left") and, where there is an object, its size, colour and shape. Runs
      0-5 had the ViT encode the objects (the probe read 79-87%) and the language model
      still not find, among the image rows, the ones a question's words point at; with
      the rows written in the words' own embedding space, answering "What colour is the
      star?" is the copying from context that the language model learns early.
    A second run also drew the token embeddings at RMS 1 (the image rows' scale then): it
    had not learned even to copy the question's words by step 900, where the first run
    (HF's std-0.02 embeddings, under which every layer's output counts from the start) had.
    """

    CLASSES = (W.GRID * W.GRID, len(W.SHAPES) + 1, len(W.COLOURS) + 1, len(W.SIZES) + 1)  # cell, attributes

    def __init__(self, model, tok, weight: float = 0.5, mag: float = 0.01, align: float = 0.0):
        import torch
        self.weight, self.mag, self.align = weight, mag, align
        self.head = torch.nn.Linear(VISION["hidden"], sum(self.CLASSES))
        self.seen = {}
        self.embed = model.model.language_model.embed_tokens
        vt = model.model.vision_tower
        tower = getattr(vt, "vision_model", vt).encoder.layers[VISION["layers"] - 2]  # its output: hidden state -2
        tower.register_forward_hook(lambda m, i, o: self.seen.__setitem__("feat", o[0] if isinstance(o, tuple) else o))
        model.model.multi_modal_projector.register_forward_hook(lambda m, i, o: self.seen.__setitem__("proj", o))
        g = VISION["image"] // VISION["patch"]
        centre = (np.arange(g) * VISION["patch"] + VISION["patch"] // 2) // W.CELL
        self.patch_cell = (centre[:, None] * W.GRID + centre[None, :]).reshape(-1)  # [36] cell of each patch
        self.words = {w: tok.encode(w, add_special_tokens=False)
                      for w in W.SHAPES + tuple(W.COLOURS) + W.SIZES + W.PLACES}

    def parameters(self):
        return self.head.parameters()

    def targets(self, scenes):
        import torch
        t = np.zeros((len(scenes), len(self.patch_cell), 4), np.int64)
        for i, sc in enumerate(scenes):
            attrs = np.zeros((W.GRID * W.GRID, 3), np.int64)
            for o in sc.objects:
                attrs[o.cell] = (W.SHAPES.index(o.shape) + 1, list(W.COLOURS).index(o.colour) + 1,
                                 W.SIZES.index(o.size) + 1)
            t[i, :, 0] = self.patch_cell
            t[i, :, 1:] = attrs[self.patch_cell]
        return torch.from_numpy(t)

    def loss(self, scenes):
        """(auxiliary loss, probe accuracy on the objects' attributes) for the last forward."""
        import torch.nn.functional as F
        feat = self.seen["feat"][:, 1:]  # drop CLS: the rows LLaVA-1.5 uses
        logits = self.head(feat)
        tgt = self.targets(scenes)
        losses, hits, n, off = [], 0, 0, 0
        for k, c in enumerate(self.CLASSES):
            lg = logits[..., off:off + c].reshape(-1, c)
            tk = tgt[..., k].reshape(-1)
            losses.append(F.cross_entropy(lg, tk))
            if k:
                obj = tgt[..., 1].reshape(-1) > 0
                hits += (lg.argmax(-1)[obj] == tk[obj]).sum().item()
                n += obj.sum().item()
            off += c
        proj = self.seen["proj"]
        rms = proj.pow(2).mean(-1).sqrt()
        text_rms = self.embed.weight.detach().pow(2).mean().sqrt()
        total = self.weight * sum(losses) / len(losses) + self.mag * (rms / text_rms - 1).pow(2).mean()
        if self.align:
            total = total + self.align * (1 - F.cosine_similarity(proj, self.word_targets(scenes), dim=-1)).mean()
        return total, hits / max(n, 1)

    def word_targets(self, scenes):
        """[pictures, patches, hidden]: per patch, the summed (detached) embeddings of the
        words describing its cell; each word is the mean of its pieces' embeddings."""
        import torch
        emb = self.embed.weight.detach()
        vec = {w: emb[ids].mean(0) for w, ids in self.words.items()}
        cells = []
        for sc in scenes:
            by_cell = {o.cell: o for o in sc.objects}
            for c in range(W.GRID * W.GRID):
                v = vec[W.PLACES[c]]
                if c in by_cell:
                    o = by_cell[c]
                    v = v + vec[o.size] + vec[o.colour] + vec[o.shape]
                cells.append(v)
        per_cell = torch.stack(cells).view(len(scenes), W.GRID * W.GRID, -1)
        return per_cell[:, torch.from_numpy(self.patch_cell)]


def processor(tok):
    import transformers as tf
    size = dict(size={"shortest_edge": VISION["image"]},
                crop_size={"height": VISION["image"], "width": VISION["image"]})
    ip = tf.CLIPImageProcessor(**size)
    return tf.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=VISION["patch"],
                             vision_feature_select_strategy="default", image_token=W.IMAGE,
                             num_additional_image_tokens=1), ip


def pixels(images) -> np.ndarray:
    """CLIP normalisation of 96x96 pictures (what CLIPImageProcessor gives at this size)."""
    a = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])
    a = (a - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    return a.transpose(0, 3, 1, 2).copy()


class Encoder:
    """Text -> token ids (as HF's processor makes them: each <image> expanded) and labels."""

    def __init__(self, tok):
        self.tok = tok
        self.image_id = tok.convert_tokens_to_ids(W.IMAGE)
        self.eos = tok.eos_token_id

    def ids(self, text: str) -> list:
        out = []
        for t in self.tok(text)["input_ids"]:
            out.extend([t] * N_IMAGE_TOKENS if t == self.image_id else [t])
        return out

    def turns(self, header: str, qa, spans: list = None) -> tuple:
        """(ids, labels) of a conversation: ``qa`` is [(question, answer)], the first question
        after ``header``; every answer and the final EOS are the targets. ``spans``, when
        given, receives each answer's token range [start, end)."""
        segs = []
        for i, (q, a) in enumerate(qa):
            segs.append((f"USER: {header}{q} ASSISTANT:" if i == 0 else f" USER: {q} ASSISTANT:", False))
            segs.append((f" {a}", True))
        text, ids, labels = "", [], []
        for seg, target in segs:
            text += seg
            full = self.ids(text)
            if full[:len(ids)] != ids:
                raise RuntimeError(f"tokenization of {text!r} does not extend its prefix")
            new = full[len(ids):]
            if target and spans is not None:
                spans.append((len(ids), len(ids) + len(new)))
            ids += new
            labels += new if target else [-100] * len(new)
        return ids + [self.eos], labels + [self.eos]

    def example(self, ex: W.Example):
        qa = [(ex.first_question, ex.first_answer)] if ex.first_question is not None else []
        return self.turns(ex.header(), qa + [(ex.question, ex.answer)])


def conversation(rng: random.Random, n_pictures: int, turns: int, max_objects: int = 5):
    """Training data: ``turns`` distinct questions about ``n_pictures`` new scenes of 1 to
    ``max_objects`` objects each: (scenes, header, qa, looks). looks[i] lists the
    (picture, cell) pairs answer i is read from (the object asked about; every object of
    the shape counted; every object described), empty when no object answers it.

    Many questions per picture give the language model several answers to learn from for
    each picture it reads (the held-out and evaluation sets ask one or two)."""
    scenes = [W.make_scene(rng, rng.randint(1, max_objects)) for _ in range(n_pictures)]
    kinds = W.SINGLE_KINDS if n_pictures == 1 else W.MULTI_KINDS
    qa, looks, asked = [], [], set()
    for _ in range(4 * turns):
        kd = rng.choice(kinds)
        if n_pictures == 1:
            q, a, o = W.single_question(rng, scenes[0], kd)
            pic = 1
        else:
            q, a, o, pic = W.multi_question(rng, scenes, kd)
        if q not in asked:
            asked.add(q)
            qa.append((q, a))
            sc = scenes[pic - 1]
            if o is not None:
                look = [(pic - 1, o.cell)]
            elif q.lower().rstrip(".").endswith(("describe the picture", f"describe picture {pic}")):
                look = [(pic - 1, ob.cell) for ob in sc.objects]
            else:  # a count (or "no, there is no ..."): every object of the shape asked about
                shape = next((s for s in W.SHAPES if W.PLURAL[s] in q), None)
                look = [(pic - 1, ob.cell) for ob in sc.objects if ob.shape == shape]
            looks.append(look)
        if len(qa) == turns:
            break
    header = W.IMAGE + "\n" if n_pictures == 1 else "".join(
        f"Picture {i + 1}: {W.IMAGE}\n" for i in range(n_pictures))
    return scenes, header, qa, looks


def max_objects_at(step: int, few_objects: tuple) -> int:
    """The object curriculum: 1 object per picture before step few_objects[0], up to 3
    before few_objects[1], then 1-5. With one object, attending to the whole picture
    answers every question, so the language model first learns to read the image rows at
    all; then to pick the right ones among several objects."""
    return 1 if step < few_objects[0] else 3 if step < few_objects[1] else 5


def make_batch(enc: Encoder, seed: int, step: int, tokens: int, one_picture_steps: int = 0,
               few_objects: tuple = (0, 0)):
    """Step ``step``'s batch: conversations of 1-8 turns about 1 picture (40%, or all during
    the one-picture curriculum) or 2-8 pictures, until ``tokens`` tokens. Also returns the
    scenes (in image order) and the routing targets: (row, positions whose next token is an
    answer token, the image rows that answer holds information from)."""
    import torch
    rng = random.Random(seed * 1_000_003 + step)
    scenes, rows, route = [], [], []
    g = VISION["image"] // VISION["patch"]
    centre = (np.arange(g) * VISION["patch"] + VISION["patch"] // 2) // W.CELL
    patch_cell = (centre[:, None] * W.GRID + centre[None, :]).reshape(-1)
    while sum(len(r[0]) for r in rows) < tokens and len(rows) < 48:
        n_pic = 1 if step < one_picture_steps or rng.random() < 0.4 else rng.randint(2, 8)
        sc, header, qa, looks = conversation(rng, n_pic, rng.randint(1, 8), max_objects_at(step, few_objects))
        spans = []
        ids, lab = enc.turns(header, qa, spans)
        img = np.flatnonzero(np.array(ids) == enc.image_id).reshape(n_pic, N_IMAGE_TOKENS)
        for (a, b), look in zip(spans, looks):
            keys = [p for pic, cell in look for p in img[pic][patch_cell == cell]]
            if keys:
                route.append((len(rows), list(range(a - 1, b - 1)), keys))
        rows.append((ids, lab))
        scenes += sc
    T = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), T), enc.eos, dtype=torch.long)
    lab = torch.full((len(rows), T), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, (a, b) in enumerate(rows):
        ids[i, :len(a)] = torch.tensor(a)
        lab[i, :len(b)] = torch.tensor(b)
        mask[i, :len(a)] = 1
    pv = torch.from_numpy(pixels([W.draw_scene(sc) for sc in scenes]))
    return dict(input_ids=ids, attention_mask=mask, labels=lab, pixel_values=pv), scenes, route


# The attention heads the routing loss supervises: (layer, head).
ROUTE_HEADS = ((3, 0), (4, 1))


def route_loss(attentions, route):
    """Training-only: the supervised heads (ROUTE_HEADS) should put their attention, at the
    positions that predict an answer's tokens, on the image rows of the objects the answer
    is about: mean of -log(attention mass on those rows). Runs 0-6 showed the language model
    is slow to learn this routing from the answers alone, even with image rows written in
    the words' embedding space."""
    import torch
    total, n = 0.0, 0
    for b, q, k in route:
        qi, ki = torch.tensor(q), torch.tensor(k)
        for layer, head in ROUTE_HEADS:
            a = attentions[layer][b, head][qi][:, ki].sum(-1)
            total = total - torch.log(a + 1e-6).mean()
            n += 1
    return total / max(n, 1)


def heldout(seed: int, n: int):
    """The held-out set printed during training: half one picture, half 4-8 pictures."""
    rng = random.Random(seed + 10**9)
    return [W.make_example(rng, n_pictures=1 if i % 2 == 0 else rng.randint(4, 8), follow_up=i % 4 == 3)
            for i in range(n)]


def greedy(model, enc: Encoder, ex: W.Example, max_new: int = 48) -> str:
    import torch
    ids = enc.ids(ex.prompt)
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             pixel_values=torch.from_numpy(pixels(ex.images)), max_new_tokens=max_new,
                             do_sample=False, pad_token_id=enc.eos, eos_token_id=enc.eos)
    return enc.tok.decode(out[0, len(ids):], skip_special_tokens=True)


def evaluate(model, enc, exs) -> dict:
    model.eval()
    scores = {}
    for ex in exs:
        key = ("1 picture" if not ex.multi else "4-8 pictures") + (" follow-up" if ex.first_question else "")
        scores.setdefault(key, []).append(W.score_answer(ex, greedy(model, enc, ex)))
    model.train()
    return {k: float(np.mean(v)) for k, v in sorted(scores.items())}


def lr_at(step: int, steps: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(args) -> Path:
    import torch
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    hf = out / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    if (hf / "tokenizer.model").is_file():
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(str(hf))
    else:
        tok = train_tokenizer(hf, args.seed)
    enc = Encoder(tok)
    model = build_model(tok, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    if args.route > 0:
        model.set_attn_implementation("eager")  # route_loss reads the attention weights
    aux = Aux(model, tok, align=args.align)
    opt = torch.optim.AdamW(list(model.parameters()) + list(aux.parameters()), lr=args.lr, betas=(0.9, 0.95),
                            weight_decay=0.01)
    ckpt = out / "ckpt.pt"
    step, log = 0, []
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        aux.head.load_state_dict(state["aux"])
        opt.load_state_dict(state["opt"])
        step, log = state["step"], state["log"]
        print(f"resumed from {ckpt} at step {step}")
    print(f"model: {n_params / 1e6:.2f}M parameters, vocab {len(tok)}, {N_IMAGE_TOKENS} tokens per picture; "
          f"{args.steps} steps of ~{args.tokens} tokens, {torch.get_num_threads()} threads")
    exs = heldout(args.seed, args.eval_n)
    model.train()

    def save():
        torch.save({"model": model.state_dict(), "aux": aux.head.state_dict(), "opt": opt.state_dict(),
                    "step": step, "log": log},
                   str(ckpt) + ".tmp")
        os.replace(str(ckpt) + ".tmp", ckpt)

    bar = tqdm(total=args.steps, initial=step, dynamic_ncols=True, mininterval=5)
    t0, ema = time.time(), None
    stop = min(args.steps, args.stop_at or args.steps)
    while step < stop:
        batch, scenes, route = make_batch(enc, args.seed, step, args.tokens, args.one_picture_steps,
                                          args.few_objects)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr)
        res = model(**batch, output_attentions=args.route > 0)
        loss = res.loss
        aux_loss, probe = aux.loss(scenes)
        if args.route > 0:
            aux_loss = aux_loss + args.route * route_loss(res.attentions, route)
        opt.zero_grad(set_to_none=True)
        (loss + aux_loss).backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(aux.parameters()), 1.0)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.4f}", probe=f"{probe:.2f}", pics=batch["pixel_values"].shape[0])
        entry = {"step": step, "loss": round(loss.item(), 5), "aux": round(aux_loss.item(), 5),
                 "probe": round(probe, 4), "s": round(time.time() - t0, 1)}
        if step % args.eval_every == 0 or step == args.steps:
            entry["heldout"] = evaluate(model, enc, exs)
            tqdm.write(f"step {step}: loss {ema:.4f}, held-out exact match "
                       + ", ".join(f"{k} {v:.1%}" for k, v in entry["heldout"].items()))
        log.append(entry)
        if step % args.save_every == 0 or step == stop:
            save()
    bar.close()
    if step < args.steps:
        print(f"stopped at step {step} (--stop-at); run again to resume")
        return hf
    model.save_pretrained(str(hf), safe_serialization=True)
    proc, ip = processor(tok)
    proc.save_pretrained(str(hf))
    ip.save_pretrained(str(hf))
    (out / "train_log.json").write_text(json.dumps(log))
    print(f"saved {hf}")
    return hf


def export(args) -> Path:
    """OUT/hf -> F32 GGUF -> Q8_0 GGUF (text and vision weights) at --export."""
    from vlcache_native import convert, quantize
    dst = Path(args.export)
    dst.parent.mkdir(parents=True, exist_ok=True)
    f32 = Path(args.out) / "model-f32.gguf"
    convert.convert(Path(args.out) / "hf", f32, "f32")
    if quantize.main([str(f32), str(dst), args.export_type, "--vision-type", args.export_type]) != 0:
        raise RuntimeError(f"quantizing {f32} to {args.export_type} failed")
    print(f"wrote {dst} ({dst.stat().st_size / 2**20:.2f} MiB)")
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="demo-train", help="checkpoint folder (resumed when it holds ckpt.pt)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stop-at", type=int, default=None, help="save and stop after this step (resume later)")
    ap.add_argument("--tokens", type=int, default=2048, help="tokens per step (examples of one picture count)")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--one-picture-steps", type=int, default=0, help="a curriculum: this many steps of one picture first")
    ap.add_argument("--few-objects", default="0,0", type=lambda v: tuple(int(x) for x in v.split(",")),
                    help="A,B: pictures of 1 object before step A, of at most 3 before step B")
    ap.add_argument("--align", type=float, default=1.0,
                    help="weight of the training-only loss aligning image rows with their words' embeddings (Aux)")
    ap.add_argument("--route", type=float, default=1.0,
                    help="weight of the training-only loss that supervises where ROUTE_HEADS attend (route_loss)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-n", type=int, default=32)
    ap.add_argument("--save-every", type=int, default=50)
    ap.add_argument("--export", default=None, help="write the trained model as a GGUF here (no training)")
    ap.add_argument("--export-type", default="Q8_0")
    args = ap.parse_args(argv)
    if args.export:
        export(args)
    else:
        train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
