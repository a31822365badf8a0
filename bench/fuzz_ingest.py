"""Fuzzing ingest: valid exports mutated at random, ingested, and every row accounted for.

    python bench/fuzz_ingest.py [--quick] [--seconds S] [--seed N]

Each round writes a valid CSV export (measurements or steps), applies a few random mutations
(garbage lines, undecodable bytes, NUL characters, ragged rows, junk values, impossible numbers and
times, zones that cannot be read, blank ids, repeats, conflicting repeats, unclosed quotes, quoted
newlines, blank lines, CRLF, a BOM) or
breaks the whole file (UTF-16, a duplicated header name, an empty file, random bytes in a Parquet
file), ingests it through `linelab ingest` (the Python API), and counts:

- tracebacks: anything but a clean result or a clear error (must be 0);
- rows_lost: lines left intact whose record was not stored (a file refused for one bad row counts
  all its intact rows);
- bad_rows_stored: lines made invalid (they carry a `BAD` serial) that were stored;
- duplicates_stored: natural keys stored more than once;
- misnumbered: quarantine entries of made-bad lines whose line number is not the line's own.

The ratio compares fuzzed files' throughput with the same files unmutated, in the same run.
One JSON line is printed last.
"""

from __future__ import annotations

import argparse
import codecs
import json
import random
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from linelab.commands import call
from linelab.errors import UserError
from linelab.store import Workspace

MEAS_HEADER = ["unit_id", "station", "name", "value", "t"]
STEP_HEADER = ["unit_id", "station", "machine", "operator", "t_in", "t_out", "result", "defect_code"]
JUNK_NUMBERS = ["inf", "-inf", "nan", "NaN", "1e999", "NA", "null", "x", "1,5", "--1"]
JUNK_TIMES = ["294247-01-01 00:00:00", "1850-01-01 00:00:00", "2026-13-01 00:00:00", "yesterday", "NA", "0",
              "epoch", "2026-01-05 06:00:00 EST", "2026-01-05 06:00:00+25:00", "2026-01-05 06:00:00+05:00:30",
              "2026-01-05 6:00 PM"]
BLANKS = ["", " ", "   ", "\t"]


@dataclass
class Line:
    fields: list[str] | None  # None: not a record (garbage)
    raw: bytes | None = None  # bytes written as they are instead of the fields
    kind: str = "good"  # good | bad | garbage | repeat | changed


@dataclass
class Tally:
    rounds: int = 0
    files: int = 0
    rows_in: int = 0
    tracebacks: int = 0
    rows_lost: int = 0
    bad_rows_stored: int = 0
    duplicates_stored: int = 0
    misnumbered: int = 0
    file_errors: int = 0
    quarantined: int = 0
    examples: list[str] = field(default_factory=list)


def measurements(rng: random.Random, n: int) -> tuple[list[str], list[Line]]:
    rows = []
    for i in range(n):
        rows.append(Line([f"SN{i:06d}", rng.choice(["ST1", "ST2"]), rng.choice(["m_a", "m_b"]),
                          f"{rng.gauss(10, 2):.5f}", f"2026-02-0{1 + i // 40000} {i // 3600 % 24:02d}:"
                                                      f"{i // 60 % 60:02d}:{i % 60:02d}"]))
    return MEAS_HEADER, rows


def steps(rng: random.Random, n: int) -> tuple[list[str], list[Line]]:
    rows = []
    for i in range(n):
        t = f"2026-02-01 {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
        fail = rng.random() < 0.1
        rows.append(Line([f"SN{i:06d}", "ST1", rng.choice(["M1", "M2"]), rng.choice(["op1", "NA", ""]), t,
                          t.replace("2026-02-01", "2026-02-02"), "fail" if fail else "pass",
                          "DEFECT" if fail else ""]))
    return STEP_HEADER, rows


def quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n\r') else value


def render(header: list[str], lines: list[Line], crlf: bool, bom: bool) -> tuple[bytes, dict[int, Line]]:
    """The file's bytes, and the physical line each record starts on."""
    end = b"\r\n" if crlf else b"\n"
    out = [",".join(header).encode()]
    where: dict[int, Line] = {}
    line_no = 2
    for line in lines:
        data = line.raw if line.raw is not None else ",".join(quote(v) for v in line.fields or []).encode()
        where[line_no] = line
        out.append(data)
        line_no += data.count(b"\n") + 1
    return (codecs.BOM_UTF8 if bom else b"") + end.join(out) + end, where


def make_bad(line: Line, header: list[str], rng: random.Random, serial: int) -> None:
    """Turn a copy of a good line into one that must be quarantined (and carries a BAD serial)."""
    assert line.fields is not None
    f = list(line.fields)
    f[0] = f"BAD{serial:06d}"
    numeric = [i for i, h in enumerate(header) if h == "value"]
    times = [i for i, h in enumerate(header) if h in ("t", "t_in")]
    how = rng.choice(["number", "time", "blank", "ragged", "order", "result", "bytes", "nul"])
    if how == "number" and numeric:
        f[numeric[0]] = rng.choice(JUNK_NUMBERS)
    elif how == "time" and times:
        f[times[0]] = rng.choice(JUNK_TIMES)
    elif how == "blank":
        f[rng.choice([i for i, h in enumerate(header) if h in ("station", "name")] or [1])] = rng.choice(BLANKS)
    elif how == "order" and "t_out" in header:
        f[header.index("t_out")] = "2026-01-01 00:00:00"
    elif how == "result" and "result" in header:
        f[header.index("result")] = rng.choice(["PASS", "ok", "NA", "1"])
    elif how == "bytes":
        line.raw = ",".join(f).encode().replace(b"SN", b"S\xff", 1).replace(b"BAD", b"BA\xfe", 1)
    elif how == "nul":  # a NUL character inside a text field
        i = rng.choice([i for i, h in enumerate(header) if h in ("station", "name")] or [1])
        f[i] = f[i][:1] + "\x00" + f[i][1:]
    else:  # ragged: a field too many or too few
        f = f[:-1] if rng.random() < 0.5 else [*f, "extra"]
    line.fields, line.kind = f, "bad"


def mutate(header: list[str], rows: list[Line], rng: random.Random, serial: list[int]) -> tuple[list[Line], dict]:
    lines = list(rows)
    opts = {"crlf": rng.random() < 0.1, "bom": rng.random() < 0.1}
    for _ in range(rng.randint(1, 6)):
        i = rng.randrange(len(lines) + 1)
        kind = rng.choice(["garbage", "bad", "bad", "repeat", "conflict", "blank", "quoted_newline", "unclosed",
                           "delete", "na_text"])
        if kind == "garbage":
            junk = bytes(rng.choice(b'abc,;"\t \xff\x80\xc3') for _ in range(rng.randint(1, 50)))
            lines.insert(i, Line(None, junk.replace(b"\n", b"").replace(b"\r", b""), "garbage"))
        elif kind == "bad":
            src = rows[rng.randrange(len(rows))]
            new = Line(list(src.fields or []))
            serial[0] += 1
            make_bad(new, header, rng, serial[0])
            lines.insert(i, new)
        elif kind == "repeat":
            src = lines[rng.randrange(len(lines))]
            if src.kind == "good":
                lines.insert(i, Line(src.fields, None, "repeat"))
        elif kind == "conflict":
            # A second record for a key that exists: whichever comes first is kept, the other quarantined.
            j = rng.randrange(len(lines))
            if lines[j].kind == "good" and "value" in header:
                f = list(lines[j].fields or [])
                f[header.index("value")] = "99.125"
                lines[j].kind = "changed"
                lines.insert(i, Line(f, None, "changed"))
        elif kind == "blank":
            lines.insert(i, Line(None, b"", "blank"))
        elif kind == "quoted_newline" and "defect_code" in header:
            j = rng.randrange(len(lines))
            if lines[j].kind == "good" and lines[j].fields:
                lines[j].fields[header.index("defect_code")] = "LINE1\nLINE2, with a comma"
        elif kind == "unclosed":
            src = rows[rng.randrange(len(rows))]
            serial[0] += 1
            f = [f"BAD{serial[0]:06d}", *(src.fields or [])[1:]]
            lines.insert(i, Line(f, ",".join([f[0], '"' + f[1], *f[2:]]).encode(), "bad"))
        elif kind == "delete" and len(lines) > 1:
            del lines[i % len(lines)]
        elif kind == "na_text" and "operator" in header:
            j = rng.randrange(len(lines))
            if lines[j].kind == "good" and lines[j].fields:
                lines[j].fields[header.index("operator")] = rng.choice(["NA", "null", "N/A", "None"])
    return lines, opts


def file_breakage(path: Path, rng: random.Random, data: bytes, header: list[str]) -> Path:
    """A file that cannot be read at all."""
    how = rng.choice(["utf16", "header", "empty", "parquet"])
    if how == "utf16":
        path.write_bytes(codecs.BOM_UTF16_LE + data.decode("utf-8", "replace").encode("utf-16-le"))
    elif how == "header":
        path.write_bytes(data.replace(b"station", b"unit_id", 1))
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path = path.with_suffix(".parquet")
        table = pa.table({h: [str(i) for i in range(50)] for h in header})
        pq.write_table(table, path)
        raw = bytearray(path.read_bytes())
        for _ in range(rng.randint(1, 20)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        path.write_bytes(bytes(raw))
    return path


def keys_of(header: list[str]) -> list[str]:
    return ["unit_id", "station", "name", "t"] if "name" in header else ["unit_id", "station", "t_in"]


def account(ws_path: Path, table: str, header: list[str], where: dict[int, Line], tally: Tally) -> None:
    keys = keys_of(header)
    with Workspace.open(ws_path) as ws:
        stored = set(ws.query(f"SELECT unit_id FROM {table}").column(0).to_pylist())
        tally.duplicates_stored += int(ws.scalar(
            f"SELECT count(*) FROM (SELECT {', '.join(keys)} FROM {table} GROUP BY ALL HAVING count(*) > 1)"))
        quarantined = {r["row"]: r for r in ws.query('SELECT "row", field FROM quarantine').to_pylist()}
    changed = {tuple(line.fields[:2]) for line in where.values() if line.kind == "changed" and line.fields}
    for line_no, line in where.items():
        serial = (line.fields or [""])[0]
        if line.kind in ("good", "repeat") and serial not in stored and tuple((line.fields or [])[:2]) not in changed:
            tally.rows_lost += 1
            if len(tally.examples) < 5:
                tally.examples.append(f"lost line {line_no}: {line.fields}")
        if line.kind == "bad":
            if serial in stored:
                tally.bad_rows_stored += 1
                if len(tally.examples) < 5:
                    tally.examples.append(f"bad line {line_no} stored: {line.fields}")
            elif line_no not in quarantined:
                tally.misnumbered += 1
                if len(tally.examples) < 5:
                    tally.examples.append(f"bad line {line_no} not quarantined at its line: {line.raw or line.fields}")
    stray = stored - {(line.fields or [""])[0] for line in where.values()}
    tally.bad_rows_stored += len(stray)


def one_round(rng: random.Random, folder: Path, tally: Tally, serial: list[int], rows: int) -> float:
    table, (header, good) = rng.choice([("measurements", measurements(rng, rows)), ("steps", steps(rng, rows))])
    lines, opts = mutate(header, good, rng, serial)
    data, where = render(header, lines, **opts)
    path = folder / f"{table}_{tally.rounds}.csv"
    path.write_bytes(data)
    broken = rng.random() < 0.1
    if broken:
        path = file_breakage(path, rng, data, header)
    ws_path = folder / f"ws_{tally.rounds}"
    tally.rounds += 1
    tally.files += 1
    tally.rows_in += len(lines)
    start = time.perf_counter()
    try:
        res = call("ingest", workspace=ws_path, paths=[path])
        tally.quarantined += res.quarantined
    except UserError as exc:
        tally.file_errors += 1
        if not broken:  # a file refused for its rows: every intact row is lost
            tally.rows_lost += sum(line.kind == "good" for line in lines)
            if len(tally.examples) < 5:
                tally.examples.append(f"refused a readable file: {exc}")
        return time.perf_counter() - start
    except Exception:  # noqa: BLE001 - counting crashes is the point
        tally.tracebacks += 1
        if len(tally.examples) < 5:
            tally.examples.append(traceback.format_exc(limit=3))
        return time.perf_counter() - start
    elapsed = time.perf_counter() - start
    if not broken:
        account(ws_path, table, header, where, tally)
    return elapsed


def clean_round(rng: random.Random, folder: Path, i: int, rows: int) -> float:
    header, good = measurements(rng, rows)
    data, _ = render(header, good, False, False)
    path = folder / f"measurements_clean_{i}.csv"
    path.write_bytes(data)
    start = time.perf_counter()
    call("ingest", workspace=folder / f"ws_clean_{i}", paths=[path])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="about 20 seconds")
    ap.add_argument("--seconds", type=float, default=None, help="how long to fuzz [default: 180, quick: 20]")
    ap.add_argument("--rows", type=int, default=2000, help="rows per generated export")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    budget = args.seconds or (20.0 if args.quick else 180.0)
    rng = random.Random(args.seed)
    tally, serial = Tally(), [0]
    fuzzed_s = clean_s = 0.0
    clean_rows = 0
    deadline = time.monotonic() + budget
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        while time.monotonic() < deadline:
            fuzzed_s += one_round(rng, folder, tally, serial, args.rows)
            if tally.rounds % 5 == 0:  # the baseline: the same size, unmutated, in the same run
                clean_s += clean_round(rng, folder, tally.rounds, args.rows)
                clean_rows += args.rows
            if tally.rounds % 20 == 0:
                print(f"{tally.rounds} rounds, {tally.rows_in:,} rows, {tally.tracebacks} tracebacks, "
                      f"{tally.rows_lost} lost, {tally.bad_rows_stored} bad stored", flush=True)
    for example in tally.examples:
        print("example:", example)
    result = {
        "bench": "fuzz_ingest",
        "seconds": budget,
        "rounds": tally.rounds,
        "rows_in": tally.rows_in,
        "tracebacks": tally.tracebacks,
        "rows_lost": tally.rows_lost,
        "bad_rows_stored": tally.bad_rows_stored,
        "duplicates_stored": tally.duplicates_stored,
        "misnumbered": tally.misnumbered,
        "file_errors": tally.file_errors,
        "quarantined": tally.quarantined,
        "ratio_fuzzed_vs_clean_rows_per_s": round((tally.rows_in / fuzzed_s) / (clean_rows / clean_s), 3)
        if fuzzed_s and clean_s and clean_rows else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
