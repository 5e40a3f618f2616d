"""Chat prompts for LLaVA models: OpenAI-style messages -> prompt text with ``<image>`` placeholders.

The templates follow the chat templates Hugging Face ships with the llava-hf checkpoints
(written out here so no Jinja engine is needed):

- ``llava-1.5``:         ``USER: <image>\\nWhat is this? ASSISTANT:``
- ``llava-1.6-mistral``: ``[INST] <image>\\nWhat is this? [/INST]``
- ``llava-1.6-vicuna``:  ``<system prompt> USER: <image>\\nWhat is this? ASSISTANT:`` (the
  default system prompt is LLaVA's own conv_vicuna_v1 one)

Messages are ``{"role": "system" | "user" | "assistant", "content": str | [parts]}`` with
parts ``{"type": "text", "text": ...}``, ``{"type": "image", "image": <path, bytes, PIL
image or uint8 array>}`` or ``{"type": "image_url", "image_url": {"url": <path, file:// or
data: URL>}}``. As in those templates, a message's images come before its text.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Sequence

from .errors import InvalidArgumentError, InvalidTypeError

IMAGE_PLACEHOLDER = "<image>"

VICUNA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the human's questions.")

TEMPLATES = ("llava-1.5", "llava-1.6-mistral", "llava-1.6-vicuna")


def _image_source(part: dict) -> Any:
    if part.get("type") == "image":
        return part.get("image", part.get("url"))
    url = part.get("image_url")
    url = url.get("url") if isinstance(url, dict) else url
    if not isinstance(url, str):
        raise InvalidArgumentError(f"image_url part without a url: {part!r}")
    if url.startswith("data:"):
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=True)
        except (IndexError, binascii.Error) as e:
            raise InvalidArgumentError(f"malformed data URL for an image: {e}") from None
    if url.startswith("file://"):
        return url[len("file://"):]
    if "://" in url:
        raise InvalidArgumentError(f"cannot fetch {url!r}: give a local path, file:// or data: URL")
    return url


def split_content(content) -> tuple[list[Any], str]:
    """(images, text) of one message's content: a string, or a list of parts."""
    if isinstance(content, str):
        return [], content
    if not isinstance(content, (list, tuple)):
        raise InvalidTypeError(f"content must be a str or a list of parts, got {type(content).__name__}")
    images, texts = [], []
    for j, part in enumerate(content):
        if isinstance(part, str):
            texts.append(part)
        elif not isinstance(part, dict):
            raise InvalidTypeError(f"content part {j} must be a dict or a str, got {type(part).__name__}")
        elif part.get("type") == "text":
            if not isinstance(part.get("text"), str):
                raise InvalidArgumentError(f"content part {j}: a text part needs a str 'text', got {part!r}")
            texts.append(part["text"])
        elif part.get("type") in ("image", "image_url"):
            images.append(_image_source(part))
        else:
            raise InvalidArgumentError(f"content part {j}: unknown type {part.get('type')!r}")
    return images, " ".join(texts) if len(texts) > 1 else "".join(texts)


def format_chat(messages: Sequence[dict], template: str, add_generation_prompt: bool = True) -> tuple[str, list]:
    """Prompt text (with one ``<image>`` per image) and the images in prompt order."""
    if template not in TEMPLATES:
        raise InvalidArgumentError(f"unknown chat template {template!r}, expected one of {TEMPLATES}")
    out: list[str] = []
    images: list = []
    system = None
    if isinstance(messages, (str, bytes, dict)) or not isinstance(messages, Sequence):
        raise InvalidTypeError(f"messages must be a list of dicts, got {type(messages).__name__}")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise InvalidTypeError(f"message {i} must be a dict, got {type(msg).__name__}")
        role = msg.get("role")
        if role not in ("system", "user", "assistant"):
            raise InvalidArgumentError(f"message {i}: unknown role {role!r}")
        try:
            imgs, text = split_content(msg.get("content", ""))
        except InvalidArgumentError as e:
            raise type(e)(f"message {i}: {e}") from None
        images += imgs
        marks = (IMAGE_PLACEHOLDER + "\n") * len(imgs)
        if role == "system":
            if imgs:
                raise InvalidArgumentError(f"message {i}: images in a system message")
            system = text
            if template == "llava-1.6-mistral":
                out.append(f"<<SYS>>\n{text}\n<</SYS>>\n\n")
            elif template == "llava-1.5":
                out.append(text + " ")
            continue
        if template == "llava-1.6-mistral":
            out.append(f"[INST] {marks}{text} [/INST]" if role == "user" else f" {text}</s>")
        else:
            if template == "llava-1.6-vicuna" and not out:
                out.append((system if system is not None else VICUNA_SYSTEM) + " ")
            out.append(f"{role.upper()}: {marks}{text} ")
    if add_generation_prompt and template != "llava-1.6-mistral":
        out.append("ASSISTANT:")
    return "".join(out), images
