"""The model registry in the workspace: every version, what it was trained on, and its file.

A version is an artefact of kind "model" (`ModelRecord`): its station and kind, the data snapshot
(ingest batch range, units, labels, a person's verdicts), the code version, parameters, metrics,
its operating point, the features it reads, and its parent (the version it follows at its
station). The fitted estimator is a skops file under `models/` in the workspace, with its SHA-256
in the record. Loading never unpickles: the file must be a skops archive whose every type is on
a short allow-list of scikit-learn's own, and must still have the hash it was registered with.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

import linelab
from linelab.errors import NotFound, UserError

from .features import FeatureSpec
from .labels import Label
from .serving import NotHeld

KIND = "model"
MODEL_DIR = "models"
# Every type a LineLab model file may hold beyond skops' defaults (numpy, builtins, sklearn estimators).
TRUSTED = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
    "sklearn.utils.validation.check_array",
    "functools.partial",  # wraps check_array inside the boosting model; its contents are checked too
]
ModelKind = Literal["failure_predictor", "anomaly"]


class Costs(BaseModel):
    """What a decision costs or saves per unit, in any one currency (defaults: relative units)."""

    inspect: float = Field(1.0, ge=0, description="sending a unit to inspection")
    fail: float = Field(10.0, ge=0, description="a bad unit found at the test instead of at inspection")
    test: float = Field(1.0, ge=0, description="the test a 'pass' decision skips")
    escape: float = Field(100.0, ge=0, description="a bad unit that skipped the test")


class OperatingPoint(BaseModel):
    inspect_threshold: float | None = Field(description="scores at or above it are sent to inspection (None: never, "
                                                        "where no score paid for its inspections on the holdout)")
    pass_threshold: float | None = Field(None, description="scores at or below it skip the test (None: never)")
    inspect_share: float = 0.1
    max_escape_rate: float = 0.002


class ModelRecord(BaseModel):
    id: str
    kind: ModelKind
    station: str
    label: Label
    estimator: str
    features: FeatureSpec
    operating: OperatingPoint
    costs: Costs = Field(default_factory=Costs)
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict, description="seq_from, seq_to, units, labelled, bad...")
    code: dict[str, Any] = Field(default_factory=dict)
    reference: dict[str, Any] = Field(default_factory=dict, description="training distributions, for drift")
    file: str
    sha256: str
    parent: str | None = None
    created: str = ""
    status: str = "registered"


def code_version() -> dict[str, Any]:
    """linelab's version and, in a git checkout, `git describe`."""
    here = Path(linelab.__file__).resolve().parent
    described = None
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=False)
        described = out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"linelab": linelab.__version__, "git": described}


def next_version(ws: Any) -> str:
    return ws.next_id(KIND, "M")


def save(ws: Any, record_fields: dict[str, Any], estimator: Any) -> ModelRecord:
    """Write the estimator as skops and register the version."""
    vid = record_fields["id"]
    folder = Path(ws.path) / MODEL_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"{vid}.skops"
    import skops.io as sio  # scikit-learn with it: only commands that write or load a model pay for it

    sio.dump(estimator, path)
    rec = ModelRecord(**record_fields, file=f"{MODEL_DIR}/{path.name}", sha256=_sha(path),
                      created=datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"))
    ws.put_artifact(KIND, vid, rec.model_dump(mode="json"))
    return rec


def get(ws: Any, vid: str) -> ModelRecord:
    raw = ws.get_artifact(KIND, vid)
    if raw is None:
        raise NotFound(f"no model version {vid!r} (see `linelab model list`)")
    return ModelRecord.model_validate(raw)


def all_versions(ws: Any, station: str | None = None) -> list[ModelRecord]:
    recs = [ModelRecord.model_validate(r) for r in ws.list_artifacts(KIND)]
    return [r for r in recs if station is None or r.station == station]


def update(ws: Any, rec: ModelRecord) -> None:
    ws.put_artifact(KIND, rec.id, rec.model_dump(mode="json"))


_CACHE: dict[tuple[str, str, int, int], Any] = {}


def load(ws: Any, rec: ModelRecord, held_only: bool = False) -> Any:
    """The fitted estimator of a version, checked (see the module docstring); cached per file and hash.
    `held_only`: only from the cache (else `NotHeld`)."""
    path = Path(ws.path) / rec.file
    try:
        stat = os.stat(path)
    except OSError:
        stat = None
    # a file replaced in place changes its size or modification time: it is checked again
    key = (str(path), rec.sha256, stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0)
    if key in _CACHE:
        return _CACHE[key]
    if held_only:
        raise NotHeld(rec.id)
    root = Path(ws.path).resolve()
    if root / MODEL_DIR not in path.resolve().parents:
        raise UserError(f"model {rec.id}: its file {rec.file} lies outside the workspace's {MODEL_DIR}/ folder")
    est = load_file(path)
    if _sha(path) != rec.sha256:
        raise UserError(f"model {rec.id}: {rec.file} changed since it was registered (SHA-256 differs); refused")
    _CACHE[key] = est
    return est


def load_file(path: Path) -> Any:
    """Load a skops file holding only allowed types; anything else (a pickle, a foreign type) is refused."""
    if not path.is_file():
        raise UserError(f"model file {path} is missing")
    if not zipfile.is_zipfile(path):
        raise UserError(f"model file {path} is not a skops archive (a pickle or other file?); it is never loaded")
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # a damaged or forged archive
        raise UserError(f"model file {path} cannot be read as skops: {exc}") from exc
    foreign = sorted(set(untrusted) - set(TRUSTED))
    if foreign:
        raise UserError(f"model file {path} holds types LineLab does not trust: {', '.join(foreign[:5])}; refused")
    try:
        return sio.load(path, trusted=TRUSTED)
    except Exception as exc:
        raise UserError(f"model file {path} cannot be loaded: {exc}") from exc


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
