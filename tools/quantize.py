#!/usr/bin/env python3
"""Quantize an F32 / F16 / BF16 GGUF to llama.cpp's block types: the script form of
vlcache_native.quantize (``vlcache-native quantize`` runs the same code; see that module).

    python tools/quantize.py IN.gguf OUT.gguf TYPE [--vision-type T] [--threads N]
"""

import sys

from vlcache_native.quantize import *  # noqa: F401,F403 - the tool's names, for code that loads this file
from vlcache_native.quantize import main

if __name__ == "__main__":
    sys.exit(main())
