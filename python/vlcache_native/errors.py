"""Exceptions: one class per vlc_status, all under :class:`VlcacheError`, and the argument
checks the Python boundary shares (they raise those classes, naming the argument)."""

from __future__ import annotations

import functools
import inspect
import operator

from ._ffi import ffi, lib


class VlcacheError(Exception):
    """Base class of every error raised by vlcache_native. ``status`` is the C status code."""

    status = lib.VLC_STATUS_INTERNAL


class InvalidArgumentError(VlcacheError, ValueError):
    """A value given by the caller is out of range (token id, size, parameter)."""

    status = lib.VLC_STATUS_INVALID_ARG


class InvalidTypeError(InvalidArgumentError, TypeError):
    """A value given by the caller has the wrong type (None for an image, a message part that
    is not a dict), or a keyword argument the function does not take."""


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
    """A resource ran out: an allocation failed, or the system refused a worker thread."""

    status = lib.VLC_STATUS_OOM


class ContextFullError(VlcacheError):
    """The tokens do not fit in the session's context (n_ctx)."""

    status = lib.VLC_STATUS_CONTEXT_FULL


class CudaError(VlcacheError):
    """The CUDA runtime reported an error."""

    status = lib.VLC_STATUS_CUDA


class NumericError(VlcacheError, FloatingPointError):
    """A forward pass gave NaN / inf logits (the message names the position, its input and
    the first layer where values stopped being finite); the session is as before the call."""

    status = lib.VLC_STATUS_NUMERIC


class ClosedError(VlcacheError):
    """A call on a model or session that was closed (by ``close()``, ``with``, or its model's
    close) or is being closed."""


class InternalError(VlcacheError):
    """A bug in vlcache_native; please report it with the message."""

    status = lib.VLC_STATUS_INTERNAL


_BY_STATUS = {
    cls.status: cls
    for cls in (InvalidArgumentError, ModelIOError, ModelFormatError, UnsupportedError,
                OutOfMemoryError, ContextFullError, CudaError, NumericError, InternalError)
}


def checked_arguments(fn):
    """Decorator: a call with an unknown keyword argument (or missing / extra positional ones)
    raises InvalidTypeError naming it, instead of a bare TypeError. Costs nothing on a good call."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TypeError:
            try:
                sig.bind(*args, **kwargs)
            except TypeError as bad:
                raise InvalidTypeError(f"{fn.__qualname__}(): {bad}") from None
            raise

    return wrapper


def int_arg(name: str, value, lo: int = -2**31, hi: int = 2**31 - 1) -> int:
    """``value`` as an int in [lo, hi] (an int32 by default); anything else raises, naming it."""
    try:
        v = operator.index(value)
    except TypeError:
        raise InvalidTypeError(f"{name}={value!r}, expected an int") from None
    if not lo <= v <= hi:
        raise InvalidArgumentError(f"{name}={v}, expected {lo} .. {hi}")
    return v


def float_arg(name: str, value) -> float:
    """``value`` as a float (range checks are the callee's); a non-number raises, naming it."""
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"{name}={value!r}, expected a number") from None


def utf8_arg(name: str, text: str) -> bytes:
    """``text`` encoded as UTF-8; a str that cannot be (a lone surrogate) raises, naming where."""
    if not isinstance(text, str):
        raise InvalidTypeError(f"{name} must be a str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidArgumentError(f"{name} is not valid Unicode: {text[e.start:e.end]!r} at index {e.start} "
                                   f"is a lone surrogate") from None


def check(status: int) -> int:
    """Raises the exception for a negative status, with the library's last error message."""
    if status >= 0:
        return status
    message = ffi.string(lib.vlc_last_error()).decode("utf-8", "replace")
    name = ffi.string(lib.vlc_status_str(status)).decode()
    raise _BY_STATUS.get(status, VlcacheError)(message or name)
