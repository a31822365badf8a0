"""What per-unit requests share in one process: the recent units' raw records, kept current by batch.

A station asks `POST /score` for a unit whose upstream records were ingested moments before; reading
them with one query per request cost most of a request's time. Here a request asks only for the
workspace's last ingest batch, and only when the caller cannot vouch that nothing was written
since the last look (the server can, for a DuckDB file only it can write: `unchanged_since`): when
batches arrived since, the records of every unit those batches touched are read again in one query
for all of them, so a unit's entry never lags the batches already stored. A unit not held (older, or never seen) is read
alone and kept. At most `MAX_UNITS` units are held per workspace, the oldest entries dropped first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from .features import unit_records

MAX_UNITS = 20_000  # about 1.2 kB each on a line of a dozen features
WARM_ROWS = 200_000  # a new process first reads the units of the latest batches holding about this many rows
_TABLES = ("params", "measurements", "steps", "materials")


class NotHeld(Exception):  # noqa: N818 (a signal, not an error)
    """A request asked to be answered from what the process holds (`held_only`) needs the workspace read."""


class RecentUnits:
    def __init__(self) -> None:
        self.seq = -1  # the last ingest batch whose units are held
        self.token: Hashable = None  # the caller's word that nothing was written since `seq` was read
        self.raw: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, ws: Any, unit: str, unchanged_since: Hashable = None,
            held_only: bool = False) -> dict[str, Any] | None:
        """The unit's raw records. `unchanged_since`: a value that changes whenever the workspace may
        have been written (the server's pool generation, for a file only it can write); while it is
        the same as at the last look, the last batch is not asked again. None: always ask.
        `held_only`: answer from what is held, without waiting for a reader, or raise
        `NotHeld`."""
        if held_only:
            if not self.lock.acquire(blocking=False):  # another request is reading the workspace
                raise NotHeld(unit)
            try:
                hit = self.raw.get(unit) if unchanged_since is not None and unchanged_since == self.token else None
            finally:
                self.lock.release()
            if hit is None:
                raise NotHeld(unit)
            return hit
        with self.lock:
            if unchanged_since is None or unchanged_since != self.token:
                last = ws.last_batch_seq()
                if last != self.seq:
                    self._refresh(ws, last)
                self.token = unchanged_since
            seq = self.seq
            hit = self.raw.get(unit)
        if hit is not None:
            return hit
        raw = unit_records(ws, "unit_id = ?", [unit]).get(unit)
        if raw is not None:
            with self.lock:
                if self.seq == seq:  # not if newer batches were read meanwhile: they may hold more of it
                    self._keep({unit: raw})
        return raw

    def _refresh(self, ws: Any, last: int) -> None:
        if last < self.seq or (self.seq >= 0 and ws.scalar(
                f"SELECT coalesce(sum(n_rows), 0) FROM batches WHERE seq > {int(self.seq)}") > WARM_ROWS):
            # emptied and filled again, or more arrived than a new process reads: start as one
            self.raw.clear()
            self.seq = -1
        since = self.seq if self.seq >= 0 else _warm_from(ws, last)
        touched = " UNION ".join(f"SELECT unit_id FROM {t} WHERE batch > {int(since)} AND batch <= {int(last)}"
                                 for t in _TABLES)
        self._keep(unit_records(ws, f"unit_id IN ({touched})"))
        self.seq = last

    def _keep(self, found: dict[str, dict[str, Any]]) -> None:
        for unit, raw in found.items():
            self.raw.pop(unit, None)
            self.raw[unit] = raw
        while len(self.raw) > MAX_UNITS:
            self.raw.popitem(last=False)


def _warm_from(ws: Any, last: int) -> int:
    """The batch after which the latest batches hold about `WARM_ROWS` rows (at least the last batch)."""
    first = ws.scalar("SELECT min(seq) FROM (SELECT seq, sum(n_rows) OVER (ORDER BY seq DESC) AS above "
                      f"FROM batches) WHERE above <= {WARM_ROWS}")
    return max(0, (int(first) if first is not None else last) - 1)


_HELD: dict[str, RecentUnits] = {}
_LOCK = threading.Lock()


def recent_units(ws: Any) -> RecentUnits:
    key = str(ws.location)
    with _LOCK:
        return _HELD.setdefault(key, RecentUnits())
