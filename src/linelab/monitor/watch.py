"""Watches the monitor keeps: symptoms to follow entity by entity, set by what the line has learned.

A watch comes from a solved problem (the know-how stage writes it); the monitor only reads the
active ones and charts each named measurement per entity with a more sensitive chart.
"""

from __future__ import annotations

from typing import Any

from linelab.model import Watch

__all__ = ["KIND", "WATCHABLE", "Watch", "active_watches", "set_watch"]

KIND = "watch"
# Entities whose measurements the monitor can follow one by one (columns of `steps`).
WATCHABLE = ("machine", "fixture")


def set_watch(ws: Any, watch: Watch) -> Watch:
    ws.put_artifact(KIND, watch.id, watch.model_dump(mode="json"), status="active")
    return watch


def active_watches(ws: Any) -> list[Watch]:
    return [Watch.model_validate(raw) for raw in ws.list_artifacts(KIND, status="active")]
