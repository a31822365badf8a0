"""Watches the monitor keeps: symptoms to follow entity by entity, set by what the line has learned.

A watch comes from a solved problem (the know-how stage writes it); the monitor only reads the
active ones and charts each named measurement per entity with a more sensitive chart.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

KIND = "watch"
# Entities whose measurements the monitor can follow one by one (columns of `steps`).
WATCHABLE = ("machine", "fixture")


class Watch(BaseModel):
    id: str = Field(description="the know-how entry that set it")
    station: str
    factor: str = Field(description="machine | fixture: the entities followed one by one")
    measurements: list[str]
    moves: dict[str, float] = Field(default_factory=dict,
                                    description="how far each measurement moved last time, in its sigmas (signed)")
    level: str | None = Field(None, description="the entity that was at fault when the entry was written")


def set_watch(ws: Any, watch: Watch) -> Watch:
    ws.put_artifact(KIND, watch.id, watch.model_dump(mode="json"), status="active")
    return watch


def active_watches(ws: Any) -> list[Watch]:
    return [Watch.model_validate(raw) for raw in ws.list_artifacts(KIND, status="active")]
