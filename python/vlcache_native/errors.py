"""Exceptions: one class per vlc_status, all under :class:`VlcacheError`."""

from __future__ import annotations

from ._ffi import ffi, lib


class VlcacheError(Exception):
    """Base class of every error raised by vlcache_native. ``status`` is the C status code."""

    status = lib.VLC_STATUS_INTERNAL


class InvalidArgumentError(VlcacheError, ValueError):
    """A value given by the caller is out of range (token id, size, parameter)."""

    status = lib.VLC_STATUS_INVALID_ARG


class ModelIOError(VlcacheError, OSError):
    """A file is missing or cannot be read."""

    status = lib.VLC_STATUS_IO


class ModelFormatError(VlcacheError):
    """A file is not a valid GGUF model: truncated, corrupt, or a required key/tensor is missing."""

    status = lib.VLC_STATUS_FORMAT


class UnsupportedError(VlcacheError):
    """A valid file that uses an architecture or tensor type this runtime does not run."""

    status = lib.VLC_STATUS_UNSUPPORTED


class OutOfMemoryError(VlcacheError, MemoryError):
    """An allocation failed."""

    status = lib.VLC_STATUS_OOM


class ContextFullError(VlcacheError):
    """The tokens do not fit in the session's context (n_ctx)."""

    status = lib.VLC_STATUS_CONTEXT_FULL


class CudaError(VlcacheError):
    """The CUDA runtime reported an error."""

    status = lib.VLC_STATUS_CUDA


class InternalError(VlcacheError):
    """A bug in vlcache_native; please report it with the message."""

    status = lib.VLC_STATUS_INTERNAL


_BY_STATUS = {
    cls.status: cls
    for cls in (InvalidArgumentError, ModelIOError, ModelFormatError, UnsupportedError,
                OutOfMemoryError, ContextFullError, CudaError, InternalError)
}


def check(status: int) -> int:
    """Raises the exception for a negative status, with the library's last error message."""
    if status >= 0:
        return status
    message = ffi.string(lib.vlc_last_error()).decode("utf-8", "replace")
    name = ffi.string(lib.vlc_status_str(status)).decode()
    raise _BY_STATUS.get(status, VlcacheError)(message or name)
