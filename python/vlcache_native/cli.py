"""The ``vlcache-native`` command (also ``python -m vlcache_native``).

    vlcache-native run  -m model.gguf [--mmproj F] [--image PIC]... -p "What is this?"
    vlcache-native chat -m model.gguf            # interactive; /image PATH attaches a picture
    vlcache-native serve -m model.gguf [-np 8] [--kv-budget 0.1] [--kv-memory MiB]
    vlcache-native info model.gguf
    vlcache-native convert HF_DIR --outfile model.gguf --outtype f16
    vlcache-native quantize model.gguf model-q4_k_m.gguf Q4_K_M

Flags follow llama.cpp's names where one exists (-m, --mmproj, -c, -t, -n, --temp, --port,
--host, -np).
"""

from __future__ import annotations

import argparse
import sys
import time


def _model_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("-m", "--model", required=True, help="GGUF file (ours, or llama.cpp's text model)")
    ap.add_argument("--mmproj", default=None, help="llama.cpp's vision-tower GGUF, paired with a text GGUF")
    ap.add_argument("-c", "--ctx-size", type=int, default=4096, help="context tokens (KV cache size)")
    ap.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: all cores)")
    ap.add_argument("--no-mmap", action="store_true",
                    help="read the weights into memory (huge pages where allowed) instead of mapping the file")


def _sampling_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("-n", "--n-predict", type=int, default=256, help="most tokens to generate")
    ap.add_argument("--temp", type=float, default=0.0, help="temperature (0 = greedy)")
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--min-p", type=float, default=0.0)
    ap.add_argument("--repeat-penalty", type=float, default=1.0)
    ap.add_argument("-s", "--seed", type=int, default=0)
    ap.add_argument("--kv-budget", type=float, default=None, help="VL-Cache: keep this fraction of the prompt's KV")
    ap.add_argument("--kv-policy", default="vl-cache", help="KV policy for --kv-budget (vlcache_native.kvcache)")


def _gen_kwargs(a) -> dict:
    kw = dict(max_tokens=a.n_predict, temperature=a.temp, top_k=a.top_k, top_p=a.top_p, min_p=a.min_p,
              repeat_penalty=a.repeat_penalty, seed=a.seed)
    if a.kv_budget is not None:
        kw.update(kv_budget=a.kv_budget, kv_policy=a.kv_policy)
    return kw


def _load(a):
    from .model import Model
    t0 = time.perf_counter()
    model = Model(a.model, a.mmproj, n_ctx=a.ctx_size, n_threads=a.threads, use_mmap=not a.no_mmap)
    print(f"loaded {a.model} in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return model


def _stream(out, file=sys.stdout):
    for piece in out:
        print(piece, end="", flush=True, file=file)
    print(file=file)
    return out.completion


def cmd_run(a) -> int:
    model = _load(a)
    images = a.image or []
    if a.chat_format and model.chat_template:
        content = [{"type": "image", "image": p} for p in images] + [{"type": "text", "text": a.prompt}]
        out = model.chat([{"role": "user", "content": content}], stream=True, **_gen_kwargs(a))
    else:
        out = model.generate(a.prompt, images=images or None, stream=True, **_gen_kwargs(a))
    c = _stream(out)
    print(f"[{c.stats}; finish: {c.finish_reason}]", file=sys.stderr)
    return 0


def cmd_chat(a) -> int:
    from .errors import VlcacheError
    model = _load(a)
    if model.chat_template is None:
        print("error: the model has no chat template", file=sys.stderr)
        return 1
    print("chat: type a message; /image PATH attaches a picture to the next one, /reset clears the history, "
          "/quit (or Ctrl-D) leaves", file=sys.stderr)
    history, pending = [], list(a.image or [])
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            history, pending = [], []
            continue
        if line.startswith("/image"):
            path = line[len("/image"):].strip()
            if path:
                pending.append(path)
                print(f"(attached {path})", file=sys.stderr)
            continue
        content = [{"type": "image", "image": p} for p in pending] + [{"type": "text", "text": line}]
        msgs = history + [{"role": "user", "content": content}]
        try:
            c = _stream(model.chat(msgs, stream=True, **_gen_kwargs(a)))
        except VlcacheError as e:  # a bad image, a full context: say so, keep the conversation
            print(f"error: {e}", file=sys.stderr)
            continue
        history = msgs + [{"role": "assistant", "content": c.text}]
        pending = []
        if a.verbose:
            print(f"[{c.stats}]", file=sys.stderr)


def cmd_serve(a) -> int:
    from . import server
    server.serve(a.model, a.mmproj, host=a.host, port=a.port, alias=a.alias, n_ctx=a.ctx_size,
                 n_threads=a.threads, n_parallel=a.parallel, kv_budget=a.kv_budget, kv_policy=a.kv_policy,
                 kv_memory_mib=a.kv_memory, allowed_media=a.allowed_media, max_body_mib=a.max_body_mib,
                 prefill_chunk=a.prefill_chunk, use_mmap=not a.no_mmap)
    return 0


def cmd_info(a) -> int:
    from .model import Model
    model = Model(a.file, a.mmproj, vocab_only=False)
    info = model.info
    print(f"{a.file}")
    for k, v in info.items():
        print(f"  {k}: {v}")
    if model.has_vision:
        print("  vision:")
        for k, v in model.vision_info.items():
            print(f"    {k}: {v}")
    print(f"  chat template: {model.chat_template}")
    return 0


def cmd_convert(a) -> int:
    from . import convert
    return convert.main(a.args)


def cmd_quantize(a) -> int:
    from . import quantize
    return quantize.main(a.args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vlcache-native", description="Run LLaVA-family GGUF models with VL-Cache.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("run", help="one prompt, the answer streamed")
    _model_args(p)
    _sampling_args(p)
    p.add_argument("-p", "--prompt", required=True)
    p.add_argument("--image", action="append", help="a picture for the prompt (repeatable)")
    p.add_argument("--raw", dest="chat_format", action="store_false",
                   help="send the prompt as it is, not as a user turn of the chat template")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("chat", help="an interactive conversation")
    _model_args(p)
    _sampling_args(p)
    p.add_argument("--image", action="append", help="a picture for the first message (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true", help="timings after each answer")
    p.set_defaults(fn=cmd_chat)

    p = sub.add_parser("serve", help="an OpenAI-compatible server (pip install \".[server]\")")
    _model_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("-np", "--parallel", type=int, default=4, help="sequences decoded together")
    p.add_argument("--alias", default=None, help="the model name clients use (default: the file's stem)")
    p.add_argument("--kv-budget", type=float, default=None, help="default KV budget of a request (VL-Cache)")
    p.add_argument("--kv-policy", default="vl-cache")
    p.add_argument("--kv-memory", type=float, default=None, help="MiB of KV the running sequences may hold")
    p.add_argument("--allowed-media", default=None, help="folder file:// images may be read from")
    p.add_argument("--max-body-mib", type=float, default=64.0, help="largest request body")
    p.add_argument("--prefill-chunk", type=int, default=256,
                   help="prompt positions prefilled between two decode steps (an image goes in whole)")
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("convert", help="a Hugging Face Llama / LLaVA checkpoint to GGUF (--help: its flags)",
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_convert)

    p = sub.add_parser("quantize", help="a GGUF to Q8_0 / Q4_K_M / ... (--help: its flags)", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_quantize)

    p = sub.add_parser("info", help="what a GGUF holds")
    p.add_argument("file")
    p.add_argument("--mmproj", default=None)
    p.set_defaults(fn=cmd_info)
    return ap


def main(argv=None) -> int:
    from .errors import VlcacheError
    a = build_parser().parse_args(argv)
    try:
        return a.fn(a)
    except VlcacheError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
