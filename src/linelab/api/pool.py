"""The server's handle on its workspace: opened once and shared by concurrent requests.

Each request gets its own cursor on one open database (cheap, and safe across threads) instead of
opening the file again. When no request has come for `idle_s` the file is closed, so a command
in another process (which needs DuckDB's single writer lock) can take its turn.

While the file is open here no other process can write it, so the answers of read-only commands
are kept and served again until something may have changed: `generation` moves on whenever the
file is (re)opened and when any lease that was not declared read-only ends. Workspaces whose
backend other processes can write while it is open (PostgreSQL) are never cached.
`records_generation` moves the same way, except for leases that promise to write none of the
line's records (units, their steps and readings, ingest batches), only a stage's own tables: what is
kept from the records alone (`POST /score`'s recent units) stays while the scores are stored.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path

from linelab.commands import open_workspace
from linelab.store.backend import DuckDBBackend
from linelab.store.workspace import Workspace


class NotOpen(Exception):  # noqa: N818 (a signal, not an error)
    """A lease that may not open the workspace (`opening=False`) found it closed, or being opened."""


class _CursorBackend(DuckDBBackend):
    """A DuckDB backend over a cursor of the shared connection (closing it closes the cursor only)."""

    def __init__(self, shared: DuckDBBackend) -> None:
        self.__dict__.update(shared.__dict__)  # whatever else the backend keeps, shared as is
        self.con = shared.con.cursor()


class WorkspacePool:
    def __init__(self, root: Path, idle_s: float = 2.0, busy_wait_s: float = 5.0) -> None:
        self.root = root
        self.idle_s = idle_s
        self.busy_wait_s = busy_wait_s
        self._lock = threading.Lock()
        self._shared: Workspace | None = None
        self._users = 0
        self._last_used = 0.0
        self._timer: threading.Timer | None = None
        self.generation = 0
        self.records_generation = 0
        self.cache_size = 256
        self._answers: OrderedDict[Hashable, tuple[int, bytes]] = OrderedDict()
        self._computing: dict[Hashable, threading.Lock] = {}
        self._cacheable = False

    @contextmanager
    def workspace(self, read_only: bool = False, records: bool = True, opening: bool = True) -> Iterator[Workspace]:
        """A workspace for one request; `read_only` promises it writes nothing (so cached answers stay),
        `records=False` that it writes none of the line's records (see the module docstring).
        `opening=False`: never wait (on the event loop): raise `NotOpen` where the file is closed or
        another thread holds the pool (it may be opening the file)."""
        if not self._lock.acquire(blocking=opening):
            raise NotOpen(self.root)
        try:
            if self._shared is None:
                if not opening:
                    raise NotOpen(self.root)
                self._shared = open_workspace(self.root, wait_s=self.busy_wait_s)
                self.generation += 1  # another process may have written while it was closed
                self.records_generation += 1
                self._cacheable = isinstance(self._shared.backend, DuckDBBackend)
            shared = self._shared
            self._users += 1
        finally:
            self._lock.release()
        view = (Workspace(shared.path, _CursorBackend(shared.backend))
                if isinstance(shared.backend, DuckDBBackend) else None)
        try:
            if view is None and getattr(shared.backend, "thread_safe", False):
                yield shared  # one handle serves every request (PostgreSQL: one replica, kept current)
            elif view is None:  # a backend without cursors: a connection of the request's own
                with open_workspace(self.root, wait_s=self.busy_wait_s) as own:
                    yield own
            else:
                yield view
        finally:
            if view is not None:
                view.close()
            with self._lock:
                self._users -= 1
                self._last_used = time.monotonic()
                if not read_only:
                    self.generation += 1
                    self.records_generation += records
                if self._users == 0 and self._timer is None:
                    self._timer = threading.Timer(self.idle_s, self._close_if_idle)
                    self._timer.daemon = True
                    self._timer.start()

    def changed(self) -> None:
        """Something may have written the workspace without a lease (a command opening it by path)."""
        with self._lock:
            self.generation += 1
            self.records_generation += 1

    def kept(self, key: Hashable) -> bytes | None:
        """The answer kept for `key` while nothing may have changed since, without waiting for the pool
        (on the event loop); None where there is none or another thread holds the pool."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            kept = self._answers.get(key)
            if kept is None or kept[0] != self.generation or self._shared is None:
                return None
            self._answers.move_to_end(key)
            return kept[1]
        finally:
            self._lock.release()

    def answer(self, key: Hashable, compute: Callable[[Workspace], tuple[bytes, bool]]) -> bytes:
        """A read-only command's answer, `compute(workspace)` -> (answer, may it be kept): kept from an
        earlier identical request while nothing may have changed since; concurrent identical requests
        compute it once."""
        with self._lock:
            kept = self._answers.get(key)
            if kept is not None and kept[0] == self.generation and self._shared is not None:
                self._answers.move_to_end(key)
                return kept[1]
            gate = self._computing.setdefault(key, threading.Lock())
        with gate, self.workspace(read_only=True) as ws:
            with self._lock:
                kept = self._answers.get(key)
                if kept is not None and kept[0] == self.generation:
                    return kept[1]
                generation = self.generation  # what the answer is computed from (a write ending meanwhile moves it)
            value, keep = compute(ws)
            with self._lock:
                if self._cacheable and keep:
                    self._answers[key] = (generation, value)
                    self._answers.move_to_end(key)
                    while len(self._answers) > self.cache_size:
                        self._answers.popitem(last=False)
                self._computing.pop(key, None)
            return value

    def _close_if_idle(self) -> None:
        with self._lock:
            self._timer = None
            if self._shared is None or self._users or getattr(self._shared.backend, "thread_safe", False):
                return  # (a shared database holds no file lock: its handle stays open, its replica warm)
            idle = time.monotonic() - self._last_used
            if idle < self.idle_s:  # used again meanwhile: look again later
                self._timer = threading.Timer(self.idle_s - idle, self._close_if_idle)
                self._timer.daemon = True
                self._timer.start()
                return
            self._shared.close()
            self._shared = None

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._shared is not None:
                self._shared.close()
                self._shared = None
