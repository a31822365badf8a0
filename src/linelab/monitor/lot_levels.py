"""A reading that moves with a material's lots, watched net of each lot's own level.

Lots are consumed one after another, and each sits at its own level (a resin's viscosity, a
bar's hardness): a chart blind to lots sees every lot change as a step, and either raises it
as a problem or learns the line's wander so wide that it misses real steps. Each series keeps
the level of every lot of every material its units use (the mean of the lot's first records).
Once the lots of one material clearly differ, the series is watched as each record's
deviation from its lot's level, and each new lot's first records, which teach its level, are
not judged by the chart: the lot itself is judged instead, once, against the levels of the lots
seen before it, with a prediction bound from their spread (Student's t with one degree of
freedom fewer than lots seen: a handful of lots bounds the next one only loosely).

Lots are used in sequence, so any slow wander of the reading (the room, wear between services)
also sets lots apart: comparing lots' means would take a warm afternoon for a lot effect. What
tells a lot effect is a step where the lot changes: the series' records are cut into blocks of
`records / 2`, and the steps between consecutive blocks across a lot change are compared with
the steps between consecutive blocks within a lot (same spacing, so the same wander): the lots
differ where the steps across are clearly larger (F-test), by a lot-to-lot sd that matters.
Watched net of its lots, a series would take a step of its machine that persists across lot
changes into the next lots' levels; so the lots' levels are charted too (a self-starting CUSUM:
each new lot's level against the mean of the lots before it, in lot-to-lot sds): lots that keep
coming in high are the machine's, not theirs. Self-starting: the mean and sd it standardises by
are those of the lots before, so each step is a t statistic, mapped to the normal scale.
Phase I seldom holds more than two or three lots, too few to tell; the lots that follow are
learned as they come, and the material is taken on when they tell.
One lot judged off on one machine is that machine's move where the station's other machines read
the same lot as they read their other lots (`reads_usual`; the engine asks them), and only the
materials built in at the series' station or before it are candidates (the profile's process order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import f as f_dist
from scipy.stats import norm
from scipy.stats import t as t_dist

# Each record's lot of one material: codes into the lot names (-1: the unit used none of it).
LotColumn = tuple[np.ndarray, list[str]]
# The line's materials, each record's lot code of each (a column each), and each one's lot names.
Lots = tuple[tuple[str, ...], np.ndarray, list[list[str]]]


def lot_column(lots: Lots | None, material: str) -> LotColumn | None:
    """One material's column of `lots`, if the records carry it."""
    if lots is None or material not in lots[0]:
        return None
    j = lots[0].index(material)
    return lots[1][:, j], lots[2][j]


def _groups(col: LotColumn) -> tuple[list[str | None], np.ndarray]:
    """The lots among the records (None: no lot), and each record's index into them (codes are
    small integers: counted, not sorted)."""
    codes, names = col
    shifted = codes + 1
    seen = np.bincount(shifted, minlength=len(names) + 1) > 0
    present = np.flatnonzero(seen) - 1
    return [names[c] if c >= 0 else None for c in present], (np.cumsum(seen) - 1)[shifted]


@dataclass
class NewLot:
    """A lot whose level was just learned from its first records: what judging it needs."""

    lot: str
    level: float  # mean of its first records, net of product, room and wear
    n: int
    out_of_spec: float  # records out of spec among them
    first_unit: str
    first_t: int
    last_unit: str
    last_t: int
    units: np.ndarray


class LotLevels:
    """Each lot's level of one material, for one series; `adopted` once the lots clearly differ."""

    def __init__(self, material: str, records: int) -> None:
        self.material = material
        self.records = records  # records that teach a lot's level
        self.level: dict[str, float] = {}  # lot -> level
        self.count: dict[str, int] = {}  # lot -> records its level was learned from
        self.first_t: dict[str, int] = {}  # lot -> its first record's time (epoch us), for the chart
        self.within_ss = 0.0  # records' squared deviations from their lot's level, and their degrees of freedom
        self.within_df = 0
        self.block = max(records // 2, 2)  # records per block of the step test
        # Steps between consecutive blocks of one lot, and from one lot's last block to the next
        # lot's first: how many, and the sum of their squares.
        self.steps_within = [0, 0.0]
        self.steps_across = [0, 0.0]
        self._open: dict[str, list[float]] = {}  # lot -> [sum, records] of its block being filled
        self._last_mean: float | None = None  # the last full block's mean, and its lot's name
        self._last_lot: str | None = None
        self.adopted = False  # the series is watched net of these lots' levels
        self.grand = 0.0  # the level records are moved to (the chart's centre)
        self.unusual: list[str] = []  # lots judged off the others: not part of their spread
        self.reference: list[str] = []  # the lots phase I saw (the frame of the levels learned there)
        # The chart of lot levels: the CUSUM's two sides and the lots each side has summed since it left zero.
        self.cusum = [0.0, 0.0]
        self.cusum_lots: list[list[str]] = [[], []]
        self._learning: dict[str, list[np.ndarray]] = {}  # rows value, time, out-of-spec of lots being learned
        self._learning_units: dict[str, list[np.ndarray]] = {}

    def learn_reference(self, ref: np.ndarray, t: np.ndarray, col: LotColumn) -> None:
        """The levels of phase I's lots that have `records` records there (all of them teach),
        and phase I's block steps."""
        lots, inverse = _groups(col)
        self._steps(ref, lots, inverse)
        for i, lot in enumerate(lots):
            mine = inverse == i
            if lot is None or mine.sum() < self.records:
                continue
            y = ref[mine]
            self._add(lot, float(y.mean()), len(y), float(((y - y.mean()) ** 2).sum()), int(t[mine][0]))
            self.reference.append(lot)

    def _add(self, lot: str, level: float, n: int, ss: float, first_t: int) -> None:
        self.level[lot], self.count[lot], self.first_t[lot] = level, n, first_t
        self.within_ss += ss
        self.within_df += n - 1

    def _steps(self, v: np.ndarray, lots: list[str | None], inverse: np.ndarray) -> None:
        """Cut the records (in time order) into blocks per lot (`_groups`); note each full block's
        step from the block before it: within its lot, or across a lot change."""
        ends_at, names, means = [], [], []  # each full block: the record that filled it, its lot, its mean
        for i, lot in enumerate(lots):
            if lot is None:
                continue
            idx = np.flatnonzero(inverse == i)
            s, n = self._open.get(lot, [0.0, 0])
            csum = s + np.cumsum(v[idx])  # the lot's open block's sum carried in
            ends = np.arange(self.block - int(n), len(idx) + 1, self.block)  # 1-based: where a block fills
            if len(ends):
                ends_at.append(idx[ends - 1])
                means.append(np.diff(np.concatenate([[0.0], csum[ends - 1]])) / self.block)
                names += [lot] * len(ends)
                self._open[lot] = [float(csum[-1] - csum[ends[-1] - 1]), len(idx) - int(ends[-1])]
            else:
                self._open[lot] = [float(csum[-1]), int(n) + len(idx)]
        if not names:
            return
        order = np.argsort(np.concatenate(ends_at), kind="stable")
        m = np.concatenate(means)[order]
        who = np.asarray(names, dtype=object)[order]
        if self._last_lot is not None:
            m = np.concatenate([[self._last_mean], m])
            who = np.concatenate([np.asarray([self._last_lot], dtype=object), who])
        step, same = np.diff(m), who[1:] == who[:-1]
        for acc, sel in ((self.steps_within, same), (self.steps_across, ~same)):
            acc[0] += int(sel.sum())
            acc[1] += float((step[sel] ** 2).sum())
        self._last_mean, self._last_lot = float(m[-1]), str(who[-1])

    # -- whether the lots differ -----------------------------------------------------------------
    def spread(self, alpha: float) -> float:
        """The lots' own spread (lot-to-lot sd, in sds of the records about their lot's level)
        where steps across lot changes are larger than steps within lots (F-test at `alpha`);
        0 if not."""
        (n_a, ss_a), (n_w, ss_w) = self.steps_across, self.steps_within
        if n_a < 2 or n_w < 2 or self.within_df < 2:
            return 0.0
        var_a, var_w = ss_a / n_a, ss_w / n_w
        if var_w <= 0 or f_dist.sf(var_a / var_w, n_a, n_w) >= alpha:
            return 0.0
        # a step across carries two lots' offsets: twice the lot-to-lot variance beyond a step within
        return float(np.sqrt(max(var_a - var_w, 0.0) / 2 / (self.within_ss / self.within_df)))

    def adopt(self, grand: float) -> None:
        """Watch the series net of these lots from now on, around `grand` (the chart's centre)."""
        self.adopted, self.grand = True, grand

    def usual(self, leaving: list[str]) -> tuple[float, float]:
        """The usual lots' mean level and sd, leaving out `leaving` and the lots judged off the others."""
        levels = [lv for lot, lv in self.level.items() if lot not in leaving and lot not in self.unusual]
        return (float(np.mean(levels)) if levels else self.grand,
                float(np.std(levels, ddof=1)) if len(levels) > 1 else 0.0)

    def chart(self, new: NewLot, k: float = 0.5, h: float = 5.0) -> list[str] | None:
        """Add a new lot's level to the chart of lot levels (unless it was judged off the others
        on its own); where one side passes `h` (lot-to-lot sds; with k = 0.5, about one false
        alarm in 500 lots), the lots it summed (and restart it)."""
        before = np.array([lv for lot, lv in self.level.items() if lot != new.lot and lot not in self.unusual])
        n = len(before)
        if new.lot in self.unusual or n < 3 or before.std() <= 0:
            return None
        tstat = (new.level - before.mean()) / (before.std(ddof=1) * np.sqrt(1 + 1 / n))
        z = float(norm.ppf(np.clip(t_dist.cdf(tstat, n - 1), 1e-12, 1 - 1e-12)))
        out = None
        for side, sign in ((0, 1.0), (1, -1.0)):
            self.cusum[side] = max(0.0, self.cusum[side] + sign * z - k)
            self.cusum_lots[side] = [*self.cusum_lots[side], new.lot] if self.cusum[side] > 0 else []
            if self.cusum[side] > h:
                out, self.cusum[side], self.cusum_lots[side] = self.cusum_lots[side], 0.0, []
        return out

    def _offsets(self, lots: list[str | None]) -> np.ndarray:
        """Each lot's level less `grand` (NaN: not learned yet, or the record's lot is not known)."""
        return np.array([np.nan if lot is None else self.level.get(lot, np.nan) - self.grand for lot in lots])

    def offsets(self, col: LotColumn) -> np.ndarray:
        """Each record's lot's level less phase I's lots' mean level: what a product's level
        learned later is net of, to stand beside those phase I learned (0 where the lot's level
        is not known yet)."""
        lots, inverse = _groups(col)
        ref = [self.level[lot] for lot in self.reference if lot in self.level]
        shift = (float(np.mean(ref)) if ref else self.grand) - self.grand
        return np.nan_to_num(self._offsets(lots) - shift)[inverse]

    def net(self, v: np.ndarray, col: LotColumn) -> tuple[np.ndarray, np.ndarray]:
        """Phase I's records net of their lots' levels, and which had a lot level to be net of."""
        lots, inverse = _groups(col)
        offset = self._offsets(lots)[inverse]
        keep = ~np.isnan(offset)
        return (v - offset)[keep], keep

    # -- new records -----------------------------------------------------------------------------
    def adjusted(self, v: np.ndarray, units: np.ndarray, t: np.ndarray, oos: np.ndarray, col: LotColumn
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[NewLot]]:
        """Learn the levels of new lots from their first records; returns the records (once
        adopted: as deviations from their lot's level around `grand`; those of a lot still being
        learned left out, as they teach it, and those whose lot is not known, as nothing can be
        said of them net of it) and the lots whose level they completed."""
        if not len(v):
            return v, units, t, oos, []
        lots, codes = _groups(col)
        if not self.adopted:
            self._steps(v, lots, codes)
        offset = self._offsets(lots)
        learned: list[NewLot] = []
        for i in np.flatnonzero(np.isnan(offset)):
            if lots[i] is None:
                continue
            lab = str(lots[i])
            mine = codes == i
            self._learning.setdefault(lab, []).append(np.stack([v[mine], t[mine].astype(float), oos[mine]]))
            self._learning_units.setdefault(lab, []).append(units[mine])
            got = np.concatenate(self._learning[lab], axis=1)
            if got.shape[1] < self.records:
                continue
            got, u = got[:, : self.records], np.concatenate(self._learning_units.pop(lab))[: self.records]
            del self._learning[lab]
            y = got[0]
            self._add(lab, float(y.mean()), len(y), float(((y - y.mean()) ** 2).sum()), int(got[1][0]))
            learned.append(NewLot(lab, float(y.mean()), len(y), float(got[2].sum()), str(u[0]), int(got[1][0]),
                                  str(u[-1]), int(got[1][-1]), u))
        if not self.adopted:
            return v, units, t, oos, learned
        off = offset[codes]
        known = ~np.isnan(off)
        return (v - off)[known], units[known], t[known], oos[known], learned

    def judge(self, new: NewLot, sd_unit: float, alpha: float) -> tuple[float, float, int]:
        """How far a new lot sits from the usual lots' level, the prediction bound of that
        distance (two-sided `alpha`), and the lots the bound rests on. Fewer than two lots to
        compare with bound nothing (infinite)."""
        return self._against_others(new.lot, new.level, new.n, sd_unit, alpha)

    def _against_others(self, lot: str, level: float, n: int, sd_unit: float,
                        alpha: float) -> tuple[float, float, int]:
        others = np.array([lv for name, lv in self.level.items() if name != lot and name not in self.unusual])
        k = len(others)
        if k < 2:
            return level - (float(others.mean()) if k else self.grand), float("inf"), k
        spread = float(np.var(others, ddof=1)) * (1 + 1 / k) + sd_unit**2 / n
        bound = float(t_dist.ppf(1 - alpha / 2, k - 1)) * np.sqrt(spread)
        return level - float(others.mean()), bound, k

    def reads_usual(self, lot: str, sd_unit: float, alpha: float) -> bool | None:
        """Whether a lot learned here sits within the prediction bound of the other lots (None:
        not learned here, or too few others to bound it)."""
        if lot not in self.level:
            return None
        if lot in self.unusual:
            return False
        shift, bound, _ = self._against_others(lot, self.level[lot], self.count[lot], sd_unit, alpha)
        return abs(shift) <= bound if np.isfinite(bound) else None

    def chart_points(self) -> tuple[list[int], list[float]]:
        """Each lot's first record time and level, in time order."""
        order = sorted(self.first_t, key=lambda lot: self.first_t[lot])
        return [self.first_t[lot] for lot in order], [self.level[lot] for lot in order]
