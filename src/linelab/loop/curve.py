"""The learning curve: yield and cost of poor quality against cumulative units, and its rate.

Wright's law: the defect rate falls by a constant fraction with every doubling of cumulative
volume, d(N) = a * N^-b. The learning rate reported is that fraction, 1 - 2^-b (0.2 means each
doubling of volume removes 20% of the remaining defects).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Cost of poor quality per unit, in cost units of one good board: a scrapped or failed board
# loses its material and work; a reworked or retested one costs the rework.
COST_SCRAP = 1.0
COST_REWORK = 0.12


@dataclass
class Curve:
    """One run's trajectory, one point per chunk."""

    units: list[int] = field(default_factory=list)  # cumulative units at the end of each chunk
    first_pass_yield: list[float] = field(default_factory=list)
    final_yield: list[float] = field(default_factory=list)
    copq: list[float] = field(default_factory=list)  # cost of poor quality per unit in the chunk

    def add(self, units_table: pa.Table) -> None:
        n = units_table.num_rows
        if n == 0:
            return
        first_pass = pc.sum(units_table.column("first_pass").cast(pa.int64())).as_py() or 0
        passed = pc.sum(pc.equal(units_table.column("result"), "pass").cast(pa.int64())).as_py() or 0
        self.units.append((self.units[-1] if self.units else 0) + n)
        self.first_pass_yield.append(first_pass / n)
        self.final_yield.append(passed / n)
        reworked = passed - first_pass
        self.copq.append((COST_SCRAP * (n - passed) + COST_REWORK * reworked) / n)

    def weights(self) -> np.ndarray:
        return np.diff(np.r_[0, self.units])

    def mean_yield(self, start_unit: int = 0) -> float:
        """Unit-weighted first-pass yield over the chunks ending after `start_unit`."""
        w = self.weights() * (np.asarray(self.units) > start_unit)
        return float(np.average(self.first_pass_yield, weights=w)) if w.sum() else float("nan")

    def mean_copq(self) -> float:
        return float(np.average(self.copq, weights=self.weights())) if self.units else float("nan")

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        return {"units": self.units, "yield": self.first_pass_yield, "final_yield": self.final_yield,
                "copq": self.copq}


def learning_rate(curve: Curve) -> dict[str, float]:
    """Wright's-law fit of the cumulative-average defect rate against cumulative units."""
    units = np.asarray(curve.units, dtype=float)
    if units.size < 3:
        return {"b": float("nan"), "learning_rate": float("nan")}
    w = curve.weights()
    defects = (1 - np.asarray(curve.first_pass_yield)) * w
    cum_rate = np.cumsum(defects) / units
    ok = cum_rate > 0
    slope, intercept = np.polyfit(np.log(units[ok]), np.log(cum_rate[ok]), 1)
    b = -float(slope)
    return {"b": b, "a": float(np.exp(intercept)), "learning_rate": 1 - 2 ** (-b)}


def gap_closed(loop: float, baseline: float, oracle: float) -> float:
    """Share of the yield gap between doing nothing and perfection that the loop closed."""
    gap = oracle - baseline
    return float((loop - baseline) / gap) if gap > 1e-9 else float("nan")
