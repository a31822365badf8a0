"""The line's summary, kept at ingest: what the overview shows, read from a few thousand rows.

The overview's numbers (yield by station from each unit's first visit, the yield trend, the defect
Pareto) are counts over the records. Recounting them over every step of a million-unit line takes
seconds; `line_summary` keeps the counts, and every ingest call changes them in its own transaction
by the difference it makes, so a crash mid-ingest leaves records and summary as they were.

Rows of `line_summary` (counts are BIGINT; a row whose count falls to 0 is removed):

- kind 'hour', t = the hour the units started: n units, first_pass of them flagged first-pass,
  passed of them whose result is pass (`queries.overall_yield` and the trend);
- kind 'station', station: n units (with a unit record) visiting it, first_pass of them whose first
  visit there (earliest t_in) passed, passed of them whose result is pass (`yield --by station`);
- kind 'defect', station, defect_code: n steps that did not pass with that code (`pareto`).

How an ingest keeps it exact: every count belongs to one unit, and an ingest call changes only
units it names (its units and steps rows carry their unit_id). So before the call stores its first
units or steps row, the counts of the units it names are taken from the stored records; after
the call stored everything, they are taken again; the difference is added. A re-sent batch, a retest
that arrives before or after the visit it follows, steps whose unit record comes in a later batch,
and a late result that changes a unit all fall out of that, with no special case. Both counts read
only the named units' rows, found by a range of unit_id (stored rows are nearly in unit_id order, so
zone maps skip the rest) and a semi-join. A batch of new units (the usual one: nothing stored in their
range, which one cheap look tells) has nothing to count before, and after it every row in the range
is its own, so the range alone finds them.

What it costs: the counts run over the rows the call brings (the first visits of a batch's units are
one hash aggregate over its steps), then a few summary rows are replaced. On DuckDB, the twin's
batches of 1,000 and 10,000 units spend 5-7 % of their ingest time on it, a single batch of 100,000
units about 11 %, and batches of steps whose units came in an earlier call more (they are counted
before and after); on PostgreSQL the replaced rows also travel to the server (about 12 % of the
ingest of 1,000-unit batches). Reading it costs a few milliseconds whatever the line's size.

The definitions are those of `linelab.store.queries` (`*_from_records`); tests check that the
summary agrees with them on both backends, and migration 4 fills the table for existing workspaces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from linelab.store.workspace import Workspace

TABLE = "line_summary"
# The record tables whose rows the summary counts.
COUNTED = ("units", "steps")
KEY = ("kind", "station", "defect_code", "t")
COUNTS = ("n", "first_pass", "passed")
_UNITS = "_summary_units"  # the unit_ids an ingest call names, registered as an Arrow table

# The counts of the named units (`named` picks their rows) from the stored records.
_COUNTS_SQL = """
WITH s AS MATERIALIZED (SELECT unit_id, station, t_in, result, defect_code FROM steps WHERE {named}),
u AS MATERIALIZED (SELECT unit_id, t_start, first_pass, result FROM units WHERE {named}),
f AS (
    SELECT station, unit_id, arg_min(coalesce(result, ''), coalesce(t_in, 'infinity'::TIMESTAMP)) AS result
    FROM s WHERE station IS NOT NULL GROUP BY station, unit_id
)
SELECT 'station' AS kind, f.station, NULL::VARCHAR AS defect_code, NULL::TIMESTAMP AS t, count(*) AS n,
       count(*) FILTER (WHERE f.result = 'pass') AS first_pass, count(*) FILTER (WHERE u.result = 'pass') AS passed
FROM f JOIN u USING (unit_id) GROUP BY f.station
UNION ALL
SELECT 'defect', station, defect_code, NULL::TIMESTAMP, count(*), 0, 0
FROM s WHERE result <> 'pass' AND defect_code IS NOT NULL GROUP BY station, defect_code
UNION ALL
SELECT 'hour', NULL::VARCHAR, NULL::VARCHAR, date_trunc('hour', t_start), count(*),
       count(*) FILTER (WHERE first_pass), count(*) FILTER (WHERE result = 'pass')
FROM u GROUP BY date_trunc('hour', t_start)
"""
_SAME_KEY = " AND ".join(f"l.{k} IS NOT DISTINCT FROM d.{k}" for k in KEY)


class Keeper:
    """Keeps `line_summary` right through one ingest call: `before()` ahead of its first stored
    units or steps row, `apply()` once everything is stored (both inside the ingest transaction)."""

    def __init__(self, ws: Workspace, tables: dict[str, pa.Table]) -> None:
        self.ws = ws
        self.tables = {n: t for n, t in tables.items() if n in COUNTED and "unit_id" in t.column_names}
        self._columns: list[pa.ChunkedArray] | None = None
        self._units: pa.Table | None = None
        self._before: pa.Table | None = None
        self._fresh = False

    def _ids(self) -> list[pa.ChunkedArray]:
        """The unit_id columns of the call's units and steps, as text (as they are stored)."""
        import pyarrow as pa

        if self._columns is None:
            self._columns = []
            for table in self.tables.values():
                col = table.column("unit_id")
                if pa.types.is_dictionary(col.type):
                    col = col.cast(col.type.value_type)
                try:
                    self._columns.append(col.cast(pa.string()))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    continue  # the batch is refused by its check before anything is stored
        return self._columns

    def _named_units(self) -> pa.Table:
        """The distinct unit_ids the call's units and steps name (blanks are no unit)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._units is None:
            ids = pa.chunked_array([chunk for col in self._ids() for chunk in col.chunks], pa.string())
            self._units = pa.table({"unit_id": pc.unique(ids).drop_null()})
        return self._units

    def _range(self) -> str:
        """SQL: the row's unit_id lies in the range of the named units (zone maps skip the rest)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from linelab.store.backend import sql_literal

        ends = [v.as_py() for col in self._ids() for v in pc.min_max(col).values()]
        lo, hi = pc.min_max(pa.array(ends, pa.string())).values()
        return f"unit_id BETWEEN {sql_literal(lo)} AND {sql_literal(hi)}"

    def _register(self) -> str:
        """Register the named units; returns the SQL condition that picks their rows."""
        self.ws.backend.register(_UNITS, self._named_units())
        return f"{self._range()} AND unit_id IN (SELECT unit_id FROM {_UNITS})"

    def before(self) -> None:
        """Count the named units as stored now (once, before the call stores any of their rows)."""
        if self._before is not None or all(col.null_count == len(col) for col in self._ids()):
            return
        # New units (the usual batch) have no stored rows in their range: one cheap look says so.
        in_range = self._range()
        if not self.ws.rows(f"SELECT EXISTS (SELECT 1 FROM units WHERE {in_range}) "
                            f"OR EXISTS (SELECT 1 FROM steps WHERE {in_range}) AS stored")[0]["stored"]:
            self._before = _empty_counts()
            self._fresh = True  # then every row in the range after the call is one of the call's
            return
        named = self._register()
        try:
            self._before = self.ws.query(_COUNTS_SQL.format(named=named))
        finally:
            self.ws.backend.unregister(_UNITS)

    def apply(self, changed: bool) -> None:
        """Add what the call changed (`changed`: it stored or updated units or steps rows)."""
        if self._before is None or not changed:
            return
        keys = ", ".join(KEY)
        negated = ""
        if self._before.num_rows:
            self.ws.backend.register("_summary_before", self._before)
            negated = (f"UNION ALL SELECT {keys}, {', '.join(f'-{c}' for c in COUNTS)} FROM _summary_before")
        named = self._range() if self._fresh else self._register()
        try:
            # The counts now less the counts before, added to the summary's rows of the same keys.
            merged = self.ws.query(f"""
                WITH d AS MATERIALIZED (
                    SELECT {keys}, {', '.join(f'sum({c}) AS {c}' for c in COUNTS)}
                    FROM ({_COUNTS_SQL.format(named=named)} {negated})
                    GROUP BY ALL HAVING {' OR '.join(f'sum({c}) <> 0' for c in COUNTS)}
                )
                SELECT {keys}, {', '.join(f'CAST(sum({c}) AS BIGINT) AS {c}' for c in COUNTS)}
                FROM (SELECT {keys}, {', '.join(COUNTS)} FROM {TABLE} AS l
                      WHERE EXISTS (SELECT 1 FROM d WHERE {_SAME_KEY})
                      UNION ALL SELECT {keys}, {', '.join(COUNTS)} FROM d)
                GROUP BY ALL""")
        finally:
            if not self._fresh:
                self.ws.backend.unregister(_UNITS)
            if negated:
                self.ws.backend.unregister("_summary_before")
        if merged.num_rows:
            replace(self.ws, merged)


def _empty_counts() -> pa.Table:
    import pyarrow as pa

    return pa.table({"kind": pa.array([], pa.string())})


def replace(ws: Workspace, rows: pa.Table) -> None:
    """Put `rows` (KEY and COUNTS) in the summary in place of its rows of the same keys (a row of
    count 0 only removes)."""
    keys = ", ".join(KEY)
    ws.backend.register("_summary_rows", rows)
    try:
        ws.backend.execute(f"DELETE FROM {TABLE} AS l "
                           f"WHERE EXISTS (SELECT 1 FROM _summary_rows AS d WHERE {_SAME_KEY})")
        ws.backend.execute(f"INSERT INTO {TABLE} SELECT {keys}, {', '.join(COUNTS)} FROM _summary_rows WHERE n <> 0")
    finally:
        ws.backend.unregister("_summary_rows")


# -- reading: the overview's numbers ---------------------------------------------------------------
def station_yield(ws: Workspace) -> pa.Table:
    """Yield by station (`queries.station_yield_from_records`), from the summary."""
    return ws.query(f"""
        SELECT station, n AS units, CAST(first_pass AS DOUBLE) / n AS first_pass_yield,
               CAST(passed AS DOUBLE) / n AS final_yield
        FROM {TABLE} WHERE kind = 'station' ORDER BY station""")


def pareto(ws: Workspace, station: str | None = None, top: int = 15) -> pa.Table:
    """Defects by code, most frequent first, with cumulative share (`queries.pareto_from_records`)."""
    where = "AND station = ?" if station else ""
    return ws.query(f"""
        WITH d AS (SELECT station, defect_code, n AS defects FROM {TABLE} WHERE kind = 'defect' {where})
        SELECT station, defect_code, defects,
               defects / sum(defects) OVER () AS share,
               sum(defects) OVER (ORDER BY defects DESC, station, defect_code
                                  ROWS UNBOUNDED PRECEDING) / sum(defects) OVER () AS cumulative_share
        FROM d ORDER BY defects DESC, station, defect_code LIMIT {int(top)}""", [station] if station else None)


def overall(ws: Workspace) -> dict[str, Any]:
    """Units, first-pass and final yield of the line (`queries.overall_yield_from_records`)."""
    return ws.rows(f"""
        SELECT CAST(coalesce(sum(n), 0) AS BIGINT) AS units,
               CAST(sum(first_pass) AS DOUBLE) / sum(n) AS first_pass_yield,
               CAST(sum(passed) AS DOUBLE) / sum(n) AS final_yield
        FROM {TABLE} WHERE kind = 'hour'""")[0]


def trend(ws: Workspace, max_days: int) -> list[dict[str, Any]]:
    """The yield per period and overall: by hour when the units started on under a week of days, by
    week past `max_days` days, else by day. Rows of t, period, is_total, units, first_pass_yield,
    final_yield; the total row last."""
    return ws.rows(f"""
        WITH h AS (SELECT t, n, first_pass, passed FROM {TABLE} WHERE kind = 'hour'),
        span AS (SELECT count(DISTINCT date_trunc('day', t)) AS days FROM h),
        p AS (
            SELECT n, first_pass, passed,
                   CASE WHEN days < 7 THEN 'hour' WHEN days > {int(max_days)} THEN 'week' ELSE 'day' END AS period,
                   CASE WHEN days < 7 THEN date_trunc('hour', t)
                        WHEN days > {int(max_days)} THEN date_trunc('week', t)
                        ELSE date_trunc('day', t) END AS t
            FROM h, span
        )
        SELECT t, any_value(period) AS period, GROUPING(t) AS is_total,
               CAST(coalesce(sum(n), 0) AS BIGINT) AS units,
               CAST(sum(first_pass) AS DOUBLE) / sum(n) AS first_pass_yield,
               CAST(sum(passed) AS DOUBLE) / sum(n) AS final_yield
        FROM p GROUP BY GROUPING SETS ((t), ()) ORDER BY is_total, t""")
