#!/usr/bin/env python3
"""Train the demo VLM: a small LLaVA-1.5 on the synthetic shapes world (tools/shapes_world.py).

The model is a Hugging Face ``LlavaForConditionalGeneration`` (CLIP ViT + 2-layer GELU MLP
projector + Llama with grouped-query attention), so transformers is the oracle for our
runtime and tools/convert_hf_to_gguf.py converts it. The tokenizer is a SentencePiece BPE
trained on the world's text (Llama's options: byte fallback, split digits, dummy prefix) plus
``<image>`` as an added special token.

    python tools/train_demo_vlm.py --out demo-train --seed 0 [recipe flags]   # trains (resumes)
    python tools/train_demo_vlm.py --out demo-train --export models/shapes-llava-q8_0.gguf

models/README.md gives the runs so far, their flags and what each learned. The ``Rows`` and
``Router`` docstrings say why the training-only parts (teacher rows, probe, routing loss)
are there; none of them is in the exported model.

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
_CENTRE = (np.arange(VISION["image"] // VISION["patch"]) * VISION["patch"] + VISION["patch"] // 2) // W.CELL
PATCH_CELL = (_CENTRE[:, None] * W.GRID + _CENTRE[None, :]).reshape(-1)  # the grid cell of each patch
# The slot of each patch in its cell's 2x2 block (Rows): which word of the cell it carries.
_SUB = np.arange(VISION["image"] // VISION["patch"]) % 2
PATCH_SLOT = (2 * _SUB[:, None] + _SUB[None, :]).reshape(-1)
SLOTS = ("size", "colour", "shape", "place")  # top left, top right, bottom left, bottom right
FILLER = "<0x00>"  # the word of an empty cell's size, colour and shape slots (a byte piece no text uses)
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


class Rows:
    """The image rows the language model reads: the projector's, and the teacher's.

    Trained from scratch end to end, neither half of the model learns (runs 0-7 in
    models/README.md): the ViT gets almost no signal through a language model that ignores
    the pictures, and the language model has nothing readable to learn to look for. So the
    two halves learn side by side against one shared target, the *teacher rows*. Each grid
    cell is 2x2 patches, and each of its four patches carries one of the cell's words
    (SLOTS: size, colour, shape, place; an empty cell's first three carry FILLER) as its
    token embedding, plus *keys*: learned vectors for the shape and colour of the cell's
    object, the cell and the slot. Reading a picture is then copying one word from the row
    whose keys match the question, which a small language model learns like copying a word
    of the question. (Runs 8-10 gave each patch the sum of its cell's four words: the routed
    heads found the right rows, but the attribute asked for was not read out of the sum.
    Slots without keys were no better: causally, a colour row cannot see its own shape row,
    which comes later in the raster order.)
    - The language model reads teacher rows first (``--teacher-steps``), so it learns to
      find, among the image rows, the ones a question's words point at and to copy them.
    - Meanwhile the ViT + projector regress onto the (detached) teacher rows, and a linear
      probe on the ViT's feature layer predicts each patch's cell and the attributes of the
      object there: dense supervision on every patch of every picture.
    - Then the language model's input moves from teacher rows to the projector's, picture by
      picture (``--anneal-steps``), and the last steps train everything end to end on the
      projector's rows alone: the exported model is a plain LLaVA-1.5.
    The probe head and the keys are training-only (the ViT learns to produce the keys), so
    neither is exported.
    """

    CLASSES = (W.GRID * W.GRID, len(W.SHAPES) + 1, len(W.COLOURS) + 1, len(W.SIZES) + 1)  # cell, attributes

    def __init__(self, model, tok, probe: float = 0.5, distill: float = 1.0):
        import torch
        self.probe_w, self.distill_w = probe, distill
        self.embed = model.model.language_model.embed_tokens
        self.tower = model.model.vision_tower
        self.projector = model.model.multi_modal_projector
        self.head = torch.nn.Linear(VISION["hidden"], sum(self.CLASSES))
        H = model.config.text_config.hidden_size
        # the keys: what every patch of a cell says about that cell besides its own word
        self.keys = torch.nn.ParameterDict({
            name: torch.nn.Parameter(torch.randn(n, H) * 0.02) for name, n in
            (("shape", len(W.SHAPES) + 1), ("colour", len(W.COLOURS) + 1), ("cell", W.GRID * W.GRID),
             ("slot", len(SLOTS)))})
        self.vocab = W.SHAPES + tuple(W.COLOURS) + W.SIZES + W.PLACES + (FILLER,)
        ids = [tok.encode(w, add_special_tokens=False) for w in self.vocab[:-1]]
        ids.append([tok.convert_tokens_to_ids(FILLER)])
        # [words, pieces] with -1 padding: a place of two words ("top left") is their sum
        self.pieces = torch.tensor([i + [-1] * (2 - len(i)) for i in ids])
        self.index = {w: i for i, w in enumerate(self.vocab)}

    def parameters(self):
        return self.head.parameters()

    def state_dict(self):
        return {"probe": self.head.state_dict(), "keys": self.keys.state_dict()}

    def load_state_dict(self, state):
        self.head.load_state_dict(state["probe"])
        self.keys.load_state_dict(state["keys"])

    def vision(self, pixel_values):
        """(ViT feature rows [P, 36, 128], projected rows [P, 36, H]), as LLaVA-1.5 computes them."""
        feat = self.tower(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]
        return feat, self.projector(feat)

    def words(self, scene) -> list:
        """The word (a key of self.index) each of the 36 patches carries."""
        by_cell = {o.cell: o for o in scene.objects}
        out = []
        for cell, slot in zip(PATCH_CELL, PATCH_SLOT):
            o = by_cell.get(int(cell))
            if SLOTS[slot] == "place":
                out.append(W.PLACES[cell])
            else:
                out.append(FILLER if o is None else getattr(o, SLOTS[slot]))
        return out

    def word_index(self, scenes):
        """[P, 36]: each patch's word, as an index into self.vocab."""
        import torch
        return torch.tensor([[self.index[w] for w in self.words(sc)] for sc in scenes])

    def own_ids(self, scenes):
        """[P, 36]: the token each patch's word starts with (the row-word loss's targets)."""
        return self.pieces[:, 0][self.word_index(scenes)]

    def teacher(self, scenes):
        """[P, 36, H]: each patch's word embedding (a two-word place: the sum of both) plus
        its cell's keys: the shape and colour of the object there, the cell, the slot."""
        import torch
        emb = self.embed.weight
        ok = self.pieces >= 0
        table = (emb[self.pieces.clamp(min=0)] * ok.unsqueeze(-1)).sum(1)
        idx = self.word_index(scenes)
        attrs = np.zeros((len(scenes), W.GRID * W.GRID, 2), np.int64)
        for i, sc in enumerate(scenes):
            for o in sc.objects:
                attrs[i, o.cell] = (W.SHAPES.index(o.shape) + 1, list(W.COLOURS).index(o.colour) + 1)
        a = torch.from_numpy(attrs[:, PATCH_CELL])
        k = self.keys
        return (table[idx] + k["shape"][a[..., 0]] + k["colour"][a[..., 1]]
                + k["cell"][torch.from_numpy(PATCH_CELL)] + k["slot"][torch.from_numpy(PATCH_SLOT)])

    def targets(self, scenes):
        import torch
        t = np.zeros((len(scenes), len(PATCH_CELL), 4), np.int64)
        for i, sc in enumerate(scenes):
            attrs = np.zeros((W.GRID * W.GRID, 3), np.int64)
            for o in sc.objects:
                attrs[o.cell] = (W.SHAPES.index(o.shape) + 1, list(W.COLOURS).index(o.colour) + 1,
                                 W.SIZES.index(o.size) + 1)
            t[i, :, 0] = PATCH_CELL
            t[i, :, 1:] = attrs[PATCH_CELL]
        return torch.from_numpy(t)

    def loss(self, scenes, feat, rows, teacher):
        """(vision loss, probe accuracy on the objects' attributes, distillation error):
        the probe's cross-entropy plus the projected rows' squared error against the
        teacher rows, relative to the teacher's mean square."""
        import torch.nn.functional as F
        logits = self.head(feat)
        tgt = self.targets(scenes)
        losses, hits, n, off = [], 0, 0, 0
        obj = tgt[..., 1].reshape(-1) > 0
        for k, c in enumerate(self.CLASSES):
            lg = logits[..., off:off + c].reshape(-1, c)
            tk = tgt[..., k].reshape(-1)
            losses.append(F.cross_entropy(lg, tk))
            if k:
                hits += (lg.argmax(-1)[obj] == tk[obj]).sum().item()
                n += obj.sum().item()
            off += c
        t = teacher.detach()
        dist = (rows - t).pow(2).mean() / t.pow(2).mean()
        return self.probe_w * sum(losses) / len(losses) + self.distill_w * dist, hits / max(n, 1), dist.item()


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
        # what answer_routes needs: the kind of each content word's token
        one = lambda w: tok.encode(" " + w, add_special_tokens=False)[-1]  # noqa: E731
        self.word_kinds = {one(w): k for k, ws in (("size", W.SIZES), ("colour", W.COLOURS), ("shape", W.SHAPES),
                                                   ("place", ("top", "bottom", "left", "right", "center")),
                                                   ("yes", ("Yes",))) for w in ws}
        self.word_kinds.update({tok.convert_tokens_to_ids(str(d)): "digit" for d in range(10)})
        self.shows, self.picture = one("shows"), one("Picture")
        self.is_are = {one("is"), one("are")}
        self.space = tok.convert_tokens_to_ids("\u2581")

    def name_ids(self, look, numbers: bool = False) -> set:
        """The token ids that name the objects of ``look`` ([(picture, object)]): their shapes
        (singular and plural) and colours, every piece of each word but a lone space; with
        ``numbers``, their pictures' numbers too ("In picture *3*, ...")."""
        words = {w for _, o in look for w in (o.shape, W.PLURAL[o.shape], o.colour)}
        words |= {str(pic + 1) for pic, _ in look} if numbers else set()
        return {i for w in words for i in self.tok.encode(" " + w, add_special_tokens=False)} - {self.space}

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
    ``max_objects`` objects each: (scenes, header, qa, looks). looks[i] lists the (picture index,
    object) pairs answer i is read from (the object asked about; every object of the shape
    counted; every object described, in the description's order), empty when no object
    answers it. Many questions per
    picture give the language model several answers to learn from for each picture it reads
    (the held-out and evaluation sets ask one or two)."""
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
        if q in asked:
            continue
        asked.add(q)
        qa.append((q, a))
        objs = scenes[pic - 1].objects
        if o is not None:
            look = [o]
        elif q.lower().rstrip(".").endswith(("describe the picture", f"describe picture {pic}")):
            look = sorted(objs, key=lambda ob: ob.cell)  # in the description's order
        else:  # a count (or "no, there is no ..."): every object of the shape asked about
            shape = next((s for s in W.SHAPES if W.PLURAL[s] in q), None)
            look = [ob for ob in objs if ob.shape == shape]
        looks.append([(pic - 1, ob) for ob in look])
        if len(qa) == turns:
            break
    header = W.IMAGE + "\n" if n_pictures == 1 else "".join(
        f"Picture {i + 1}: {W.IMAGE}\n" for i in range(n_pictures))
    return scenes, header, qa, looks


def _patches(cell: int, slot) -> np.ndarray:
    """The patch indices of a cell's slot (Rows), or of all four when slot is None."""
    hit = PATCH_CELL == cell
    return np.flatnonzero(hit if slot is None else hit & (PATCH_SLOT == slot))


def answer_routes(enc: "Encoder", ids: list, look: list, before: int, count_verbs: bool = False) -> list:
    """[(i, [(picture, cell, slot)])]: for each token i of an answer (``ids``) that is read
    from a picture, the image rows it is read from (``look``: conversation's objects, with
    their picture index). A size, colour, shape or place word comes from that slot of the
    object it names (in a description: of the k-th object, for the k-th such word); the
    number of a count from the shape slots of every object counted (with ``count_verbs``, the
    "is" / "are" before it too, which already tells 1 from more); "Yes" from the
    object's colour and shape; the picture number of "Picture 3 has a ..." from the whole
    cell. The rest (the wording, and words copied from the question) is not routed."""
    kinds = enc.word_kinds
    describe = enc.shows in ids
    seen = {k: 0 for k in SLOTS}
    places = [(pic, o) for pic, o in look for _ in o.place.split()]
    out = []
    for i, t in enumerate(ids):
        kind = kinds.get(t)
        j = i - 1 - (i >= 1 and ids[i - 1] == enc.space)  # a digit follows a lone "\u2581"
        prev = ids[j] if j >= 0 else before
        keys = []
        if kind in SLOTS:
            slot = SLOTS.index(kind)
            if describe:
                seq = places if kind == "place" else look
                k = seen[kind]
                seen[kind] += 1
                if k < len(seq):
                    keys = [(seq[k][0], seq[k][1].cell, slot)]
            else:
                word = enc.tok.convert_ids_to_tokens(t).lstrip("\u2581")
                keys = [(pic, o.cell, slot) for pic, o in look
                        if word in (o.place.split() if kind == "place" else [getattr(o, kind)])]
        elif kind == "digit" and prev in enc.is_are:  # a count
            keys = [(pic, o.cell, SLOTS.index("shape")) for pic, o in look]
            if count_verbs:  # "is" / "are" says 1 or more first: routed from the same rows
                out.append((j, keys))
        elif kind == "digit" and ids[0] == enc.picture and j == 0:  # "Picture 3 has a green star."
            keys = [(pic, o.cell, None) for pic, o in look]
        elif kind == "yes":
            keys = [(pic, o.cell, SLOTS.index(s)) for pic, o in look for s in ("colour", "shape")]
        if keys:
            out.append((i, keys))
    return out


def max_objects_at(step: int, few_objects: tuple) -> int:
    """The object curriculum: 1 object per picture before step few_objects[0], up to 3
    before few_objects[1], then 1-5."""
    return 1 if step < few_objects[0] else 3 if step < few_objects[1] else 5


def make_batch(enc: Encoder, seed: int, step: int, tokens: int, one_picture_steps: int = 0,
               few_objects: tuple = (0, 0), subject_numbers: bool = False, count_verbs: bool = False):
    """Step ``step``'s data: conversations of 3-12 turns about 1 picture (40%, or all during
    the one-picture curriculum) or 2-8 pictures, until ``tokens`` tokens. Returns (groups,
    scenes): the conversations padded into groups of similar length (one-picture, 2-4 and
    5-8 pictures, so little compute goes to padding), each group a dict of input_ids,
    attention_mask, labels, ``pictures`` (indices into ``scenes``, in image order) and
    ``route`` / ``route_pictures`` / ``subject``: [(row, query position, key positions)] for Router.loss:
    the position before each answer token read from a picture and the image rows it is read
    from (answer_routes); each image row and its picture's number, with several pictures; the
    same answer positions and the words of their turn that name the objects (Encoder.name_ids)."""
    import torch
    rng = random.Random(seed * 1_000_003 + step)
    scenes, convs = [], []
    while sum(len(c[0]) for c in convs) < tokens and len(convs) < 48:
        n_pic = 1 if step < one_picture_steps or rng.random() < 0.4 else rng.randint(2, 8)
        sc, header, qa, looks = conversation(rng, n_pic, rng.randint(3, 12), max_objects_at(step, few_objects))
        spans = []
        ids, lab = enc.turns(header, qa, spans)
        img = np.flatnonzero(np.array(ids) == enc.image_id).reshape(n_pic, N_IMAGE_TOKENS)
        route, subject, start = [], [], int(img[-1, -1]) + 1
        for (a, b), look in zip(spans, looks):
            if look:
                names = set() if enc.shows in ids[a:b] else enc.name_ids(look, subject_numbers and n_pic > 1)
                for i, keys in answer_routes(enc, ids[a:b], look, ids[a - 1], count_verbs):
                    route.append((a + i - 1, [int(img[pic][j]) for pic, cell, slot in keys for j in _patches(cell, slot)]))
                    said = [j for j in range(start, a + i) if ids[j] in names]  # this turn's words naming them
                    if said:
                        subject.append((a + i - 1, said))
            start = b
        numbers = [max(j for j in range(int(rows_[0])) if enc.word_kinds.get(ids[j]) == "digit")
                   for rows_ in img] if n_pic > 1 else []
        route_pictures = [(int(p), [d]) for rows_, d in zip(img, numbers) for p in rows_]
        convs.append((ids, lab, list(range(len(scenes), len(scenes) + n_pic)), route, route_pictures, subject))
        scenes += sc
    groups = []
    for lo, hi in ((1, 1), (2, 4), (5, 8)):
        rows = [c for c in convs if lo <= len(c[2]) <= hi]
        if not rows:
            continue
        T = max(len(r[0]) for r in rows)
        ids = torch.full((len(rows), T), enc.eos, dtype=torch.long)
        lab = torch.full((len(rows), T), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        for i, (a, b, *_) in enumerate(rows):
            ids[i, :len(a)] = torch.tensor(a)
            lab[i, :len(b)] = torch.tensor(b)
            mask[i, :len(a)] = 1
        groups.append(dict(input_ids=ids, attention_mask=mask, labels=lab,
                           pictures=[p for r in rows for p in r[2]],
                           route=[(i, q, k) for i, r in enumerate(rows) for q, k in r[3]],
                           route_pictures=[(i, q, k) for i, r in enumerate(rows) for q, k in r[4]],
                           subject=[(i, q, k) for i, r in enumerate(rows) for q, k in r[5]]))
    return groups, scenes


# The attention heads the routing loss supervises, (layer, head): from the answers to the
# image rows they are read from, and from each image row to its picture's number.
ROUTE_HEADS = ((3, 0), (4, 1))
PICTURE_HEADS = ((1, 3),)
# From the answers to the words of their turn that name the object ("What colour is the
# *star*?"): two heads that attended to the first tokens only in run 13's k5.
SUBJECT_HEADS = ((1, 0), (1, 1))


class Router:
    """Training-only: the supervised heads (ROUTE_HEADS) should put their attention, at each
    position that predicts a token read from a picture, on the image rows it is read from
    (answer_routes; route_loss: the mean of -log of that attention mass). With teacher rows
    the language model learns to copy a picture's words as soon as pictures hold one object;
    finding the right object among several, from the question's words, is what it learns
    slowly (runs 6-8), so that is what this supervises. Only those two heads' scores are
    recomputed, from their layers' inputs (kept by a forward hook), so the rest of the model
    keeps its fast attention. With several pictures and ``--route-pictures``, PICTURE_HEADS
    learn the same way to look from every image row to its picture's number ("Picture 3:"),
    which questions about picture k and "Which picture has ..." need and no row can see
    otherwise (run 13's k6, and the shipped run 14's k10). With ``--subject``,
    SUBJECT_HEADS learn to look from the same answer positions at the words of their turn
    that name the object (its shape and colour; with ``--subject-numbers`` its picture's
    number), so that the query of a routed head holds what it has to match: without it
    (run 13) the routed heads spread their attention evenly over the rows of that slot of
    every object, whatever the question named."""

    def __init__(self, model, pictures: float = 0.0, subject: float = 0.0):
        # (make_batch's key, heads, weight relative to ROUTE_HEADS') of each supervised part
        self.parts = [(key, heads, w) for key, heads, w in (("route", ROUTE_HEADS, 1.0),
                                                             ("route_pictures", PICTURE_HEADS, pictures),
                                                             ("subject", SUBJECT_HEADS, subject)) if w]
        self.seen = {}
        for layer in sorted({layer for _, heads, _ in self.parts for layer, _ in heads}):
            attn = model.model.language_model.layers[layer].self_attn
            attn.register_forward_hook(self._keep(layer), with_kwargs=True)

    def _keep(self, layer):
        def hook(module, args, kwargs, output):
            h = args[0] if args else kwargs["hidden_states"]
            self.seen[layer] = (module, h, kwargs["position_embeddings"])
        return hook

    def group_loss(self, g) -> float:
        """The weighted routing losses of the last forward over group ``g`` (make_batch's)."""
        return sum(w * self.loss(g[key], heads) for key, heads, w in self.parts if g[key])

    def loss(self, route, heads=ROUTE_HEADS):
        """The routing loss of the last forward: route is [(row, query position, key positions)]."""
        import torch
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
        by_row = {}
        for b, qpos, kpos in route:
            by_row.setdefault(b, []).append((qpos, kpos))
        total = 0.0
        for layer, head in heads:
            attn, h, (cos, sin) = self.seen[layer]
            B, T, d = h.shape[0], h.shape[1], attn.head_dim
            kv = head // attn.num_key_value_groups
            q = attn.q_proj(h).view(B, T, -1, d)[:, :, head].unsqueeze(1)
            k = attn.k_proj(h).view(B, T, -1, d)[:, :, kv].unsqueeze(1)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            for b, items in by_row.items():
                qi = torch.tensor([p for p, _ in items])
                want = torch.zeros(len(items), T, dtype=torch.bool)
                for n, (_, kpos) in enumerate(items):
                    want[n, kpos] = True
                s = (q[b, 0, qi] @ k[b, 0].T) * attn.scaling
                s = s.masked_fill(torch.arange(T)[None, :] > qi[:, None], float("-inf"))
                mass = (s.softmax(-1) * want).sum(-1)
                total = total - torch.log(mass + 1e-6).sum()
        return total / (len(route) * len(heads))


def vision_share(step: int, teacher_steps: int, anneal_steps: int) -> float:
    """The fraction of pictures whose projector rows (not the teacher's) the LM reads."""
    if step < teacher_steps:
        return 0.0
    return min(1.0, (step - teacher_steps + 1) / max(1, anneal_steps))


def embed_with_rows(model, enc: Encoder, input_ids, rows):
    """Token embeddings with each <image> run replaced by its picture's rows ([P, 36, H], in
    image order): what LlavaForConditionalGeneration feeds its language model."""
    emb = model.model.language_model.embed_tokens(input_ids)
    mask = (input_ids == enc.image_id).unsqueeze(-1)
    return emb.masked_scatter(mask, rows.reshape(-1, rows.shape[-1]).to(emb.dtype))


def content_ids(tok) -> list:
    """The token ids of the words an answer takes from the pictures or the question: shapes,
    colours, sizes, places, numbers, yes / no. The rest of an answer is its wording."""
    words = (W.SHAPES + tuple(W.PLURAL.values()) + tuple(W.COLOURS) + W.SIZES
             + ("top", "bottom", "left", "right", "center", "Yes", "No", "no"))
    ids = {i for w in words for i in tok.encode(" " + w, add_special_tokens=False)}
    ids |= {tok.convert_tokens_to_ids(str(d)) for d in range(10)}
    return sorted(ids - {tok.convert_tokens_to_ids("\u2581"), tok.unk_token_id})


def lm_loss(model, enc: Encoder, groups, rows, weights, router=None, own=None):
    """Weighted mean cross-entropy of the answer tokens over every group (rows: every
    picture's; weights: per vocabulary id). Weighting the content words (content_ids) above
    the wording speeds up the learning of what has to be read from the context: the wording
    is learned within a few hundred steps either way. Returns (loss, route loss, row-word
    loss): the route loss is 0 without a router, the row-word loss 0 without ``own`` (every
    picture's own_ids): each image row's last hidden state, through the LM head, asked for
    its own word. Without it the LM head's rows for the colours and sizes stay alike (cosine
    0.94 and 0.99 at step 1200 against 0.38 for shapes, which answers copy from the
    question), so no colour is read from a picture."""
    import torch.nn.functional as F
    total, n, route, row_words = 0.0, 0.0, 0.0, 0.0
    for g in groups:
        emb = embed_with_rows(model, enc, g["input_ids"], rows[g["pictures"]])
        h = model.model.language_model(inputs_embeds=emb, attention_mask=g["attention_mask"]).last_hidden_state
        logits = model.lm_head(h[:, :-1])
        lab = g["labels"][:, 1:].reshape(-1)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab, ignore_index=-100, reduction="none")
        w = weights[lab.clamp(min=0)] * (lab != -100)
        total = total + (ce * w).sum()
        n += float(w.sum())
        if router is not None:
            route = route + router.group_loss(g) / len(groups)
        if own is not None:
            hi = h[g["input_ids"] == enc.image_id]
            row_words = row_words + F.cross_entropy(model.lm_head(hi), own[g["pictures"]].reshape(-1)) / len(groups)
    return total / max(n, 1.0), route, row_words


def heldout(seed: int, n: int):
    """The held-out set printed during training: half one picture, half 4-8 pictures."""
    rng = random.Random(seed + 10**9)
    return [W.make_example(rng, n_pictures=1 if i % 2 == 0 else rng.randint(4, 8), follow_up=i % 4 == 3)
            for i in range(n)]


def greedy(model, enc: Encoder, ex: W.Example, rows=None, max_new: int = 48) -> str:
    """The greedy reply to ``ex`` with the projector's image rows, or with ``rows`` given."""
    import torch
    ids = torch.tensor([enc.ids(ex.prompt)])
    lm = model.model.language_model
    with torch.no_grad():
        if rows is None:
            rows = model.model.multi_modal_projector(
                model.model.vision_tower(torch.from_numpy(pixels(ex.images)),
                                         output_hidden_states=True).hidden_states[-2][:, 1:])
        emb, cache, out = embed_with_rows(model, enc, ids, rows), None, []
        for _ in range(max_new):
            res = lm(inputs_embeds=emb, past_key_values=cache, use_cache=True)
            cache = res.past_key_values
            t = int(model.lm_head(res.last_hidden_state[:, -1]).argmax(-1))
            if t == enc.eos:
                break
            out.append(t)
            emb = lm.embed_tokens(torch.tensor([[t]]))
    return enc.tok.decode(out, skip_special_tokens=True)


def evaluate(model, enc, exs, teacher=None) -> dict:
    """Held-out exact match by group, reading the projector's rows (or the teacher's)."""
    import torch
    model.eval()
    scores = {}
    for ex in exs:
        key = ("1 picture" if not ex.multi else "4-8 pictures") + (" follow-up" if ex.first_question else "")
        with torch.no_grad():
            rows = teacher.teacher(ex.scenes) if teacher is not None else None
        scores.setdefault(key, []).append(W.score_answer(ex, greedy(model, enc, ex, rows)))
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
    if args.tie:  # the LM head is the token embedding while training; exported untied (a copy)
        model.lm_head.weight = model.model.language_model.embed_tokens.weight
    rows = Rows(model, tok)
    router = Router(model, args.route_pictures, args.subject) if args.route > 0 else None
    # Two gradient clips: the vision losses' gradients are far larger than the language
    # model's, and one global clip would scale the language model's updates down with them.
    lm_params = (list(model.model.language_model.parameters()) + list(model.lm_head.parameters())
                 + list(rows.keys.parameters()))
    vision_params = (list(model.model.vision_tower.parameters()) + list(model.model.multi_modal_projector.parameters())
                     + list(rows.parameters()))
    lm_params = list({id(p): p for p in lm_params}.values())
    params = lm_params + vision_params
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    ckpt = out / "ckpt.pt"
    step, log = 0, []
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        rows.load_state_dict(state["rows"])
        opt.load_state_dict(state["opt"])
        step, log = state["step"], state["log"]
        print(f"resumed from {ckpt} at step {step}")
    print(f"model: {n_params / 1e6:.2f}M parameters, vocab {len(tok)}, {N_IMAGE_TOKENS} tokens per picture; "
          f"{args.steps} steps of ~{args.tokens} tokens, {torch.get_num_threads()} threads")
    exs = heldout(args.seed, args.eval_n)
    weights = torch.ones(len(tok))
    weights[content_ids(tok)] = args.content_weight
    model.train()

    def save():
        torch.save({"model": model.state_dict(), "rows": rows.state_dict(), "opt": opt.state_dict(),
                    "step": step, "log": log},
                   str(ckpt) + ".tmp")
        os.replace(str(ckpt) + ".tmp", ckpt)

    bar = tqdm(total=args.steps, initial=step, dynamic_ncols=True, mininterval=5)
    t0, ema = time.time(), None
    stop = min(args.steps, args.stop_at or args.steps)
    while step < stop:
        groups, scenes = make_batch(enc, args.seed, step, args.tokens, args.one_picture_steps, args.few_objects,
                                    args.subject_numbers, args.count_verbs)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr)
        teach = rows.teacher(scenes)
        share = 0.0 if args.lm_only else vision_share(step, args.teacher_steps, args.anneal_steps)
        if args.lm_only:
            vloss, probe, dist, seen = torch.zeros(()), 0.0, 0.0, teach
        else:
            feat, vis = rows.vision(torch.from_numpy(pixels([W.draw_scene(sc) for sc in scenes])))
            pick = random.Random(args.seed * 7_000_003 + step)
            use_vis = torch.tensor([pick.random() < share for _ in scenes]).view(-1, 1, 1)
            seen = torch.where(use_vis, vis, teach)
            vloss, probe, dist = rows.loss(scenes, feat, vis, teach)
        own = rows.own_ids(scenes) if args.row_words > 0 else None
        loss, route, row_words = lm_loss(model, enc, groups, seen, weights, router, own)
        opt.zero_grad(set_to_none=True)
        (loss + vloss + args.route * route + args.row_words * row_words).backward()
        lm_norm = float(torch.nn.utils.clip_grad_norm_(lm_params, 1.0))
        vision_norm = float(torch.nn.utils.clip_grad_norm_(vision_params, 1.0))
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.4f}", route=f"{float(route):.2f}", own=f"{float(row_words):.2f}", gn=f"{lm_norm:.2f}/{vision_norm:.1f}", probe=f"{probe:.2f}", dist=f"{dist:.3f}", vis=f"{share:.2f}")
        entry = {"step": step, "loss": round(loss.item(), 5), "route": round(float(route), 5), "vision": round(vloss.item(), 5),
                 "probe": round(probe, 4), "distill": round(dist, 4), "share": share, "s": round(time.time() - t0, 1)}
        if step % args.eval_every == 0 or step == args.steps:
            entry["heldout"] = evaluate(model, enc, exs, rows if args.lm_only else None)
            msg = ", ".join(f"{k} {v:.1%}" for k, v in entry["heldout"].items())
            if share < 1 and not args.lm_only:
                entry["heldout_teacher"] = evaluate(model, enc, exs, rows)
                msg += "; teacher rows: " + ", ".join(f"{k} {v:.1%}" for k, v in entry["heldout_teacher"].items())
            tqdm.write(f"step {step}: loss {ema:.4f}, probe {probe:.2f}, distill {dist:.3f}; held-out exact match {msg}")
        log.append(entry)
        if step % args.save_every == 0 or step == stop:
            save()
        if "heldout" in entry:
            score = float(np.mean(list(entry["heldout"].values())))
            best = max((e.get("best", -1.0) for e in log), default=-1.0)
            if score > best:  # the held-out accuracy moves a lot from one evaluation to the next
                entry["best"] = score
                save()
                shutil.copy(ckpt, out / "best.pt")
    bar.close()
    if step < args.steps:
        print(f"stopped at step {step} (--stop-at); run again to resume")
        return hf
    save_checkpoint_as_hf(out)  # untied: a --tie run's LM head is saved as a copy
    (out / "train_log.json").write_text(json.dumps(log))
    return hf


def save_checkpoint_as_hf(out: Path, name: str = "ckpt.pt") -> None:
    """OUT/NAME's weights (ckpt.pt: the latest; best.pt: the best held-out accuracy) as a
    Hugging Face checkpoint in OUT/hf (beside the tokenizer), so that a run stopped midway
    (--stop-at) can be exported and evaluated too."""
    import torch
    from transformers import AutoTokenizer
    hf = out / "hf"
    tok = AutoTokenizer.from_pretrained(str(hf))
    model = build_model(tok, 0)
    state = torch.load(out / name, weights_only=False)
    model.load_state_dict(state["model"])
    model.save_pretrained(str(hf), safe_serialization=True)
    proc, ip = processor(tok)
    proc.save_pretrained(str(hf))
    ip.save_pretrained(str(hf))
    print(f"{hf}: the weights of step {state['step']}")


def export(args) -> Path:
    """OUT/hf (the checkpoint's latest weights) -> F32 GGUF -> Q8_0 GGUF (text and vision
    weights) at --export."""
    from vlcache_native import convert, quantize
    if (Path(args.out) / args.export_from).is_file():
        save_checkpoint_as_hf(Path(args.out), args.export_from)
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
    ap.add_argument("--teacher-steps", type=int, default=600,
                    help="steps in which the language model reads the teacher rows only (Rows)")
    ap.add_argument("--anneal-steps", type=int, default=600,
                    help="steps over which it moves from the teacher rows to the projector's")
    ap.add_argument("--route", type=float, default=1.0,
                    help="weight of the training-only loss that supervises where ROUTE_HEADS attend (Router)")
    ap.add_argument("--route-pictures", type=float, default=0.0,
                    help="weight (relative to --route) of the loss on PICTURE_HEADS (Router; runs 13-14)")
    ap.add_argument("--subject", type=float, default=0.0,
                    help="weight (relative to --route) of the loss on SUBJECT_HEADS (Router; run 14)")
    ap.add_argument("--subject-numbers", action="store_true",
                    help="SUBJECT_HEADS look at the picture's number too, with several pictures (run 14)")
    ap.add_argument("--count-verbs", action="store_true",
                    help="route a count's 'is' / 'are' too, not only its number (answer_routes; run 14)")
    ap.add_argument("--row-words", type=float, default=1.0,
                    help="weight of the training-only loss asking each image row's output for its own word (lm_loss)")
    ap.add_argument("--tie", action="store_true", help="train with the LM head tied to the token embedding")
    ap.add_argument("--lm-only", action="store_true",
                    help="an experiment: the language model alone, reading teacher rows (no pictures drawn, no ViT)")
    ap.add_argument("--content-weight", type=float, default=4.0,
                    help="loss weight of an answer's content words against its wording (content_ids)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-n", type=int, default=32)
    ap.add_argument("--save-every", type=int, default=50)
    ap.add_argument("--export", default=None, help="write the trained model as a GGUF here (no training)")
    ap.add_argument("--export-type", default="Q8_0")
    ap.add_argument("--export-from", default="ckpt.pt", choices=["ckpt.pt", "best.pt"],
                    help="the latest weights or those of the best held-out evaluation")
    args = ap.parse_args(argv)
    if args.export:
        export(args)
    else:
        train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
