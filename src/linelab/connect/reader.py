"""Reading an export file as text records, each with its physical line, and the lines that are not records.

A file that cannot be read at all (not text in its declared encoding, UTF-16 without a declared
encoding, a header naming a column twice, an invalid Parquet file, a list column) raises one
`UserError` naming the file and why. Within a readable file, a line that is not a record (a
ragged row, bytes that are not text, an unclosed quote) is returned as a quarantine entry and
never blocks the other lines.

CSV is parsed by Arrow when every record is on one line (the common case, no per-row Python):
multi-threaded when the file is regular, single-threaded when Arrow must skip and number ragged
lines (lines with undecodable bytes are blanked first). A file with values spanning lines or an
unclosed quote is parsed line by line, so each broken line is found and numbered while the
records around it are kept.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from linelab.errors import UserError
from linelab.store.validate import LINE, QUARANTINE_SCHEMA, quarantine_rows

PARQUET = (".parquet", ".pq")
SUFFIXES = {".csv", *PARQUET}
MAX_RECORD_LINES = 100  # a quoted value spanning more lines than this is taken for an unclosed quote
UNREADABLE = "(line)"  # the field named by entries for lines that are not records
_BAD_TEXT = re.compile("[\udc80-\udcff]")  # bytes that did not decode, kept as lone surrogates


@dataclass
class Export:
    table: pa.Table  # every column text, plus LINE: the physical line (CSV) or row (Parquet) of each record
    rejected: pa.Table  # QUARANTINE_SCHEMA: lines that are not records


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig")


def _decode(path: Path, data: bytes, encoding: str) -> tuple[str | None, bytes]:
    """(text with undecodable bytes as lone surrogates, or None when valid UTF-8; the UTF-8 bytes)."""
    if _is_utf8(encoding):
        head = data[:4096]
        # UTF-16 text has a byte-order mark, or a zero byte beside every ASCII character.
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or head.count(b"\x00") > len(head) // 4:
            raise UserError(f"{path}: looks like UTF-16 text; save it as UTF-8, or ingest it through a profile "
                            f"source that declares its encoding (encoding: utf-16)")
        if data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8):]
        try:
            data.decode("utf-8")
            return None, data
        except UnicodeDecodeError:
            return data.decode("utf-8", "surrogateescape"), data
    try:
        text = data.decode(encoding)
    except LookupError:
        raise UserError(f"{path}: unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: cannot read as {encoding}: {exc.reason} at byte {exc.start}") from None
    text = text.removeprefix("\ufeff")
    return None, text.encode("utf-8")


def _header(path: Path, first_line: str, delimiter: str) -> list[str]:
    if _BAD_TEXT.search(first_line):
        raise UserError(f"{path}: line 1 (the header) is not UTF-8 text; save the file as UTF-8, or ingest it "
                        f"through a profile source that declares its encoding (e.g. encoding: latin-1)")
    try:
        names = next(csv.reader([first_line.rstrip("\r")], delimiter=delimiter, strict=True), [])
    except csv.Error as exc:
        raise UserError(f"{path}: cannot read the header (line 1): {exc}") from None
    if not names or names == [""]:
        raise UserError(f"{path}: line 1 is empty; a CSV file starts with its header (the column names)")
    seen: dict[str, int] = {}
    for i, name in enumerate(names, 1):
        if name in seen:
            raise UserError(f"{path}: the header names column {name!r} twice (columns {seen[name]} and {i}); "
                            f"each column needs its own name")
        seen[name] = i
    return names


def csv_columns(path: Path, delimiter: str = ",", encoding: str = "utf-8") -> list[str]:
    """The header of a CSV file, with the same checks as a full read."""
    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    text, data = _decode(path, head, encoding)
    first = (text if text is not None else data.decode("utf-8", "surrogateescape")).split("\n", 1)[0]
    return _header(path, first, delimiter)


def read_csv(path: Path, delimiter: str = ",", encoding: str = "utf-8") -> Export:
    data = path.read_bytes()
    if not data.strip():
        raise UserError(f"{path}: the file is empty (it needs a header line)")
    text, data = _decode(path, data, encoding)
    first = (text if text is not None else data[:1 << 16].decode("utf-8", "surrogateescape")).split("\n", 1)[0]
    names = _header(path, first, delimiter)
    if text is None:
        regular = _read_regular(data, names, delimiter)
        if regular is not None:
            return Export(regular, QUARANTINE_SCHEMA.empty_table())
        text = data.decode("utf-8")
    if "\n" in text:
        skipping = _read_skipping(data, text, names, delimiter)
        if skipping is not None:
            return skipping
    return _read_line_by_line(text, names, delimiter)


def _record_lines(data: bytes) -> np.ndarray:
    """Physical line numbers (1-based) of the non-blank lines after the header."""
    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if b"\n\n" not in data and b"\n\r\n" not in data:
        return np.arange(2, n_lines + 1, dtype=np.int64)
    b = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(b == 10)
    starts = np.concatenate([[0], ends + 1])
    ends = np.concatenate([ends, [b.size]])
    length = ends - starts
    blank = (length == 0) | ((length == 1) & (b[np.minimum(starts, b.size - 1)] == 13))
    lines = np.flatnonzero(~blank) + 1
    return lines[lines > 1].astype(np.int64)


def _read_regular(data: bytes, names: list[str], delimiter: str) -> pa.Table | None:
    """The file parsed by Arrow, or None when it is not regular (then it is read line by line)."""
    irregular = []

    def note(row: pacsv.InvalidRow) -> str:
        irregular.append(row)
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True, invalid_row_handler=note),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in names},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    lines = _record_lines(data)
    # One record per non-blank line means no value spans lines: record k sits on the k-th such line.
    if irregular or lines.size != table.num_rows:
        return None
    return table.append_column(LINE, pa.array(lines))


def _undecodable_lines(text: str) -> set[int]:
    """0-based indices of the lines holding bytes that did not decode."""
    found = [m.start() for m in _BAD_TEXT.finditer(text)]
    if not found:
        return set()
    breaks = np.array([m.start() for m in re.finditer("\n", text)], dtype=np.int64)
    return set(np.searchsorted(breaks, np.array(found), side="left").tolist())


def _read_skipping(data: bytes, text: str, names: list[str], delimiter: str) -> Export | None:
    """Arrow again, for a file whose every record is on one line but some lines are not records.

    Lines with bytes that do not decode are blanked first; Arrow skips ragged lines and numbers
    them (reading on one thread, it counts records as it goes), and since no record spans lines,
    the k-th record is the k-th non-blank line. None when that does not hold (a value with a line
    break, an unclosed quote): then the file is read line by line.
    """
    undecodable = sorted(_undecodable_lines(text))
    bad: list[dict[str, object]] = []
    if undecodable:
        physical = data.split(b"\n")
        for i in undecodable:
            raw = physical[i].decode("utf-8", "replace").rstrip("\r")
            bad.append({"row": i + 1, "field": UNREADABLE, "reason": "not UTF-8 text (bytes that do not decode)",
                        "raw": raw})
            physical[i] = b""
        data = b"\n".join(physical)
    skipped: list[pacsv.InvalidRow] = []

    def skip(row: pacsv.InvalidRow) -> str:
        skipped.append(row)
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True, invalid_row_handler=skip),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in names},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    lines = _record_lines(data)  # the non-blank lines after the header, one per record
    if lines.size != table.num_rows + len(skipped) or any(r.number is None for r in skipped):
        return None
    # Arrow numbers records from 1 with the header as record 1.
    at = np.array([r.number for r in skipped], dtype=np.int64) - 2
    if at.size and (at.min() < 0 or at.max() >= lines.size):
        return None
    for row, i in zip(skipped, at, strict=True):
        bad.append({"row": int(lines[i]), "field": UNREADABLE,
                    "reason": f"{row.actual_columns} field(s) where the header has {row.expected_columns}",
                    "raw": row.text})
    keep = np.ones(lines.size, dtype=bool)
    keep[at] = False
    table = table.append_column(LINE, pa.array(lines[keep]))
    return Export(table, quarantine_rows(bad).sort_by("row"))


class _Lines:
    """Feeds physical lines to a csv reader; stops a record that runs past `limit` (an unclosed quote)."""

    def __init__(self, lines: list[str], start: int) -> None:
        self.lines, self.i, self.limit = lines, start, start + MAX_RECORD_LINES

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.i >= len(self.lines) or self.i >= self.limit:
            raise StopIteration
        self.i += 1
        return self.lines[self.i - 1] + "\n"


def _read_line_by_line(text: str, names: list[str], delimiter: str) -> Export:
    """Parse an irregular file: every line that is not a record becomes a quarantine entry.

    One csv reader runs over the lines; where it fails (or a record spanning lines turns out to be
    an unclosed quote), the line the record started on is quarantined and reading resumes on the
    line after it, so a broken line never takes the lines after it along.
    """
    lines = text.split("\n") if "\n" in text else text.split("\r")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    undecodable = _undecodable_lines(text)
    records: list[list[str]] = []
    record_lines: list[int] = []
    bad: list[dict[str, object]] = []

    def reject(i: int, reason: str) -> None:
        bad.append({"row": i + 1, "field": UNREADABLE, "reason": reason, "raw": _BAD_TEXT.sub("\ufffd", lines[i])})

    pos = 1
    while pos < len(lines):
        feed = _Lines(lines, pos)
        reader = csv.reader(feed, delimiter=delimiter, strict=True)
        done = 0  # lines taken by the records read so far
        resume = None
        try:
            for fields in reader:
                start, span = pos + done, reader.line_num - done
                done = reader.line_num
                feed.limit = feed.i + MAX_RECORD_LINES
                if not fields:  # a blank line
                    continue
                if undecodable and undecodable.intersection(range(start, start + span)):
                    resume = start + 1
                    reject(start, "not UTF-8 text (bytes that do not decode)")
                    break
                if len(fields) != len(names):
                    if span > 1:  # a quote that swallowed the lines after it: only this line is bad
                        resume = start + 1
                        reject(start, "a quoted value is not closed on this line")
                        break
                    reject(start, f"{len(fields)} field(s) where the header has {len(names)}")
                    continue
                records.append(fields)
                record_lines.append(start + 1)
        except csv.Error as exc:
            start = pos + done
            reason = str(exc)
            reject(start, "a quoted value is not closed" if "unexpected end of data" in reason else reason)
            resume = start + 1
        pos = resume if resume is not None else max(feed.i, pos + done, pos + 1)
    columns = list(zip(*records, strict=True)) if records else [() for _ in names]
    table = pa.table({n: pa.array(c, pa.string()) for n, c in zip(names, columns, strict=True)})
    table = table.append_column(LINE, pa.array(record_lines, pa.int64()))
    return Export(table, quarantine_rows(bad))


# -- Parquet ------------------------------------------------------------------------------------
def parquet_columns(path: Path) -> list[str]:
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable Parquet file: {exc}") from None
    seen: dict[str, int] = {}
    for i, name in enumerate(schema.names, 1):
        if name in seen:
            raise UserError(f"{path}: names column {name!r} twice (columns {seen[name]} and {i}); "
                            f"each column needs its own name")
        seen[name] = i
    nested = [f.name for f in schema if pa.types.is_nested(f.type)]
    if nested:
        raise UserError(f"{path}: column(s) {', '.join(map(repr, nested))} hold lists or structures; LineLab reads "
                        f"flat columns (one value per cell): flatten them or leave them out of the export")
    return list(schema.names)


def _as_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A Parquet column as the text a CSV export would hold: instants with their offset, numbers as they round-trip."""
    t = col.type
    if pa.types.is_dictionary(t):
        col, t = col.cast(t.value_type), t.value_type
    if pa.types.is_timestamp(t):  # a zoned column is written with its offset, so no zone setting applies twice
        return col.cast(pa.string())
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return col
    return col.cast(pa.string())


def read_parquet(path: Path) -> Export:
    parquet_columns(path)
    try:
        raw = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable Parquet file: {exc}") from None
    n = raw.num_rows
    ok = np.ones(n, dtype=bool)
    bad: list[dict[str, object]] = []
    columns: dict[str, pa.ChunkedArray] = {}
    for name in raw.column_names:
        col = _as_text(raw.column(name))
        if not (pa.types.is_string(col.type) and _valid_utf8(col)):
            # Values that are not text: the rows holding them are quarantined, the others kept.
            values = col.cast(pa.binary()).to_pylist()
            for i, v in enumerate(values):
                if v is not None and not _decodes(v) and ok[i]:
                    ok[i] = False
                    bad.append({"row": i + 1, "field": name, "reason": "not UTF-8 text",
                                "raw": v.decode("utf-8", "replace")})
            col = pa.chunked_array([pa.array([None if v is None or not _decodes(v) else v.decode("utf-8")
                                              for v in values], pa.string())])
        columns[name] = col
    table = pa.table(columns).append_column(LINE, pa.array(np.arange(1, n + 1, dtype=np.int64)))
    if not ok.all():
        table = table.filter(pa.array(ok))
    return Export(table, quarantine_rows(bad).sort_by("row"))


def _valid_utf8(col: pa.ChunkedArray) -> bool:
    try:
        col.validate(full=True)
        return True
    except pa.ArrowInvalid:
        return False


def _decodes(value: bytes) -> bool:
    try:
        value.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def columns_of(path: Path, delimiter: str = ",", encoding: str = "utf-8") -> list[str]:
    """The column names of an export, after the checks that make a file unreadable as a whole."""
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.suffix.lower() in PARQUET:
        return parquet_columns(path)
    if path.suffix.lower() != ".csv":
        raise UserError(f"{path}: unsupported file type {path.suffix or '(none)'}; use .csv or .parquet")
    return csv_columns(path, delimiter, encoding)


def read_export(path: Path, delimiter: str = ",", encoding: str = "utf-8") -> Export:
    columns_of(path, delimiter, encoding)
    if path.suffix.lower() in PARQUET:
        return read_parquet(path)
    return read_csv(path, delimiter, encoding)
