"""The life cycle shared by the Python objects that own a C handle (Model, Session).

Each object counts the C calls running on its handle. ``close()`` first makes new calls
raise :class:`ClosedError`, then waits until the running ones have returned, closes the
objects that depend on it (a model's sessions), and only then frees the handle. So a
thread may close an object while another thread is inside ``decode()`` on it: the decode
finishes, the close waits for it, the next call raises. The C library keeps a model's
memory while any of its sessions lives (a reference count), so the collector may finalize
these objects in any order.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import ExitStack, contextmanager

from ._ffi import ffi
from .errors import ClosedError


class NativeObject:
    """Owns a C handle: ``close()`` is idempotent and thread-safe, ``with`` closes, the GC is
    a safety net.

    A subclass creates its handle and passes it to ``_adopt()`` (with the object it depends
    on, if any), reaches it only inside ``with self._call() as handle:``, and implements
    ``_free(handle)``.
    """

    _ptr = ffi.NULL
    _kind = "object"  # "model", "session": for the closed-handle message

    def _adopt(self, ptr, parent: "NativeObject | None" = None) -> None:
        """Takes ownership of ptr; a parent closes this object when it closes itself."""
        self._cv = threading.Condition()
        self._busy = 0
        self._dependents: weakref.WeakSet = weakref.WeakSet()
        self._ptr = ptr
        if parent is not None:
            parent._dependents.add(self)

    def _free(self, ptr) -> None:
        raise NotImplementedError

    @contextmanager
    def _call(self):
        """The handle, held open for the duration of the block (close() waits for it)."""
        cv = self.__dict__.get("_cv")
        if cv is None:
            raise ClosedError(f"the {self._kind} is closed")
        with cv:
            if self._ptr == ffi.NULL:
                raise ClosedError(f"the {self._kind} is closed")
            self._busy += 1
        try:
            yield self._ptr
        finally:
            with cv:
                self._busy -= 1
                if self._busy == 0:
                    cv.notify_all()

    def close(self) -> None:
        """Frees the native object once the calls running on it have returned. Idempotent
        and callable from any thread; the object raises ClosedError afterwards."""
        cv = self.__dict__.get("_cv")
        if cv is None:
            return
        with cv:
            ptr, self._ptr = self._ptr, ffi.NULL
            if ptr == ffi.NULL:
                return
            while self._busy:
                cv.wait()
        for dep in list(self._dependents):
            dep.close()
        self._free(ptr)

    @property
    def closed(self) -> bool:
        return self._ptr == ffi.NULL

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
        """The handle, for tests that call the C library directly (no close guard)."""
        if self._ptr == ffi.NULL:
            raise ClosedError(f"the {self._kind} is closed")
        return self._ptr


@contextmanager
def held(objects):
    """The handles of several objects (a model and a session, the sessions of a batch), each
    held open for the block as by ``_call()``; ClosedError if any is closed."""
    with ExitStack() as stack:
        yield [stack.enter_context(o._call()) for o in objects]
