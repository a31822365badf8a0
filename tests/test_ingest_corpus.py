"""A corpus of bad input, generated here, through `linelab ingest` as a user runs it.

Every case counts what matters: no traceback, no good row lost, no bad row stored, no duplicate
stored, the right exit code (0 clean, 1 rows quarantined, 2 a file that cannot be read at all),
and quarantine entries or errors naming the file, the physical line and the field.
"""

from __future__ import annotations

import codecs
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from linelab.cli import build_app
from linelab.store import Workspace

HEADER = "unit_id,station,name,value,t"
N = 200  # good rows per generated file


def good_line(i: int) -> str:
    return f"SN{i:05d},TEST,vout_v,{3.3 + i / 1000:.4f},2026-01-05 {6 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}"


def good_ids(rows: range | list[int]) -> set[str]:
    return {f"SN{i:05d}" for i in rows}


@dataclass
class Outcome:
    code: int
    body: dict = field(default_factory=dict)
    stderr: str = ""


def ingest(ws: Path, *args: str | Path) -> Outcome:
    argv = ["ingest", *map(str, args), "--json", "-w", str(ws)]
    res = CliRunner().invoke(build_app(argv), argv)
    # A crash is never the answer: the only exception allowed out is the exit itself.
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output + res.stderr
    body = json.loads(res.stdout) if res.stdout.strip().startswith("{") else {}
    if "error" in body:
        return Outcome(res.exit_code, {}, body["error"])
    if body:
        for f in body["files"]:  # every row received is accounted for exactly once
            assert min(f["stored"], f["updated"], f["duplicates"], f["quarantined"]) >= 0, f
            assert f["received"] == f["stored"] + f["updated"] + f["duplicates"] + f["quarantined"], f
    return Outcome(res.exit_code, body, res.stderr)


def listing(argv: list[str]) -> dict:
    res = CliRunner().invoke(build_app(argv), argv)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def stored(ws: Path, table: str = "measurements", column: str = "unit_id") -> list:
    with Workspace.open(ws) as w:
        return w.query(f"SELECT {column} FROM {table} ORDER BY {column}").column(0).to_pylist()


def quarantine(ws: Path) -> list[dict]:
    with Workspace.open(ws) as w:
        return w.query('SELECT source, "row", field, reason, resolved_batch FROM quarantine ORDER BY source, "row"'
                       ).to_pylist()


def write(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.write_text(end.join(lines) + end, encoding="utf-8")
    return path


def assert_lines(ws: Path, expected: dict[int, str]) -> None:
    """Quarantined (line -> field) are exactly these."""
    assert {q["row"]: q["field"] for q in quarantine(ws)} == expected


# -- files that cannot be read at all: one clear error, exit 2, nothing stored ------------------------
def unreadable_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    lines = [HEADER, *(good_line(i) for i in range(N))]
    latin = tmp / "measurements_latin1.csv"
    latin.write_bytes("\n".join(["unit_id,station,name,value,t,Maß", *(g + ",x" for g in lines[1:])])
                      .encode("latin-1"))
    utf16 = tmp / "measurements_utf16.csv"
    utf16.write_bytes(codecs.BOM_UTF16_LE + "\n".join(lines).encode("utf-16-le"))
    twice = write(tmp / "measurements_twice.csv",
                  ["unit_id,station,name,value,t,value", *(g + ",1" for g in lines[1:])])
    broken = tmp / "measurements_broken.parquet"
    broken.write_bytes(b"PAR1" + bytes(random.Random(1).randrange(256) for _ in range(500)) + b"PAR1")
    listed = tmp / "measurements_lists.parquet"
    pq.write_table(pa.table({"unit_id": ["SN1"], "station": ["T"], "name": ["v"], "value": [1.0],
                             "t": pa.array([0], pa.timestamp("us")), "tags": [["a", "b"]]}), listed)
    empty = tmp / "measurements_empty.csv"
    empty.write_bytes(b"")
    twice_pq = tmp / "measurements_twice.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["SN1"]), pa.array(["T"]), pa.array(["v"]), pa.array([1.0]),
                                         pa.array([0], pa.timestamp("us")), pa.array([2.0])],
                                        names=["unit_id", "station", "name", "value", "t", "value"]), twice_pq)
    return {"latin-1 header": (latin, "not UTF-8"), "UTF-16": (utf16, "UTF-16"),
            "duplicate header": (twice, "names column 'value' twice"),
            "invalid Parquet": (broken, "not a readable Parquet file"), "list column": (listed, "'tags'"),
            "empty file": (empty, "empty"), "duplicate Parquet column": (twice_pq, "names column 'value' twice")}


def test_a_file_that_cannot_be_read_gets_one_clear_error_and_exit_2(tmp_path: Path) -> None:
    for case, (path, why) in unreadable_files(tmp_path).items():
        out = ingest(tmp_path / f"ws_{path.stem}", path)
        assert out.code == 2, case
        assert str(path) in out.stderr and why in out.stderr, (case, out.stderr)
        assert stored(tmp_path / f"ws_{path.stem}") == [], case


def test_a_call_with_one_unreadable_file_stores_nothing_and_names_each_bad_file(tmp_path: Path) -> None:
    good = write(tmp_path / "measurements_good.csv", [HEADER, *(good_line(i) for i in range(N))])
    bad = unreadable_files(tmp_path)
    out = ingest(tmp_path / "ws", good, bad["UTF-16"][0], bad["duplicate header"][0])
    assert out.code == 2
    assert str(bad["UTF-16"][0]) in out.stderr and str(bad["duplicate header"][0]) in out.stderr
    assert stored(tmp_path / "ws") == []
    assert ingest(tmp_path / "ws", good).code == 0 and len(stored(tmp_path / "ws")) == N


def test_a_file_lacking_a_required_column_is_named_before_anything_is_stored(tmp_path: Path) -> None:
    units = write(tmp_path / "units_a.csv", ["unit_id,product,line,t_start", "SN1,P,L1,2026-01-05 06:00:00"])
    steps = write(tmp_path / "steps_b.csv", ["unit_id,station,t_in", "SN1,S1,2026-01-05 06:00:00"])  # no result
    out = ingest(tmp_path / "ws", units, steps)
    assert out.code == 2 and f"{steps}: holds steps but lacks the required column(s) result" in out.stderr
    assert stored(tmp_path / "ws", "units") == []


def test_a_file_refused_midway_rolls_back_the_files_before_it(tmp_path: Path) -> None:
    """Every call is one transaction: the second file, failing as it is mapped, undoes the first."""
    units = write(tmp_path / "units_a.csv", ["unit_id,product,line,t_start", "SN1,P,L1,2026-01-05 06:00:00"])
    steps = write(tmp_path / "mes_b.csv", ["unit_id,station,t_in,result", "SN1,S1,2026-01-05 06:00:00,pass"])
    profile = tmp_path / "profile.yaml"
    profile.write_text("sources:\n  - {name: mes, table: steps, files: ['mes_*'], timezone: Mars/Olympus_Mons}\n")
    out = ingest(tmp_path / "ws", units, steps, "--profile", profile)
    assert out.code == 2 and str(steps) in out.stderr and "Mars/Olympus_Mons" in out.stderr
    assert stored(tmp_path / "ws", "units") == []
    with Workspace.open(tmp_path / "ws") as w:
        assert w.count("batches") == 0


def test_a_declared_encoding_reads_utf16_through_the_profile(tmp_path: Path) -> None:
    path = tmp_path / "tester_utf16.csv"
    path.write_bytes(codecs.BOM_UTF16_LE + "\n".join([HEADER, *(good_line(i) for i in range(N))]).encode("utf-16-le"))
    profile = tmp_path / "profile.yaml"
    profile.write_text("sources:\n  - {name: tester, table: measurements, files: ['tester_*'], encoding: utf-16}\n")
    out = ingest(tmp_path / "ws", path, "--profile", profile)
    assert out.code == 0 and stored(tmp_path / "ws") == sorted(good_ids(range(N)))


# -- bad rows: quarantined by physical line; every good row of the file lands ----------------------
def test_ragged_rows_after_blank_lines_and_quoted_newlines_are_numbered_by_physical_line(tmp_path: Path) -> None:
    header = "unit_id,station,machine,t_in,t_out,result,defect_code"
    rows = [header, ""]  # line 2 blank
    rows.append('SN00000,S1,M1,2026-01-05 06:00:00,2026-01-05 06:01:00,fail,"SOLDER\nBRIDGE"')  # lines 3-4
    rows.append("")  # line 5 blank
    rows.append("SN00001,S1,M1,2026-01-05 06:02:00")  # line 6: too few fields
    rows.append("SN00002,S1,M1,2026-01-05 06:03:00,2026-01-05 06:04:00,pass,,extra")  # line 7: too many
    rows += [f"SN{i:05d},S1,M1,2026-01-05 07:{i % 60:02d}:00,,pass," for i in range(3, 50)]  # lines 8..54
    rows.append("SN00050,S1,M1,2026-01-05 08:00:00,2026-01-05 07:00:00,pass,")  # line 55: t_out < t_in
    path = write(tmp_path / "steps_ragged.csv", rows)
    out = ingest(tmp_path / "ws", path)
    assert out.code == 1
    assert_lines(tmp_path / "ws", {6: "(line)", 7: "(line)", 55: "t_out"})
    assert "1 field" not in quarantine(tmp_path / "ws")[0]["reason"]
    assert "4 field(s) where the header has 7" in quarantine(tmp_path / "ws")[0]["reason"]
    assert stored(tmp_path / "ws", "steps") == sorted(good_ids([0, *range(3, 50)]))
    with Workspace.open(tmp_path / "ws") as w:
        assert w.scalar("SELECT defect_code FROM steps WHERE unit_id = 'SN00000'") == "SOLDER\nBRIDGE"
    shown = out.body["quarantine"][0]
    assert (Path(shown["file"]), shown["row"], shown["field"]) == (path, 6, "(line)")


def test_garbage_lines_and_undecodable_bytes_quarantine_only_their_lines(tmp_path: Path) -> None:
    rng = random.Random(7)
    lines = [HEADER.encode()]
    bad_lines = {}
    for i in range(N):
        if i % 97 == 5:  # about 1 % garbage: random bytes, quotes and delimiters included
            junk = bytes(rng.choice(b'abc,"\'\t;\xff\xfe\x80 0123') for _ in range(rng.randrange(1, 60)))
            lines.append(junk.replace(b"\n", b" ").replace(b"\r", b" "))
            bad_lines[len(lines)] = "(line)"
        lines.append(good_line(i).encode())
    deep = len(lines) * 3 // 4  # an invalid byte deep down, on line deep + 1
    lines.insert(deep, good_line(10_000).encode().replace(b"vout_v", b"vout_\xff"))
    path = tmp_path / "measurements_garbage.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = ingest(tmp_path / "ws", path)
    assert out.code == 1
    got = {q["row"] for q in quarantine(tmp_path / "ws")}
    # Garbage lines from there on moved down one by the insert.
    expected = {n + (1 if n > deep else 0) for n in bad_lines} | {deep + 1}
    # A garbage line may by chance read as a record with the right fields; then it fails a check instead.
    assert got == expected
    assert stored(tmp_path / "ws") == sorted(good_ids(range(N)))
    undecodable = [q for q in quarantine(tmp_path / "ws") if q["row"] == deep + 1]
    assert "not UTF-8" in undecodable[0]["reason"]


def test_an_undecodable_byte_on_the_first_data_line_quarantines_that_line_only(tmp_path: Path) -> None:
    lines = [HEADER.encode(), good_line(0).encode().replace(b"TEST", b"T\xe9ST"),
             *(good_line(i).encode() for i in range(1, N))]
    path = tmp_path / "measurements_first.csv"
    path.write_bytes(b"\r\n".join(lines))  # CRLF, no final newline
    out = ingest(tmp_path / "ws", path)
    assert out.code == 1
    assert_lines(tmp_path / "ws", {2: "(line)"})
    assert stored(tmp_path / "ws") == sorted(good_ids(range(1, N)))


def test_ragged_and_undecodable_lines_among_blank_lines_are_numbered_by_physical_line(tmp_path: Path) -> None:
    """No value spans lines here, so the file is still parsed by Arrow, skipping and numbering the bad lines."""
    lines = [HEADER.encode()]
    bad = {}
    for i in range(N):
        if i % 37 == 5:
            lines.append(b"")
        if i % 41 == 7:
            lines.append(good_line(10_000 + i).rsplit(",", 1)[0].encode())  # a field short
            bad[len(lines)] = "(line)"
        if i % 53 == 9:
            lines.append(good_line(20_000 + i).replace("TEST", "T\xe4ST").encode("latin-1"))
            bad[len(lines)] = "(line)"
        lines.append(good_line(i).encode())
    path = tmp_path / "measurements_skips.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert ingest(tmp_path / "ws", path).code == 1
    assert_lines(tmp_path / "ws", bad)
    assert stored(tmp_path / "ws") == sorted(good_ids(range(N)))


def test_an_unclosed_quote_does_not_swallow_the_lines_after_it(tmp_path: Path) -> None:
    lines = [HEADER, good_line(0), 'SN00001,"TEST,vout_v,3.3,2026-01-05 06:00:01', *(good_line(i) for i in range(2, N))]
    out = ingest(tmp_path / "ws", write(tmp_path / "measurements_quote.csv", lines))
    assert out.code == 1
    assert_lines(tmp_path / "ws", {3: "(line)"})
    assert stored(tmp_path / "ws") == sorted(good_ids([0, *range(2, N)]))


# -- duplicates and conflicts --------------------------------------------------------------------
def test_duplicates_inside_a_file_are_stored_once_and_conflicts_keep_the_first(tmp_path: Path) -> None:
    lines = [HEADER, *(good_line(i) for i in range(N))]
    lines += [good_line(i) for i in range(0, N, 8)]  # exact repeats: 50 duplicates
    conflict = good_line(3).replace(f"{3.3 + 3 / 1000:.4f}", "9.9")  # same key, another value
    lines.append(conflict)
    out = ingest(tmp_path / "ws", write(tmp_path / "measurements_dups.csv", lines))
    assert out.code == 1
    f = out.body["files"][0]
    assert (f["stored"], f["duplicates"], f["quarantined"]) == (N, N // 8, 1)
    assert stored(tmp_path / "ws") == sorted(good_ids(range(N)))  # no unit stored twice
    (q,) = quarantine(tmp_path / "ws")
    assert (q["row"], q["field"], q["reason"]) == (len(lines), "value", "conflicts with line 5")
    with Workspace.open(tmp_path / "ws") as w:
        assert w.scalar("SELECT value FROM measurements WHERE unit_id = 'SN00003'") == pytest.approx(3.303)


def test_units_repeated_in_one_file_and_across_files_are_stored_once(tmp_path: Path) -> None:
    head = "unit_id,product,line,t_start,t_end,result"
    units = [f"U{i:04d},P,L1,2026-01-05 06:00:00,2026-01-05 07:00:00,pass" for i in range(1000)]
    first = write(tmp_path / "units_1.csv", [head, *units, *units[:50]])
    second = write(tmp_path / "units_2.csv", [head, *units[500:], "U0001,OTHER,L1,2026-01-05 06:00:00,,"])
    a = ingest(tmp_path / "ws", first)
    assert (a.code, a.body["stored"], a.body["files"][0]["duplicates"]) == (0, 1000, 50)
    b = ingest(tmp_path / "ws", second)
    f = b.body["files"][0]
    assert (b.code, f["stored"], f["duplicates"], f["quarantined"]) == (1, 0, 500, 1)
    assert "conflicts with the stored record" in quarantine(tmp_path / "ws")[0]["reason"]
    assert len(stored(tmp_path / "ws", "units")) == 1000


# -- values --------------------------------------------------------------------------------------
def test_time_zones_text_values_and_impossible_values(tmp_path: Path) -> None:
    head = "unit_id,station,machine,operator,t_in,t_out,result,defect_code"
    rows = [head,
            "A1,S1,M1,NA,2026-01-05 06:00:00+05:00,2026-01-05T06:30:00Z,pass,null",  # 2
            "A2,S1,M1,N/A,2026-01-05 06:00:00 America/New_York,,fail,N/A",  # 3
            "A3,S1,M1,,2026-01-05 06:00:00,,pass,",  # 4: empty fields are missing values
            "A4,S1,M1,op,294247-01-01 00:00:00,,pass,",  # 5: out of range
            "A5,S1,M1,op,1850-01-01 00:00:00,,pass,",  # 6: out of range
            "A6,S1,M1,op,2026-01-05 07:00:00,2026-01-05 06:00:00,pass,",  # 7: t_out before t_in
            "   ,S1,M1,op,2026-01-05 07:00:00,,pass,",  # 8: whitespace-only id
            "A8,S1,M1,op,2026-01-05 07:00:00,,maybe,"]  # 9: not a result
    out = ingest(tmp_path / "ws", write(tmp_path / "steps_values.csv", rows))
    assert out.code == 1
    assert_lines(tmp_path / "ws", {5: "t_in", 6: "t_in", 7: "t_out", 8: "unit_id", 9: "result"})
    with Workspace.open(tmp_path / "ws") as w:
        got = {r["unit_id"]: r for r in w.query("SELECT * FROM steps").to_pylist()}
    assert set(got) == {"A1", "A2", "A3"}
    assert str(got["A1"]["t_in"]) == "2026-01-05 01:00:00" and str(got["A1"]["t_out"]) == "2026-01-05 06:30:00"
    assert str(got["A2"]["t_in"]) == "2026-01-05 11:00:00"
    assert (got["A1"]["operator"], got["A1"]["defect_code"], got["A2"]["operator"]) == ("NA", "null", "N/A")
    assert got["A3"]["operator"] is None and got["A3"]["defect_code"] is None

    values = [HEADER, "B1,T,v,inf,2026-01-05 06:00:00", "B2,T,v,NaN,2026-01-05 06:00:00",
              "B3,T,v,-Infinity,2026-01-05 06:00:00", "B4,T,v,1e400,2026-01-05 06:00:00",
              "B5,T,v,NA,2026-01-05 06:00:00", "B6,T,v, 2.5 ,2026-01-05 06:00:00"]
    assert ingest(tmp_path / "ws", write(tmp_path / "measurements_values.csv", values)).code == 1
    assert stored(tmp_path / "ws") == ["B6"]
    reasons = {q["row"]: q["reason"] for q in quarantine(tmp_path / "ws") if "measurements" in q["source"]}
    assert "not a finite number" in reasons[2] and "cannot read as a number (got 'NA')" in reasons[6]


def test_a_time_whose_zone_cannot_be_honoured_is_quarantined_never_stored_shifted(tmp_path: Path) -> None:
    """A zone abbreviation, an offset past 14 hours or with seconds, an AM/PM mark, a special word: the
    time cannot be read as written, so its row is quarantined (stored, it would sit hours off)."""
    refused = ["2026-01-05 06:00:00 EST", "2026-01-05 06:00:00+05:00:30", "2026-01-05 06:00:00+25:00",
               "2026-01-05 06:00:00+99", "2026-01-05 6:00 PM", "epoch", "2026-01-05 06:00:00 +05:00 x"]
    read = {"2026-01-05 06:00:00+14:00": "2026-01-04 16:00:00", "2026-01-05 06:00:00-12:00": "2026-01-05 18:00:00",
            "2026-01-05T06:00:00+0530": "2026-01-05 00:30:00", "2026-01-05T06:00:00.5Z": "2026-01-05 06:00:00.5",
            "2026-01-05 06:00:00 Asia/Tokyo": "2026-01-04 21:00:00", "2026-01-05": "2026-01-05 00:00:00",
            " 2026-1-5 6:00 ": "2026-01-05 06:00:00", "2026-01-05 06:00:00 UTC": "2026-01-05 06:00:00"}
    times = [*refused, *read]
    lines = [HEADER, *(f"Z{i},T,v,1,{t}" for i, t in enumerate(times))]
    out = ingest(tmp_path / "ws", write(tmp_path / "measurements_zones.csv", lines))
    assert out.code == 1
    assert_lines(tmp_path / "ws", {i + 2: "t" for i in range(len(refused))})
    with Workspace.open(tmp_path / "ws") as w:
        got = dict(w.query("SELECT unit_id, CAST(t AS VARCHAR) FROM measurements").to_pylist()[i].values()
                   for i in range(len(read)))
    assert got == {f"Z{i + len(refused)}": want for i, want in enumerate(read.values())}
    # Through a profile source with a zone of its own, the same times are refused.
    profile = tmp_path / "profile.yaml"
    profile.write_text("sources:\n  - {name: tester, table: measurements, files: ['tester_*'], "
                       "timezone: Europe/Berlin}\n")
    mapped = ingest(tmp_path / "ws2", write(tmp_path / "tester_1.csv", lines[:len(refused) + 1]), "--profile", profile)
    assert mapped.code == 1 and mapped.body["stored"] == 0 and mapped.body["quarantined"] == len(refused)


def test_a_spec_whose_limits_cross_or_whose_target_lies_outside_them_is_quarantined(tmp_path: Path) -> None:
    """Stored, a spec with its lower limit above its upper one would put every unit out of spec."""
    rows = ["product,station,name,lsl,usl,target,unit", "P,S,crossed,5,1,,V", "P,S,target_out,1,5,9,V",
            "P,S,target_low,1,5,0.5,V", "P,S,fine,1,5,3,V", "P,S,one_sided,,5,0,V", "P,S,bare,,,,V"]
    out = ingest(tmp_path / "ws", write(tmp_path / "specs_limits.csv", rows))
    assert out.code == 1
    assert_lines(tmp_path / "ws", {2: "usl", 3: "target", 4: "target"})
    assert stored(tmp_path / "ws", "specs", "name") == ["bare", "fine", "one_sided"]


def test_the_profile_zone_converts_local_times(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text("sources:\n  - {name: mes, table: steps, files: ['mes_*'], timezone: America/New_York}\n")
    path = write(tmp_path / "mes_1.csv", ["unit_id,station,t_in,result", "C1,S1,2026-07-01 08:00:00,pass",
                                          "C2,S1,2026-07-01 08:00:00+00:00,pass"])
    assert ingest(tmp_path / "ws", path, "--profile", profile).code == 0
    with Workspace.open(tmp_path / "ws") as w:
        got = dict(w.query("SELECT unit_id, CAST(t_in AS VARCHAR) FROM steps").to_pylist()[i].values()
                   for i in range(2))
    assert got == {"C1": "2026-07-01 12:00:00", "C2": "2026-07-01 08:00:00"}
    # A Parquet column with its own zone keeps its instants: the source's zone is for times without one.
    zoned = pa.table({"unit_id": ["C3"], "station": ["S1"], "result": ["pass"],
                      "t_in": pa.array([int(np.datetime64("2026-07-01T08:00:00", "us").astype(np.int64))],
                                       pa.timestamp("us", tz="Asia/Tokyo"))})
    pq.write_table(zoned, tmp_path / "mes_2.parquet")
    assert ingest(tmp_path / "ws", tmp_path / "mes_2.parquet", "--profile", profile).code == 0
    with Workspace.open(tmp_path / "ws") as w:
        assert str(w.scalar("SELECT t_in FROM steps WHERE unit_id = 'C3'")) == "2026-07-01 08:00:00"


def test_parquet_goes_through_the_same_checks(tmp_path: Path) -> None:
    n = 50
    t = pa.array(np.datetime64("2026-01-05T06:00:00", "ns") + np.arange(n) * np.timedelta64(1_000_001_001, "ns"),
                 pa.timestamp("ns"))
    ids = [f"P{i:03d}" for i in range(n)]
    ids[3], ids[4] = "  ", ""  # whitespace-only and empty ids
    value = np.linspace(1, 2, n)
    value[7] = np.inf
    table = pa.table({"unit_id": ids, "station": ["T"] * n, "name": ["v"] * n, "value": value, "t": t})
    path = tmp_path / "measurements_ns.parquet"
    pq.write_table(table, path)
    out = ingest(tmp_path / "ws", path)
    assert out.code == 1
    assert_lines(tmp_path / "ws", {4: "unit_id", 5: "unit_id", 8: "value"})
    assert len(stored(tmp_path / "ws")) == n - 3
    with Workspace.open(tmp_path / "ws") as w:  # nanoseconds kept to the microsecond the store holds
        assert str(w.scalar("SELECT max(t) FROM measurements")) == "2026-01-05 06:00:49.000049"

    zoned = pa.table({"unit_id": ["Z1"], "station": ["T"], "name": ["v"], "value": [1.0],
                      "t": pa.array([int(np.datetime64("2026-01-05T06:00:00", "us").astype(np.int64))],
                                    pa.timestamp("us", tz="Asia/Karachi"))})
    pq.write_table(zoned, tmp_path / "measurements_zoned.parquet")
    assert ingest(tmp_path / "ws", tmp_path / "measurements_zoned.parquet").code == 0
    with Workspace.open(tmp_path / "ws") as w:
        assert str(w.scalar("SELECT t FROM measurements WHERE unit_id = 'Z1'")) == "2026-01-05 06:00:00"

    undecodable = pa.table({"unit_id": pa.array([b"Q1", b"Q\xff2", b"Q3"], pa.binary()).cast(pa.string(), safe=False),
                            "station": ["T"] * 3, "name": ["v"] * 3, "value": [1.0, 2.0, 3.0],
                            "t": pa.array([0, 1, 2], pa.timestamp("s")).cast(pa.timestamp("us"))})
    pq.write_table(undecodable, tmp_path / "measurements_bytes.parquet")
    out = ingest(tmp_path / "ws2", tmp_path / "measurements_bytes.parquet")
    assert out.code == 1 and stored(tmp_path / "ws2") == ["Q1", "Q3"]
    assert_lines(tmp_path / "ws2", {2: "unit_id"})


# -- late data and resolution ---------------------------------------------------------------------
def test_rows_awaiting_their_unit_are_kept_and_a_corrected_file_resolves_the_quarantine(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    meas = [HEADER, good_line(0), good_line(1).replace("TEST,vout_v,3.3010", "TEST,vout_v,oops"), good_line(2)]
    first = ingest(ws, write(tmp_path / "measurements_day1.csv", meas))
    assert first.code == 1 and first.body["awaiting_unit"] == 2  # no units yet: kept, counted
    units = write(tmp_path / "units_day1.csv", ["unit_id,product,line,t_start",
                                                *(f"SN{i:05d},P,L1,2026-01-05 05:00:00" for i in range(3))])
    assert ingest(ws, units).code == 0
    body = listing(["quarantine", "--awaiting", "--json", "-w", str(ws)])
    assert (body["open"], body["resolved"], body["awaiting_unit"]) == (1, 0, 0)
    assert body["rows"][0]["row"] == 3 and body["rows"][0]["field"] == "value"

    meas[2] = good_line(1)  # the corrected export
    fixed = ingest(ws, write(tmp_path / "measurements_day1_fixed.csv", meas))
    assert fixed.code == 0 and fixed.body["resolved"] == 1
    body = listing(["quarantine", "--json", "--state", "all", "-w", str(ws)])
    assert (body["open"], body["resolved"]) == (0, 1) and body["rows"][0]["resolved"] is True
    assert stored(ws) == sorted(good_ids(range(3)))


def test_the_same_holds_on_a_postgresql_workspace(tmp_path: Path) -> None:
    """Repeats, conflicts, bad values and their resolution through the PostgreSQL store."""
    from postgres_service import fresh_schema

    with fresh_schema(tmp_path / "files") as (url, _):
        meas = [HEADER, good_line(0), good_line(1).replace("3.3010", "oops"), good_line(2), good_line(0),
                good_line(2).replace("3.3020", "7.0")]
        first = ingest(url, write(tmp_path / "measurements_a.csv", meas))
        f = first.body["files"][0]
        assert (first.code, f["stored"], f["duplicates"], f["quarantined"]) == (1, 2, 1, 2)
        meas[2] = good_line(1)
        second = ingest(url, write(tmp_path / "measurements_b.csv", meas[:4]))
        assert (second.code, second.body["stored"], second.body["resolved"]) == (0, 1, 2)
        with Workspace.open(url) as w:
            entries = w.query('SELECT "row", field, reason, resolved_batch IS NOT NULL AS resolved FROM quarantine '
                              'ORDER BY "row"').to_pylist()
            assert w.count("measurements") == 3
    assert entries == [{"row": 3, "field": "value", "reason": "cannot read as a number (got 'oops')", "resolved": True},
                       {"row": 6, "field": "value", "reason": "conflicts with line 4", "resolved": True}]


def test_typed_batches_with_repeated_keys_are_stored_once(tmp_path: Path) -> None:
    """Adapters hand over typed batches; a repeat in one is found even on the fast path for new records."""
    n = 100
    t = pa.array(np.datetime64("2026-01-05T06:00:00", "us") + np.arange(n) * np.timedelta64(1, "s"))
    batch = pa.table({"unit_id": [f"T{i:03d}" for i in range(n)], "station": ["S"] * n, "name": ["v"] * n,
                      "value": np.arange(n, dtype=float), "t": t})
    again = batch.slice(10, 5)
    changed = batch.slice(20, 1).set_column(3, "value", pa.array([-1.0]))
    with Workspace.open(tmp_path / "ws") as w:
        rep = w.ingest_tables({"measurements": pa.concat_tables([batch, again, changed])}, source="adapter")
        t_rep = rep.tables[0]
        assert (t_rep.stored, t_rep.duplicates, t_rep.quarantined) == (n, 5, 1)
        assert rep.quarantine[0]["reason"] == "conflicts with line 21" and rep.quarantine[0]["row"] == n + 6
        assert w.count("measurements") == n
        assert w.scalar("SELECT value FROM measurements WHERE unit_id = 'T020'") == 20.0


def nul_lines() -> list[str]:
    """Good rows around text with a NUL character: in a text field, in a number, and on a ragged line."""
    return [HEADER, good_line(0), good_line(1).replace("TEST", "TE\x00ST"), good_line(2),
            good_line(3).replace("3.3030", "3.3\x00"), good_line(4), good_line(5) + ",\x00", good_line(6)]


def test_a_nul_character_quarantines_its_row_only(tmp_path: Path) -> None:
    out = ingest(tmp_path / "ws", write(tmp_path / "measurements_nul.csv", nul_lines()))
    assert out.code == 1 and out.body["stored"] == 4
    assert_lines(tmp_path / "ws", {3: "station", 5: "value", 7: "(line)"})
    assert stored(tmp_path / "ws") == sorted(good_ids([0, 2, 4, 6]))
    assert "NUL" in quarantine(tmp_path / "ws")[0]["reason"]


def test_a_nul_character_neither_crashes_nor_blocks_a_postgresql_workspace(tmp_path: Path) -> None:
    """PostgreSQL text cannot hold a NUL character: the row is quarantined, its neighbours stored."""
    from postgres_service import fresh_schema

    with fresh_schema(tmp_path / "files") as (url, _):
        out = ingest(url, write(tmp_path / "measurements_nul.csv", nul_lines()))
        assert out.code == 1 and out.body["stored"] == 4
        with Workspace.open(url) as w:
            assert {r["row"]: r["field"] for r in w.query('SELECT "row", field FROM quarantine').to_pylist()} == \
                {3: "station", 5: "value", 7: "(line)"}
            assert w.count("measurements") == 4
            # A typed batch from an adapter goes the same way.
            t = pa.array([np.datetime64("2026-01-06T06:00:00", "us")] * 2)
            rep = w.ingest_tables({"measurements": pa.table({
                "unit_id": ["A\x001", "A2"], "station": ["S", "S"], "name": ["v", "v"], "value": [1.0, 2.0],
                "t": t})}, source="adapter")
            assert (rep.stored, rep.quarantined) == (1, 1) and w.count("measurements") == 5


def test_spaces_around_text_are_not_part_of_it(tmp_path: Path) -> None:
    """`SN1, TEST` (a space after each comma) is the unit SN1 at station TEST: stored once, found by its name."""
    lines = [HEADER, "SN1, TEST, vout_v, 3.3, 2026-01-05 06:00:00", "SN1 ,TEST,vout_v,3.3,2026-01-05 06:00:00",
             "SN2,TEST ,two  words,3.3,2026-01-05 06:00:00", "\tSN3\t,TEST,v,3.3,2026-01-05 06:00:00"]
    out = ingest(tmp_path / "ws", write(tmp_path / "measurements_spaced.csv", lines))
    assert out.code == 0 and (out.body["stored"], out.body["files"][0]["duplicates"]) == (3, 1)
    with Workspace.open(tmp_path / "ws") as w:
        assert w.query("SELECT unit_id, station, name FROM measurements ORDER BY unit_id").to_pylist() == [
            {"unit_id": "SN1", "station": "TEST", "name": "vout_v"},
            {"unit_id": "SN2", "station": "TEST", "name": "two  words"},
            {"unit_id": "SN3", "station": "TEST", "name": "v"}]
        # A typed batch from an adapter, on the path that stores new records in one statement.
        t = pa.array([np.datetime64("2026-01-06T06:00:00", "us")] * 3)
        rep = w.ingest_tables({"measurements": pa.table({
            "unit_id": ["T1", "T1 ", " T1"], "station": ["S"] * 3, "name": ["v"] * 3, "value": [1.0] * 3, "t": t})},
            source="adapter")
        assert (rep.stored, rep.tables[0].duplicates) == (1, 2) and w.count("measurements", "unit_id = 'T1'") == 1
