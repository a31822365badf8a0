"""store stage: the workspace (schema, backends, validated idempotent ingest, queries)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from linelab.lazy import lazy_attributes

if TYPE_CHECKING:
    from linelab.store.ingest import IngestReport
    from linelab.store.workspace import Workspace

__all__ = ["IngestReport", "Workspace"]

# Loaded on first use, so that importing one module of the stage (its commands, its schema) does
# not open the whole store and the libraries it needs: commands start fast.
__getattr__ = lazy_attributes(__name__, {"IngestReport": "linelab.store.ingest",
                                         "Workspace": "linelab.store.workspace"}, globals())
