"""diagnose stage: ranked candidate root causes of a problem, with effect, confidence and evidence.

    from linelab.diagnose import Diagnoser
    dx = Diagnoser(dag=None, time_column=None, events=None).fit(reference, incident, target="aoi_fail")
    dx.causes_            # [Cause]: factor, level, kind, effect, q_value, confidence, share, evidence, plot
    dx.report_            # Diagnosis: symptom summary, causes, onset + events, confounded pairs, check
    dx.summary()          # plain words

Workspace problems: `linelab.diagnose.workspace.diagnose_problem(ws, "PRB-0001")`, or the
command `linelab diagnose PRB-0001`; two tables: `linelab diagnose --reference a.csv --incident
b.parquet --target COLUMN [--dag edges.csv] [--json]`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from linelab.lazy import lazy_attributes

if TYPE_CHECKING:
    from .data import UserError, read_table
    from .diagnoser import Diagnoser, diagnose_tables
    from .model import Cause, Confounding, Diagnosis, Onset

# Loaded on first use, so that importing one module of the package does not load them all
# (and the heavy libraries they need): commands start fast.
_HOME = {
    "UserError": "linelab.diagnose.data", "read_table": "linelab.diagnose.data",
    "Diagnoser": "linelab.diagnose.diagnoser", "diagnose_tables": "linelab.diagnose.diagnoser",
    "Cause": "linelab.diagnose.model", "Confounding": "linelab.diagnose.model",
    "Diagnosis": "linelab.diagnose.model", "Onset": "linelab.diagnose.model",
}

__all__ = ["Cause", "Confounding", "Diagnoser", "Diagnosis", "Onset", "UserError", "diagnose_tables", "read_table"]


__getattr__ = lazy_attributes(__name__, _HOME, globals())
