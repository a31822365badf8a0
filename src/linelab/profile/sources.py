"""What a profile source needs of an export file, read from the file's header alone.

Shared by the connect stage (which maps the files) and `linelab profile check` / `init`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from linelab.errors import UserError
from linelab.profile.schema import Source
from linelab.store.schema import RECORD_TABLES

PARQUET = (".parquet", ".pq")


def _py_encoding(encoding: str) -> str:
    return "utf-8-sig" if encoding.lower().replace("-", "").replace("_", "") == "utf8" else encoding


def csv_header(path: Path, delimiter: str = ",", encoding: str = "utf-8") -> list[str]:
    """The column names of a CSV file (its first line)."""
    try:
        with path.open(newline="", encoding=_py_encoding(encoding)) as fh:
            return next(csv.reader(fh, delimiter=delimiter), [])
    except (UnicodeDecodeError, LookupError) as exc:
        raise UserError(f"{path}: cannot read the header as {encoding}: {exc}") from None


def file_columns(path: Path, source: Source | None = None) -> list[str]:
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.suffix.lower() in PARQUET:
        return pq.read_schema(path).names
    return csv_header(path, source.delimiter if source else ",", source.encoding if source else "utf-8")


def read_text_csv(path: Path, delimiter: str = ",", encoding: str = "utf-8") -> pa.Table:
    """A CSV file with every column as text (typing is the validator's job)."""
    header = csv_header(path, delimiter, encoding)
    try:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(encoding=encoding),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                                 strings_can_be_null=True),
        )
    except (pa.ArrowInvalid, OSError, LookupError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from exc


def read_text(path: Path, source: Source) -> pa.Table:
    if not path.exists():
        raise UserError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in PARQUET:
        return read_text_csv(path, source.delimiter, source.encoding)
    if suffix in PARQUET:
        try:
            return pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"{path}: cannot read: {exc}") from exc
    raise UserError(f"{path}: unsupported file type {suffix or '(none)'}; use .csv or .parquet")


# -- what a source needs of a file ------------------------------------------------------------
def value_columns(source: Source, columns: list[str]) -> list[str]:
    """The reading columns of a wide export."""
    assert source.wide is not None
    ids = set(source.wide.id_columns)
    pats = source.wide.value_columns
    return [c for c in columns if c not in ids and (not pats or any(fnmatch(c, p) for p in pats))]


def long_columns(source: Source, columns: list[str]) -> list[str]:
    """The columns the mapping sees: a wide export's id columns plus `name` and `value`."""
    if source.wide is None:
        return columns
    return [c for c in columns if c in source.wide.id_columns] + ["name", "value"]


@dataclass
class Plan:
    """Where each LineLab column of a source comes from, and what is missing."""

    table: str
    sources: dict[str, str] = field(default_factory=dict)  # LineLab column -> export column
    constants: dict[str, str] = field(default_factory=dict)
    derived: list[str] = field(default_factory=list)  # LineLab columns filled from other tables
    missing_export: dict[str, str] = field(default_factory=dict)  # LineLab column -> absent export column
    missing_required: list[str] = field(default_factory=list)  # required LineLab columns with no origin
    missing_ids: list[str] = field(default_factory=list)  # wide id columns absent from the file
    no_values: bool = False  # a wide export with no reading column

    def problems(self, source: Source, where: str) -> list[str]:
        out = [f"{where}: source '{source.name}' maps {ll} to the column '{col}', which the file does not have"
               for ll, col in self.missing_export.items()]
        out += [f"{where}: source '{source.name}' names the id column '{c}', which the file does not have"
                for c in self.missing_ids]
        if self.no_values:
            out.append(f"{where}: source '{source.name}' is wide but no column of the file is a reading")
        out += [f"{where}: {self.table}.{c} is required but source '{source.name}' gives it no column, "
                f"constant or derivation" for c in self.missing_required]
        return out


DERIVES = {"first_pass_from_steps": "first_pass", "result_from_steps": "result",
           "t_end_from_steps": "t_end", "t_start_from_steps": "t_start"}


def plan(source: Source, columns: list[str]) -> Plan:
    """How `source` maps a file with these columns (the file's own column names)."""
    p = Plan(source.table)
    have = set(columns)
    if source.wide is not None:
        p.missing_ids = [c for c in source.wide.id_columns if c not in have]
        p.no_values = not value_columns(source, columns)
        have = set(long_columns(source, columns))
    constants = dict(source.constants)
    if source.wide is not None and source.wide.station and "station" not in source.columns:
        constants.setdefault("station", source.wide.station)
    derived = [DERIVES[d] for d in source.derive] if source.table == "units" else []
    for f in RECORD_TABLES[source.table]:
        col = source.columns.get(f.name)
        if col is not None:
            if col in have:
                p.sources[f.name] = col
            else:
                p.missing_export[f.name] = col
        elif f.name in have and f.name not in source.columns.values():
            p.sources[f.name] = f.name
        if f.name in constants:
            p.constants[f.name] = constants[f.name]
        if f.name in derived:
            p.derived.append(f.name)
        if (not f.nullable and f.name not in p.sources and f.name not in p.constants
                and f.name not in p.derived and f.name not in p.missing_export):
            p.missing_required.append(f.name)
    return p
