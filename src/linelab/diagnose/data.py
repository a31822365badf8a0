"""Input tables for diagnosis: reading files, checking columns, deciding what each column is."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

try:  # the project-wide error type for user mistakes, when present
    from linelab.errors import UserError
except ImportError:  # pragma: no cover - the stage works on its own too

    class UserError(ValueError):  # type: ignore[no-redef]
        """A mistake in what the user asked for; the message says how to fix it."""


TableLike = Any  # pyarrow.Table | pandas.DataFrame | Mapping[str, array] | path

# Names that describe the surroundings rather than the process (kind "environment").
ENVIRONMENT_PATTERN = re.compile(r"humid|ambient|room_|env_|environment|dew|weather|outside", re.I)
FAIL_WORDS = {"fail", "failed", "ng", "nok", "defect", "reject", "scrap", "bad", "true", "yes", "1"}
PASS_WORDS = {"pass", "passed", "ok", "good", "accept", "false", "no", "0"}


def read_table(path: str | Path) -> pa.Table:
    """Read CSV (optionally gzipped) or Parquet into Arrow, with a clear error if it fails."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"file not found: {p}")
    name = p.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            return pq.read_table(p)
        if name.endswith((".csv", ".csv.gz", ".txt", ".tsv")):
            import pyarrow.csv as pacsv

            parse = pacsv.ParseOptions(delimiter="\t") if name.endswith(".tsv") else None
            return pacsv.read_csv(p, parse_options=parse)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"could not read {p}: {exc}") from exc
    raise UserError(f"{p}: unsupported file type (use .csv, .csv.gz, .tsv or .parquet)")


def to_arrow(data: TableLike, what: str) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, (str, Path)):
        return read_table(data)
    if isinstance(data, Mapping):
        return pa.table({k: np.asarray(v) for k, v in data.items()})
    try:  # pandas (or anything that speaks the dataframe interchange protocol)
        return pa.Table.from_pandas(data, preserve_index=False)
    except Exception as exc:  # noqa: BLE001 - turn any conversion failure into a user message
        raise UserError(f"the {what} table must be a pyarrow Table, pandas DataFrame, dict or file") from exc


@dataclass
class Column:
    name: str
    kind: str  # categorical | continuous | time | environment
    ref: np.ndarray
    inc: np.ndarray
    # categorical columns: sorted level names and each row's index into them (encoded once)
    levels: np.ndarray | None = None
    ref_codes: np.ndarray | None = None
    inc_codes: np.ndarray | None = None


@dataclass
class Prepared:
    """Reference and incident data as NumPy arrays per column, plus each column's kind."""

    target: str
    y_ref: np.ndarray
    y_inc: np.ndarray
    binary: bool
    columns: dict[str, Column] = field(default_factory=dict)
    time_ref: np.ndarray | None = None
    time_inc: np.ndarray | None = None
    time_name: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)


def _target_values(col: pa.ChunkedArray, name: str, what: str) -> np.ndarray:
    t = col.type
    if pa.types.is_boolean(t):
        return np.asarray(pc.cast(col, pa.int8()).to_numpy(zero_copy_only=False), dtype=float)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        values = np.asarray(pc.cast(col, pa.string()).to_numpy(zero_copy_only=False), dtype=object)
        low = np.array([str(v).strip().lower() if v is not None else "" for v in values], dtype=object)
        known = FAIL_WORDS | PASS_WORDS | {""}
        unknown = sorted(set(low.tolist()) - known)
        if unknown:
            raise UserError(
                f"target column {name!r} in the {what} table is text with values {unknown[:5]}; "
                "use a numeric column, a boolean, or pass/fail values"
            )
        out = np.isin(low, list(FAIL_WORDS)).astype(float)
        out[low == ""] = np.nan
        return out
    raise UserError(f"target column {name!r} has type {t}; it must be numeric, boolean or pass/fail")


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _is_time(t: pa.DataType) -> bool:
    return pa.types.is_timestamp(t) or pa.types.is_date(t)


def _as_float(col: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=float)


MISSING = "(missing)"  # level given to absent categorical values; it is never a cause


def _encode_text(rcol: pa.ChunkedArray, icol: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted levels and integer codes of reference and incident rows (Arrow dictionary encoding:
    no sorting of millions of strings in Python)."""
    both = pa.chunked_array(
        [c for col in (rcol, icol) for c in pc.fill_null(pc.cast(col, pa.string()), MISSING).chunks],
        type=pa.string(),
    )
    enc = pc.dictionary_encode(both).combine_chunks()
    words = np.asarray(enc.dictionary.to_numpy(zero_copy_only=False), dtype=object)
    order = np.argsort(words.astype(str), kind="stable")
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    codes = rank[np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)]
    return words[order], codes[: len(rcol)], codes[len(rcol) :]


def _as_time(col: pa.ChunkedArray) -> np.ndarray:
    """Timestamps as datetime64[us]; a numeric clock (unit counter, seconds) stays numeric."""
    if _is_numeric(col.type):
        return _as_float(col)
    return np.asarray(pc.cast(col, pa.timestamp("us")).to_numpy(zero_copy_only=False))


def _is_clock(r: np.ndarray, i: np.ndarray) -> bool:
    """Serial numbers, unit counters, timestamps as numbers: increasing, and disjoint between tables."""

    def increasing(v: np.ndarray) -> bool:
        v = v[np.isfinite(v)]
        return v.size > 2 and float(np.mean(np.diff(v) >= 0)) >= 0.99

    if not (increasing(r) and increasing(i)):
        return False
    return bool(np.nanmax(r) < np.nanmin(i) or np.nanmax(i) < np.nanmin(r))


def prepare(
    reference: TableLike,
    incident: TableLike,
    target: str,
    *,
    kinds: Mapping[str, str] | None = None,
    exclude: list[str] | tuple[str, ...] = (),
    time_column: str | None = None,
    max_levels: int = 500,
) -> Prepared:
    ref = to_arrow(reference, "reference")
    inc = to_arrow(incident, "incident")
    for tbl, what in ((ref, "reference"), (inc, "incident")):
        if target not in tbl.column_names:
            raise UserError(
                f"target column {target!r} is not in the {what} table; "
                f"its columns are: {', '.join(tbl.column_names[:30])}" + (" ..." if len(tbl.column_names) > 30 else "")
            )
        if tbl.num_rows == 0:
            raise UserError(f"the {what} table has no rows")
    kinds = dict(kinds or {})
    bad_kinds = {k: v for k, v in kinds.items() if v not in {"categorical", "continuous", "time", "environment"}}
    if bad_kinds:
        raise UserError(f"unknown column kinds {bad_kinds}; use categorical, continuous, time or environment")
    y_ref = _target_values(ref[target], target, "reference")
    y_inc = _target_values(inc[target], target, "incident")
    keep_ref, keep_inc = np.isfinite(y_ref), np.isfinite(y_inc)
    values = np.unique(np.concatenate([y_ref[keep_ref], y_inc[keep_inc]]))
    binary = bool(values.size <= 2 and np.all(np.isin(values, [0.0, 1.0])))
    prep = Prepared(target, y_ref[keep_ref], y_inc[keep_inc], binary)
    ref_idx, inc_idx = np.flatnonzero(keep_ref), np.flatnonzero(keep_inc)

    shared = [c for c in ref.column_names if c in set(inc.column_names)]
    for name in set(ref.column_names) ^ set(inc.column_names):
        prep.skipped[name] = "only in one of the two tables"
    for name in shared:
        if name == target or name in exclude:
            continue
        rt, it = ref[name].type, inc[name].type
        kind = kinds.get(name)
        if kind is None:
            if _is_time(rt) or _is_time(it) or name == time_column:
                kind = "time"
            elif _is_numeric(rt) and _is_numeric(it):
                kind = "environment" if ENVIRONMENT_PATTERN.search(name) else "continuous"
            else:
                kind = "categorical"
        rcol, icol = ref[name].take(ref_idx), inc[name].take(inc_idx)
        if kind == "time":
            if time_column in (None, name) and prep.time_name is None:
                prep.time_name = name
                prep.time_ref, prep.time_inc = _as_time(rcol), _as_time(icol)
            else:
                prep.skipped[name] = "time column (not the one used for onset)"
            continue
        if kind in ("continuous", "environment"):
            if not (_is_numeric(rt) and _is_numeric(it)):
                raise UserError(f"column {name!r} was declared {kind} but is not numeric")
            r, i = _as_float(rcol), _as_float(icol)
            if np.all(~np.isfinite(r)) or np.all(~np.isfinite(i)):
                prep.skipped[name] = "no values"
                continue
            if np.nanstd(np.concatenate([r, i])) == 0:
                prep.skipped[name] = "constant"
                continue
            if _is_clock(r, i):
                prep.skipped[name] = "a counter or clock: it only tells reference from incident apart"
                continue
        else:
            levels, rc, ic = _encode_text(rcol, icol)
            n_levels = levels.size
            if n_levels < 2:
                prep.skipped[name] = "a single level"
                continue
            if n_levels > max_levels or n_levels > 0.5 * (rc.size + ic.size):
                prep.skipped[name] = f"identifier-like ({n_levels} distinct values)"
                continue
            prep.columns[name] = Column(name, kind, levels[rc], levels[ic], levels, rc, ic)
            continue
        prep.columns[name] = Column(name, kind, r, i)
    if time_column and prep.time_name is None:
        raise UserError(f"time column {time_column!r} is not a time or numeric column of both tables")
    return prep
