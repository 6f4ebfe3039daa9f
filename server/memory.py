"""Giving back the memory of large requests once they are answered (Linux/glibc).

A large body passes through several large buffers (gRPC's slices, the bytes object, the parsed
message, its strings). glibc keeps what they freed in its arenas, so 16 refused 30 MiB calls
left the process 500 MiB larger for good. After a call that read at least LARGE_REQUEST_BYTES,
a background thread calls `malloc_trim(0)` once the burst has passed (never on the request
thread, never more than once per TRIM_DELAY_SECONDS). A no-op where glibc is absent.
"""

from __future__ import annotations

import ctypes
import threading
import time

LARGE_REQUEST_BYTES = 1024 * 1024
TRIM_DELAY_SECONDS = 0.2


def _malloc_trim() -> object:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


class Trimmer:
    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._due = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def after(self, request_bytes: int) -> None:
        """A call that read `request_bytes` has ended."""
        if request_bytes < LARGE_REQUEST_BYTES or self._trim is None:
            return
        self._due.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="malloc-trim", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while True:
            self._due.wait()
            # Let the burst's other calls end too, then trim once for all of them.
            while self._due.is_set():
                self._due.clear()
                time.sleep(TRIM_DELAY_SECONDS)
            self._trim(0)  # type: ignore[operator]
