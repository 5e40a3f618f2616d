"""cffi binding to libvlcache, declared from the C header itself.

The declarations between ``VLC_CDEF_BEGIN`` and ``VLC_CDEF_END`` in ``vlcache.h`` are
the single source of truth: they are read here at import and handed to ``ffi.cdef``. The
library's ABI version and public struct sizes are checked against them, so a stale
library fails at import instead of corrupting memory later.

``VLC_LIBRARY`` (path of a libvlcache build) overrides where the library is found; the
header is then looked up next to it, in the package, or in the source tree.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import cffi

_LIB_NAMES = {"linux": "libvlcache.so", "darwin": "libvlcache.dylib", "win32": "vlcache.dll"}
_LIB_NAME = _LIB_NAMES.get(sys.platform, "libvlcache.so")


def _package_dirs() -> list[Path]:
    """Every directory of the package: an editable install has two (built files, sources)."""
    pkg = sys.modules.get(__package__)
    return [Path(p) for p in getattr(pkg, "__path__", [])] + [Path(__file__).resolve().parent]


def _find_library() -> Path:
    env = os.environ.get("VLC_LIBRARY")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ImportError(f"VLC_LIBRARY={env!r} is not a file")
        return path
    for d in _package_dirs():
        if (d / _LIB_NAME).is_file():
            return d / _LIB_NAME
    raise ImportError(
        f"vlcache_native: {_LIB_NAME} not found in {[str(d) for d in _package_dirs()]}; install the "
        "package with 'pip install .' or point VLC_LIBRARY at a build of the library"
    )


def _find_header(lib: Path) -> Path:
    src = Path(__file__).resolve().parents[2] / "native" / "include" / "vlcache.h"
    cands = [lib.parent / "include" / "vlcache.h"] + [d / "include" / "vlcache.h" for d in _package_dirs()] + [src]
    for cand in cands:
        if cand.is_file():
            return cand
    raise ImportError("vlcache_native: vlcache.h not found next to the library")


def _cdef_block(header: Path) -> str:
    text = header.read_text(encoding="utf-8")
    m = re.search(r"// VLC_CDEF_BEGIN\n(.*?)// VLC_CDEF_END", text, re.S)
    if not m:
        raise ImportError(f"{header}: no VLC_CDEF_BEGIN/VLC_CDEF_END block")
    return m.group(1).replace("VLC_API ", "")


_lib_path = _find_library()
ffi = cffi.FFI()
ffi.cdef(_cdef_block(_find_header(_lib_path)))
lib = ffi.dlopen(str(_lib_path))

STRUCTS = ("vlc_model_params", "vlc_session_params", "vlc_model_info", "vlc_sampler_params",
           "vlc_session_stats", "vlc_vision_info", "vlc_attn_stats_params", "vlc_kv_params",
           "vlc_compress_report")


def check_abi(lib, ffi, path) -> None:
    """Raises ImportError when the library and the header disagree (a stale build): the ABI
    version, or the size of a public struct (each has a vlc_<struct>_size() in the library)."""
    if lib.vlc_abi_version() != lib.VLC_ABI_VERSION:
        raise ImportError(
            f"vlcache_native: library {path} has ABI {lib.vlc_abi_version()}, "
            f"the header says {lib.VLC_ABI_VERSION}; rebuild the package"
        )
    for struct in STRUCTS:
        size = getattr(lib, f"{struct}_size")()
        if ffi.sizeof(struct) != size:
            raise ImportError(
                f"vlcache_native: sizeof({struct}) is {size} in the library but "
                f"{ffi.sizeof(struct)} in the header; rebuild the package"
            )


check_abi(lib, ffi, _lib_path)

library_path = _lib_path
