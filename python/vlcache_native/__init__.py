"""vlcache_native: a llama.cpp-style C runtime for LLaVA-family models, with VL-Cache.

>>> import vlcache_native as vc
>>> model = vc.Model("model.gguf")
>>> print(model.generate("Once upon a time", max_tokens=32).text)
"""

from . import kvcache
from ._ffi import ffi as _ffi_obj, lib as _lib
from .errors import (
    ClosedError,
    ContextFullError,
    CudaError,
    InternalError,
    InvalidArgumentError,
    InvalidTypeError,
    ModelFormatError,
    ModelIOError,
    NumericError,
    OutOfMemoryError,
    UnsupportedError,
    VlcacheError,
)
from .kvcache import CompressReport
from .model import Completion, CompletionStream, GenerationStats, Model
from .session import Session

__version__ = "0.1.0"


def build_info() -> str:
    """Backends and compiler the native library was built with."""
    return _ffi_obj.string(_lib.vlc_build_info()).decode()


__all__ = [
    "Model", "Session", "CompressReport", "kvcache", "Completion", "CompletionStream", "GenerationStats", "build_info",
    "VlcacheError", "InvalidArgumentError", "InvalidTypeError", "ModelIOError", "ModelFormatError", "UnsupportedError",
    "OutOfMemoryError", "ContextFullError", "CudaError", "NumericError", "InternalError", "ClosedError",
]
