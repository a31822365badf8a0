"""The zoo: generated production lines of several kinds, with injected problems and their truth.

    from linelab.zoo import open_line, scenarios
    line = open_line("assembly:bad_lot_fails", seed=0)   # or "machining:clean", "meddev:intermittent:subtle"
    tables = line.produce(500)       # units, steps, measurements, params, materials, signals, events (+ specs)
    line.truth                       # id, type, cause {kind, station, name}, onset/end unit and time, fix_actions
    line.apply({"kind": "quarantine_lot", "lot": "SEAL-00004"})
    line.profile                     # linelab.profile.schema.Profile: stations, readings, actions, sources

Modules: kinds (the four lines as data: assembly, machining, meddev, process), problems (the
problem types and their ground truth), line (ZooLine: vectorised physics, produce/apply),
profile (the line's Profile and its export column names), export (CSV in the line's own
names), simulator (scenario names, `open_line`). Independent of the SMT twin (linelab.twin).
"""

from linelab.zoo.export import write_export
from linelab.zoo.kinds import KINDS, LineKind
from linelab.zoo.line import ZooActionError, ZooLine
from linelab.zoo.problems import PROBLEM_TYPES
from linelab.zoo.profile import build_profile
from linelab.zoo.simulator import open_line, scenarios

__all__ = ["KINDS", "PROBLEM_TYPES", "LineKind", "ZooActionError", "ZooLine", "build_profile", "open_line",
           "scenarios", "write_export"]
