"""store stage: the workspace (schema, backends, validated idempotent ingest, queries)."""

from linelab.store.workspace import IngestReport, Workspace

__all__ = ["IngestReport", "Workspace"]
