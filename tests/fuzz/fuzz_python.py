"""Atheris harness for the Python boundary: image input and chat messages.

    python tests/fuzz/fuzz_python.py image CORPUS_DIR [libFuzzer flags]
    python tests/fuzz/fuzz_python.py chat  CORPUS_DIR [libFuzzer flags]

image: the input is an encoded image handed to ``load_image`` as bytes, then run through an
ImageProcessor (a LLaVA-1.5-style one, and an anyres one when the picture is small).
chat: the input drives a FuzzedDataProvider that builds OpenAI-style messages (dicts, lists,
strings, None, numbers, data: URLs with the bytes of an image or of anything) for
``format_chat`` under each template; every image it returns as bytes goes to ``load_image``.

Bad input must raise a VlcacheError subclass; any other exception escapes and is a finding
(atheris stops and writes the input). An empty CORPUS_DIR gets seeds first: small images in
several formats and modes made with the tests' make_image (tests/python/llavamodels.py).
"""

import base64
import io
import sys
import warnings
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))  # the tests' helpers

with atheris.instrument_imports(include=["vlcache_native", "PIL"]):
    from vlcache_native.chat import TEMPLATES, format_chat
    from vlcache_native.errors import VlcacheError
    from vlcache_native.image import ImageProcessor, load_image

CLIP = ImageProcessor({"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 16},
                       "crop_size": {"height": 16, "width": 16}})
ANYRES = ImageProcessor({"image_processor_type": "LlavaNextImageProcessor", "size": {"shortest_edge": 16},
                         "crop_size": {"height": 16, "width": 16},
                         "image_grid_pinpoints": [[16, 32], [32, 16], [32, 32]]})


def write_seeds(corpus: Path, target: str) -> None:
    from llavamodels import make_image
    images = []
    for i, (fmt, mode, w, h) in enumerate([("PNG", "RGB", 5, 3), ("PNG", "RGBA", 4, 4), ("PNG", "P", 3, 6),
                                           ("JPEG", "RGB", 8, 8), ("JPEG", "L", 4, 2), ("GIF", "P", 4, 4),
                                           ("BMP", "RGB", 3, 3), ("TIFF", "I;16", 2, 5), ("WEBP", "RGB", 4, 4),
                                           ("PNG", "LA", 2, 2)]):
        buf = io.BytesIO()
        make_image(w, h, seed=i, mode=mode).save(buf, fmt)
        images.append(buf.getvalue())
    if target == "image":
        seeds = images
    else:  # arbitrary bytes the provider turns into messages, plus a data: URL's payload shape
        seeds = [b"\x00" * 16, b"\x01\x02\x03user\x00text\x00hello", b"\x05" * 64,
                 base64.b64encode(images[0])]
    corpus.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(s)


def check_image(data: bytes) -> None:
    try:
        image = load_image(data)
    except VlcacheError:
        return
    try:
        CLIP(image)
        if image.width * image.height <= 4096:
            ANYRES(image)
    except VlcacheError:
        pass


KEYS = ["role", "content", "type", "text", "image", "image_url", "url"]
WORDS = ["user", "assistant", "system", "text", "image", "image_url", "tool", "", "<image>", "file://",
         "data:image/png;base64,", "data:", "http://x/y.png"]


def value(fdp: "atheris.FuzzedDataProvider", depth: int):
    kind = fdp.ConsumeIntInRange(0, 9)
    if depth > 4:
        kind = min(kind, 4)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeInt(8)
    if kind == 2:
        return fdp.PickValueInList(WORDS)
    if kind == 3:
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 16))
    if kind == 4:  # a data: URL around bytes that may or may not be an image
        return "data:image/png;base64," + base64.b64encode(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256))).decode()
    if kind == 5:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    if kind == 6:
        return fdp.ConsumeFloat()
    if kind in (7, 8):
        return {fdp.PickValueInList(KEYS): value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))}
    return [value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]


def check_chat(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    template = fdp.PickValueInList(list(TEMPLATES) + ["bogus"])
    add_prompt = fdp.ConsumeBool()
    messages = value(fdp, 0) if fdp.ConsumeBool() else [value(fdp, 1) for _ in range(fdp.ConsumeIntInRange(0, 5))]
    try:
        _, images = format_chat(messages, template, add_prompt)
    except VlcacheError:
        return
    for image in images:
        if isinstance(image, bytes):
            check_image(image)


def main() -> None:
    warnings.simplefilter("ignore")  # Pillow warns on every odd file (bombs under 2x the limit too)
    target, corpus = sys.argv[1], Path(sys.argv[2])
    if target not in ("image", "chat"):
        sys.exit(f"usage: {sys.argv[0]} image|chat CORPUS_DIR [libFuzzer flags]")
    if not corpus.exists() or not any(corpus.iterdir()):
        write_seeds(corpus, target)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], check_image if target == "image" else check_chat)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
