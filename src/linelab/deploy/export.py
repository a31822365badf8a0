"""Export a version to MLflow's model format, for teams that serve or track models with MLflow.

The folder is what `mlflow.sklearn.save_model(..., serialization_format="skops")` writes, built
here without MLflow installed: `MLmodel` (YAML: the `python_function` flavor, loaded through
`mlflow.sklearn` and calling `predict_proba`, and the `sklearn` flavor with the skops types it
may trust), `model.skops` (the registered file, byte for byte: loading it runs no code),
`requirements.txt`, `python_env.yaml` and `conda.yaml`, the signature (the model's columns, by
the names LineLab gives them) and an input example from the training snapshot
(`input_example.json`, `serving_input_example.json`). The MLmodel's `metadata.linelab` keeps
what MLflow has no field for: the version's station, data snapshot, code, metrics, operating
point, costs and each category's vocabulary (a category goes in as its code: its position in
the vocabulary; NaN for missing or unknown).

`predict_proba` answers two columns; the second is the probability that the unit fails the
station's test, which LineLab compares with the operating point's thresholds. Anomaly
detectors (a forest with robust limits, not one scikit-learn estimator) have no MLflow flavor
here.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import uuid
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from linelab.errors import UserError

from . import registry
from .features import matrix, unit_frame
from .registry import ModelRecord

MLFLOW_CHECKED = "3.18"  # the MLflow release whose loader this export is tested against (skops format)
MODEL_FILE = "model.skops"
EXAMPLES = 5


def export_mlflow(ws: Any, rec: ModelRecord, folder: Path) -> dict[str, str]:
    """Write the MLflow model folder for version `rec`; returns its files by name."""
    if rec.kind != "failure_predictor":
        raise UserError(f"{rec.id} is an anomaly detector: only failure predictors (one scikit-learn estimator) "
                        "export to MLflow's format")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"{folder} exists and is not an empty folder: name a new one")
    estimator = registry.load(ws, rec)  # the file is checked (skops, trusted types, hash) before it is copied
    example = _example(ws, rec)
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / MODEL_FILE
    shutil.copyfile(Path(ws.path) / rec.file, model)
    if hashlib.sha256(model.read_bytes()).hexdigest() != rec.sha256:
        raise UserError(f"{rec.file} changed while it was copied; nothing exported")
    outputs = int(np.asarray(estimator.predict_proba(example[:1])).shape[1])
    requirements = [f"mlflow>={MLFLOW_CHECKED}", *(f"{p}=={metadata.version(p)}" for p in
                                                   ("scikit-learn", "skops", "numpy"))]
    _write(folder / "requirements.txt", "\n".join(requirements) + "\n")
    python = platform.python_version()
    _yaml(folder / "python_env.yaml", {"python": python, "build_dependencies": ["pip", "setuptools", "wheel"],
                                       "dependencies": ["-r requirements.txt"]})
    _yaml(folder / "conda.yaml", {"channels": ["conda-forge"], "dependencies": [f"python={python}", "pip",
                                                                               {"pip": requirements}],
                                  "name": "mlflow-env"})
    columns = rec.features.names
    rows = [[None if np.isnan(v) else float(v) for v in row] for row in example]
    _write(folder / "input_example.json", json.dumps({"columns": columns, "data": rows}))
    _write(folder / "serving_input_example.json",
           json.dumps({"dataframe_split": {"columns": columns, "data": rows}}, indent=2))
    _yaml(folder / "MLmodel", _mlmodel(rec, columns, outputs, python, _size(folder)))
    return {p.name: str(p) for p in sorted(folder.iterdir())}


def _mlmodel(rec: ModelRecord, columns: list[str], outputs: int, python: str, size: int) -> dict[str, Any]:
    inputs = [{"type": "double", "name": c, "required": True} for c in columns]
    return {
        "flavors": {
            "python_function": {"env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                                "loader_module": "mlflow.sklearn", "model_path": MODEL_FILE,
                                "predict_fn": "predict_proba", "python_version": python},
            "sklearn": {"code": None, "pickled_model": MODEL_FILE, "serialization_format": "skops",
                        "sklearn_version": metadata.version("scikit-learn"),
                        "skops_trusted_types": list(registry.TRUSTED)},
        },
        "model_size_bytes": size,
        "model_uuid": uuid.uuid4().hex,
        "utc_time_created": datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" "),
        "saved_input_example_info": {"artifact_path": "input_example.json", "pandas_orient": "split",
                                     "serving_input_path": "serving_input_example.json", "type": "dataframe"},
        "signature": {"inputs": json.dumps(inputs), "params": None, "outputs": json.dumps(
            [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, outputs]}}])},
        "metadata": {"linelab": {
            "version": rec.id, "kind": rec.kind, "station": rec.station, "estimator": rec.estimator,
            "label": rec.label.model_dump(mode="json"), "parent": rec.parent, "created": rec.created,
            "sha256": rec.sha256, "data": rec.data, "code": rec.code, "metrics": rec.metrics,
            "operating_point": rec.operating.model_dump(mode="json"), "costs": rec.costs.model_dump(mode="json"),
            "output": "predict_proba column 1: the probability that the unit fails its first visit to the station",
            "categories": {c.name: c.levels for c in rec.features.categorical},
        }},
    }


def _example(ws: Any, rec: ModelRecord) -> np.ndarray:
    """A few units of the training snapshot's last batch, as the model reads them (complete rows first)."""
    frame = unit_frame(ws, rec.features, f"batch = {int(rec.data.get('seq_to') or ws.last_batch_seq())}")
    x = matrix(frame, rec.features)
    if len(x) == 0:
        x = matrix(unit_frame(ws, rec.features), rec.features)
    if len(x) == 0:
        raise UserError(f"no unit in the workspace to give {rec.id} an input example")
    complete = ~np.isnan(x).any(axis=1)
    order = np.concatenate([np.flatnonzero(complete), np.flatnonzero(~complete)])
    return np.asarray(x[order[:EXAMPLES]])


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _yaml(path: Path, value: Any) -> None:
    _write(path, yaml.safe_dump(value, sort_keys=False, default_flow_style=False))
