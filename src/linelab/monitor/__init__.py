"""monitor stage: detectors that turn line data into problems while they are small.

All detectors share one shape: `fit(reference)` on a phase-I window, then `update(x)` with a
batch or one record (same answers both ways), returning per-record statistics and alarms;
`state` shows limits and the current statistic.
"""

from linelab.monitor.anomaly import IsolationAnomaly
from linelab.monitor.arl import cusum_arl, cusum_design, ewma_arl, ewma_design
from linelab.monitor.attribute import GroupRateMonitor, GroupVerdicts, PChart, bh_adjust
from linelab.monitor.base import Detector, Scores
from linelab.monitor.capability import Capability, capability
from linelab.monitor.drift import DriftVerdict, WindowDrift, drift_verdict
from linelab.monitor.multivariate import PCAMonitor
from linelab.monitor.spc import CUSUMChart, EWMAChart, IndividualsChart, StagedChart, XbarChart

__all__ = [
    "CUSUMChart", "Capability", "Detector", "DriftVerdict", "EWMAChart", "GroupRateMonitor",
    "GroupVerdicts", "IndividualsChart", "IsolationAnomaly", "PCAMonitor", "PChart", "Scores",
    "StagedChart", "WindowDrift", "XbarChart", "bh_adjust", "capability", "cusum_arl",
    "cusum_design", "drift_verdict", "ewma_arl", "ewma_design",
]
