"""Watches: what the line learns to look for once a problem has been solved.

A solved problem says where its symptom showed (station, measurements) and which entity caused
it (a nozzle, a tester). Its watch asks the monitor to follow those measurements entity by
entity with a more sensitive chart, so that when the problem returns on any entity of that kind
it is caught while it is small, and the known fix is aimed at the entity that alarmed.
"""

from __future__ import annotations

from typing import Any

from linelab.monitor.watch import KIND, WATCHABLE, Watch, active_watches, set_watch

__all__ = ["KIND", "SIGNATURE_SHARE", "WATCHABLE", "Watch", "active_watches", "save_watch", "watch_of"]

# A measurement grouped into the problem is part of the failure's signature when it moved at
# least this share of the lead measurement's move; one that barely moved came with the grouping
# (default seed 2: a nozzle's 0.3-sigma placement offset, watched, raised five false problems).
SIGNATURE_SHARE = 0.5


def watch_of(entry: Any) -> Watch | None:
    """The watch a know-how entry sets, or None when its cause is not an entity with measurements."""
    about = entry.root_cause.about()
    factor, station = about.kind, about.station or entry.signature.station
    sig = entry.signature
    if factor not in WATCHABLE or not station or not sig.measurements:
        return None
    lead = abs(sig.moves.get(sig.measurement or "", 0.0))
    names = [m for m in sig.measurements
             if m == sig.measurement or not lead or abs(sig.moves.get(m, 0.0)) >= SIGNATURE_SHARE * lead]
    return Watch(id=entry.id, station=station, factor=factor, measurements=names,
                 moves={m: v for m, v in sig.moves.items() if m in names}, level=entry.root_cause.level)


def save_watch(ws: Any, entry: Any) -> Watch | None:
    watch = watch_of(entry)
    return set_watch(ws, watch) if watch is not None else None
