"""`linelab profile init`: a first profile drafted from export files or an ingested workspace.

For each export: its delimiter, decimal mark and encoding sniffed, the LineLab table it holds and
its column map guessed from common MES names (`serial` -> `unit_id`, `start_ts` -> `t_start`),
result spellings mapped (`PASS`/`OK`/`NG`), timestamps looked at (offsets, formats), what is
missing derived from the steps. Then the line: stations in process order (median time after a
unit's first step), products, each reading's role from how it varies (per unit, per lot, per
time), specs. Every guess is listed, and so is what a person should check.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from linelab.errors import UserError
from linelab.profile.facts import ENVIRONMENT, LineFacts, ReadingFacts, file_facts
from linelab.profile.schema import LineInfo, Profile, Reading, ReadingRole, Source, Spec, Station, Wide
from linelab.profile.sources import PARQUET, read_text
from linelab.store.backend import sql_text
from linelab.store.schema import RECORD_TABLES
from linelab.store.validate import timestamp_sql

SUFFIXES = {".csv", ".txt", ".parquet", ".pq"}

# Names exports use for LineLab's columns (compared lower-case, letters and digits only), most likely first.
SYNONYMS: dict[str, list[str]] = {k: v.split() for k, v in {
    "unit_id": ("serial seriennummer serialnr serialno serialnumber sn barcode boardid board unit uid psn panelid "
                "pcbid dmc datamatrix partserial containerid container gebinde id"),
    "product": "produkt artikel sku productid productcode productname partnumber pn partno model article variant type",
    "line": "linie lineid linename productionline cell",
    "work_order": "workorder wo order orderno ordernumber job auftrag lotorder batchorder fertigungsauftrag",
    "t_start": "startts starttime start started begin tstart startdate created intime zeitstart startzeit",
    "t_end": "endts endtime end finished completed tend stop enddate outtime zeitende endzeit",
    "result": "ergebnis status outcome verdict passfail finalresult res judgement judgment okng state",
    "first_pass": "firstpass fpy fp firsttimeright ftr firstpassresult",
    "station": ("arbeitsgang arbeitsplatz operation op process processstep step workstation stationname stationid "
                "opcode routestep unitop unitoperation"),
    "machine": "anlage maschine equipment machineid machinename tool resource asset equipmentid",
    "fixture": "nest jig head slot fixtureid",
    "operator": "werker bediener mitarbeiter user employee badge operatorid worker username",
    "shift": "schicht shiftname shiftid team",
    "recipe_id": "programm rezept recipe program programname recipeid recipename",
    "t_in": "beginn tin intime timein startts start starttime begin arrival zeitstart startzeit timestamp ts",
    "t_out": "ende tout outtime timeout endts end endtime finish finished departure zeitende endzeit",
    "defect_code": "fehlercode fehler defect defectcode failcode failurecode errorcode error symptom failure",
    "name": ("merkmal pruefmerkmal messgroesse parameter param parametername measurement characteristic testname test "
             "feature tag variable signal sensor"),
    "value": "wert messwert istwert val reading measured measuredvalue actual actualvalue resultvalue result",
    "t": "zeit zeitstempel timestamp ts time datetime date measuredat recorded recordedat logtime",
    "material": "bauteil komponente rohstoff component materialid materialnumber componentid partnumber pn item",
    "lot": "charge chargennr lotid lotno lotnumber batch batchno batchid reel reelid",
    "supplier": "lieferant hersteller vendor manufacturer mfr supplierid",
    "kind": "eventtype type event ereignis category",
    "target": "object objekt entity",
    "detail": "details message note comment description text info",
    "lsl": "lowlimit lowerlimit lowerspec min minlimit ll lo low ugw untergrenze",
    "usl": "highlimit upperlimit upperspec max maxlimit ul hi high ogw obergrenze",
    "unit": "uom units engineeringunit einheit",
}.items()}
SPEC_SYNONYMS = {"target": ["nominal", "target", "setpoint", "sollwert"]}
# Table a file name suggests (its lower-case name contains the word).
NAME_HINTS = [("unit", "units"), ("board", "units"), ("step", "steps"), ("route", "steps"), ("history", "steps"),
              ("meas", "measurements"), ("test", "measurements"),
              ("param", "params"), ("setting", "params"), ("material", "materials"), ("component", "materials"),
              ("signal", "signals"), ("sensor", "signals"), ("event", "events"), ("spec", "specs"),
              ("limit", "specs")]
# Result spellings: normalised (lower case, letters only) -> LineLab value.
SPELLINGS = {
    "pass": "pass", "passed": "pass", "ok": "pass", "good": "pass", "p": "pass", "io": "pass", "gut": "pass",
    "accept": "pass", "accepted": "pass", "fail": "fail", "failed": "fail", "ng": "fail", "nok": "fail",
    "bad": "fail", "f": "fail", "nio": "fail", "reject": "fail", "rejected": "fail", "error": "fail",
    "rework": "rework", "rw": "rework", "repair": "rework", "repaired": "rework", "scrap": "scrap",
    "scrapped": "scrap",
}
TRUTH = {"true": "true", "t": "true", "yes": "true", "y": "true", "1": "true", "pass": "true", "ok": "true",
         "ja": "true", "j": "true", "false": "false", "f": "false", "no": "false", "n": "false", "0": "false",
         "fail": "false", "nok": "false", "ng": "false", "nein": "false"}
TIME_FORMATS = ["%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M:%S",
                "%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M", "%Y/%m/%d %H:%M:%S", "%Y%m%d%H%M%S", "%d-%m-%Y %H:%M:%S"]
_OFFSET = re.compile(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|z|UTC|[+-]\d{2}(:?\d{2})?)$")
_COMMA_NUMBER = re.compile(r"^[+-]?\d+,\d+$")
_DOT_NUMBER = re.compile(r"^[+-]?\d+\.\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?$")


def norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass
class Draft:
    profile: Profile
    guesses: list[str] = field(default_factory=list)  # what was inferred, in plain words
    checks: list[str] = field(default_factory=list)  # what a person should look at
    facts: LineFacts | None = None


def expand(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in SUFFIXES))
        elif p.exists():
            out.append(p)
        else:
            raise UserError(f"{p}: no such file")
    return out


# -- one export file ----------------------------------------------------------------------------
@dataclass
class Sniffed:
    delimiter: str = ","
    decimal: str = "."
    encoding: str = "utf-8"
    columns: list[str] = field(default_factory=list)


def sniff(path: Path) -> Sniffed:
    """Delimiter, decimal mark and encoding of a CSV file, from its first 64 KiB."""
    if path.suffix.lower() in PARQUET:
        import pyarrow.parquet as pq

        return Sniffed(columns=pq.read_schema(path).names)
    raw = path.read_bytes()[: 1 << 16]
    for encoding in ("utf-8", "cp1252", "latin-1"):
        try:
            text = raw.decode("utf-8-sig" if encoding == "utf-8" else encoding)
            break
        except UnicodeDecodeError:
            continue
    lines = text.splitlines()[:50]
    if len(raw) == 1 << 16 and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut
    best, best_cols = ",", 0
    for d in (";", ",", "\t", "|"):
        rows = list(csv.reader(lines, delimiter=d))
        widths = {len(r) for r in rows if r}
        if len(widths) == 1 and (w := widths.pop()) > best_cols:
            best, best_cols = d, w
    rows = list(csv.reader(lines, delimiter=best))
    cells = [c.strip() for r in rows[1:] for c in r]
    decimal = "."
    if best != "," and any(_COMMA_NUMBER.match(c) for c in cells) and not any(_DOT_NUMBER.match(c) for c in cells):
        decimal = ","
    return Sniffed(best, decimal, encoding, rows[0] if rows else [])


def guess_columns(table: str, columns: list[str]) -> dict[str, str]:
    """LineLab column -> export column, for the columns of `table` this export seems to have."""
    by_norm: dict[str, str] = {}
    for c in columns:
        by_norm.setdefault(norm(c), c)
    used: set[str] = set()
    out: dict[str, str] = {}
    for f in RECORD_TABLES[table]:
        names = [f.name, *SYNONYMS.get(f.name, [])]
        if table == "specs" and f.name in SPEC_SYNONYMS:
            names = [f.name, *SPEC_SYNONYMS[f.name]]
        for n in names:
            col = by_norm.get(norm(n))
            if col is not None and col not in used:
                out[f.name] = col
                used.add(col)
                break
        if f.name in ("t", "t_in", "t_start") and f.name not in out:
            # A time column under a name of its own (meas_time, DateTimeTested...).
            col = next((c for c in columns if c not in used and re.search(r"time|date|ts$|stamp", norm(c))), None)
            if col is not None:
                out[f.name] = col
                used.add(col)
    return out


def _score(table: str, mapped: dict[str, str]) -> float:
    required = [f.name for f in RECORD_TABLES[table] if not f.nullable]
    return 10 * sum(r in mapped for r in required) / len(required) + len(mapped) / len(RECORD_TABLES[table])


def _numeric(values: list[str], decimal: str) -> bool:
    vals = [v.strip() for v in values if v and v.strip()]
    return bool(vals) and all(_NUMBER.match(v) for v in vals)


def pattern_of(name: str) -> str:
    """A file-name glob for exports like this one: runs of digits (dates, counters) become '*'."""
    p = re.sub(r"\d+", "*", name)
    return re.sub(r"\*([-_.:T ]?\*)+", "*", p)


def draft_source(path: Path, draft: Draft, cache: dict[Path, pa.Table] | None = None) -> Source:
    s = sniff(path)
    columns = s.columns
    if not columns:
        raise UserError(f"{path}: empty file")
    probe = Source(name="probe", table="units", delimiter=s.delimiter, decimal=s.decimal, encoding=s.encoding)
    data = read_text(path, probe)
    if cache is not None:
        cache[path] = data
    sample = data.slice(0, 500)

    def values(col: str) -> list[str]:
        return [v for v in sample.column(col).cast(pa.string()).to_pylist() if v is not None]

    lower = path.name.lower()
    hinted = next((t for word, t in NAME_HINTS if word in lower), None)
    hinted = next((t for t in sorted(RECORD_TABLES, key=len, reverse=True) if lower.startswith(t)), hinted)
    maps = {t: guess_columns(t, columns) for t in RECORD_TABLES}
    table = hinted or max(RECORD_TABLES, key=lambda t: _score(t, maps[t]))
    mapped = maps[table]
    wide = None
    if table in ("measurements", "params") and "name" in mapped and "value" not in mapped:
        # Long form with its value column under a name of its own: the one numeric column left.
        numeric = [c for c in columns if c not in mapped.values() and _numeric(values(c), s.decimal)]
        if len(numeric) == 1:
            mapped["value"] = numeric[0]
    if table in ("measurements", "params") and not {"name", "value"} <= set(mapped):
        mapped = {k: v for k, v in mapped.items() if k in ("unit_id", "station", "t")}
        ids = list(mapped.values())
        vals = [c for c in columns if c not in ids and _numeric(values(c), s.decimal)]
        wide = Wide(id_columns=ids, value_columns=[])
        ignored = [c for c in columns if c not in ids and c not in vals]
        if ignored:
            wide.value_columns = vals
        draft.guesses.append(f"{path.name}: wide {table} export, {len(vals)} reading column(s) "
                             f"({', '.join(vals[:6])}{'…' if len(vals) > 6 else ''})")
        if "station" not in mapped:
            wide.station = "STATION"
            draft.checks.append(f"{path.name}: no station column; set wide.station to the station these readings "
                                "come from (drafted as STATION)")
    source = Source(name=table, table=table, files=[pattern_of(path.name)],
                    columns={k: v for k, v in mapped.items() if k != v},
                    delimiter=s.delimiter, decimal=s.decimal, encoding=s.encoding, wide=wide)
    how = ", ".join(f"{v} -> {k}" for k, v in mapped.items() if k != v) or "LineLab's own names"
    draft.guesses.append(f"{path.name}: {table} ({how}); delimiter {s.delimiter!r}, decimal mark {s.decimal!r}, "
                         f"encoding {s.encoding}")
    unmapped = [c for c in columns if c not in mapped.values() and not (wide and c in _wide_values(wide, columns))]
    if unmapped:
        draft.checks.append(f"{path.name}: column(s) not used: {', '.join(unmapped)} — map them in `columns` "
                            "if they are LineLab fields under another name")

    # Values: result spellings, first-pass truth values.
    for ll in ("result", "first_pass"):
        col = mapped.get(ll)
        if col is None:
            continue
        distinct = sorted({v.strip() for v in pc.unique(data.column(col).drop_null()).to_pylist()[:200]} - {""})
        table_map = SPELLINGS if ll == "result" else TRUTH
        vmap, unknown = {}, []
        for v in distinct:
            to = table_map.get(re.sub(r"[^a-z0-9]", "", v.lower()) if ll == "result" else v.lower())
            if to is None:
                unknown.append(v)
            elif to != v:
                vmap[v] = to
        if vmap:
            source.values[ll] = vmap
            draft.guesses.append(f"{path.name}: {col} values " + ", ".join(f"{k} -> {v}" for k, v in vmap.items()))
        if unknown:
            draft.checks.append(f"{path.name}: {col} has value(s) {', '.join(unknown[:10])} that were not "
                                f"recognised; map them under values.{ll}")

    # Timestamps: offsets or a zone to set; formats that are not ISO 8601.
    ts_cols = [mapped[f.name] for f in RECORD_TABLES[table] if pa.types.is_timestamp(f.type) and f.name in mapped]
    no_offset = []
    for col in ts_cols:
        vals = [v.strip() for v in values(col) if v.strip()][:200]
        if not vals:
            continue
        if not _parses(vals):
            fmt = next((f for f in TIME_FORMATS if _parses(vals, f)), None)
            if fmt:
                source.timestamp_format = fmt
                draft.guesses.append(f"{path.name}: {col} timestamps read with the format {fmt}")
            else:
                draft.checks.append(f"{path.name}: {col} does not look like timestamps (e.g. {vals[0]!r}); "
                                    "set timestamp_format")
        if not all(_OFFSET.search(v) for v in vals):
            no_offset.append(col)
        else:
            draft.guesses.append(f"{path.name}: {col} timestamps carry a UTC offset (converted to UTC)")
    if no_offset:
        draft.checks.append(f"{path.name}: timestamps in {', '.join(no_offset)} carry no UTC offset; they are read "
                            "as UTC unless you set `timezone` (e.g. Europe/Berlin)")

    # What the units export lacks.
    if table == "units":
        for ll, d in (("first_pass", "first_pass_from_steps"), ("result", "result_from_steps"),
                      ("t_end", "t_end_from_steps"), ("t_start", "t_start_from_steps")):
            if ll not in mapped:
                source.derive.append(d)
                draft.guesses.append(f"{path.name}: no {ll} column: derived from the units' steps ({d})")
        for ll, const in (("line", "L1"), ("product", "PRODUCT")):
            if ll not in mapped:
                source.constants[ll] = const
                draft.checks.append(f"{path.name}: no {ll} column; every unit gets {ll} {const!r} "
                                    f"(constants.{ll}) — set the right one")
    if table in ("measurements", "params", "materials", "steps") and "station" not in mapped and wide is None:
        source.constants["station"] = "STATION"
        draft.checks.append(f"{path.name}: no station column; set constants.station (drafted as STATION)")
    return source


def _wide_values(wide: Wide, columns: list[str]) -> list[str]:
    from fnmatch import fnmatch

    return [c for c in columns if c not in wide.id_columns
            and (not wide.value_columns or any(fnmatch(c, p) for p in wide.value_columns))]


def _parses(vals: list[str], fmt: str | None = None) -> bool:
    """Every value reads as a timestamp, by the rule ingest itself applies (a plain cast would take
    `06:00 PM` as 06:00 and drop `EST`: the draft would promise what ingest then quarantines)."""
    con = duckdb.connect()
    try:
        con.register("v", pa.table({"x": vals}))
        cast = f"try_strptime(x, {sql_text(fmt)})" if fmt else timestamp_sql("x")
        bad = con.sql(f"SELECT count(*) FROM v WHERE {cast} IS NULL").fetchall()[0]
    finally:
        con.close()
    return bool(bad) and bad[0] == 0


# -- the line -----------------------------------------------------------------------------------
def role_of(r: ReadingFacts) -> tuple[ReadingRole, str]:
    """A reading's likely role, and why."""
    if ENVIRONMENT.search(r.name):
        return "environment", "its name says it is of the room"
    if r.table == "signals":
        return "environment", "a sensor series (signals)"
    if r.table == "measurements":
        return "measurement", f"measured on the product, varies {r.varies}"
    if r.varies in ("constant", "per time"):
        return "setting", f"a parameter that changes only now and then ({r.changes} change(s) in {r.n:,})"
    return "condition", f"a parameter that varies {r.varies}: a process state, not a set-point"


def draft_line(facts: LineFacts, draft: Draft, name: str = "line") -> LineInfo:
    line = LineInfo(name=name)
    if facts.stations:
        line.stations = [Station(name=s["station"], machines=[m for m in s["machines"] if m]) for s in facts.stations]
        order = " -> ".join(s.name for s in line.stations)
        draft.guesses.append(f"stations in process order (median time after a unit's first step): {order}")
        draft.checks.append("check the station order; stations visited in parallel or only for rework may sort oddly")
    else:
        draft.checks.append("no steps found: list the stations in process order under line.stations")
    line.products = facts.products
    if facts.products:
        draft.guesses.append(f"products: {', '.join(facts.products[:10])}{'…' if len(facts.products) > 10 else ''}")
    names_at: dict[str, set[str | None]] = {}
    for r in facts.readings:
        names_at.setdefault(r.name, set()).add(r.station)
    roles: dict[ReadingRole, list[str]] = {}
    for r in facts.readings:
        role, why = role_of(r)
        station = r.station if len(names_at[r.name]) > 1 else None
        line.readings.append(Reading(name=r.name, station=station, role=role, description=f"drafted: {why}"))
        roles.setdefault(role, []).append(r.name)
    for role, names in roles.items():
        draft.guesses.append(f"{role}: {', '.join(names[:8])}{'…' if len(names) > 8 else ''}")
    if facts.readings:
        draft.checks.append("check each reading's role: setting (a recipe set-point), condition (a process state), "
                            "measurement (of the product), environment (of the room)")
    line.specs = [Spec(**{k: v for k, v in s.items() if k in Spec.model_fields}) for s in facts.specs]
    if line.specs:
        draft.guesses.append(f"{len(line.specs)} spec limit(s) from the specs table")
    return line


def draft_from_files(paths: list[Path]) -> Draft:
    files = expand(paths)
    if not files:
        raise UserError("no CSV or Parquet files found in " + ", ".join(map(str, paths)))
    draft = Draft(Profile())
    sources: dict[tuple[str, str], Source] = {}
    read: list[tuple[Path, Source]] = []
    cache: dict[Path, pa.Table] = {}
    for path in files:
        source = draft_source(path, draft, cache)
        key = (source.table, source.files[0])
        if key in sources:
            read.append((path, sources[key]))
            continue
        names = {s.name for s in sources.values()}
        if source.name in names:
            source.name = next(f"{source.name}_{i}" for i in range(2, 1000) if f"{source.name}_{i}" not in names)
        sources[key] = source
        read.append((path, source))
    facts = file_facts(read, cache)
    draft.facts = facts
    draft.profile = Profile(sources=list(sources.values()), line=draft_line(facts, draft))
    if "steps" not in facts.tables and any(s.derive for s in sources.values()):
        draft.checks.append("units are derived from steps, but no steps export was found")
    return draft


def draft_from_facts(facts: LineFacts) -> Draft:
    draft = Draft(Profile(), facts=facts)
    if not any(facts.tables.values()):
        raise UserError("the workspace holds no data; ingest the line's exports or give export files to draft from")
    draft.profile = Profile(line=draft_line(facts, draft))
    draft.checks.append("no sources drafted: the workspace's data is already in LineLab's form; give export files "
                        "to draft their mapping")
    return draft


def summary(draft: Draft) -> dict[str, Any]:
    return {"sources": [s.name for s in draft.profile.sources],
            "stations": draft.profile.line.station_order,
            "readings": len(draft.profile.line.readings)}
