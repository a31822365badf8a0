"""monitor stage: detectors that turn line data into problems while they are small.

All detectors share one shape: `fit(reference)` on a phase-I window, then `update(x)` with a
batch or one record (same answers both ways), returning per-record statistics and alarms;
`state` shows limits and the current statistic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from linelab.lazy import lazy_attributes

if TYPE_CHECKING:
    from linelab.monitor.anomaly import IsolationAnomaly
    from linelab.monitor.arl import cusum_arl, cusum_design, ewma_arl, ewma_design
    from linelab.monitor.attribute import GroupRateMonitor, GroupVerdicts, PChart, bh_adjust
    from linelab.monitor.base import Detector, Scores
    from linelab.monitor.drift import DriftVerdict, WindowDrift, drift_verdict
    from linelab.monitor.multivariate import PCAMonitor
    from linelab.monitor.process_capability import Capability, capability
    from linelab.monitor.spc import CUSUMChart, EWMAChart, IndividualsChart, StagedChart, XbarChart

# Loaded on first use, so that importing one module of the package does not load them all
# (and the heavy libraries they need): commands start fast.
_HOME = {
    "IsolationAnomaly": "linelab.monitor.anomaly", "cusum_arl": "linelab.monitor.arl",
    "cusum_design": "linelab.monitor.arl", "ewma_arl": "linelab.monitor.arl", "ewma_design": "linelab.monitor.arl",
    "GroupRateMonitor": "linelab.monitor.attribute", "GroupVerdicts": "linelab.monitor.attribute",
    "PChart": "linelab.monitor.attribute", "bh_adjust": "linelab.monitor.attribute",
    "Detector": "linelab.monitor.base", "Scores": "linelab.monitor.base",
    "Capability": "linelab.monitor.process_capability", "capability": "linelab.monitor.process_capability",
    "DriftVerdict": "linelab.monitor.drift", "WindowDrift": "linelab.monitor.drift",
    "drift_verdict": "linelab.monitor.drift", "PCAMonitor": "linelab.monitor.multivariate",
    "CUSUMChart": "linelab.monitor.spc", "EWMAChart": "linelab.monitor.spc",
    "IndividualsChart": "linelab.monitor.spc", "StagedChart": "linelab.monitor.spc",
    "XbarChart": "linelab.monitor.spc",
}

__all__ = [
    "CUSUMChart", "Capability", "Detector", "DriftVerdict", "EWMAChart", "GroupRateMonitor",
    "GroupVerdicts", "IndividualsChart", "IsolationAnomaly", "PCAMonitor", "PChart", "Scores",
    "StagedChart", "WindowDrift", "XbarChart", "bh_adjust", "capability", "cusum_arl",
    "cusum_design", "drift_verdict", "ewma_arl", "ewma_design",
]


__getattr__ = lazy_attributes(__name__, _HOME, globals())
