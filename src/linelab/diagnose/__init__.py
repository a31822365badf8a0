"""diagnose stage: ranked candidate root causes of a problem, with effect, confidence and evidence."""

from .data import UserError, read_table
from .diagnoser import Diagnoser, diagnose_tables
from .model import Cause, Confounding, Diagnosis, Onset

__all__ = ["Cause", "Confounding", "Diagnoser", "Diagnosis", "Onset", "UserError", "diagnose_tables", "read_table"]
