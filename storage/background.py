"""A daemon thread a component starts once and stops on shutdown."""

from __future__ import annotations

import threading


class Background:
    """Runs `self._run` on a daemon thread named `name`; `_run` returns once `self._stop` is
    set. stop() sets it and waits up to 5 s (a hung database call must not hold shutdown)."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
