"""The life cycle shared by the Python objects that own a C handle (Model, Session)."""

from __future__ import annotations

from ._ffi import ffi
from .errors import VlcacheError


class NativeObject:
    """Owns ``self._ptr``: ``close()`` is idempotent, ``with`` closes, the GC is a safety net.

    Subclasses implement ``_free()`` (release the handle and anything depending on it).
    """

    _ptr = ffi.NULL
    _kind = "object"  # "model", "session": for the closed-handle message

    def _free(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Frees the native object. Idempotent; the object is unusable afterwards."""
        if self._ptr != ffi.NULL:
            self._free()
            self._ptr = ffi.NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _handle(self):
        if self._ptr == ffi.NULL:
            raise VlcacheError(f"the {self._kind} is closed")
        return self._ptr
