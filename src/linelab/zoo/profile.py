"""A zoo line's profile (linelab.profile.schema.Profile): what LineLab is told about the line.

Stations in order (with the rework stand), products, readings with their roles, specs per
product, the actions the line accepts and the causes each remedies, the recipe with its bounds,
and `sources`: how the line's own export files (`linelab.zoo.export`) map onto LineLab's tables.
Each kind names its columns its own way (`EXPORT_NAMES`).
"""

from __future__ import annotations

from typing import Any

from linelab.profile.schema import (
    Action,
    ActionParam,
    CauseMatch,
    Control,
    LineInfo,
    Profile,
    Reading,
    Setting,
    Source,
    Spec,
    Station,
)
from linelab.zoo.kinds import LineKind

# kind -> table -> LineLab column -> the export's column (columns not named keep LineLab's name)
_MES = {  # an automotive MES export
    "units": {"unit_id": "serial", "product": "part_no", "line": "line_id", "work_order": "order_no",
              "t_start": "start_ts", "t_end": "end_ts", "result": "final_result"},
    "steps": {"unit_id": "serial", "station": "station_id", "machine": "equipment", "fixture": "nest",
              "operator": "operator_id", "shift": "shift_code", "recipe_id": "program", "t_in": "start_ts",
              "t_out": "end_ts", "result": "status", "defect_code": "fail_code"},
    "measurements": {"unit_id": "serial", "station": "station_id", "name": "characteristic", "value": "value",
                     "t": "ts"},
    "params": {"unit_id": "serial", "station": "station_id", "name": "parameter", "value": "value", "t": "ts"},
    "materials": {"unit_id": "serial", "station": "station_id", "material": "component", "lot": "batch_no",
                  "supplier": "vendor"},
    "signals": {"name": "tag", "t": "ts", "value": "value"},
    "events": {"t": "ts", "kind": "event_type", "station": "station_id", "machine": "equipment",
               "target": "target", "detail": "info"},
    "specs": {"product": "part_no", "station": "station_id", "name": "characteristic", "lsl": "lower",
              "usl": "upper", "target": "nominal", "unit": "uom"},
}
_SHOP = {  # a machine shop's exports
    "units": {"unit_id": "part_id", "product": "drawing", "line": "cell", "work_order": "job", "t_start": "started",
              "t_end": "finished", "result": "verdict"},
    "steps": {"unit_id": "part_id", "station": "op", "machine": "machine_no", "fixture": "fixture",
              "operator": "worker", "shift": "shift", "recipe_id": "nc_program", "t_in": "started",
              "t_out": "finished", "result": "verdict", "defect_code": "reject_reason"},
    "measurements": {"unit_id": "part_id", "station": "op", "name": "feature", "value": "actual", "t": "measured"},
    "params": {"unit_id": "part_id", "station": "op", "name": "param", "value": "actual", "t": "logged"},
    "materials": {"unit_id": "part_id", "station": "op", "material": "stock", "lot": "heat_no", "supplier": "mill"},
    "signals": {"name": "sensor", "t": "logged", "value": "reading"},
    "events": {"t": "logged", "kind": "event", "station": "op", "machine": "machine_no", "target": "what",
               "detail": "note"},
    "specs": {"product": "drawing", "station": "op", "name": "feature", "lsl": "lower_tol_limit",
              "usl": "upper_tol_limit", "target": "nominal", "unit": "units"},
}
_DHR = {  # a device-history-record system
    "units": {"unit_id": "device_sn", "product": "model", "line": "line", "work_order": "dhr_no",
              "t_start": "opened", "t_end": "closed", "result": "disposition"},
    "steps": {"unit_id": "device_sn", "station": "operation", "machine": "equipment_id", "fixture": "fixture_id",
              "operator": "performed_by", "shift": "shift", "recipe_id": "procedure_rev", "t_in": "opened",
              "t_out": "closed", "result": "outcome", "defect_code": "ncr_code"},
    "measurements": {"unit_id": "device_sn", "station": "operation", "name": "test_item", "value": "result_value",
                     "t": "recorded"},
    "params": {"unit_id": "device_sn", "station": "operation", "name": "setting", "value": "result_value",
               "t": "recorded"},
    "materials": {"unit_id": "device_sn", "station": "operation", "material": "part", "lot": "lot_code",
                  "supplier": "supplier"},
    "signals": {"name": "monitor_point", "t": "recorded", "value": "reading"},
    "events": {"t": "recorded", "kind": "activity", "station": "operation", "machine": "equipment_id",
               "target": "subject", "detail": "comment"},
    "specs": {"product": "model", "station": "operation", "name": "test_item", "lsl": "low_limit",
              "usl": "high_limit", "target": "nominal", "unit": "unit"},
}
_PLANT = {  # a process plant historian/LIMS (semicolon-separated, decimal comma)
    "units": {"unit_id": "container_id", "product": "sku", "line": "line", "work_order": "batch_order",
              "t_start": "zeit_start", "t_end": "zeit_ende", "result": "status"},
    "steps": {"unit_id": "container_id", "station": "unit_op", "machine": "asset", "fixture": "head",
              "operator": "operator", "shift": "schicht", "recipe_id": "rezept", "t_in": "zeit_start",
              "t_out": "zeit_ende", "result": "status", "defect_code": "fehler"},
    "measurements": {"unit_id": "container_id", "station": "unit_op", "name": "merkmal", "value": "wert",
                     "t": "zeit"},
    "params": {"unit_id": "container_id", "station": "unit_op", "name": "merkmal", "value": "wert", "t": "zeit"},
    "materials": {"unit_id": "container_id", "station": "unit_op", "material": "rohstoff", "lot": "charge",
                  "supplier": "lieferant"},
    "signals": {"name": "tag", "t": "zeit", "value": "wert"},
    "events": {"t": "zeit", "kind": "ereignis", "station": "unit_op", "machine": "asset", "target": "objekt",
               "detail": "info"},
    "specs": {"product": "sku", "station": "unit_op", "name": "merkmal", "lsl": "ugw", "usl": "ogw",
              "target": "sollwert", "unit": "einheit"},
}
EXPORT_NAMES: dict[str, dict[str, dict[str, str]]] = {
    "assembly": _MES, "machining": _SHOP, "meddev": _DHR, "process": _PLANT}
# How each kind writes results: LineLab value -> the export's value.
EXPORT_VALUES: dict[str, dict[str, str]] = {
    "assembly": {"pass": "OK", "fail": "NOK", "rework": "RWK", "scrap": "SCRAP"},
    "machining": {"pass": "GOOD", "fail": "REJECT", "rework": "REWORK", "scrap": "SCRAP"},
    "meddev": {"pass": "PASS", "fail": "FAIL", "rework": "REWORK", "scrap": "SCRAP"},
    "process": {"pass": "IO", "fail": "NIO", "rework": "NACHARBEIT", "scrap": "AUSSCHUSS"},
}
EXPORT_FORMAT: dict[str, dict[str, Any]] = {  # delimiter and decimal mark of the kind's files
    "process": {"delimiter": ";", "decimal": ","},
}


def export_file(kind: LineKind, table: str) -> str:
    """File name pattern of a table's export, e.g. 'asm-2_steps_*.csv'."""
    return f"{kind.line.lower()}_{table}_*.csv"


def sources(kind: LineKind) -> list[Source]:
    names, values, fmt = EXPORT_NAMES[kind.name], EXPORT_VALUES[kind.name], EXPORT_FORMAT.get(kind.name, {})
    out = []
    for table, cols in names.items():
        mapped = {k: v for k, v in cols.items() if k != "first_pass"}
        vmap = {"result": {v: k for k, v in values.items()}} if table in ("units", "steps") else {}
        derive = ["first_pass_from_steps"] if table == "units" else []
        out.append(Source(name=f"{kind.name}_{table}", table=table, files=[export_file(kind, table)], columns=mapped,
                          values=vmap, derive=derive, **fmt))
    return out


def build_profile(kind: LineKind) -> Profile:
    stations = [Station(name=s.name, machines=[*s.machines, *([f"{s.name}-RW"] if s.rework else [])],
                        description=s.description + (" (with its rework stand)" if s.rework else ""))
                for s in kind.stations]
    readings = [Reading(name=r.name, station=r.station, role="measurement", unit=r.unit or None,
                        made_at=r.source if r.source and r.source != r.station else None) for r in kind.readings]
    readings += [Reading(name=e.name, station=e.station, role="environment", unit=e.unit or None,
                         description="room climate: a per-unit reading and a signals series") for e in kind.env]
    readings += [Reading(name=e.name, role="environment", unit=e.unit or None) for e in kind.env]
    readings += [Reading(name=s.name, station=s.station, role="setting", unit=s.unit or None) for s in kind.settings]
    specs = [Spec(product=p, station=r.station, name=r.name, target=r.nominal[p], unit=r.unit or None,
                  lsl=None if r.upper_only else round(r.nominal[p] - r.spec_k * r.sigma, 6),
                  usl=round(r.nominal[p] + r.spec_k * r.sigma, 6))
             for r in kind.readings for p in kind.products]
    machines = [m for s in kind.stations if not s.tester for m in s.machines]
    testers = [m for s in kind.stations if s.tester for m in s.machines]
    shifts = list(kind.shifts)
    operators = [f"OP-{s}{k + 1}" for s in kind.shifts for k in range(kind.operators_per_shift)]
    actions = [
        Action(name="set_recipe", description="Change several recipe settings at once",
               params=[ActionParam(name="params", type="mapping", description="{setting: value} within bounds")],
               remedies=[CauseMatch(entity=["recipe"]), CauseMatch(role=["setting"])], event_kind="recipe_change"),
        Action(name="set_param", description="Change one recipe setting",
               params=[ActionParam(name="name", choices=[s.name for s in kind.settings]),
                       ActionParam(name="value", type="number")], event_kind="recipe_change"),
        Action(name="service_machine", description="Service a machine: resets its wear and faults",
               params=[ActionParam(name="machine", choices=machines, from_cause="name")],
               remedies=[CauseMatch(entity=["machine"], station=[s.name for s in kind.stations if not s.tester])],
               event_kind="maintenance", resets=True),
        Action(name="calibrate_tester", description="Calibrate a tester (leak tester, CMM, check-weigher...)",
               params=[ActionParam(name="tester", choices=testers, from_cause="name", extract="^([^-]+)")],
               remedies=[CauseMatch(entity=["machine", "fixture"],
                                    station=[s.name for s in kind.stations if s.tester])],
               event_kind="calibration", resets=True),
        Action(name="quarantine_lot", description="Put a material lot on hold; the next lot is loaded",
               params=[ActionParam(name="lot", from_cause="level")], remedies=[CauseMatch(entity=["lot"])],
               event_kind="hold"),
        Action(name="release_quarantine", description="Release a held lot", params=[ActionParam(name="lot")],
               event_kind="release"),
        Action(name="retrain_shift", description="Retrain a shift's handling",
               params=[ActionParam(name="shift", choices=shifts, from_cause="level")],
               remedies=[CauseMatch(entity=["shift"])]),
        Action(name="retrain_operator", description="Retrain one operator",
               params=[ActionParam(name="operator", choices=operators, from_cause="level")],
               remedies=[CauseMatch(entity=["operator"])]),
        Action(name="adjust_program", description="Correct one product's program/fixture at a station",
               params=[ActionParam(name="product", choices=list(kind.products), from_cause="level"),
                       ActionParam(name="station", required=False, from_cause="station")],
               remedies=[CauseMatch(entity=["product"])]),
        Action(name="restore_environment", description="Bring the room's climate back into its band",
               params=[ActionParam(name="name", required=False, choices=[e.name for e in kind.env],
                                   from_cause="name")],
               remedies=[CauseMatch(role=["environment"]), CauseMatch(entity=["signal"])]),
        Action(name="mark", description="Record an experiment marker", event_kind="experiment",
               params=[ActionParam(name="label"), ActionParam(name="detail", type="mapping", required=False)]),
    ]
    recipe = [Setting(name=s.name, station=s.station, machine=None, unit=s.unit or None, low=s.low, high=s.high,
                      default=s.default, step=s.step) for s in kind.settings]
    return Profile(
        sources=sources(kind),
        line=LineInfo(name=kind.line, stations=stations, products=list(kind.products), readings=readings, specs=specs),
        actions=actions, recipe=recipe,
        control=Control(channel="simulator", simulator="zoo", options={"kind": kind.name}),
    )
