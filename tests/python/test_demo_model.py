"""The demo VLM's tools: the shapes world is deterministic and self-consistent, answers are
scored as documented, and the KV accuracy harness and the demo run end to end on a briefly
trained model of the demo's architecture (demomodel.py: the export path of the shipped one).
"""

import io
import json
import os
import random
import re

import pytest

from conftest import load_tool

W = load_tool("shapes_world")


@pytest.fixture(scope="module")
def model_path(demo_gguf):
    return demo_gguf


@pytest.fixture(scope="module")
def model(model_path):
    import vlcache_native as vc
    with vc.Model(model_path, n_ctx=1024, n_threads=1) as m:
        yield m


def png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


# ---- the world

def test_generator_is_deterministic():
    def draw(seed):
        rng = random.Random(seed)
        exs = [W.make_example(rng, n_pictures=1 + i % 8, follow_up=i % 2 == 1) for i in range(12)]
        return [(ex.prompt, ex.answer, [png_bytes(im) for im in ex.images]) for ex in exs]

    a, b, c = draw(7), draw(7), draw(8)
    assert a == b
    assert [x[:2] for x in a] != [x[:2] for x in c]


def test_answers_follow_the_scene():
    rng = random.Random(3)
    for i in range(400):
        ex = W.make_example(rng, n_pictures=1 + i % 8, draw=False)
        scenes = ex.scenes
        for s in scenes:
            assert 1 <= len(s.objects) <= 5
            assert len({o.cell for o in s.objects}) == len(s.objects)
        k = ex.picture - 1 if ex.picture else 0
        s = scenes[k]
        if ex.kind == "count" and "how many" in ex.question.lower():
            shape = next(sh for sh in W.SHAPES if W.PLURAL[sh] in ex.question)
            n = s.count(shape)
            assert (("no " + W.PLURAL[shape]) in ex.answer) if n == 0 else (f" {n} " in ex.answer)
        elif ex.kind == "colour" and ex.target is not None:
            assert s.only(ex.target.shape) is ex.target
            assert ex.answer.lower().endswith(f"the {ex.target.shape} is {ex.target.colour}.")
        elif ex.kind == "where" and ex.target is not None:
            assert ex.answer.endswith(f"is at the {ex.target.place}.")
        elif ex.kind == "which" and ex.target is not None:
            holders = [j for j, sc in enumerate(scenes)
                       if any((o.colour, o.shape) == (ex.target.colour, ex.target.shape) for o in sc.objects)]
            assert holders == [ex.picture - 1]
        elif ex.kind == "describe":
            got = W.describe_attributes(ex.answer)
            want = [(o.size, o.colour, o.shape, o.place) for o in sorted(s.objects, key=lambda o: o.cell)]
            assert got == want
        elif ex.kind == "exists":
            yes = "there is no" not in ex.answer
            words = re.search(r"a (\w+) (\w+)\?", ex.question).groups()
            assert yes == any((o.colour, o.shape) == words for o in s.objects)


def test_drawing_puts_each_object_in_its_cell():
    scene = W.Scene([W.Obj("square", "blue", "large", 0), W.Obj("circle", "red", "small", 8)], "plain", 1)
    img = W.draw_scene(scene)
    assert img.size == (W.IMAGE_SIZE, W.IMAGE_SIZE)
    cell = W.CELL

    def has(colour, x0, y0):
        want = W.COLOURS[colour]
        return any(max(abs(a - b) for a, b in zip(img.getpixel((x, y)), want)) < 20
                   for x in range(x0, x0 + cell) for y in range(y0, y0 + cell))

    assert has("blue", 0, 0) and not has("blue", 2 * cell, 2 * cell)
    assert has("red", 2 * cell, 2 * cell) and not has("red", 0, 0)


def test_description_scoring_gives_partial_credit():
    answer = "The picture shows a large red circle at the top left and a small blue star at the center."
    assert W.score("describe", answer, answer) == 1.0
    # one attribute wrong (size of the star): 7 of 8
    assert W.score("describe", answer, answer.replace("small blue", "large blue")) == pytest.approx(7 / 8)
    # one object missing: 4 of 8
    assert W.score("describe", answer, "The picture shows a large red circle at the top left.") == pytest.approx(0.5)
    # an extra object costs its share
    extra = answer[:-1] + " and a small green cross at the bottom."
    assert W.score("describe", answer, extra) == pytest.approx(8 / 12)
    assert W.score("colour", "The star is red.", "The star is blue.") == 0.0


# ---- the demo-architecture model

def test_exported_model_file(model, model_path):
    assert os.path.getsize(model_path) <= 8 * 2**20  # the shipped file's limit
    assert model.has_vision and model.chat_template == "llava-1.5"
    assert model.info["n_vocab"] == 513 and model.n_layer == 6 and model.n_head_kv == 2


# ---- the harness and the demo

def test_eval_harness_on_a_tiny_set(model, tmp_path):
    E = load_tool("eval_kv")
    rep = E.run(model, 3, ("vl-cache", "h2o"), (1.0, 0.1), progress=False)
    assert rep["n"] == 3 and 170 <= rep["prompt_tokens"][0] <= rep["prompt_tokens"][1] <= 400  # 4-8 pictures
    assert [(c["policy"], c["budget"]) for c in rep["cells"]] == [("full", 1.0), ("vl-cache", 0.1), ("h2o", 0.1)]
    full = E.cell(rep, "vl-cache", 1.0)
    # the harness' full-cache turn 1 is what generate() answers to the first prompt
    exs = E.eval_set(3)
    want = sum(W.score(ex.first_kind, ex.first_answer,
                       model.generate(ex.first_prompt, images=ex.images, max_tokens=E.MAX_ANSWER).text)
               for ex in exs) / 3
    assert full["turn1"] == pytest.approx(want)
    for c in rep["cells"]:
        assert 0.0 <= c["turn1"] <= 1.0 and 0.0 <= c["follow_up"] <= 1.0
        if c["budget"] < 1.0:  # exactly 10% of the prompt's entries (rounded per layer)
            assert c["kv_bytes"] == pytest.approx(0.1 * full["kv_bytes"], rel=0.02)
    assert "| vl-cache |" in E.table(rep) and "| h2o |" in E.table(rep, "follow_up")
    png = E.plot(rep, tmp_path / "acc.png")
    from PIL import Image
    assert Image.open(png).size == (1200, 560)
    json.dumps(rep)


def test_follow_up_tokens_extend_the_first_turn(model):
    E = load_tool("eval_kv")
    for ex in E.eval_set(5):
        chunks = model.prompt_chunks(ex.first_prompt, ex.images)
        extra = E.follow_up_ids(model, ex, chunks)
        full = model.prompt_chunks(ex.prompt, ex.images)
        assert list(chunks[-1]) + extra == list(full[-1])


def test_demo_prints_answers_beside_the_truth(capsys, tmp_path, model_path):
    demo = load_tool("demo")
    assert demo.main(["--model", str(model_path), "--seed", "5", "--threads", "1", "--outdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("truth  ") == 8 and out.count("full cache  ") == 8 and out.count("vl-cache 0.1  ") == 8
    m = re.search(r"exact answers: full cache (\d+)/8, vl-cache at 0.1 (\d+)/8", out)
    assert m, out
    truths = re.findall(r"truth  +(.*)", out)
    assert truths[0].startswith("The picture shows") and len(truths) == 8
    assert (tmp_path / "scene.png").is_file() and (tmp_path / "picture6.png").is_file()


# ---- the trainer's training-only supervision

def test_subject_routes_point_at_the_words_naming_the_object(demo_gguf):
    """SUBJECT_HEADS are asked to look, from each answer position read from a picture, at the
    words of that turn naming the object: never at an image row, never past the position,
    and (with --subject-numbers) at the picture's number too."""
    from transformers import AutoTokenizer
    T = load_tool("train_demo_vlm")
    tok = AutoTokenizer.from_pretrained(str(demo_gguf.parent / "hf"))
    enc = T.Encoder(tok)
    shapes = {i for s in W.SHAPES for w in (s, W.PLURAL[s]) for i in tok.encode(" " + w, add_special_tokens=False)}
    digits = {tok.convert_tokens_to_ids(str(d)) for d in range(1, 9)}
    for numbers in (False, True):
        groups, _ = T.make_batch(enc, 0, 2000, 1536, subject_numbers=numbers)
        assert sum(len(g["subject"]) for g in groups) > 0
        said_digit = False
        for g in groups:
            ids = g["input_ids"]
            routed = {(b, q) for b, q, _ in g["route"]}
            for b, q, keys in g["subject"]:
                assert (b, q) in routed
                assert all(k <= q and int(ids[b, k]) != enc.image_id for k in keys)
                assert any(int(ids[b, k]) in shapes for k in keys)
                said_digit |= any(int(ids[b, k]) in digits for k in keys)
        assert said_digit == numbers


def test_count_verbs_are_routed_from_the_counted_shapes(demo_gguf):
    """With --count-verbs, the "is" / "are" of "There are 2 squares." is routed from the same
    rows as its number (the counted objects' shape slots); without, it is not routed."""
    from transformers import AutoTokenizer
    T = load_tool("train_demo_vlm")
    tok = AutoTokenizer.from_pretrained(str(demo_gguf.parent / "hf"))
    enc = T.Encoder(tok)
    for on in (False, True):
        groups, _ = T.make_batch(enc, 0, 2000, 1536, count_verbs=on)
        verbs = numbers = 0
        for g in groups:
            ids = g["input_ids"]
            keys_at = {(b, q): sorted(k) for b, q, k in g["route"]}
            for (b, q), keys in keys_at.items():
                if int(ids[b, q + 1]) in enc.is_are:
                    verbs += 1
                    number_at = q + 2 + (int(ids[b, q + 2]) == enc.space)  # after a lone "\u2581"
                    assert enc.word_kinds.get(int(ids[b, number_at])) == "digit"
                    assert keys_at[(b, number_at - 1)] == keys
                elif enc.word_kinds.get(int(ids[b, q + 1])) == "digit" and int(ids[b, q]) in (enc.is_are | {enc.space}):
                    numbers += 1
        assert numbers > 0 and (verbs > 0) == on
