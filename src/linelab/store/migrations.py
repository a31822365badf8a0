"""Versioned schema migrations: the store's tables, created and changed in one known order.

Each migration is frozen once released: a later change to the schema (a new column, a new
table) is a new migration appended to `MIGRATIONS`, never an edit of an old one, so a
workspace made by any earlier LineLab is brought to the current schema step by step. The
version reached is kept in the workspace's `schema_version` table; a workspace made by a newer
LineLab (a version this code does not know) is refused rather than guessed at.

Both backends run the same list. A migration's SQL is written once, with `{double}` for the
one type the two dialects spell differently. How other processes' replicas of a PostgreSQL
workspace find what is new (see `linelab.store.postgres`): the record tables by their `batch`
(version 5), the others by `_rev`, the store revision that wrote each row.
"""

from __future__ import annotations

from dataclasses import dataclass

from linelab.errors import UserError

# The tables of version 1, as they were released (record tables, then the store's own).
_V1_TABLES = {
    "units": '"unit_id" VARCHAR, "product" VARCHAR, "line" VARCHAR, "work_order" VARCHAR, "t_start" TIMESTAMP, '
             '"t_end" TIMESTAMP, "result" VARCHAR, "first_pass" BOOLEAN, "batch" BIGINT',
    "steps": '"unit_id" VARCHAR, "station" VARCHAR, "machine" VARCHAR, "fixture" VARCHAR, "operator" VARCHAR, '
             '"shift" VARCHAR, "recipe_id" VARCHAR, "t_in" TIMESTAMP, "t_out" TIMESTAMP, "result" VARCHAR, '
             '"defect_code" VARCHAR, "batch" BIGINT',
    "measurements": '"unit_id" VARCHAR, "station" VARCHAR, "name" VARCHAR, "value" {double}, "t" TIMESTAMP, '
                    '"batch" BIGINT',
    "params": '"unit_id" VARCHAR, "station" VARCHAR, "name" VARCHAR, "value" {double}, "t" TIMESTAMP, "batch" BIGINT',
    "materials": '"unit_id" VARCHAR, "station" VARCHAR, "material" VARCHAR, "lot" VARCHAR, "supplier" VARCHAR, '
                 '"batch" BIGINT',
    "signals": '"name" VARCHAR, "t" TIMESTAMP, "value" {double}, "batch" BIGINT',
    "events": '"t" TIMESTAMP, "kind" VARCHAR, "station" VARCHAR, "machine" VARCHAR, "target" VARCHAR, '
              '"detail" VARCHAR, "batch" BIGINT',
    "specs": '"product" VARCHAR, "station" VARCHAR, "name" VARCHAR, "lsl" {double}, "usl" {double}, '
             '"target" {double}, "unit" VARCHAR',
    "batches": '"seq" BIGINT, "batch_id" VARCHAR, "source" VARCHAR, "table_name" VARCHAR, "n_rows" BIGINT, '
               '"n_duplicates" BIGINT, "n_quarantined" BIGINT, "t_ingested" TIMESTAMP',
    "quarantine": '"batch_id" VARCHAR, "source" VARCHAR, "table_name" VARCHAR, "row" BIGINT, "field" VARCHAR, '
                  '"reason" VARCHAR, "raw" VARCHAR, "t_ingested" TIMESTAMP',
    "artifacts": '"kind" VARCHAR, "id" VARCHAR, "status" VARCHAR, "created" TIMESTAMP, "updated" TIMESTAMP, '
                 '"payload" VARCHAR',
}


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    duckdb: tuple[str, ...]
    postgres: tuple[str, ...]


def _v1_duckdb() -> tuple[str, ...]:
    # IF NOT EXISTS: workspaces made before versioning already hold these tables and adopt version 1.
    tables = [f"CREATE TABLE IF NOT EXISTS {t} ({cols.format(double='DOUBLE')})" for t, cols in _V1_TABLES.items()]
    return (*tables, "CREATE SEQUENCE IF NOT EXISTS batch_seq START 1")


def _v1_postgres() -> tuple[str, ...]:
    out = []
    for t, cols in _V1_TABLES.items():
        out.append(f"CREATE TABLE {t} ({cols.format(double='DOUBLE PRECISION')}, _rev BIGINT NOT NULL)")
        # Rows arrive in revision order, so a block-range index finds "rows since revision n" for a few pages.
        out.append(f"CREATE INDEX {t}_rev ON {t} USING brin (_rev)")
    out += [
        "CREATE SEQUENCE batch_seq START 1",
        # One row: the revision of the last committed write. Writers lock it, so they commit one at a time.
        "CREATE TABLE store_state (rev BIGINT NOT NULL)",
        "INSERT INTO store_state VALUES (0)",
        # Per table, the last revision that appended rows to it and the last that changed or removed rows.
        "CREATE TABLE store_tables (table_name VARCHAR PRIMARY KEY, appended_rev BIGINT NOT NULL, "
        "rewritten_rev BIGINT NOT NULL)",
        "INSERT INTO store_tables SELECT t, 0, 0 FROM unnest(ARRAY["
        + ", ".join(f"'{t}'" for t in _V1_TABLES) + "]) AS t",
        # A late result replaces its unit by key: an index keeps that from scanning every unit.
        "CREATE INDEX units_unit_id ON units (unit_id)",
    ]
    return tuple(out)


# Tables of the deploy stage (version 3): each model's scores and decisions per unit, and a person's
# verdicts on units. Rows, not artefacts: a line scores every unit, and feedback is a join.
STAGE_TABLES = {
    "deploy_predictions": '"unit_id" VARCHAR, "station" VARCHAR, "version" VARCHAR, "stage" VARCHAR, '
                          '"score" {double}, "decision" VARCHAR, "acted" BOOLEAN, "t" TIMESTAMP, "via" VARCHAR',
    "deploy_verdicts": '"unit_id" VARCHAR, "verdict" VARCHAR, "bad" BOOLEAN, "note" VARCHAR, "who" VARCHAR, '
                       '"t" TIMESTAMP',
}


def _v3_postgres() -> tuple[str, ...]:
    out = []
    for t, cols in STAGE_TABLES.items():
        out.append(f"CREATE TABLE {t} ({cols.format(double='DOUBLE PRECISION')}, _rev BIGINT NOT NULL)")
        out.append(f"CREATE INDEX {t}_rev ON {t} USING brin (_rev)")
        out.append(f"INSERT INTO store_tables VALUES ('{t}', 0, 0)")
    return tuple(out)


# The line summary (version 4): the overview's counts, kept by every ingest (`linelab.store.summary`).
SUMMARY_TABLES = {
    "line_summary": '"kind" VARCHAR, "station" VARCHAR, "defect_code" VARCHAR, "t" TIMESTAMP, "n" BIGINT, '
                    '"first_pass" BIGINT, "passed" BIGINT',
}
# Filling it from the records of a workspace made before version 4: units by the hour they started,
# units by station with the result of their first visit there, failed steps by station and defect code.
_V4_HOURS = """SELECT 'hour', NULL::VARCHAR, NULL::VARCHAR, date_trunc('hour', t_start), count(*),
                      count(*) FILTER (WHERE first_pass), count(*) FILTER (WHERE result = 'pass')
               FROM units GROUP BY date_trunc('hour', t_start)"""
_V4_DEFECTS = """SELECT 'defect', station, defect_code, NULL::TIMESTAMP, count(*), 0, 0 FROM steps
                 WHERE result <> 'pass' AND defect_code IS NOT NULL GROUP BY station, defect_code"""
_V4_STATIONS = """SELECT 'station', f.station, NULL::VARCHAR, NULL::TIMESTAMP, count(*),
                         count(*) FILTER (WHERE f.result = 'pass'), count(*) FILTER (WHERE u.result = 'pass')
                  FROM ({first}) AS f JOIN units AS u ON u.unit_id = f.unit_id GROUP BY f.station"""
# A unit's first visit at a station: its earliest t_in (a visit without one last); no result is no pass.
_V4_FIRST_DUCKDB = """SELECT station, unit_id,
                             arg_min(coalesce(result, ''), coalesce(t_in, 'infinity'::TIMESTAMP)) AS result
                      FROM steps WHERE station IS NOT NULL GROUP BY station, unit_id"""
_V4_FIRST_POSTGRES = """SELECT DISTINCT ON (unit_id, station) station, unit_id, coalesce(result, '') AS result
                        FROM steps WHERE station IS NOT NULL ORDER BY unit_id, station, t_in NULLS LAST"""


def _v4_duckdb() -> tuple[str, ...]:
    cols = SUMMARY_TABLES["line_summary"]
    # Emptied first: a file whose version was set back (by hand) keeps its table, and is counted once.
    return (f"CREATE TABLE IF NOT EXISTS line_summary ({cols})", "DELETE FROM line_summary",
            *(f"INSERT INTO line_summary {part}" for part in
              (_V4_HOURS, _V4_STATIONS.format(first=_V4_FIRST_DUCKDB), _V4_DEFECTS)))


def _v4_postgres() -> tuple[str, ...]:
    cols = SUMMARY_TABLES["line_summary"]
    rev = "(SELECT rev FROM store_state)"
    return (f"CREATE TABLE line_summary ({cols}, _rev BIGINT NOT NULL)",
            "CREATE INDEX line_summary_rev ON line_summary USING brin (_rev)",
            "INSERT INTO store_tables VALUES ('line_summary', 0, 0)",
            *(f"INSERT INTO line_summary SELECT *, {rev} FROM ({part}) AS p" for part in
              (_V4_HOURS, _V4_STATIONS.format(first=_V4_FIRST_POSTGRES), _V4_DEFECTS)))


# The record tables that carry the ingest batch (`batch`): version 5 finds their new rows by it.
BATCH_TABLES = ("units", "steps", "measurements", "params", "materials", "signals", "events")


def _v5_postgres() -> tuple[str, ...]:
    # IF (NOT) EXISTS: a workspace whose version was set back by hand is brought up again.
    out = [
        # Under the writers' lock: no write is under way while the high-water marks are taken.
        "SELECT rev FROM store_state FOR UPDATE",
        # Per table, a bound on the batch of every row it holds: a replica that has read a table up to
        # that mark reads next the rows with a greater batch (see linelab.store.postgres).
        "ALTER TABLE store_tables ADD COLUMN IF NOT EXISTS appended_batch BIGINT NOT NULL DEFAULT 0",
    ]
    for t in BATCH_TABLES:
        out += [f"ALTER TABLE {t} DROP COLUMN IF EXISTS _rev",  # and its index
                # Ingests append in batch order, so a block-range index finds "batch > n" for a few pages.
                f"CREATE INDEX IF NOT EXISTS {t}_batch ON {t} USING brin (batch)",
                f"UPDATE store_tables SET appended_batch = (SELECT coalesce(max(batch), 0) FROM {t}) "
                f"WHERE table_name = '{t}'"]
    # A new revision that rewrote these tables: any replica reads them whole again.
    names = ", ".join(f"'{t}'" for t in BATCH_TABLES)
    out += ["UPDATE store_state SET rev = rev + 1",
            f"UPDATE store_tables SET rewritten_rev = (SELECT rev FROM store_state) WHERE table_name IN ({names})"]
    return tuple(out)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "record tables, batches, quarantine, artifacts", _v1_duckdb(), _v1_postgres()),
    Migration(2, "quarantine entries keep the record's natural key and the batch that resolved them",
              ('ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS "key" VARCHAR',
               'ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS "resolved_batch" BIGINT'),
              ('ALTER TABLE quarantine ADD COLUMN "key" VARCHAR, ADD COLUMN "resolved_batch" BIGINT',)),
    # IF NOT EXISTS on DuckDB: the deploy stage created these itself in workspaces of version 2.
    Migration(3, "the deploy stage's predictions and verdicts",
              tuple(f"CREATE TABLE IF NOT EXISTS {t} ({cols.format(double='DOUBLE')})"
                    for t, cols in STAGE_TABLES.items()),
              _v3_postgres()),
    Migration(4, "the line summary: the overview's counts by hour, station and defect, kept by every ingest",
              _v4_duckdb(), _v4_postgres()),
    Migration(5, "PostgreSQL: replicas find new record rows by their batch; the record tables drop _rev",
              (), _v5_postgres()),
)
LATEST = MIGRATIONS[-1].version

VERSION_DDL = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER, description VARCHAR, applied TIMESTAMP)"


def pending(current: int) -> list[Migration]:
    """The migrations a workspace at version `current` still needs, oldest first."""
    if current > LATEST:
        raise NewerSchema(current)
    return [m for m in MIGRATIONS if m.version > current]


class NewerSchema(UserError):
    def __init__(self, version: int) -> None:
        super().__init__(f"the workspace's schema is version {version}, newer than this LineLab knows ({LATEST}): "
                         "upgrade LineLab to open it")
        self.version = version
