#!/usr/bin/env python3
"""Hugging Face Llama / Mistral / LLaVA checkpoint -> GGUF: the script form of
vlcache_native.convert (``vlcache-native convert`` runs the same code; see that module).

    python tools/convert_hf_to_gguf.py MODEL_DIR --outfile OUT.gguf --outtype f32|f16|bf16
"""

import sys

from vlcache_native.convert import *  # noqa: F401,F403 - the converter's names, for code that loads this file
from vlcache_native.convert import main

if __name__ == "__main__":
    sys.exit(main())
