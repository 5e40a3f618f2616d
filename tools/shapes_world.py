"""shapes_world: the synthetic visual world the demo VLM is trained and evaluated on.

A picture is a 96x96 RGB image with 1-5 objects on a 3x3 grid (at most one object per cell).
Each object has a shape (circle, square, triangle, star, cross), a colour (8 of them), a size
(small, large) and a cell; the background is plain, tinted or textured. Everything is drawn
with Pillow and derived from one ``random.Random``, so a seed gives the same pictures,
questions and answers on every machine.

Questions (``Example``): describe the picture, count a shape, the colour of a shape, where a
shape is, yes/no existence; with several pictures (each introduced by "Picture k:") the same
questions about picture k, "Which picture has a green star?" and "Describe picture k.";
and an optional follow-up question in a second turn. Answers are whole sentences whose
informative words come after the first token ("The triangle is red."), so when the KV cache
is compressed after the prompt's prefill, what is scored is decoded from the compressed cache.

    import shapes_world as W
    ex = W.make_example(random.Random(0), n_pictures=4)
    ex.prompt            # "USER: Picture 1: <image>\\n ... ASSISTANT:" (LLaVA-1.5 chat format)
    ex.answer            # the expected reply
    ex.images            # PIL images, in prompt order
    W.score_answer(ex, reply)   # 1.0 / 0.0 (descriptions: fraction of attributes right)
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

IMAGE_SIZE = 96
GRID = 3
CELL = IMAGE_SIZE // GRID

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = {
    "red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 70, 225), "yellow": (235, 205, 20),
    "purple": (135, 45, 185), "orange": (245, 130, 15), "pink": (245, 110, 185), "brown": (120, 75, 30),
}
SIZES = ("small", "large")
PLACES = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
PLURAL = {s: s + ("es" if s.endswith("s") else "s") for s in SHAPES}
NUMBER_WORDS = {1: "1", 2: "2", 3: "3", 4: "4", 5: "5"}
IMAGE = "<image>"

# Question kinds, as the evaluation groups them.
SINGLE_KINDS = ("describe", "count", "colour", "where", "exists")
MULTI_KINDS = ("colour", "where", "count", "which", "describe")


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    cell: int  # 0..8 in reading order

    @property
    def place(self) -> str:
        return PLACES[self.cell]

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} at the {self.place}"


@dataclass
class Scene:
    objects: List[Obj]
    background: str  # "plain" | "tinted" | "textured"
    seed: int

    def count(self, shape: str) -> int:
        return sum(o.shape == shape for o in self.objects)

    def only(self, shape: str) -> Optional[Obj]:
        hits = [o for o in self.objects if o.shape == shape]
        return hits[0] if len(hits) == 1 else None

    def describe(self) -> str:
        parts = [o.phrase() for o in sorted(self.objects, key=lambda o: o.cell)]
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


@dataclass
class Example:
    """One conversation: pictures, one or two questions, the expected final answer."""
    scenes: List[Scene]
    kind: str                     # the scored question's kind (SINGLE_KINDS or MULTI_KINDS)
    question: str
    answer: str
    first_question: Optional[str] = None   # set for two-turn examples: the first turn
    first_answer: Optional[str] = None
    first_kind: Optional[str] = None
    target: Optional[Obj] = None           # the object asked about (None for describe / count)
    picture: Optional[int] = None          # 1-based picture asked about (multi-picture)
    images: list = field(default_factory=list)

    @property
    def multi(self) -> bool:
        return len(self.scenes) > 1

    def header(self) -> str:
        """The user turn's image part: one <image> per picture, labelled when there are several."""
        if not self.multi:
            return IMAGE + "\n"
        return "".join(f"Picture {i + 1}: {IMAGE}\n" for i in range(len(self.scenes)))

    @property
    def prompt(self) -> str:
        """The whole prompt up to the scored answer, in the LLaVA-1.5 chat format."""
        if self.first_question is None:
            return f"USER: {self.header()}{self.question} ASSISTANT:"
        return (f"USER: {self.header()}{self.first_question} ASSISTANT: {self.first_answer} "
                f"USER: {self.question} ASSISTANT:")

    @property
    def first_prompt(self) -> str:
        """The first turn's prompt (the one that is prefilled, then compressed)."""
        q = self.first_question if self.first_question is not None else self.question
        return f"USER: {self.header()}{q} ASSISTANT:"


# ---------------------------------------------------------------------------------------
# Scenes and drawing
# ---------------------------------------------------------------------------------------

def make_scene(rng: random.Random, n_objects: Optional[int] = None) -> Scene:
    n = n_objects if n_objects is not None else rng.randint(1, 5)
    cells = rng.sample(range(GRID * GRID), n)
    objs = [Obj(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(SIZES), c) for c in cells]
    bg = rng.choices(("plain", "tinted", "textured"), weights=(2, 1, 1))[0]
    return Scene(objs, bg, rng.randrange(2**31))


def _star(cx: float, cy: float, r: float) -> List[Tuple[float, float]]:
    pts = []
    for k in range(10):
        a = -math.pi / 2 + k * math.pi / 5
        rr = r if k % 2 == 0 else r * 0.45
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def draw_scene(scene: Scene):
    """The scene as a 96x96 RGB PIL image (deterministic in scene.seed)."""
    from PIL import Image, ImageDraw

    rng = random.Random(scene.seed)
    if scene.background == "plain":
        g = rng.randint(200, 240)
        img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (g, g, g))
    elif scene.background == "tinted":
        tint = [rng.randint(170, 250) for _ in range(3)]
        img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), tuple(tint))
    else:  # textured: light stripes or checks with a little noise
        a, b = rng.randint(205, 245), rng.randint(175, 215)
        img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (a, a, a))
        d = ImageDraw.Draw(img)
        step = rng.choice((6, 8, 12))
        checks = rng.random() < 0.5
        for y in range(0, IMAGE_SIZE, step):
            for x in range(0, IMAGE_SIZE, step):
                on = ((x // step) + (y // step)) % 2 if checks else (x // step) % 2
                if on:
                    d.rectangle([x, y, x + step - 1, y + step - 1], fill=(b, b, rng.randint(b - 10, b + 10)))
    d = ImageDraw.Draw(img)
    for o in scene.objects:
        row, col = divmod(o.cell, GRID)
        r = (rng.uniform(11.5, 13.5) if o.size == "large" else rng.uniform(6.0, 7.5))
        jitter = CELL / 2 - r - 1.5
        cx = col * CELL + CELL / 2 + rng.uniform(-jitter, jitter)
        cy = row * CELL + CELL / 2 + rng.uniform(-jitter, jitter)
        fill = tuple(max(0, min(255, c + rng.randint(-15, 15))) for c in COLOURS[o.colour])
        if o.shape == "circle":
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif o.shape == "square":
            s = r * 0.85
            d.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
        elif o.shape == "triangle":
            d.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
        elif o.shape == "star":
            d.polygon(_star(cx, cy, r * 1.1), fill=fill)
        else:  # cross
            w = r * 0.36
            d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
            d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    return img


# ---------------------------------------------------------------------------------------
# Questions
# ---------------------------------------------------------------------------------------

def _count_answer(shape: str, n: int) -> str:
    if n == 0:
        return f"There are no {PLURAL[shape]}."
    if n == 1:
        return f"There is 1 {shape}."
    return f"There are {NUMBER_WORDS[n]} {PLURAL[shape]}."


def single_question(rng: random.Random, scene: Scene, kind: str) -> Tuple[str, str, Optional[Obj]]:
    """(question, answer, target object) of one kind about one scene."""
    if kind == "describe":
        return "Describe the picture.", f"The picture shows {scene.describe()}.", None
    if kind == "count":
        present = sorted({o.shape for o in scene.objects})
        shape = rng.choice(present) if rng.random() < 0.8 else rng.choice(SHAPES)
        return f"How many {PLURAL[shape]} are there?", _count_answer(shape, scene.count(shape)), None
    if kind in ("colour", "where"):
        unique = [o for o in scene.objects if scene.only(o.shape) is o]
        if not unique:  # every shape repeats: ask a count instead
            return single_question(rng, scene, "count")
        o = rng.choice(unique)
        if kind == "colour":
            return f"What colour is the {o.shape}?", f"The {o.shape} is {o.colour}.", o
        return f"Where is the {o.shape}?", f"The {o.shape} is at the {o.place}.", o
    if kind == "exists":
        if rng.random() < 0.5:
            o = rng.choice(scene.objects)
            return f"Is there a {o.colour} {o.shape}?", f"Yes, there is a {o.colour} {o.shape}.", o
        while True:
            shape = rng.choice(SHAPES)
            colour = rng.choice(list(COLOURS))
            if not any(o.shape == shape and o.colour == colour for o in scene.objects):
                break
        return f"Is there a {colour} {shape}?", f"No, there is no {colour} {shape}.", None
    raise ValueError(f"unknown question kind {kind!r}")


def _lower_first(s: str) -> str:
    return s[0].lower() + s[1:]


def multi_question(rng: random.Random, scenes: Sequence[Scene], kind: str
                   ) -> Tuple[str, str, Optional[Obj], Optional[int]]:
    """(question, answer, target, picture) about one of several scenes."""
    k = rng.randrange(len(scenes))
    if kind == "describe":
        return (f"Describe picture {k + 1}.", f"Picture {k + 1} shows {scenes[k].describe()}.", None, k + 1)
    if kind == "which":
        pairs = {}
        for i, s in enumerate(scenes):
            for o in s.objects:
                pairs.setdefault((o.colour, o.shape), set()).add(i)
        unique = sorted(p for p, where in pairs.items() if len(where) == 1)
        if not unique:
            return multi_question(rng, scenes, "count")
        colour, shape = rng.choice(unique)
        i = next(iter(pairs[colour, shape]))
        o = next(o for o in scenes[i].objects if o.colour == colour and o.shape == shape)
        return (f"Which picture has a {colour} {shape}?", f"Picture {i + 1} has a {colour} {shape}.", o, i + 1)
    q, a, o = single_question(rng, scenes[k], kind)
    return f"In picture {k + 1}, {_lower_first(q)}", f"In picture {k + 1}, {_lower_first(a)}", o, k + 1


def make_example(rng: random.Random, n_pictures: int = 1, kind: Optional[str] = None,
                 follow_up: bool = False, draw: bool = True, first_kind: Optional[str] = None) -> Example:
    """A random conversation about ``n_pictures`` new scenes.

    kind: the scored question's kind (random if None); follow_up: the scored question is the
    second turn, after a first question (of ``first_kind``, random if None) and its answer.
    """
    scenes = [make_scene(rng) for _ in range(n_pictures)]
    kinds = SINGLE_KINDS if n_pictures == 1 else MULTI_KINDS

    def ask(kd):
        if n_pictures == 1:
            q, a, o = single_question(rng, scenes[0], kd)
            return q, a, o, None
        return multi_question(rng, scenes, kd)

    first_kind = (first_kind or rng.choice(kinds)) if follow_up else None
    first = ask(first_kind) if follow_up else None
    kind = kind or rng.choice(kinds)
    q, a, o, pic = ask(kind)
    ex = Example(scenes, kind, q, a, first[0] if first else None, first[1] if first else None,
                 first_kind, o, pic)
    if draw:
        ex.images = [draw_scene(s) for s in scenes]
    return ex


def corpus(rng: random.Random, n: int) -> List[str]:
    """Text lines covering every word the questions and answers use (for the tokenizer)."""
    lines = []
    for i in range(n):
        ex = make_example(rng, n_pictures=1 + i % 8, follow_up=i % 3 == 0, draw=False)
        lines.append(ex.prompt.replace(IMAGE, " ") + " " + ex.answer)
    return lines


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------

_PHRASE = re.compile(r"(small|large) (\w+) (\w+) at the ((?:top |bottom )?(?:left|right)|top|bottom|center)")


def describe_attributes(text: str) -> List[Tuple[str, str, str, str]]:
    """(size, colour, shape, place) of each object a description names."""
    return [m.groups() for m in _PHRASE.finditer(text)]


def score_answer(ex: Example, reply: str) -> float:
    """The score of a reply to the example's (last) question: see :func:`score`."""
    return score(ex.kind, ex.answer, reply)


def score(kind: str, answer: str, reply: str) -> float:
    """1.0 for an exact (whitespace-trimmed) match, else 0.0; descriptions get partial credit:
    the fraction of attributes right, matching objects by place (a missing or extra object
    costs its four attributes)."""
    reply = reply.strip()
    if reply == answer:
        return 1.0
    if kind != "describe":
        return 0.0
    truth = {t[3]: t for t in describe_attributes(answer)}
    got = {}
    for t in describe_attributes(reply):
        got.setdefault(t[3], t)
    right = 0
    for place, t in truth.items():
        g = got.get(place)
        if g is not None:
            right += 1 + sum(a == b for a, b in zip(t[:3], g[:3]))
    total = 4 * max(len(truth), len(truth) + len(set(got) - set(truth)))
    return right / total
