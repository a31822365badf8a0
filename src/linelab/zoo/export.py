"""Write a zoo run's tables as the line itself would export them: its own file and column names,
its own result words, its own delimiter and decimal mark. The profile's `sources` map them back.

    write_export(line.kind, line.produce(500), folder, part=0)   # -> [asm-2_units_0000.csv, ...]
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from linelab.zoo.kinds import LineKind
from linelab.zoo.profile import EXPORT_FORMAT, EXPORT_NAMES, EXPORT_VALUES, export_file


def export_table(kind: LineKind, table: str, data: pa.Table) -> pa.Table:
    """One table renamed and re-worded as the line's export (first_pass left out: it is derived)."""
    names = EXPORT_NAMES[kind.name][table]
    fmt = EXPORT_FORMAT.get(kind.name, {})
    cols, fields = [], []
    for f in data.schema:
        if f.name not in names:
            continue
        col = data.column(f.name)
        if f.name == "result" and table in ("units", "steps"):
            words = EXPORT_VALUES[kind.name]
            col = pc.take(pa.array(list(words.values())), pc.index_in(col, value_set=pa.array(list(words))))
        elif pa.types.is_floating(f.type) and fmt.get("decimal") == ",":
            col = pc.replace_substring(pc.cast(col, pa.string()), ".", ",")
        cols.append(col)
        fields.append(names[f.name])
    return pa.Table.from_arrays(cols, names=fields)


def write_export(kind: LineKind, tables: Mapping[str, pa.Table], folder: str | Path, part: int = 0) -> list[Path]:
    """Write each table to `folder` under the name its profile source expects; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    delimiter = EXPORT_FORMAT.get(kind.name, {}).get("delimiter", ",")
    out = []
    for table, data in tables.items():
        path = folder / export_file(kind, table).replace("*", f"{part:04d}")
        pcsv.write_csv(export_table(kind, table, data), path, pcsv.WriteOptions(delimiter=delimiter))
        out.append(path)
    return out
