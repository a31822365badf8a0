"""The monitor engine: runs detectors over a workspace incrementally and files problems.

What it watches:
- every measurement series (station, measurement, machine of that station visit): a
  two-sided CUSUM on subgroup means, in sigmas of the reference's subgroup means (so slow
  normal wander in the reference widens the limits instead of raising false problems); a
  reading whose level depends on the product is watched as each unit's deviation from its own
  product's level, one that moves with a material's lots (with `lot_levels` on) as its deviation
  from its lot's level (each new lot judged against the lots before it, `monitor.lot_levels`), and an in-spec shift
  no wider than the line's own wander at the same time scale is not a problem;
- first-pass failure rates per station and machine / fixture / operator / shift, and per
  material lot and supplier: binomial (beta-binomial) tests over a moving window with
  Benjamini–Hochberg across the groups of each factor and a minimum effect size.

New data are found by ingest batch sequence (`batch` column), never by timestamps: late
records arrive out of order, and a batch is processed exactly once. The engine's state
(detectors, windows, the last batch seen) is saved after every chunk of batches, so an
interrupted run resumes where it stopped. Each series learns its limits from the line's first
`reference_hours` (phase I; a rate stream within record bounds, so a line of a hundred units a
day learns from days and one of twenty thousand from hours) and never re-learns them from data
being judged. A fix applied on the line (an action event naming a machine, a lot, a station)
takes the records from before it out of the failure-rate windows of what it names.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.stats import norm, poisson
from scipy.stats import t as t_dist

from linelab.monitor.attribute import GroupRateMonitor, PChart
from linelab.monitor.lot_levels import LotLevels, Lots, NewLot, lot_column
from linelab.monitor.problems import Alarm, Evidence, ProblemBook
from linelab.monitor.rules import RuleState
from linelab.monitor.spc import CUSUMChart, EWMAChart, IndividualsChart, StagedChart, XbarChart
from linelab.monitor.state import StateError, load_state, save_state
from linelab.monitor.watch import active_watches
from linelab.profile.io import workspace_profile
from linelab.profile.schema import Reading
from linelab.store.backend import sql_text

STATE_FILE = "monitor/engine.npz"  # explicit data (monitor.state), never a pickle
STATE_VERSION = 15
STEP_FACTORS = ("station", "machine", "fixture", "operator", "shift")
MATERIAL_FACTORS = ("lot", "supplier")


@dataclass
class EngineConfig:
    # Phase I: each series' records in the first hours of data; long enough that normal wear
    # between maintenance shows as a trend (30 h missed it on some lines).
    reference_hours: float = 40.0
    # A failure-rate stream's phase I is the line's first `reference_hours` too (a line of a hundred
    # units a day learns from days, one of twenty thousand from hours), with at least
    # `rate_min_reference` and at most `reference_records` records.
    reference_records: int = 6000
    rate_min_reference: int = 300
    subgroup: int = 10  # measurement records averaged per CUSUM point
    arl0: float = 1e6  # in-control ARL of each measurement CUSUM, in subgroups
    # A watch learned from know-how looks for a failure mode known to happen: it may be more
    # sensitive (an in-control ARL of 1e5 subgroups is ~1M records of one entity per false alarm).
    watch_arl0: float = 1e5
    # A watch on a wearing part alarms on a move of at least this share of the move it learned
    # (and `watch_min_shift` unit sigmas): smaller moves are what an imprecise wear slope leaves.
    watch_min_share: float = 0.4
    watch_min_shift: float = 0.3
    # A watch's CUSUM is tuned to catch a move of this many unit-sigmas quickest: a known failure
    # mode is caught while it is still ramping up, well below the 1-sigma shifts the line's own
    # charts are tuned to.
    watch_shift: float = 0.5
    # ... and where the entity does not wear (a tester's reading), no slope error can pass for the
    # failure: the watch is tuned to a fifth of a sigma and its chart alone decides. Simulated, a
    # tester drifting 0.15 sigma per 1,000 units is caught within 2,000 units 8 times in 10 (1 in 4
    # tuned to 0.5); on the twin's default scenario, 2 seeds in 4.
    watch_steady_shift: float = 0.2
    # A watch learns its entity's normal from the records right after the fix: few, so that a
    # problem returning soon after is not learned as normal (one part of eight sees ~1/8 of the units).
    watch_reference_records: int = 400
    shift: float = 1.0  # mean shift, in sigmas of single units, each CUSUM catches quickest
    persist: int = 3  # subgroups in a row above h before a measurement alarm counts
    # A wear slope (the reading against its machine's age since the work that renews it) is kept
    # where its |t| is at least this, with phase I's spans of time as its independent looks
    # (`phase_spans`): lots used one after another fit a slope as well as wear does.
    min_trend_t: float = 3.0
    # A reading that moves with the room (a leak test with the air's temperature) is watched net of
    # it: phase I fits the reading on the room's readings of the same units, within products, and
    # keeps each whose |t| is at least this, again with phase I's spans of time as its looks: a
    # lot that came in as the room warmed is no room effect. The room's own excursions are the
    # room's series' to raise.
    env_min_t: float = 4.0
    phase_spans: int = 8  # phase I cut into this many spans of time, each one look (`_span_robust_se`)
    level_phi: float = 0.9  # subgroup-mean autocorrelation above which a series is watched by level
    level_sigmas: float = 4.0
    level_margin: float = 2.0  # |t| a maintenance-age trend needs in the reference to be modelled
    environment_margin: float = 2.0  # times the wander seen so far a room reading must move to be a problem
    # A move that loses no unit must also leave the prediction bound of the line's own wander at
    # its time scale (lot to lot, tool to tool), at this two-sided level: the widest stray of a
    # handful of lots seen says little about how far the next one may sit.
    wander_alpha: float = 1e-3
    max_inflation: float = 3.0  # cap on the autocorrelation widening of CUSUM sigma
    rate_window: int = 20000  # records per rate stream in the moving window
    # Rate tests run every two hours of the stream's records (as many as phase I saw in that
    # time), between `rate_min_every` and `rate_every` records; each looks back over nested
    # windows from that many records to `rate_window`, so a test this often costs no sensitivity.
    rate_every: int = 1000
    rate_min_every: int = 100
    rate_every_hours: float = 2.0
    # BH false discovery level per evaluation: at 1e-4 the monitor raised small rises of a machine's
    # failures (an intermittent contact) later than a naive rolling fail-rate check did; at 1e-3 no
    # clean zoo run (tune seeds) opened a failure-rate problem more.
    rate_alpha: float = 1e-3
    rate_min_ratio: float = 1.3  # smallest rate ratio worth a problem
    # Smallest excess failure rate worth a problem. At 0.5 % a gauge that had failed nothing and began
    # failing 1.7 % of units (15 shafts in 900) was never raised, where a naive fail-rate check was
    # (zoo tune seeds); at 0.25 % two more tune problems are found and no clean run opens one more.
    rate_min_excess: float = 0.0025
    rate_min_defects: int = 8
    rate_peer_prior: float = 1000.0  # pseudo-units of the reference rate added to the peers' counts
    rate_time_bins: int = 20  # time bins for comparing lots with concurrently used lots
    step_factors: tuple[str, ...] = STEP_FACTORS
    material_factors: tuple[str, ...] = MATERIAL_FACTORS
    batches_per_chunk: int = 200
    chart_points: int = 300
    # A recorded recipe change starts a new stage for the series at the changed parameters'
    # station and the next `restage_downstream` stations (the inspection that measures it):
    # their limits are re-learned from `restage_records` records after the change.
    restage_downstream: int = 1
    restage_records: int = 1000
    # Work on one part (one tool swapped) moves its machine's level, not its spread or wear:
    # the machine's series re-learns its level from this many records after the work. A watch on
    # a machine that does not wear re-learns only where they show the level moved (|z| above
    # `relevel_z`): a calibration that restores the level keeps the one learned from many more
    # records (300 records miss it by 0.06 sigma, which a watch tuned to 0.2 sigma alarms on
    # within weeks).
    relevel_records: int = 300
    relevel_z: float = 3.0
    # A reading whose level depends on the product (a 20 mm and a 25 mm shaft) is watched as each
    # unit's deviation from its own product's level: a change of product mix moves nothing. A
    # product's level is learned from its records in phase I, or from its first `product_records`
    # records when it first appears later (those records teach; they are not judged).
    product_records: int = 50
    # A reading that moves with a material's lots (`monitor.lot_levels`) is watched net of each
    # lot's level, learned from the lot's first `lot_records` records, once steps across lot
    # changes are larger than steps within lots (F-test at `lot_alpha`) by a lot-to-lot sd of at
    # least `lot_min_sigma` of the records' sd. Each new lot is judged against the lots seen
    # before it at `wander_alpha`.
    lot_records: int = 100
    lot_min_sigma: float = 0.2
    lot_alpha: float = 1e-3
    # Off by default for now: on the zoo's tune seeds it changes no summary figure, it costs about
    # a third more time (200k twin units: ~12 s -> ~16 s), and the twin's closed loop acts on two
    # more false problems with it on (bench/loop.py: 5 against 3, the same gap closed).
    lot_levels: bool = False


def _iso(t_us: int | float | None) -> str | None:
    if t_us is None or (isinstance(t_us, float) and np.isnan(t_us)):
        return None
    return str(np.datetime64(int(t_us), "us").astype("datetime64[s]"))


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def _encode(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[Any]]:
    """Dictionary-encode a column: (int codes, labels); nulls become the label None."""
    enc = pc.dictionary_encode(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
    codes = enc.indices.to_numpy(zero_copy_only=False)
    labels = enc.dictionary.to_pylist()
    if enc.null_count:
        codes = np.where(np.isnan(codes.astype(float)), len(labels), codes).astype(np.int64)
        labels = [*labels, None]
    return codes.astype(np.int64), labels


Events = dict[str, np.ndarray]  # maintenance key -> sorted event times (epoch us)
Fixes = list[tuple[set[str], int]]  # actions applied on the line: what each names, when (epoch us)
MAINTENANCE_KINDS = ("maintenance", "calibration")
Env = tuple[tuple[str, ...], np.ndarray]  # the room's reading names, and their values per record (a column each)


def _age_hours(t: np.ndarray, times: np.ndarray, t_first: int) -> np.ndarray:
    """Hours since the latest event at or before each t (or since the series began)."""
    i = np.searchsorted(times, t, side="right") - 1
    last = np.where(i >= 0, times[np.maximum(i, 0)] if len(times) else t_first, t_first)
    return (t - np.maximum(last, t_first)) / 3.6e9


def _encode_joined(cols: list[pa.ChunkedArray | pa.Array], sep: str = "\x1f") -> tuple[np.ndarray, list[Any]]:
    """`_encode` of the columns' values joined by `sep`, without building the joined strings
    (tens of millions of them on a long run): each column is encoded on its own and the code
    tuples are numbered in order of first appearance, as `_encode` numbers the joined labels."""
    if any(c.null_count for c in cols):  # a null joins to a null label: the plain way
        return _encode(pc.binary_join_element_wise(*cols, sep))
    parts = [_encode(c) for c in cols]
    key = np.zeros(len(cols[0]), dtype=np.int64)
    for codes, labels in parts:
        key = key * max(len(labels), 1) + codes
    enc = pc.dictionary_encode(pa.array(key))  # numbered in order of first appearance
    labels_out = []
    for k in enc.dictionary.to_pylist():
        fields = []
        for _, labels in reversed(parts):
            k, c = divmod(k, max(len(labels), 1))
            fields.append(str(labels[c]))
        labels_out.append(sep.join(reversed(fields)))
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), labels_out


def _series_of(tbl: pa.Table, codes: np.ndarray, labels: list[Any]) -> tuple[
        list[Any], list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Split measurement rows by their key's codes and labels (`_encode`): labels, row indices
    per label, values, units, times."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(labels) + 1))
    groups = [order[bounds[k] : bounds[k + 1]] for k in range(len(labels))]
    units = np.asarray(tbl.column("unit_id").to_pylist(), dtype=object)
    return labels, groups, tbl.column("value").to_numpy(), units, tbl.column("t_us").to_numpy()


def _station_events(events: Events, station: str, machine: str | None = None) -> np.ndarray:
    """Times of maintenance at the station (work on one part excluded), sorted: of the whole station
    and of `machine` where one is given. Servicing one press does not renew its neighbour: counted as
    the neighbour's reset too, its age restarted and its wear, removed as modelled, read as a step."""
    here = [times for key, times in events.items() if key.split(":")[1] == station and not key.startswith("part:")
            and (not machine or key.split(":")[2] in ("", machine))]
    return np.sort(np.concatenate(here)) if here else np.empty(0, np.int64)


# ---------------------------------------------------------------------------------------------
class SeriesMonitor:
    """One measurement series: CUSUM on subgroup means, plus what a problem needs to say."""

    environment = False  # of the room (the profile says so); also the value of engines saved before it was kept
    # Whether the modelled wear was seen renewed: a reset of its age fell inside phase I, or the first
    # one after it took the level back down as the slope says (engines saved before it was kept: yes).
    trend_confirmed = True
    # The room's readings this series moves with: name -> (coefficient, phase I mean); none kept
    # by engines saved before it was learned.
    env_effect: dict[str, tuple[float, float]] = {}  # noqa: RUF012 (never mutated: replaced whole)
    _confirm_drop: float | None = None  # the drop the pending first reset should show, where unconfirmed
    # The level of the records just before that reset (mean, records), as read before any wear is
    # taken off, and the last records so read while a slope is unconfirmed (values, times).
    _before_reset: tuple[float, int] | None = None
    _tail: tuple[np.ndarray, np.ndarray] | None = None
    ref_means = np.empty(0)  # phase I's subgroup means (engines saved before they were kept: none)
    lots: LotLevels | None = None  # each lot's level, where the reading moves with a material's lots
    # The products phase I saw, and its level: where they did not differ, a product first made
    # later may (engines saved before they were kept: none).
    phase1_products: list[str] = []  # noqa: RUF012 (replaced whole)
    phase1_level = 0.0
    lot_candidates: dict[str, LotLevels] = {}  # noqa: RUF012 (replaced whole) each material's lots, until one tells
    # Recent records' units and products, to tell whose units a move is in.
    _prod_u = np.empty(0, dtype=object)
    _prod_p = np.empty(0, dtype=object)

    def __init__(self, station: str, name: str, machine: str | None, cfg: EngineConfig,
                 spec: tuple[float | None, float | None, str | None],
                 watch: tuple[str, str, str] | None = None, learned: float | None = None) -> None:
        self.station, self.name, self.machine = station, name, machine
        # Where `machine` works: the station that makes what this series reads (a lathe), which
        # may lie upstream of the one that reads it (the CMM); its work resets the series.
        self.machine_station = station
        self.cfg = cfg
        # (know-how entry, factor, level): a learned watch follows one entity, more sensitively.
        self.watch = watch
        self.arl0 = cfg.watch_arl0 if watch else cfg.arl0
        # A watch's failure mode moved its measurement `learned` sigmas (signed): it alarms on that
        # side only, for a move of a good part of that size.
        self.side = None if not learned else "up" if learned > 0 else "down"
        self.min_shift = max(cfg.watch_min_shift, cfg.watch_min_share * abs(learned or 0.0))
        self.lsl, self.usl, self.unit = spec
        self._ref: list[np.ndarray] = []
        self.n_ref = 0
        self.chart: CUSUMChart | None = None
        self._ref_t: list[np.ndarray] = []
        self._ref_p: list[np.ndarray] = []
        self._ref_env: list[np.ndarray] = []
        self._ref_lots: list[np.ndarray] = []
        self._lot_alarms: list[Alarm] = []  # new lots judged off the others, for the engine to file
        self.product_level: dict[str, float] = {}  # each product's level, where products differ
        self.by_product = False
        self.grand_level = 0.0
        self._learning: dict[str, list[np.ndarray]] = {}  # records of products whose level is not known yet
        self.product_specs: dict[str, tuple[float | None, float | None]] = {}
        self._partial = (np.empty(0), np.empty(0, dtype=object), np.empty(0, dtype=np.int64), np.empty(0))
        self.constant = False
        self._recent_alarms = np.zeros(max(0, cfg.persist - 1), dtype=bool)
        self.trend_key: str | None = None
        self.trend_slope = self.trend_se = self.trend_age_ref = self.centre_raw = 0.0
        self.trend_age_mean = 0.0  # phase I's mean age on the wear's clock: the slope's share of the centre
        # Where a wear slope was found to be a wander and dropped, the records' level the centre
        # stands for (the slope had taken phase I's mean age times itself off every record).
        self.level_base = 0.0
        self._chunk: tuple[int, np.ndarray, np.ndarray] = (0, np.empty(0, dtype=object), np.empty(0))
        cap = max(cfg.chart_points, 4000)
        self._ring_mean = np.full(cap, np.nan)
        self._ring_oos = np.zeros(cap)
        self._ring_t = np.zeros(cap, dtype=np.int64)
        self._ring_unit = np.empty(cap, dtype=object)
        self._ring_stat = np.zeros(cap)
        self._ring_flag = np.zeros(cap, dtype=bool)  # subgroups inside an alarm: not the line's normal
        self.n_sub = 0  # subgroups scored so far
        self.alarms = 0
        self.records = 0
        self._rec_v = np.empty(0)  # the last records themselves, for the units behind an alarm
        self._rec_u = np.empty(0, dtype=object)
        self.min_ref = 200  # records phase I needs at the least
        self.ref_start_us = 0  # a watch's phase I begins when it is set
        self.trend_from: SeriesMonitor | None = None  # a watch's wear model: its machine's series
        self.condition = False  # a process condition (params: settings, environment), not a product measurement
        self.environment = False  # of the room: one series per station, no wear, judged by its band
        self._events_done: dict[str, int] = {}  # maintenance events already acted on, per key
        self.stage_start_us: int | None = None  # the recorded change that began the current stage
        self.level_offset = 0.0  # how far part work has moved the level since phase I
        self._relevel: list[np.ndarray] | None = None  # records gathered to re-learn the level
        self._relevel_from = 0  # ... from the time of the work that moved it
        self.last_change_us: int | None = None
        self.stages = 1

    def restage(self, at_us: int) -> None:
        """A recorded process change: forget the chart, learn new limits from what follows."""
        self.chart = None
        self._ref, self._ref_t, self._ref_p, self.n_ref = [], [], [], 0
        self._ref_env, self._ref_lots, self.lots, self.lot_candidates = [], [], None, {}
        self._partial = (np.empty(0), np.empty(0, dtype=object), np.empty(0, dtype=np.int64), np.empty(0))
        self._recent_alarms = np.zeros(max(0, self.cfg.persist - 1), dtype=bool)
        self.constant = False
        self.min_ref = self.cfg.restage_records
        self._relevel, self._confirm_drop = None, None  # the new stage learns its level afresh
        self.stage_start_us = at_us
        self.stages += 1

    @property
    def scope(self) -> dict[str, Any]:
        s = {"station": self.station, "measurement": self.name}
        if self.watch:
            s[self.watch[1]] = self.watch[2]
        elif self.machine:
            s["machine"] = self.machine
        return s

    @property
    def wears(self) -> bool:
        """Whether this series' entity wears: a part (a tool, a test fixture) wears and is renewed,
        whether or not 40 hours showed its machine's wear; a machine's reading (a tester's offset)
        wears where a trend since maintenance is modelled for it (a watch not yet fitted takes its
        machine's word)."""
        if self.watch and self.watch[1] != "machine":
            return True
        if self.chart is None and self.trend_from is not None:
            return self.trend_from.wears
        return self.trend_key is not None

    @property
    def tuned_shift(self) -> float:
        """The move, in unit sigmas, this series' CUSUM is tuned to catch quickest."""
        if not self.watch:
            return self.cfg.shift
        return self.cfg.watch_shift if self.wears else self.cfg.watch_steady_shift

    def _records_for(self, base: int) -> int:
        """Records to learn a level to the same share of the move the chart is tuned to (a watch
        tuned to 0.2 sigma needs (0.5 / 0.2)^2 = 6.25 times the records of one tuned to 0.5)."""
        return round(base * (self.cfg.watch_shift / self.tuned_shift) ** 2) if self.watch else base

    @property
    def entity(self) -> str:
        if self.watch:
            return f"{self.station}/{self.watch[2]}"
        return f"{self.station}/{self.machine}" if self.machine else f"{self.station}/{self.name}"

    def _oos(self, v: np.ndarray, products: np.ndarray | None = None) -> np.ndarray:
        """Out of spec, by each unit's own product's limits where products have their own."""
        lsl = np.full(v.shape, np.nan if self.lsl is None else self.lsl)
        usl = np.full(v.shape, np.nan if self.usl is None else self.usl)
        if self.product_specs and products is not None and len(v):
            labels, codes = np.unique(products, return_inverse=True)
            own = [self.product_specs.get(str(p), (self.lsl, self.usl)) for p in labels]
            lsl = np.array([np.nan if lo is None else lo for lo, _ in own])[codes]
            usl = np.array([np.nan if hi is None else hi for _, hi in own])[codes]
        with np.errstate(invalid="ignore"):
            return (v < lsl) | (v > usl)

    def _away_from_limit(self, shift: float) -> bool:
        """Whether a move of `shift` goes away from the only limit a one-sided spec has (a leak
        rate or a roughness falling): every product's spec has a limit on that side only."""
        specs = list(self.product_specs.values())
        if not specs or self.lsl is not None or self.usl is not None:
            specs.append((self.lsl, self.usl))
        if shift < 0:
            return all(lo is None and hi is not None for lo, hi in specs)
        return all(hi is None and lo is not None for lo, hi in specs)

    def _learn_products(self, ref: np.ndarray, ref_t: np.ndarray, ref_p: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Learn each product's level from phase I where the reading's level depends on the product;
        returns the reference as deviations from its products' levels (around the overall level),
        and which records were kept: those of a product too rare in phase I to learn its level
        are left out (learned later)."""
        labels, codes, counts = np.unique(ref_p, return_inverse=True, return_counts=True)
        self.phase1_products, self.phase1_level = [str(x) for x in labels], float(ref.mean())
        every = np.ones(len(ref), dtype=bool)
        if len(labels) < 2:
            return ref, ref_t, every
        means = np.bincount(codes, weights=ref, minlength=len(labels)) / counts
        enough = counts >= self.cfg.product_records
        resid = ref - means[codes]
        if enough.sum() < 2:
            return ref, ref_t, every
        within = float(resid[enough[codes]].std()) or 1e-12
        # Product levels that differ by less than the noise they are learned with are no difference.
        m, c = means[enough], counts[enough]
        if (np.abs(m - np.average(m, weights=c)) / (within / np.sqrt(c))).max() < 4.0:
            return ref, ref_t, every
        self.by_product = True
        self.grand_level = float(np.average(means[enough], weights=counts[enough]))
        self.product_level = {str(p): float(m) for p, m, ok in zip(labels, means, enough, strict=True) if ok}
        keep = enough[codes]
        return (ref - means[codes] + self.grand_level)[keep], ref_t[keep], keep

    def _product_adjusted(self, v: np.ndarray, units: np.ndarray, t: np.ndarray, oos: np.ndarray,
                          products: np.ndarray | None, lots: np.ndarray, lot_offset: np.ndarray | None = None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """New records (and their `lots` rows) as deviations from their product's level; records
        of a product whose level is still being learned teach it and are not judged. Where the
        series is watched by lot, a new product's level is learned net of its records' lots
        (`lot_offset`): learned within one lot, it would carry that lot's offset to every lot after."""
        if not self.by_product and self.phase1_products and products is not None and len(v):
            seen = (products == self.phase1_products[0]) if len(self.phase1_products) == 1 \
                else np.isin(products, self.phase1_products)
            if not seen.all():
                # A product phase I never saw: its level is learned from its first records, as
                # for a line whose products differ from the start (phase I's share its level).
                self.by_product, self.grand_level = True, self.phase1_level
                self.product_level = dict.fromkeys(self.phase1_products, self.phase1_level)
        if not self.by_product or products is None or not len(v):
            return v, units, t, oos, lots
        labels, codes = np.unique(products, return_inverse=True)
        level = np.array([self.product_level.get(str(p), np.nan) for p in labels])
        for i in np.flatnonzero(np.isnan(level)):
            seen = self._learning.setdefault(str(labels[i]), [])
            seen.append(v[codes == i] - (lot_offset[codes == i] if lot_offset is not None else 0.0))
            got = np.concatenate(seen)
            if len(got) >= self.cfg.product_records:
                self.product_level[str(labels[i])] = float(got[: self.cfg.product_records].mean())
                del self._learning[str(labels[i])]
        known = ~np.isnan(level[codes])
        adjusted = v - np.nan_to_num(level[codes]) + self.grand_level
        return adjusted[known], units[known], t[known], oos[known], lots[known]

    def _fit_env(self, ref: np.ndarray, ref_p: np.ndarray, env: np.ndarray, names: tuple[str, ...]) -> None:
        """Learn how this reading moves with the room's readings of its units (within products)."""
        self.env_effect = {}
        if self.environment or not names or env.shape[1] != len(names) or len(ref) < 50:
            return
        seen = ~np.isnan(env).any(axis=1)
        if seen.sum() < 50:
            return
        y, x, prod = ref[seen], env[seen], ref_p[seen]
        _, codes = np.unique(prod, return_inverse=True)
        counts = np.bincount(codes)

        def within(a: np.ndarray) -> np.ndarray:  # columns as deviations from each product's own mean
            means = np.stack([np.bincount(codes, weights=col) / counts for col in a.T], axis=1)
            return a - means[codes]

        yd, xd = within(y[:, None])[:, 0], within(x)
        keep = xd.std(axis=0) > 0
        if not keep.any():
            return
        xd = xd[:, keep]
        coef, *_ = np.linalg.lstsq(xd, yd, rcond=None)
        resid = yd - xd @ coef
        # the wider of two standard errors: records' worth (lag one) and spans' worth (slow runs);
        # each alone is a noisy estimate that sometimes comes out small
        naive = np.sqrt(np.maximum(np.diag(np.linalg.pinv(xd.T @ xd)), 0.0) * resid.var() * len(resid)
                        / _effective_n(resid))
        tval = np.abs(coef) / np.maximum(naive, _span_robust_se(xd, resid, self.cfg.phase_spans))
        kept_names = [n for n, k in zip(names, keep, strict=True) if k]
        means = x[:, keep].mean(axis=0)
        self.env_effect = {n: (float(c), float(m)) for n, c, m, tv in zip(kept_names, coef, means, tval, strict=True)
                           if tv >= self.cfg.env_min_t}

    def _env_adjusted(self, v: np.ndarray, env: Env) -> np.ndarray:
        """The records net of the room (as at its phase I mean); a unit whose room was not read keeps its value."""
        names, e = env
        if not self.env_effect or not len(v):
            return v
        out = v.astype(float)
        for name, (coef, mean) in self.env_effect.items():
            if name in names:
                col = e[:, names.index(name)]
                out = out - coef * np.where(np.isnan(col), 0.0, col - mean)
        return out

    def _candidates(self, events: Events, t_ref: np.ndarray) -> dict[str, np.ndarray]:
        """Event series whose age may explain normal wear of this series.

        Always: any maintenance at this station (age since the series began until the first
        one). Also: a specific maintenance elsewhere, if its reset was observed during the
        reference (cleaning a printer resets the volume it deposits downstream): inside it, and
        not so early that the age since it is the reference's own elapsed time, which any slow
        wander (lots used in sequence) fits as well.
        """
        out = {f"station:{self.machine_station}": _station_events(events, self.machine_station, self.machine)}
        elapsed = t_ref.astype(float)
        for key, times in events.items():
            if np.any((times > t_ref[0]) & (times <= t_ref[-1])) and not _is_elapsed_time(
                    _age_hours(t_ref, times, int(t_ref[0])), elapsed):
                out[key] = times
        return out

    def _times(self, events: Events) -> np.ndarray:
        if self.trend_key is None:
            return np.empty(0, np.int64)
        if self.trend_key.startswith("station:"):
            here = _station_events(events, self.machine_station, self.machine)
            if self.watch:  # one part's own replacements reset its wear too
                own = [t for key, t in events.items() if key.startswith(f"part:{self.station}:")
                       and key.endswith(f":{self.watch[2]}")]
                here = np.sort(np.concatenate([here, *own])) if own else here
            return here
        return events.get(self.trend_key, np.empty(0, np.int64))

    def _fit_trend(self, ref: np.ndarray, t: np.ndarray, events: Events) -> np.ndarray:
        """Model normal wear: a linear trend in time since the maintenance that resets it.

        Returns the reference with the trend removed; no trend is modelled unless it is
        clearly there (|t| >= `min_trend_t`).
        """
        self.trend_key, self.trend_slope, self.t_first = None, 0.0, int(t[0])
        if self.environment:
            return ref  # the room does not wear: a slope over phase I is a warm spell, not a trend
        fits: dict[str, tuple[float, float, float, np.ndarray]] = {}  # key -> t, slope, se, age
        for key, times in self._candidates(events, t).items():
            age = _age_hours(t, times, self.t_first)
            sd = age.std()
            if sd <= 0:
                continue
            slope = float(np.cov(age, ref)[0, 1] / sd**2)
            resid = ref - slope * age
            # Lots used one after another leave runs of residuals of one sign that the lag-one
            # correction reads as noise: the slope must also hold across phase I's spans of time.
            se = max(resid.std() / (sd * np.sqrt(_effective_n(resid))),
                     float(_span_robust_se((age - age.mean())[:, None], resid - resid.mean(), self.cfg.phase_spans)[0]))
            tval = abs(slope) / se if se > 0 else 0.0
            if tval >= self.cfg.min_trend_t:
                fits[key] = (tval, slope, se, age)
        if not fits:
            return ref
        key = max(fits, key=lambda k: fits[k][0])
        own = f"station:{self.machine_station}"
        if key != own and own in fits and _is_elapsed_time(fits[key][3], fits[own][3]):
            # Other work whose age phase I cannot tell from this machine's own (another machine
            # serviced early on): a machine wears with its own work.
            key = own
        self.trend_key, self.trend_slope, self.trend_se = key, fits[key][1], fits[key][2]
        times = self._times(events)
        # A slope against time since the series began (no reset inside phase I) may be a slow
        # wander (lots used in sequence), not wear: the first reset will tell (`_take_relevel`).
        # So may one against an age that a reset early in phase I leaves almost the time itself.
        age = _age_hours(t, times, self.t_first)
        self.trend_confirmed = bool(np.any((times > t[0]) & (times <= t[-1]))) and not _is_elapsed_time(
            age, t.astype(float))
        self.trend_age_ref, self.trend_age_mean = float(age.max()), float(age.mean())
        return ref - self.trend_slope * age

    def _inherit_trend(self, ref: np.ndarray, t: np.ndarray, events: Events) -> np.ndarray:
        """A watch's reference is too short to learn normal wear: take its machine's model."""
        src = self.trend_from
        assert src is not None
        self.trend_key, self.trend_slope, self.trend_se = src.trend_key, src.trend_slope, src.trend_se
        self.trend_age_ref, self.t_first = src.trend_age_ref, getattr(src, "t_first", int(t[0]))
        self.trend_confirmed = src.trend_confirmed
        if self.trend_key is None:
            return ref
        return ref - self.trend_slope * _age_hours(t, self._times(events), self.t_first)

    def detrend(self, v: np.ndarray, t: np.ndarray, events: Events) -> np.ndarray:
        """Remove the modelled wear; beyond the reference's ages, shrink what is left by the
        extrapolation's own uncertainty (3 standard errors), so an imprecise slope cannot drift
        into a false problem."""
        if self.trend_key is None:
            return v
        age = _age_hours(t, self._times(events), self.t_first)
        r = v - self.centre_raw - self.trend_slope * age
        band = 3.0 * self.trend_se * np.maximum(age - self.trend_age_ref, 0.0)
        return self.centre_raw + np.sign(r) * np.maximum(np.abs(r) - band, 0.0)

    def _fit(self, ref: np.ndarray) -> None:
        m = self.cfg.subgroup
        self.centre = float(ref.mean())
        self.sd_unit = float(ref.std(ddof=1)) or 1e-12
        ref = np.clip(ref, self.centre - 4 * self.sd_unit, self.centre + 4 * self.sd_unit)
        k = len(ref) // m
        means = ref[: k * m].reshape(k, m).mean(axis=1)
        sd_sub = max(float(means.std(ddof=1)), self.sd_unit / np.sqrt(m))
        # Lagged means with no spread of their own (a set-point that moved once) have no autocorrelation.
        phi = _lag1(means)
        self.autocorrelation = phi
        if phi > self.cfg.level_phi:
            # A wandering signal (ambient conditions, slow cycles): its mean is not stable enough
            # for a CUSUM. Watch its level instead: beyond the reference's own widest excursion
            # (with a margin) or `level_sigmas`, whichever is wider.
            self.sigma_chart = sd_sub
            widest = float(np.abs(means - means.mean()).max()) / sd_sub
            k = max(self.cfg.level_sigmas, self.cfg.level_margin * widest)
            self.chart = CUSUMChart(mu=self.centre, sigma=sd_sub, k=k, h=2.0, clip=None).fit()
            self.mode = "level"
            return
        # Long-run sd of an AR(1) mean: limits widen with the reference's own autocorrelation.
        inflation = float(np.clip(np.sqrt((1 + max(phi, 0)) / max(1 - phi, 1e-3)), 1, self.cfg.max_inflation))
        self.sigma_chart = sd_sub * inflation
        # Tuned to a shift of `shift` unit-sigmas: k is half of it, in chart sigmas.
        k = 0.5 * self.tuned_shift * self.sd_unit / self.sigma_chart
        self.chart = CUSUMChart(mu=self.centre, sigma=self.sigma_chart, k=k, arl0=self.arl0, clip=4.0).fit()
        self.mode = "cusum"

    def _learn_excursions(self, ref: np.ndarray) -> None:
        """How far the mean of n consecutive records strays from the centre in phase I, for n on a
        grid: the line's own normal wander (lot to lot, tool to tool, the room) at each time scale.
        A shift no larger than that, with no unit out of spec, is not a problem."""
        ref = np.clip(ref, self.centre - 4 * self.sd_unit, self.centre + 4 * self.sd_unit)
        widths = np.unique(np.geomspace(self.cfg.subgroup, max(len(ref) // 3, self.cfg.subgroup),
                                        12).astype(int))
        csum = np.concatenate([[0.0], np.cumsum(ref - self.centre)])
        self.excursion_n = widths.astype(float)
        self.excursion = np.array([np.abs((csum[w:] - csum[:-w]) / w).max() for w in widths])
        m = self.cfg.subgroup
        self.ref_means = ref[: len(ref) // m * m].reshape(-1, m).mean(axis=1)

    def normal_excursion(self, n: int, before_sub: int | None = None, spread_known: bool = False) -> float:
        """The widest stray of a mean of `n` records from the centre, in phase I and in what the
        chart has judged since (up to subgroup `before_sub`, leaving out spans that alarmed);
        `spread_known`: the wander's spread seen so far taken as known (`_wander_bound`).

        Phase I spans hours: one or two lots, tools or days of weather. What the line does
        between them (a new lot, a new tool) shows only later; learned as it comes, the second
        lot change is judged against the first one's move."""
        widths = getattr(self, "excursion_n", None)
        phase1 = float(np.interp(np.log(max(n, 1)), np.log(widths), self.excursion)) if (
            widths is not None and len(widths)) else 0.0
        end = self.n_sub if before_sub is None else min(before_sub, self.n_sub)
        cap = len(self._ring_mean)
        pos = np.arange(max(0, end - cap, self.n_sub - cap), end) % cap
        w = max(1, round(n / self.cfg.subgroup))
        means = np.where(self._ring_flag[pos], np.nan, self._ring_mean[pos])
        bound = self._wander_bound(np.concatenate([self.ref_means, means]), w, spread_known)
        if len(pos) < 2 * w:
            return max(phase1, bound)
        ok = ~np.isnan(means)
        csum = np.concatenate([[0.0], np.cumsum(np.where(ok, means - self.centre, 0.0))])
        cnt = np.concatenate([[0], np.cumsum(ok)])
        full = (cnt[w:] - cnt[:-w]) == w  # windows of judged, in-control subgroups only
        if not full.any():
            return max(phase1, bound)
        strays = np.abs((csum[w:] - csum[:-w])[full] / w)
        return max(phase1, bound, float(strays.max()))

    def _wander_bound(self, means: np.ndarray, w: int, spread_known: bool = False) -> float:
        """How far the mean of the next `w` subgroups may stray from the centre as the line's own
        wander: a prediction bound from the in-control windows of that width seen so far.

        The widest stray seen is no bound: after a few lots, each new lot has about a one in
        (lots seen + 1) chance of straying further. A window's mean is the wander plus its records'
        noise; the noise's size is known (the records' sd), the wander's is estimated from the
        windows' spread beyond that noise, with as many degrees of freedom as the windows hold
        independent looks (neighbours of a wandering series are alike: AR(1) effective n). So the
        wander's part of the bound is Student's t quantile at `wander_alpha`: two or three lots
        seen bound the next one only loosely, and a series that showed no wander beyond its noise
        is bounded by its noise. With `spread_known`, the spread seen is taken as the wander's own
        (the normal quantile): the bound evidence for a problem already open is held to. Where
        fewer than four windows of that width have been seen, narrower ones stand in: a mean
        over more records strays no further."""
        target, m = w, self.cfg.subgroup
        w = min(w, len(means) // 4)
        if w < 1:
            return 0.0
        k = len(means) // w
        win = means[len(means) - k * w :].reshape(k, w)
        dev = win[~np.isnan(win).any(axis=1)].mean(axis=1) - self.centre
        if len(dev) < 2:
            return 0.0
        n_eff = _effective_n(dev)
        wander = max(float(np.mean(dev**2)) - self.sd_unit**2 / (w * m), 0.0) * (1 + 1 / n_eff)
        q_noise = float(norm.ppf(1 - self.cfg.wander_alpha / 2))
        q_wander = q_noise if spread_known else float(t_dist.ppf(1 - self.cfg.wander_alpha / 2, max(n_eff - 1.0, 1.0)))
        return float(np.sqrt(q_wander**2 * wander + q_noise**2 * self.sd_unit**2 / (target * m)))

    def process(self, v: np.ndarray, units: np.ndarray, t: np.ndarray, seq: int, events: Events,
                ref_end_us: int, changes: np.ndarray | None = None,
                products: np.ndarray | None = None, env: Env | None = None, lots: Lots | None = None
                ) -> Alarm | None:
        """Score new records, re-staging at recorded process changes (`changes`, epoch us);
        `products` names each record's product (for readings whose level depends on it); `env`,
        the room's readings of each record's unit (names, and a column each; NaN: not read);
        `lots`, each record's unit's lot of each material (names, and a column each; None: not used).
        New lots judged off the others are kept for `take_lot_alarms`."""
        p = products if products is not None else np.full(len(v), "", dtype=object)
        names, e = env if env is not None else ((), np.empty((len(v), 0)))
        materials, lm, lot_names = lots if lots is not None else ((), np.empty((len(v), 0), dtype=np.int64), [])
        alarm = None
        if self.last_change_us is None and len(t):
            self.last_change_us = int(t[0]) - 1  # changes before the series began do not concern it
        if len(t):
            self._reset_after_maintenance(events, int(t[-1]))
        # A wandering signal (ambient conditions) is watched by level; no recipe moves it.
        while changes is not None and len(t) and getattr(self, "mode", None) != "level":
            due = changes[(changes > self.last_change_us) & (changes <= t[-1])]
            if not len(due):
                break
            # Records of units already past the station when the change came belong to the old stage.
            cut = int(np.searchsorted(t, due[0], side="left"))
            alarm = self._score(v[:cut], units[:cut], t[:cut], p[:cut], seq, events, ref_end_us,
                                (names, e[:cut]), (materials, lm[:cut], lot_names)) or alarm
            self.restage(int(due[0]))
            self.last_change_us = ref_end_us = int(due[0])
            v, units, t, p, e, lm = v[cut:], units[cut:], t[cut:], p[cut:], e[cut:], lm[cut:]
        return self._score(v, units, t, p, seq, events, ref_end_us, (names, e), (materials, lm, lot_names)) or alarm

    def take_lot_alarms(self) -> list[Alarm]:
        """The alarms of new lots judged off the others since the last call."""
        out, self._lot_alarms = self._lot_alarms, []
        return out

    def _reset_after_maintenance(self, events: Events, t_last: int) -> None:
        """Work on this series' station and machine (a repair, a fix) starts its sums afresh: the
        evidence gathered before it says nothing about the process after it.

        Work is counted once, when it is first known: a record of scheduled work may land in a
        later batch than the readings made around it."""
        done = self._events_done
        self._events_done = {key: int(np.searchsorted(times, t_last, side="right")) for key, times in events.items()}
        if self.chart is None:  # phase I: work before the chart is part of what it learns from
            return
        for key, times in events.items():
            new = times[done.get(key, 0) : self._events_done[key]]
            if not len(new):
                continue
            kind, station, machine, target = (key.split(":", 3) + ["", "", ""])[:4]
            if (key == self.trend_key and not self.trend_confirmed and not self.watch and not self.constant
                    and self._relevel is None):
                # The first reset of a wear slope fitted on other work's age (a printer's cleaning
                # for the paste it deposits downstream): the records after it tell, as above.
                at = int(new.max())
                self._confirm_drop = self.trend_slope * float(_age_hours(np.array([at - 1]), times, self.t_first)[0])
                self._relevel, self._relevel_from, self._before_reset = [], at, self._level_before(at)
                continue
            own_part = bool(self.watch and target == self.watch[2])
            mine = machine in ("", self.machine) or own_part
            if station == self.machine_station and mine:
                self.chart.reset()
                if self.constant:
                    return
                if kind != "part" and not self.watch and self.trend_key is not None and not self.trend_confirmed:
                    # The first reset of a wear never seen renewed: the records after it tell
                    # whether the level came back down as the slope says (`_take_relevel`).
                    at = int(new.max())
                    before = _age_hours(np.array([at - 1]), self._times(events), self.t_first)[0]
                    self._before_reset = self._level_before(at)
                    self.level_offset, self._relevel, self._relevel_from = 0.0, [], at
                    self._confirm_drop = self.trend_slope * float(before)
                elif kind != "part" and not self.watch:
                    # Work on the whole station (every tool swapped) brings back the reference's
                    # state: level moves learned from work on single parts no longer apply.
                    self.level_offset, self._relevel = 0.0, None
                else:
                    # One part's work moves its machine's level; a watch's level was learned at
                    # another age of its part, where an imprecise wear slope leaves a bias.
                    self._relevel = []
                    # Scheduled work falls inside a chunk: records before it are of the old part.
                    self._relevel_from = int(new.max())
                return

    def _score(self, v: np.ndarray, units: np.ndarray, t: np.ndarray, p: np.ndarray, seq: int, events: Events,
               ref_end_us: int, env: Env, lots: Lots) -> Alarm | None:
        """Score new records; until `ref_end_us` (and at least `min_ref` records) they are phase I."""
        if len(v) == 0:
            return None
        names, e = env
        materials, lm, lot_names = lots
        self.records += len(v)
        if self.by_product:
            self._remember_products(units, p)
        raw = v
        if self.chart is None:
            phase1 = t < ref_end_us
            phase1[: max(0, self._records_for(self.min_ref) - self.n_ref)] = True
            need = len(v) if phase1.all() else int(np.argmin(phase1))
            self._ref.append(v[:need])
            self._ref_t.append(t[:need])
            self._ref_p.append(p[:need])
            self._ref_env.append(e[:need])
            self._ref_lots.append(lm[:need])
            self.n_ref += need
            v, units, t, p, e, lm = v[need:], units[need:], t[need:], p[need:], e[need:], lm[need:]
            if len(v) == 0:
                return None
            ref, ref_t, ref_p = np.concatenate(self._ref), np.concatenate(self._ref_t), np.concatenate(self._ref_p)
            # a profile that changed its room readings mid-phase-I leaves columns that do not line up
            ref_env = np.concatenate(self._ref_env) if all(x.shape[1] == len(names) for x in self._ref_env) \
                else np.empty((len(ref), 0))
            ref_lots = (np.concatenate(self._ref_lots) if all(x.shape[1] == len(materials) for x in self._ref_lots)
                        else None)
            self._ref, self._ref_t, self._ref_p, self._ref_env, self._ref_lots = [], [], [], [], []
            self.reference_oos = float(self._oos(ref, ref_p).mean())
            self._fit_env(ref, ref_p, ref_env, names)
            ref = self._env_adjusted(ref, (names, ref_env))
            ref, ref_t, kept = self._learn_products(ref, ref_t, ref_p)
            ref_lots = ref_lots[kept] if ref_lots is not None else None
            # A set-point: constant by design, changed only on purpose (float noise of a recipe
            # value read back is not spread: a level chart of it alarmed on 3e-13 degC).
            if ref.std() <= 1e-9 * max(1.0, abs(float(ref.mean()))):
                self.constant = True
            lots_ok = ref_lots is not None and not (self.environment or self.watch or self.constant)
            lots = (materials, ref_lots if ref_lots is not None else lm[:0], lot_names)
            # Wear is fitted net of the lots where they already tell: lots used in sequence, one
            # after another, fit a slope as well as wear does.
            net, net_t = self._learn_lots(ref, ref_t, lots) if lots_ok else (ref, ref_t)
            detrended = (self._fit_trend(net, net_t, events) if self.trend_from is None
                         else self._inherit_trend(net, net_t, events))
            if self.lots is not None:  # the lots' levels again, net of that wear (as the chart sees them)
                detrended = ref - (self.trend_slope * _age_hours(ref_t, self._times(events), self.t_first)
                                   if self.trend_key is not None else 0.0)
                self.centre_raw = float(detrended.mean())
                detrended = self._learn_lots(detrended, ref_t, lots)[0]
            else:
                self.centre_raw = float(detrended.mean())
            self._fit(detrended)
            self._learn_excursions(detrended)
            raw = raw[-len(v):]
        if self.constant:
            return None
        # Spec checks use the raw values; the chart watches what normal wear does not explain.
        # One wild reading (a mis-pick, a bad contact) is a unit defect, not a process shift:
        # single values are winsorised at 4 unit-sigmas before they are averaged.
        oos_flags = self._oos(raw, p).astype(float)
        v = self._env_adjusted(v, (names, e))
        col = lot_column((materials, lm, lot_names), self.lots.material) if self.lots is not None else None
        v, units, t, oos_flags, lm = self._product_adjusted(v, units, t, oos_flags, p, lm,
                                                            self.lots.offsets(col) if self.lots and col else None)
        if self.trend_key is not None and not self.trend_confirmed:
            self._keep_tail(v, t)
        v = self.detrend(v, t, events) - self.level_offset - self.level_base
        if self.lots is not None or self.lot_candidates:
            v, units, t, oos_flags = self._lot_adjusted(v, units, t, oos_flags, (materials, lm, lot_names), seq)
        if self._relevel is not None:
            wear = (self.trend_slope * _age_hours(t, self._times(events), self.t_first)
                    if self._confirm_drop is not None else None)
            v, units, t, oos_flags = self._take_relevel(v, units, t, oos_flags, wear)
        if len(v) == 0:
            return None
        v = np.clip(v, self.centre - 4 * self.sd_unit, self.centre + 4 * self.sd_unit)
        pv, pu, pt, po = self._partial
        v, units, t = np.concatenate([pv, v]), np.concatenate([pu, units]), np.concatenate([pt, t])
        oos_flags = np.concatenate([po, oos_flags])
        m = self.cfg.subgroup
        k = len(v) // m
        self._partial = (v[k * m :], units[k * m :], t[k * m :], oos_flags[k * m :])
        if k == 0:
            return None
        keep = 20 * self.cfg.chart_points
        self._rec_v = np.concatenate([self._rec_v, v[: k * m]])[-keep:]
        self._rec_u = np.concatenate([self._rec_u, units[: k * m]])[-keep:]
        g = v[: k * m].reshape(k, m)
        means = g.mean(axis=1)
        oos = oos_flags[: k * m].reshape(k, m).sum(axis=1)
        last_unit = units[m - 1 : k * m : m]
        last_t = t[m - 1 : k * m : m]
        assert self.chart is not None  # fitted when phase I ended, above
        seen = self.chart.n_seen_  # the chart counts its own subgroups from its (re)fit on
        scores = self.chart.update(means)
        if self.side is not None:  # one-sided: the other side's excursions are not this failure mode
            c = scores.extra["c_plus" if self.side == "up" else "c_minus"]
            scores.statistic, scores.alarm = c, c > self.chart.h_
            scores.extra["onset"] = scores.extra["onset_plus" if self.side == "up" else "onset_minus"]
        first_sub = self.n_sub
        self._chunk = (first_sub, last_unit, last_t)  # evidence even if the ring is too short
        self._push(means, oos, last_t, last_unit, scores.statistic)
        # A problem must persist: the CUSUM above h for `persist` subgroups in a row.
        run = np.concatenate([self._recent_alarms, scores.alarm])
        windows = np.lib.stride_tricks.sliding_window_view(run, self.cfg.persist)
        alarm = np.asarray(windows.all(axis=1))[-len(scores.alarm):]
        self._recent_alarms = run[-(self.cfg.persist - 1):] if self.cfg.persist > 1 else run[:0]
        if not alarm.any():
            return None
        self.alarms += int(alarm.sum())
        hits = np.flatnonzero(alarm)
        onset_sub = first_sub + int(scores.extra["onset"][hits[0]]) - seen
        found = self._alarm(onset_sub, first_sub + hits[0], first_sub + hits[-1], seq)
        shift = found.effect["shift_sigma"]
        toward = {"up": shift, "down": -shift}.get(self.side or "", abs(shift))
        if self.watch and (toward <= 0 or (self.wears and toward < self.min_shift)):
            # a move the other way since the estimated onset, or a small move of a wearing part
            # (what the wear model's extrapolation leaves): not the failure the watch is for
            return None
        # Units out of spec beyond what phase I's rate explains (Poisson, one-sided 1e-3). Half a
        # unit is added to phase I's count: a reference with none out of spec does not show the
        # rate is nil, and one unit out of spec in a thousand since is no loss.
        n = found.units_affected
        ref_rate = self.reference_oos + 0.5 / max(self.n_ref, 1)
        in_spec = poisson.sf(round(found.effect["out_of_spec_now"] * n) - 1, ref_rate * n) > 1e-3
        if not self.watch and in_spec:
            # A move that loses no unit is a problem only when it is wider than the line's own
            # wander at that time scale (lot to lot, tool to tool, the room) as seen so far ...
            size = max(abs(found.effect["shift"]), self._largest_product_shift(n))
            if self._away_from_limit(found.effect["shift"]):
                return None  # a one-sided spec's reading moving away from its limit: better, not worse
            wander = self.normal_excursion(n, onset_sub)
            if self.environment:
                # The room wanders on scales longer than any phase I (warm spells of days): it
                # must leave the band seen so far by a margin, not merely reach its edge.
                wander *= self.cfg.environment_margin
            if size <= wander:
                # Within what a few lots seen allow, but beyond the spread they showed: evidence
                # for a problem its entity already has (a drift of the part a problem names), as
                # a smaller move is below; it opens none.
                if not self.environment and size > self.normal_excursion(n, onset_sub, spread_known=True):
                    found.effect["supporting"] = True
                    return found
                return None
            if size < self.tuned_shift * self.sd_unit:
                # ... and at least the move the chart is tuned to: lots and weather move readings by
                # less as a matter of course. A smaller move only supports a problem its entity
                # already has (a worn part's reading drifting before its product goes out of spec).
                found.effect["supporting"] = True
                return found
        self._flag(onset_sub)
        return found

    def _flag(self, onset_sub: int) -> None:
        """Mark the subgroups since an alarm's onset: what a problem did is not the line's normal wander."""
        self._ring_flag[self._window(onset_sub)] = True

    def _take_relevel(self, v: np.ndarray, units: np.ndarray, t: np.ndarray, raw: np.ndarray,
                      wear: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        # `raw` is any per-record array carried along (the out-of-spec flags); `wear`, the modelled
        # wear removed from each record, where this relevel also judges an unconfirmed wear slope
        """Gather records after part work; once there are enough, their mean is the new level."""
        assert self._relevel is not None and self.chart is not None
        after = t >= self._relevel_from
        if not after.all():  # the last records before the work: left out, the chart starts afresh
            v, units, t, raw = v[after], units[after], t[after], raw[after]
            wear = wear[after] if wear is not None else None
        need = self._records_for(self.cfg.relevel_records) - sum(x.shape[-1] for x in self._relevel)
        self._relevel.append(v[:need] if wear is None else np.stack([v[:need], wear[:need]]))
        if len(v) < need:
            return v[:0], units[:0], t[:0], raw[:0]
        gathered = np.concatenate(self._relevel, axis=-1)
        if wear is not None and gathered.ndim == 2:
            gathered = self._judge_wear(gathered[0], gathered[1])
            if self.trend_key is None:  # the slope is gone: what follows keeps its wear in
                v = v + wear - self.level_base
                # and the level is phase I's again, as after any work on the machine: the
                # records since the reset sit wherever the wander the slope took for wear is now
                gathered = gathered[:0]
        moved = float(gathered.mean()) - self.centre if len(gathered) else 0.0
        if (len(gathered) and self.watch and not self.wears
                and abs(moved) < self.cfg.relevel_z * self.sd_unit / np.sqrt(len(gathered))):
            # A calibration that did not move the level: keep the one learned from more records.
            # (A wearing part always re-learns: its level was learned at another age, through a
            # wear slope that is never exact.)
            moved = 0.0
        self.level_offset += moved
        self._relevel = None
        self.chart.reset()
        return v[need:] - moved, units[need:], t[need:], raw[need:]

    def _judge_wear(self, v: np.ndarray, wear: np.ndarray) -> np.ndarray:
        """The first reset of a wear slope fitted with no reset in phase I: wear renewed brings the
        level back down by what the slope says had built up; a wander mistaken for wear does not,
        and the reset reads as a step of that size. Where the records after the reset sit nearer
        the level from before it than the level the slope predicts, the slope goes (the series is
        watched without a wear model from here); where they sit as predicted, it is confirmed. A
        drop too small to tell from the records' noise leaves the question to the next reset.
        Returns the records as the model now sees them."""
        drop, self._confirm_drop = self._confirm_drop or 0.0, None
        before, self._before_reset = self._before_reset, None
        if abs(drop) <= 3 * self.sd_unit / np.sqrt(len(v)):
            return v
        if before is not None:
            # The step the reset made, read off the records on either side of it: beyond its
            # phase I ages the slope's own prediction of the level before the reset is an
            # extrapolation (and the chart shrinks what it cannot explain there), so a wander
            # mistaken for wear can sit far below it and still look 'renewed' against it.
            level, n = before
            seen = level - float((v + wear).mean()) - self.level_offset - self.level_base
            renewed = seen * drop > 0 and abs(seen) > 3 * self.sd_unit * np.sqrt(1 / len(v) + 1 / n)
        else:
            missed = float(v.mean()) - self.centre  # beyond the predicted level, toward the old one
            renewed = not (missed * drop > 0 and abs(missed) > 0.5 * abs(drop))
        if not renewed:
            self.level_base = self.trend_slope * self.trend_age_mean
            self.trend_key, self.trend_slope, self.trend_se = None, 0.0, 0.0
            return v + wear - self.level_base
        self.trend_confirmed = True
        return v

    def _keep_tail(self, v: np.ndarray, t: np.ndarray) -> None:
        """Keep the last records as read before wear is taken off (what a first reset is judged by)."""
        keep = self._records_for(self.cfg.relevel_records)
        tv, tt = self._tail if self._tail is not None else (np.empty(0), np.empty(0, dtype=np.int64))
        self._tail = (np.concatenate([tv, v])[-keep:], np.concatenate([tt, t.astype(np.int64)])[-keep:])

    def _level_before(self, at: int) -> tuple[float, int] | None:
        """The mean of the kept records made before `at` (None: too few to tell a level by)."""
        if self._tail is None:
            return None
        v = self._tail[0][self._tail[1] < at]
        self._tail = None
        return (float(v.mean()), len(v)) if len(v) >= 20 else None

    def _push(self, means: np.ndarray, oos: np.ndarray, t: np.ndarray, unit: np.ndarray, stat: np.ndarray) -> None:
        cap = len(self._ring_mean)
        idx = (self.n_sub + np.arange(len(means))) % cap
        self._ring_mean[idx], self._ring_oos[idx], self._ring_t[idx] = means, oos, t
        self._ring_unit[idx], self._ring_stat[idx] = unit, stat
        self._ring_flag[idx] = False
        self.n_sub += len(means)

    def _window(self, start_sub: int) -> np.ndarray:
        """Ring positions of subgroups start_sub .. n_sub-1 still held, oldest first."""
        cap = len(self._ring_mean)
        start = max(start_sub, self.n_sub - cap, 0)
        return np.arange(start, self.n_sub) % cap

    def _ev(self, sub: int, seq: int | None) -> Evidence:
        first, units, times = self._chunk
        if first <= sub < first + len(units):
            i = sub - first
            return Evidence(units[i], _iso(times[i]), seq, (sub + 1) * self.cfg.subgroup - 1)
        cap = len(self._ring_mean)
        if sub < self.n_sub - cap or sub >= self.n_sub:
            return Evidence(None, None, seq, sub * self.cfg.subgroup)
        i = sub % cap
        return Evidence(self._ring_unit[i], _iso(self._ring_t[i]), seq, (sub + 1) * self.cfg.subgroup - 1)

    def _alarm(self, onset_sub: int, first_sub: int, last_sub: int, seq: int) -> Alarm:
        m = self.cfg.subgroup
        since = self._window(onset_sub)
        shift = float(np.nanmean(self._ring_mean[since]) - self.centre)
        n_since = len(since) * m
        oos_now = float(self._ring_oos[since].sum() / max(n_since, 1))
        # A process condition out of its window (a setting, the weather) fails no unit by itself:
        # the problem book counts what its units have lost since the onset (`monitor.cost`).
        lost = 0.0 if self.condition else max(oos_now - self.reference_oos, 0.0) * n_since
        direction = "risen" if shift > 0 else "fallen"
        unit = f" {self.unit}" if self.unit else ""
        made = f" ({self.machine_station})" if self.machine_station != self.station else ""
        where = f" at {self.station}" + (f" on {self.watch[1]} {self.watch[2]}" if self.watch
                                         else f" on machine {self.machine}{made}" if self.machine else "")
        text = (f"{self.name}{where} has {direction} {_fmt(abs(shift))}{unit} "
                f"({abs(shift) / self.sd_unit:.1f} sigma) over the last {n_since:,} units")
        if self.lsl is not None or self.usl is not None or self.product_specs:
            now, before = f"{oos_now:.1%}", f"{self.reference_oos:.1%}"
            text += (f"; {now} of units are now out of spec, up from {before}" if oos_now > self.reference_oos
                     and now != before else "; units are still within spec" if not oos_now
                     else f"; {now} of units out of spec, as before")
        # From a little before the onset to now, thinned to at most 2 x chart_points points.
        chart_idx = self._window(onset_sub - self.cfg.chart_points // 2)
        chart_idx = chart_idx[np.linspace(0, len(chart_idx) - 1, min(len(chart_idx), 2 * self.cfg.chart_points))
                              .astype(int)]
        chart = {
            "type": "cusum_subgroup_means",
            "t": [_iso(x) for x in self._ring_t[chart_idx]],
            "value": self._ring_mean[chart_idx].round(6).tolist(),
            "statistic": self._ring_stat[chart_idx].round(4).tolist(),
            "centre": self.centre,
            "lcl": self.centre - 3 * self.sigma_chart,
            "ucl": self.centre + 3 * self.sigma_chart,
            "h": self.chart.h_ if self.chart else None,
            "onset_t": self._ev(onset_sub, None).t,
            "lsl": self.lsl,
            "usl": self.usl,
            "label": f"{self.name} (mean of {m} units)",
        }
        return Alarm(
            detector="knowhow_watch" if self.watch else "measurement_cusum",
            kind="measurement_shift",
            entity=self.entity,
            scope=self.scope,
            onset=self._ev(onset_sub, None),
            first=self._ev(first_sub, seq),
            latest=self._ev(last_sub, seq),
            units_affected=n_since,
            yield_lost_units=round(lost, 2),
            effect={"shift": shift, "shift_sigma": shift / self.sd_unit, "out_of_spec_now": oos_now,
                    "out_of_spec_reference": self.reference_oos, "unit": self.unit, "condition": self.condition},
            description=text + ".",
            chart=chart,
            units=self._tail_units(n_since, shift),
            family=f"{self.station}/{self.name}",
            watch=self.watch[0] if self.watch else None,
        )

    def _learn_lots(self, ref: np.ndarray, t: np.ndarray, lots: Lots) -> tuple[np.ndarray, np.ndarray]:
        """Learn the levels of phase I's lots of each material; where one material's lots already
        clearly differ, returns the reference net of them, with its times (see `monitor.lot_levels`)."""
        self.lot_candidates = {}
        for material in lots[0]:
            cand = LotLevels(material, self.cfg.lot_records)
            col = lot_column(lots, material)
            assert col is not None
            cand.learn_reference(ref, t, col)
            self.lot_candidates[material] = cand
        self.lots = None
        telling = self._telling_lots()
        if telling is None:
            return ref, t
        self._take_lots(telling, float(ref.mean()))
        col = lot_column(lots, telling.material)
        assert col is not None
        net, keep = telling.net(ref, col)
        return net, t[keep]

    def _take_lots(self, lots: LotLevels, grand: float) -> None:
        """Watch the series net of these lots from now on (the other materials' are no longer tracked)."""
        lots.adopt(grand)
        self.lots, self.lot_candidates = lots, {}

    def _telling_lots(self) -> LotLevels | None:
        """The material whose lots differ most, if its lots differ clearly (`lot_min_sigma`)."""
        spread = {m: c.spread(self.cfg.lot_alpha) for m, c in self.lot_candidates.items()}
        best = max(spread, key=lambda m: spread[m], default=None)
        return self.lot_candidates[best] if best is not None and spread[best] >= self.cfg.lot_min_sigma else None

    def _lot_adjusted(self, v: np.ndarray, units: np.ndarray, t: np.ndarray, oos: np.ndarray, lots: Lots,
                      seq: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """New records net of their lot's level, where the series is watched so; else the lots
        they complete are learned, and a material is taken on once its lots tell (from the next
        records on). A new lot learned under the material taken on is judged (`_judge_lot`)."""
        if self.lots is not None:
            col = lot_column(lots, self.lots.material)
            if col is None:
                return v, units, t, oos
            v, units, t, oos, learned = self.lots.adjusted(v, units, t, oos, col)
        else:
            news: dict[str, list[NewLot]] = {}
            for material, cand in self.lot_candidates.items():
                col = lot_column(lots, material)
                if col is not None:
                    news[material] = cand.adjusted(v, units, t, oos, col)[4]
            telling = self._telling_lots() if any(news.values()) else None
            if telling is None:
                return v, units, t, oos
            self._take_lots(telling, self.centre)
            learned = news.get(telling.material, [])  # the lots that made them tell: judged against those before
        for new in learned:
            # a lot judged off on its own is left out of the chart of lot levels: at most one of these
            self._lot_alarms += [a for a in (self._judge_lot(new, seq), self._chart_lots(new, seq)) if a is not None]
        return v, units, t, oos

    def _chart_lots(self, new: NewLot, seq: int) -> Alarm | None:
        """Lots that keep coming in off the lots' usual level (the chart of lot levels): a move of
        the machine that lot-centring would take into each new lot's level."""
        assert self.lots is not None
        run = self.lots.chart(new)
        if not run:
            return None
        lots = self.lots
        usual, spread = lots.usual(run)
        shift = float(np.mean([lots.level[lot] for lot in run])) - usual
        unit = f" {self.unit}" if self.unit else ""
        where = f" at {self.station}" + (f" on machine {self.machine}" if self.machine else "")
        text = (f"{self.name}{where} reads {_fmt(abs(shift))}{unit} {'higher' if shift > 0 else 'lower'} "
                f"({abs(shift) / self.sd_unit:.1f} sigma) on the last {len(run)} {lots.material} lots than on the "
                f"lots before them: lot after lot, so the move is the {'machine' if self.machine else 'station'}'s, "
                "not the lots'.")
        chart = self._lot_chart(usual, 3 * spread, lots.first_t[run[0]])
        effect = {"shift": shift, "shift_sigma": shift / self.sd_unit, "out_of_spec_now": new.out_of_spec / new.n,
                  "out_of_spec_reference": self.reference_oos, "unit": self.unit, "condition": self.condition,
                  "lots": len(run)}
        if abs(shift) < self.tuned_shift * self.sd_unit or self._away_from_limit(shift):
            effect["supporting"] = True  # as for any in-spec move smaller than the chart is tuned to
        return Alarm(
            detector="measurement_lot_levels", kind="measurement_shift", entity=self.entity, scope=self.scope,
            onset=Evidence(None, _iso(lots.first_t[run[0]]), None),
            first=Evidence(new.last_unit, _iso(new.last_t), seq), latest=Evidence(new.last_unit, _iso(new.last_t), seq),
            units_affected=new.n * len(run), yield_lost_units=0.0, effect=effect, description=text, chart=chart,
            units=[str(u) for u in new.units], family=f"{self.station}/{self.name}")

    def _lot_chart(self, centre: float, half_width: float, onset_us: int) -> dict[str, Any]:
        """The level of each lot in time order, in the measurement's units, with the band it is judged by."""
        assert self.lots is not None
        times, levels = self.lots.chart_points()
        band = np.isfinite(half_width)
        return {"type": "lot_levels", "t": [_iso(x) for x in times], "value": [round(x, 6) for x in levels],
                "centre": centre, "lcl": centre - half_width if band else None,
                "ucl": centre + half_width if band else None, "onset_t": _iso(onset_us), "lsl": self.lsl,
                "usl": self.usl, "label": f"{self.name}, level of each {self.lots.material} lot"}

    def _judge_lot(self, new: NewLot, seq: int) -> Alarm | None:
        """A new lot whose level sits beyond the lot-to-lot prediction bound (and at least the
        move the chart is tuned to), or whose first records lose units out of spec beyond phase
        I's rate: an alarm on the lot. Either way its level is kept: its later records are watched
        against it, and a lot judged off is left out of the spread the next lots are judged by."""
        assert self.lots is not None
        shift, bound, k = self.lots.judge(new, self.sd_unit, self.cfg.wander_alpha)
        ref_rate = self.reference_oos + 0.5 / max(self.n_ref, 1)
        loses = poisson.sf(round(new.out_of_spec) - 1, ref_rate * new.n) <= 1e-3
        off = abs(shift) > bound and abs(shift) >= self.tuned_shift * self.sd_unit and not self._away_from_limit(shift)
        if not (off or loses):
            return None
        self.lots.unusual.append(new.lot)
        material = self.lots.material
        unit = f" {self.unit}" if self.unit else ""
        where = f" at {self.station}" + (f" on machine {self.machine}" if self.machine else "")
        usual = (f"beyond the spread of the {k} lots before it (±{_fmt(bound)}{unit})" if np.isfinite(bound)
                 else f"with {k} lot(s) before it to compare")
        text = (f"{self.name}{where} reads {_fmt(abs(shift))}{unit} {'higher' if shift > 0 else 'lower'} "
                f"({abs(shift) / self.sd_unit:.1f} sigma) on units built with {material} lot {new.lot}, "
                f"{usual}; {new.out_of_spec / new.n:.1%} of its first {new.n} units out of spec.")
        chart = self._lot_chart(self.lots.usual([])[0], bound, new.first_t)
        lost = max(new.out_of_spec - self.reference_oos * new.n, 0.0) if not self.condition else 0.0
        return Alarm(
            detector="measurement_lot", kind="measurement_shift", entity=f"lot={material}/{new.lot}",
            scope={"station": self.station, "measurement": self.name, "material": material, "lot": new.lot},
            onset=Evidence(new.first_unit, _iso(new.first_t), None),
            first=Evidence(new.last_unit, _iso(new.last_t), seq), latest=Evidence(new.last_unit, _iso(new.last_t), seq),
            units_affected=new.n, yield_lost_units=round(lost, 2),
            effect={"shift": shift, "shift_sigma": shift / self.sd_unit, "out_of_spec_now": new.out_of_spec / new.n,
                    "out_of_spec_reference": self.reference_oos, "unit": self.unit, "condition": self.condition,
                    "lots_compared": k},
            description=text, chart=chart, units=[str(u) for u in new.units], family=f"{self.station}/{self.name}")

    def _remember_products(self, units: np.ndarray, products: np.ndarray) -> None:
        keep = 20 * self.cfg.chart_points  # as many as the records kept for an alarm's units
        self._prod_u = np.concatenate([self._prod_u, units])[-keep:]
        self._prod_p = np.concatenate([self._prod_p, products])[-keep:]

    def _largest_product_shift(self, n_since: int) -> float:
        """The widest move of one product's own records since the onset: a move confined to one
        product (its program, its fixture) is diluted by the others in the series' means.
        (Products are looked up by unit: they do not travel with the records through the partial
        subgroup and re-levelling buffers, and are needed only when an alarm is judged.)"""
        if not self.by_product or not len(self._prod_u):
            return 0.0
        v, u = self._rec_v[-n_since:], self._rec_u[-n_since:].astype(str)
        order = np.argsort(self._prod_u.astype(str))
        keys, prods = self._prod_u[order].astype(str), self._prod_p[order]
        at = np.clip(np.searchsorted(keys, u), 0, len(keys) - 1)
        known = keys[at] == u
        labels, codes = np.unique(prods[at[known]].astype(str), return_inverse=True)
        counts = np.bincount(codes, minlength=len(labels))
        sums = np.bincount(codes, weights=v[known] - self.centre, minlength=len(labels))
        enough = counts >= self.cfg.subgroup
        if not enough.any():
            return 0.0
        # as large as the product's own records show it, less two standard errors: a product with
        # few records since the onset does not pass its noise off as a move
        n = counts[enough]
        return float(max((np.abs(sums[enough] / n) - 2 * self.sd_unit / np.sqrt(n)).max(), 0.0))

    def _tail_units(self, n_since: int, shift: float) -> list[str]:
        """Units since onset more than 2 sigma off-centre in the direction of the shift."""
        v, u = self._rec_v[-n_since:], self._rec_u[-n_since:]
        z = (v - self.centre) / self.sd_unit * np.sign(shift)
        return [str(x) for x in u[z > 2]]


# ---------------------------------------------------------------------------------------------
class RateStream:
    """First-pass failure rate of the groups of one factor (e.g. an inspection station by shift, lots of a material)."""

    def __init__(self, factor: str, context: str, cfg: EngineConfig) -> None:
        self.factor, self.context, self.cfg = factor, context, cfg
        self.labels: dict[Any, int] = {}
        self.names: list[Any] = []
        self._ref_g: list[np.ndarray] = []
        self._ref_f: list[np.ndarray] = []
        self.n_ref = 0
        self.monitor: GroupRateMonitor | None = None
        self.g = np.empty(0, dtype=np.int64)
        self.f = np.empty(0, dtype=bool)
        self.units = np.empty(0, dtype=object)
        self.t = np.empty(0, dtype=np.int64)
        self.records = 0
        self.scored = 0
        self.evaluations = 0
        self.alarms = 0
        self.every = cfg.rate_every
        self._ref_span = [0, 0]  # first and last time of phase I (epoch us)
        self.fixes_seen = 0  # fixes applied on the line so far, each acted on once

    def forget_before(self, names: set[str], t_us: int) -> None:
        """A fix applied at `t_us` to what `names` name (machine M2 at station ASSY): the records of
        those groups from before the fix leave the moving window, so the window judges them as they
        are now and a return of the problem is dated from its return, not from its first time."""
        hit = [i for lab, i in self.labels.items() if str(lab) in names or str(lab).split(":")[-1] in names]
        if hit and len(self.g):
            keep = ~(np.isin(self.g, hit) & (self.t < t_us))
            self.g, self.f, self.units, self.t = self.g[keep], self.f[keep], self.units[keep], self.t[keep]

    def _codes(self, codes: np.ndarray, labels: list[Any]) -> np.ndarray:
        local = np.empty(len(labels), dtype=np.int64)
        for i, lab in enumerate(labels):
            if lab not in self.labels:
                self.labels[lab] = len(self.names)
                self.names.append(lab)
            local[i] = self.labels[lab]
        return local[codes]

    def process(self, codes: np.ndarray, labels: list[Any], fails: np.ndarray, units: np.ndarray,
                t: np.ndarray, seq: int, ref_end_us: int | None = None) -> list[Alarm]:
        """Add records; phase I lasts until `ref_end_us` (within the record bounds of the config)."""
        g = self._codes(codes, labels)
        self.records += len(g)
        if self.monitor is None:
            cfg = self.cfg
            in_ref = t < (ref_end_us if ref_end_us is not None else np.iinfo(np.int64).max)
            in_ref[: max(0, cfg.rate_min_reference - self.n_ref)] = True
            need = min(len(g) if in_ref.all() else int(np.argmin(in_ref)), cfg.reference_records - self.n_ref)
            if need and not self.n_ref:
                self._ref_span[0] = int(t[0])
            if need:
                self._ref_span[1] = int(t[need - 1])
            self._ref_g.append(g[:need])
            self._ref_f.append(fails[:need])
            self.n_ref += need
            g, fails, units, t = g[need:], fails[need:], units[need:], t[need:]
            if not len(g) and self.n_ref < cfg.reference_records:
                return []
            hours = max((self._ref_span[1] - self._ref_span[0]) / 3.6e9, 1e-9)
            self.every = int(np.clip(round(self.n_ref / hours * cfg.rate_every_hours), cfg.rate_min_every,
                                     cfg.rate_every))
            self.monitor = GroupRateMonitor(
                alpha=self.cfg.rate_alpha, min_ratio=self.cfg.rate_min_ratio,
                min_excess=self.cfg.rate_min_excess, min_defects=self.cfg.rate_min_defects,
            ).fit(np.concatenate(self._ref_f), np.concatenate(self._ref_g))
            self._ref_g, self._ref_f = [], []
        before = len(self.g)
        G = np.concatenate([self.g, g])
        F = np.concatenate([self.f, fails])
        U = np.concatenate([self.units, units])
        T = np.concatenate([self.t, t])
        every, w = self.every, self.cfg.rate_window
        # Checkpoints every `rate_every` scored records, counted over the stream's whole life,
        # so how the data were split into runs does not change when tests happen.
        first = every - (self.scored % every)
        checkpoints = before + np.arange(first, len(g) + 1, every)
        self.scored += len(g)
        flagged: dict[int, list[Any]] = {}
        scales = self._scales()
        # Every window each checkpoint looks at, in the order they are judged below; a window
        # none of whose groups can alarm is skipped (a vectorised screen of all windows at once:
        # judging each in turn cost a SciPy and a statsmodels call per window, most of the
        # engine's time on a long run).
        spans = np.asarray(scales, dtype=np.int64)
        ends = np.repeat(checkpoints.astype(np.int64), len(spans))
        los = np.maximum(0, ends - np.tile(spans, len(checkpoints)))
        may = self._may_alarm(G, F, ends, los, len(scales)).reshape(len(checkpoints), len(spans)).tolist()
        for c, e in enumerate(checkpoints):
            # Each checkpoint looks back over nested windows, from the last `every` records to
            # the whole moving window: a rise is judged on the records since it began, not
            # diluted in twenty thousand (a lot failing a quarter of its units is plain within a
            # few hundred). The scales share the false-alarm level (Bonferroni).
            for j, span in enumerate(scales):  # shortest first: a window reaching back to the start ends the list
                lo = max(0, int(e) - span)
                if not may[c][j]:
                    if lo == 0:
                        break
                    continue
                v, present = self._verdicts(G[lo:e], F[lo:e], len(scales))
                for i in np.flatnonzero(v.alarm):
                    grp = int(present[i])
                    hits = flagged.setdefault(grp, [])
                    if not hits or hits[-1][0] != int(e):
                        hits.append((int(e), v.row(int(i))))
                if lo == 0:
                    break
            self.evaluations += 1
        keep = max(0, len(G) - w)
        self.g, self.f, self.units, self.t = G[keep:], F[keep:], U[keep:], T[keep:]
        alarms = [self._alarm(grp, hits, G, F, U, T, seq) for grp, hits in flagged.items()]
        self.alarms += len(alarms)
        return alarms

    def _may_alarm(self, G: np.ndarray, F: np.ndarray, ends: np.ndarray, los: np.ndarray, looks: int) -> np.ndarray:
        """For each window G[lo:end], whether `_verdicts` could raise an alarm in it: False only
        where no group has the records, failures and p-value an alarm needs.

        An alarm needs a q-value below the level, and a Benjamini-Hochberg q-value is never below
        its own p-value; so a window whose every group's p-value (the same test as `_verdicts`,
        computed for all windows at once) is at least twice the level cannot alarm. The factor
        is a margin for rounding only: a window passed on is judged by `_verdicts` as ever, so
        what alarms is exactly what alarmed window by window. Lots and suppliers are compared
        with units built at the same time (`_test_concurrent`): see `_may_alarm_concurrent`."""
        assert self.monitor is not None
        ng = len(self.names)
        cuts_max = 2 * len(ends) + 1
        if not len(ends) or cuts_max * ng > 50_000_000:  # too many groups to count densely: judge all
            return np.ones(len(ends), dtype=bool)
        # Each group's records and failures before each window bound, from counts between
        # consecutive bounds (no per-record matrix: a window is counts at its end less its start).
        cuts, at = np.unique(np.concatenate([ends, los]), return_inverse=True)
        seg = np.searchsorted(cuts, np.arange(len(G)), side="right")
        idx = seg * ng + G
        size = (len(cuts) + 1) * ng
        n_cum = np.cumsum(np.bincount(idx, minlength=size).reshape(-1, ng), axis=0)
        d_cum = np.cumsum(np.bincount(idx[F.astype(bool)], minlength=size).reshape(-1, ng), axis=0)
        i_end, i_lo = at[: len(ends)], at[len(ends) :]
        n = n_cum[i_end] - n_cum[i_lo]
        d = d_cum[i_end] - d_cum[i_lo]
        mon = self.monitor
        ok = (n > 0) & (d >= mon.min_defects)
        if self.factor in MATERIAL_FACTORS:
            # 200 concurrent units need 200 of the group's own and 200 of the others in the window
            ok &= np.minimum(n, (ends - los)[:, None] - n) >= 200
            rows, cols = np.nonzero(ok)
            return self._may_alarm_concurrent(G, F, ends, los, rows, cols, looks)
        if self.factor == "station":
            p0 = np.full(n.shape, mon.reference_rate_)
        else:  # each group against its peers in the same window, as `_verdicts` does
            peers_n, peers_d = n.sum(axis=1, keepdims=True) - n, d.sum(axis=1, keepdims=True) - d
            ok &= peers_n >= 500
            prior = self.cfg.rate_peer_prior
            p0 = np.clip((peers_d + prior * mon.reference_rate_) / (peers_n + prior), 1e-9, 1 - 1e-9)
        level = 2.0 * min(mon.alpha, self.cfg.rate_alpha / looks)
        rows, cols = np.nonzero(ok)
        if not len(rows):
            return np.zeros(len(ends), dtype=bool)
        pv = mon.p_values(n[rows, cols], d[rows, cols], p0[rows, cols])
        may = np.zeros(len(ends), dtype=bool)
        may[rows[pv < level]] = True
        return may

    def _may_alarm_concurrent(self, G: np.ndarray, F: np.ndarray, ends: np.ndarray, los: np.ndarray,
                              rows: np.ndarray, cols: np.ndarray, looks: int) -> np.ndarray:
        """`_may_alarm` for lots and suppliers: for each (window `rows`, group `cols`) pair, the
        p-value and the concurrent units of `_test_concurrent`, all pairs at once. A group's
        comparison needs only its own records in each time bin of the window and the bin's
        totals, so no (window, bin, group) matrix is built: a group's records before a position
        are counted by a binary search among that group's positions."""
        assert self.monitor is not None
        may = np.zeros(len(ends), dtype=bool)
        if not len(rows):
            return may
        bins = self.cfg.rate_time_bins
        lo, length = los[rows], ends[rows] - los[rows]
        # Bin j of a window holds its records r with r * bins // length == j: from ceil(j * length / bins).
        bounds = lo[:, None] + (np.arange(bins + 1)[None, :] * length[:, None] + bins - 1) // bins
        span = len(G) + 1
        order = np.sort(G * span + np.arange(len(G)))  # by group, then position
        failed = np.flatnonzero(F.astype(bool))
        order_f = np.sort(G[failed] * span + failed)
        base = (cols * span)[:, None]

        def before(keys: np.ndarray) -> np.ndarray:  # each pair's group's records before each bound
            return np.searchsorted(keys, base + bounds) - np.searchsorted(keys, base)

        nb, db = np.diff(before(order), axis=1), np.diff(before(order_f), axis=1)
        f_cum = np.concatenate([[0], np.cumsum(F.astype(np.int64))])
        peers_n, peers_d = np.diff(bounds, axis=1) - nb, np.diff(f_cum[bounds], axis=1) - db
        n, d = nb.sum(axis=1), db.sum(axis=1)
        # As `_test_concurrent`: peers' rate per bin, shrunk towards the group's own rate.
        own = d.astype(float) / np.maximum(n, 1)
        prior = self.cfg.rate_peer_prior / bins
        peer_rate = (peers_d + prior * own[:, None]) / (peers_n + prior)
        expected = (nb * peer_rate).sum(axis=1)
        concurrent = np.minimum(nb, peers_n).sum(axis=1)
        mon = self.monitor
        ok = (concurrent >= 200) & (d >= mon.min_defects)
        p0 = np.clip(expected / np.maximum(n, 1), 1e-9, 1 - 1e-9)
        pv = mon.p_values(n[ok], d[ok], p0[ok])
        may[rows[ok][pv < 2.0 * min(mon.alpha, self.cfg.rate_alpha / looks)]] = True
        return may

    def _scales(self) -> list[int]:
        """Look-back spans of each test: `every` records doubling up to the moving window."""
        w = self.cfg.rate_window
        spans = [int(self.every * 2**k) for k in range(32) if self.every * 2**k < w]
        return [*spans, w]

    def _verdicts(self, g: np.ndarray, f: np.ndarray, looks: int) -> tuple[Any, np.ndarray]:
        """Each group's verdict over one window of records, at the level `rate_alpha / looks`."""
        assert self.monitor is not None
        n = np.bincount(g, minlength=len(self.names))
        d = np.bincount(g, weights=f, minlength=len(self.names)).astype(np.int64)
        present = np.flatnonzero(n)
        np_, dp = n[present], d[present]
        if self.factor == "station":
            v = self.monitor.test_counts(present, np_, dp)
        elif self.factor in MATERIAL_FACTORS:
            v = self._test_concurrent(g, f, present, np_, dp)
        else:
            # Each group against its peers in the same window: a rise that hits every
            # group alike is the station's (its own stream), not any one group's.
            peers_n, peers_d = np_.sum() - np_, dp.sum() - dp
            has_peers = peers_n >= 500
            # Shrunk towards the reference rate: a few hundred peer units with no failure
            # must not make the comparison rate zero.
            prior = self.cfg.rate_peer_prior
            peer_rate = (peers_d + prior * self.monitor.reference_rate_) / (peers_n + prior)
            v = self.monitor.test_counts(present, np_, dp, reference=peer_rate)
            v.alarm &= has_peers
        v.alarm &= v.q_value < self.cfg.rate_alpha / looks
        return v, present

    def _test_concurrent(self, g: np.ndarray, f: np.ndarray, present: np.ndarray, n: np.ndarray,
                         d: np.ndarray) -> Any:
        """Lots and suppliers against units built *at the same time* with other lots.

        Lots are used one after another, so a lot compared with earlier lots takes the blame
        for anything else that changed meanwhile. Here each group's expected failures sum,
        over time bins, the rate of the other groups' units in the same bin; a group with no
        concurrent peers is compared with itself (no verdict possible).
        """
        assert self.monitor is not None
        bins = self.cfg.rate_time_bins
        b = (np.arange(len(g)) * bins) // max(len(g), 1)
        ng = len(self.names)
        nb = np.bincount(g * bins + b, minlength=ng * bins).reshape(ng, bins)
        db = np.bincount(g * bins + b, weights=f, minlength=ng * bins).reshape(ng, bins)
        peers_n, peers_d = nb.sum(axis=0) - nb, db.sum(axis=0) - db
        own = d.astype(float) / np.maximum(n, 1)
        own_rate = np.zeros(ng)
        own_rate[present] = own
        prior = self.cfg.rate_peer_prior / bins
        peer_rate = (peers_d + prior * own_rate[:, None]) / (peers_n + prior)
        expected = (nb * peer_rate).sum(axis=1)[present]
        concurrent = (np.minimum(nb, peers_n).sum(axis=1))[present]
        v = self.monitor.test_counts(present, n, d, reference=expected / np.maximum(n, 1))
        v.alarm &= concurrent >= 200
        return v

    def _alarm(self, grp: int, hits: list[Any], G: np.ndarray, F: np.ndarray, U: np.ndarray, T: np.ndarray,
               seq: int) -> Alarm:
        assert self.monitor is not None
        first_e, _ = hits[0]
        last_e, row = hits[-1]
        p0 = row["reference_rate"]  # what the group was compared with: its peers or the reference
        # Change point from the window that first raised the alarm: it still holds the
        # group's records from before the change (later windows may not).
        lo = max(0, first_e - self.cfg.rate_window)
        before = lo + np.flatnonzero(G[lo:first_e] == grp)
        onset = int(before[_bernoulli_change(F[before].astype(float), p0)]) if len(before) else lo
        mine = onset + np.flatnonzero(G[onset:last_e] == grp)
        f = F[mine].astype(float)
        since = f
        rate_now = float(since.mean()) if since.size else row["rate"]
        lost = float(since.sum() - p0 * since.size)
        label = self.names[grp]
        where = self._where(label)
        # a ratio to a reference of almost no failures is no measure (a prior's 1e-9 gave "27586206.9x")
        times = f" ({rate_now / p0:.1f}x)" if p0 >= 1e-3 else ""
        text = (f"first-pass failures {where} are {rate_now:.1%} over the last {since.size:,} units, "
                f"up from {p0:.1%}{times}; about {max(lost, 0):,.0f} extra failing units.")
        ev = lambda i: Evidence(U[i - 1] if i > 0 else None, _iso(T[i - 1]) if i > 0 else None, seq)  # noqa: E731
        cum = np.cumsum(f) / np.arange(1, len(f) + 1)
        pts: np.ndarray | list[int] = (
            np.linspace(0, len(mine) - 1, min(len(mine), self.cfg.chart_points)).astype(int) if len(mine) else []
        )
        chart = {
            "type": "group_rate",
            "t": [_iso(T[mine[i]]) for i in pts],
            "value": [float(_moving_rate(f, i)) for i in pts],
            "cumulative": [float(cum[i]) for i in pts],
            "centre": p0,
            "ucl": float(min(p0 * self.cfg.rate_min_ratio, p0 + 3 * np.sqrt(p0 * (1 - p0) / 100))),
            "onset_t": _iso(T[onset]),
            "label": f"failure rate, {self.factor} {label} (moving, 100 units)",
        }
        return Alarm(
            detector="defect_rate",
            kind="defect_rate",
            entity=self._entity(label),
            scope=self._scope(label),
            onset=Evidence(U[onset], _iso(T[onset]), None),
            first=ev(first_e),
            latest=ev(last_e),
            units_affected=int(since.size),
            yield_lost_units=round(max(lost, 0.0), 2),
            effect={"rate": rate_now, "reference_rate": p0, "rate_ratio": rate_now / p0,
                    "excess_rate": rate_now - p0, "q_value": row["q_value"], "window_n": row["n"]},
            description=text,
            chart=chart,
            units=[str(u) for u in U[mine][f > 0]],
        )

    def _scope(self, label: Any) -> dict[str, Any]:
        if self.factor == "station":
            return {"station": self.context}
        if self.factor in MATERIAL_FACTORS:
            return {"material": self.context, self.factor: label}
        return {"station": self.context, self.factor: label}

    def _entity(self, label: Any) -> str:
        if self.factor == "station":
            return f"{self.context}/*"
        if self.factor == "machine":
            return f"{self.context}/{label}"
        if self.factor in ("shift", "operator"):
            return f"{self.factor}={label}"
        if self.factor in MATERIAL_FACTORS:
            return f"{self.factor}={self.context}/{label}"
        return f"{self.context}/{self.factor}={label}"

    def _where(self, label: Any) -> str:
        if self.factor == "station":
            return f"at {self.context}"
        if self.factor == "lot":
            return f"of units built with {self.context} lot {label}"
        if self.factor == "supplier":
            return f"of units built with {self.context} from supplier {label}"
        return f"at {self.context} on {self.factor} {label}"


def _moving_rate(f: np.ndarray, i: int, width: int = 100) -> float:
    lo = max(0, i + 1 - width)
    return float(f[lo : i + 1].mean())


def _bernoulli_change(f: np.ndarray, p0: float) -> int:
    """Most likely start of a rate increase in a 0/1 sequence (log-likelihood ratio vs p0)."""
    n = len(f)
    if n == 0:
        return 0
    tail_d = np.cumsum(f[::-1])[::-1]  # failures from i to the end
    tail_n = np.arange(n, 0, -1)
    p1 = np.clip(tail_d / tail_n, 1e-9, 1 - 1e-9)
    llr = tail_d * np.log(p1 / p0) + (tail_n - tail_d) * np.log((1 - p1) / (1 - p0))
    llr[p1 <= p0] = 0.0
    return int(np.argmax(llr))


def _measurements_sql(made_at: dict[tuple[str, str], str] | None,
                      environment: list[tuple[str, str]] | None = None) -> str:
    """The measurement and parameter readings of a range of batches (parameters: lo, hi, lo, hi),
    each with the machine and fixture of the station visit it belongs to, and its unit's product.

    A reading belongs to the visit it was made in (a retest is read on the other tester): the
    unit's latest visit of that station at or before the reading. One the profile says is made
    upstream belongs to the visit of the station that made it (`made_at`).

    Most units visit a station once: their readings take that visit by a plain join (if it began
    at or before the reading). Only readings of a unit that visited the station more than once go
    through the as-of join: for the others it chose the same visit, at the cost of sorting every
    reading by unit and station (the largest part of the query on a long run).

    Each reading also carries its unit's room readings of these batches (`environment`, in order:
    columns env0, env1, ...), joined here: looked up per reading in Python, they cost more than
    every series' chart on a long run."""
    # (station, reading) -> the station whose machine makes what it reads, from the profile
    made = sorted((made_at or {}).items()) or [(("", ""), "")]
    pairs = environment or []
    env_cols = "".join(f", e.env{j}" for j in range(len(pairs)))
    env_join = ""
    if pairs:
        picks = ", ".join(f"avg(value) FILTER (WHERE station = {sql_text(st)} AND name = {sql_text(n)}) AS env{j}"
                          for j, (st, n) in enumerate(pairs))
        where = " OR ".join(f"(station = {sql_text(st)} AND name = {sql_text(n)})" for st, n in pairs)
        env_join = (f" LEFT JOIN (SELECT unit_id, {picks} FROM m WHERE is_param AND ({where}) GROUP BY unit_id) e"
                    " ON e.unit_id = b.unit_id")
    made_values = ", ".join(f"({sql_text(st)}, {sql_text(n)}, {sql_text(m)})" for (st, n), m in made)
    return f"""
        WITH mk(station, name, made_at) AS (VALUES {made_values}),
             m AS (SELECT x.*, coalesce(mk.made_at, x.station) AS made_at
                   FROM (SELECT unit_id, station, name, value, t, batch, false AS is_param FROM measurements
                         WHERE batch > ? AND batch <= ?
                         UNION ALL
                         SELECT unit_id, station, name, value, t, batch, true FROM params
                         WHERE batch > ? AND batch <= ?) x
                   LEFT JOIN mk ON mk.station = x.station AND mk.name = x.name),
             v AS (SELECT unit_id, station, count(*) AS visits, any_value(machine) AS machine,
                          any_value(fixture) AS fixture, any_value(t_in) AS t_in
                   FROM steps WHERE unit_id IN (SELECT unit_id FROM m) GROUP BY unit_id, station),
             j AS (SELECT m.*, coalesce(v.visits, 0) AS visits, v.machine AS v_machine, v.fixture AS v_fixture,
                          v.t_in AS v_t_in
                   FROM m LEFT JOIN v ON v.unit_id = m.unit_id AND v.station = m.made_at),
             once AS (SELECT * EXCLUDE (visits, v_machine, v_fixture, v_t_in),
                             CASE WHEN t >= v_t_in THEN v_machine END AS machine,
                             CASE WHEN t >= v_t_in THEN v_fixture END AS fixture
                      FROM j WHERE visits <= 1),
             s AS (SELECT unit_id, station, machine, fixture, t_in FROM steps
                   WHERE (unit_id, station) IN (SELECT (unit_id, station) FROM v WHERE visits > 1)),
             again AS (SELECT r.* EXCLUDE (visits, v_machine, v_fixture, v_t_in), s.machine, s.fixture
                       FROM (SELECT * FROM j WHERE visits > 1) r
                       ASOF LEFT JOIN s ON r.unit_id = s.unit_id AND r.made_at = s.station AND r.t >= s.t_in),
             b AS (SELECT * FROM once UNION ALL SELECT * FROM again)
        SELECT b.batch, b.unit_id, b.station, b.name, b.machine, b.fixture, b.value, epoch_us(b.t) AS t_us,
               b.is_param, coalesce(u.product, '') AS product, b.made_at{env_cols}
        FROM b LEFT JOIN units u ON u.unit_id = b.unit_id{env_join}
        ORDER BY b.batch, b.t, b.unit_id, b.name
        """


def _unit_lots_sql(materials: list[str]) -> str:
    """Each unit's lot of each material (columns lot0, lot1, ... in `materials`' order, named
    within the supplier as the failure-rate streams name them), from the material records of a
    range of batches (parameters: lo, hi). One row per unit, looked up by the readings in Arrow:
    joined to every reading in SQL it cost more than the rest of the readings' query.

    Only the material records of the readings' batches and the chunk's worth before them: looking
    each unit up in every material record ever stored cost as much again on a long run. A unit
    whose lot was recorded longer ago is read as of no known lot."""
    picks = ", ".join(f"any_value(coalesce(supplier, '') || ':' || lot) FILTER (WHERE material = {sql_text(x)})"
                      f" AS lot{j}" for j, x in enumerate(materials))
    return f"SELECT unit_id, {picks} FROM materials WHERE batch > ? AND batch <= ? GROUP BY unit_id"


def _encode_lots(col: pa.ChunkedArray, names: list[str]) -> np.ndarray:
    """A lot column as codes into `names`, the material's lots in order of first sight (extended
    with lots new here): codes stay the same from run to run, as phase I gathers its records
    over many. -1 where the unit used none of the material."""
    enc = pc.dictionary_encode(col.combine_chunks())
    index = {n: i for i, n in enumerate(names)}
    here = []
    for lot in enc.dictionary.to_pylist():
        if str(lot) not in index:
            index[str(lot)] = len(names)
            names.append(str(lot))
        here.append(index[str(lot)])
    codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.where(codes >= 0, np.asarray(here + [0], dtype=np.int64)[codes], -1)


def _line_readings(ws: Any) -> tuple[list[Reading], list[str]]:
    """The readings the line's profile declares, and its stations in process order (none without a profile)."""
    profile = workspace_profile(ws.path) if isinstance(getattr(ws, "path", None), Path) else None
    return (list(profile.line.readings), profile.line.station_order) if profile is not None else ([], [])


def _materials_upstream(used: dict[str, set[str]], order: list[str]) -> Callable[[str], list[int]]:
    """For a station, the materials (their indices in `used`) built in at it or at a station
    before it in process order. Without an order, or where a station is not in it, every one."""
    pos = {st: i for i, st in enumerate(order)}
    every = list(range(len(used)))

    def at(station: str) -> list[int]:
        if station not in pos:
            return every
        return [j for j, stations in enumerate(used.values())
                if any(pos.get(st, -1) <= pos[station] for st in stations)]

    return functools.cache(at)


def _made_at(readings: list[Reading]) -> dict[tuple[str, str], str]:
    """(station, measurement) -> the station that makes what it reads, where the line's profile
    says it is not the one that reads it."""
    return {(r.station, r.name): r.made_at for r in readings
            if r.made_at and r.station and r.made_at != r.station and r.role == "measurement"}


def _lag1(x: np.ndarray) -> float:
    """Lag-one autocorrelation; 0 for a series too short or with no spread on either side."""
    lagged, led = x[:-1], x[1:]
    if len(x) < 4 or lagged.std() == 0 or led.std() == 0:
        return 0.0
    return float(np.corrcoef(led, lagged)[0, 1])


def _is_elapsed_time(age: np.ndarray, other: np.ndarray) -> bool:
    """Whether an age moves with `other` (the elapsed time, another age) so closely (|r| > 0.9)
    that a slope on one is a slope on the other."""
    if age.std() <= 0 or other.std() <= 0:
        return True
    return abs(float(np.corrcoef(age, other)[0, 1])) > 0.9


def _span_robust_se(x: np.ndarray, resid: np.ndarray, spans: int) -> np.ndarray:
    """Standard errors of least-squares coefficients on `x` (columns centred, rows in time order)
    whose residuals may move together over hours: the scores summed over `spans` consecutive
    spans of time, each span one independent look (a cluster-robust sandwich by span).

    A slow wander the regressors do not cause (one lot after another, a worn tool) leaves long
    runs of residuals of one sign, which per-record and lag-one corrections read as noise: a room
    reading that happened to climb while a new lot came in fits that lot's step with a large t.
    Summed over spans, such runs weigh as the few looks they are."""
    n = len(resid)
    spans = max(2, min(spans, n // 10))
    cut = np.linspace(0, n, spans + 1).astype(int)
    scores = np.add.reduceat(x * resid[:, None], cut[:-1], axis=0)
    bread = np.linalg.pinv(x.T @ x)
    cov = bread @ (scores.T @ scores * spans / (spans - 1)) @ bread
    return np.sqrt(np.maximum(np.diag(cov), 1e-300))


def _effective_n(resid: np.ndarray) -> float:
    """Records' worth of independent evidence in a series whose neighbours are alike (AR(1)):
    a wandering series (the room, a slow cycle) fits any slope with a t-value that i.i.d.
    records would make significant."""
    rho = float(np.clip(_lag1(resid), 0.0, 0.99))
    return float(max(min(3.0, len(resid)), len(resid) * (1 - rho) / (1 + rho)))


def _environment(readings: list[Reading]) -> set[tuple[str, str]]:
    """(station, reading) of the readings the line's profile says are of the room, not the product."""
    return {(r.station, r.name) for r in readings if r.role == "environment" and r.station}


class _RoomReadings:
    """The room's readings (the profile's environment readings) of each reading's unit, as the
    measurement query joined them (columns env0, env1, ...), for the series that ask."""

    def __init__(self, tbl: pa.Table, pairs: list[tuple[str, str]]) -> None:
        self.names = tuple(f"{st}.{n}" for st, n in pairs)
        self._matrix = (np.column_stack([pc.fill_null(tbl.column(f"env{j}"), np.nan).to_numpy()
                                         for j in range(len(pairs))]) if pairs else None)

    def of(self, idx: np.ndarray) -> Env | None:
        return None if self._matrix is None else (self.names, self._matrix[idx])


# ---------------------------------------------------------------------------------------------
@dataclass
class RunReport:
    batches: tuple[int, int]  # (first, last) batch sequence processed; (0, 0) when none
    records: dict[str, int] = field(default_factory=dict)
    alarms: int = 0
    problems_opened: list[str] = field(default_factory=list)
    problems_updated: list[str] = field(default_factory=list)
    detectors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MonitorEngine:
    """Incremental, restartable monitoring of one workspace."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.last_seq = 0
        self.series: dict[tuple[str, str, str | None], SeriesMonitor] = {}
        self.rates: dict[tuple[str, str], RateStream] = {}
        # Learned watches: (entry, station, measurement, level) -> a series of that one entity.
        self.watched: dict[tuple[str, str, str, str], SeriesMonitor] = {}
        self.t_first_us: int | None = None  # earliest record seen: phase I is measured from it
        self.lot_names: dict[str, list[str]] = {}  # material -> its lots in order of first sight (their codes)
        self.version = STATE_VERSION

    def _ref_end(self, t_us: np.ndarray) -> int:
        """End of phase I: `reference_hours` after the earliest record the engine has seen."""
        if self.t_first_us is None:
            self.t_first_us = int(t_us.min())
        return self.t_first_us + int(self.config.reference_hours * 3.6e9)

    # -- persistence ---------------------------------------------------------------------------
    @staticmethod
    def state_path(ws: Any) -> Path:
        return Path(ws.path) / STATE_FILE

    @classmethod
    def load(cls, ws: Any, config: EngineConfig | None = None) -> MonitorEngine:
        """The saved engine of this workspace, or a fresh one (with `config`). The state is read as
        plain data: a file that is not the monitor's own is refused, never executed."""
        path = cls.state_path(ws)
        if path.exists():
            engine = load_state(path, _state_classes())
            if not isinstance(engine, MonitorEngine):
                raise StateError(f"{path}: not a monitor engine's state")
            if getattr(engine, "version", None) == STATE_VERSION:
                return engine
        return cls(config)

    def save(self, ws: Any) -> None:
        save_state(self, self.state_path(ws), _state_classes())  # atomic: a crash leaves the last state

    # -- running -------------------------------------------------------------------------------
    def run(self, ws: Any, progress: Any = None, max_batches: int | None = None) -> RunReport:
        """Process every batch ingested since the last run; returns what happened."""
        last = int(ws.last_batch_seq())
        if max_batches is not None:
            last = min(last, self.last_seq + max_batches)
        report = RunReport(batches=(self.last_seq + 1, last) if last > self.last_seq else (0, 0))
        book = ProblemBook(ws)
        specs, product_specs = self._specs(ws), self._product_specs(ws)
        readings, station_order = _line_readings(ws)
        made_at, environment = _made_at(readings), _environment(readings)
        step = self.config.batches_per_chunk
        for lo in range(self.last_seq, last, step):
            hi = min(lo + step, last)
            alarms = self._measurements(ws, lo, hi, specs, self._events(ws, hi), report,
                                        self._recipe_changes(ws, lo, hi), product_specs, made_at, environment,
                                        station_order)
            fixes = self._fixes(ws, hi)
            alarms += self._steps(ws, lo, hi, report, fixes)
            alarms += self._materials(ws, lo, hi, report, fixes)
            # Alarms that can open a problem first, then those that can only join one (same chunk).
            # Of alarms raised by the same evidence, the narrowest leads the problem they share: a
            # shift's or a machine's rise says more than the whole station's that it makes.
            for alarm in sorted(alarms, key=lambda a: (bool(a.effect.get("supporting")), a.first.t or "",
                                                       a.entity.endswith("/*"))):
                if alarm.effect.pop("supporting", False):
                    book.join(alarm)
                else:
                    book.add(alarm)
            report.alarms += len(alarms)
            self.last_seq = hi
            self.save(ws)
            if progress is not None:
                progress(hi - lo)
        report.problems_opened = book.opened
        report.problems_updated = sorted(book.updated - set(book.opened))
        report.detectors = self.detector_stats()
        return report

    def detector_stats(self) -> dict[str, dict[str, Any]]:
        """Alarm statistics per detector family."""
        ser = list(self.series.values())
        rates = list(self.rates.values())
        return {
            "measurement_cusum": {
                "series": len(ser),
                "fitted": sum(s.chart is not None for s in ser),
                "records": sum(s.records for s in ser),
                "alarmed_subgroups": sum(s.alarms for s in ser),
                "series_in_alarm": sum(1 for s in ser if s.chart is not None and s.chart.c_plus_ > s.chart.h_
                                       or s.chart is not None and s.chart.c_minus_ > s.chart.h_),
            },
            "defect_rate": {
                "streams": len(rates),
                "fitted": sum(r.monitor is not None for r in rates),
                "records": sum(r.records for r in rates),
                "evaluations": sum(r.evaluations for r in rates),
                "alarms": sum(r.alarms for r in rates),
            },
        }

    @staticmethod
    def _specs(ws: Any) -> dict[tuple[str, str], tuple[float | None, float | None, str | None]]:
        rows = ws.query("SELECT station, name, any_value(lsl), any_value(usl), any_value(unit) FROM specs GROUP BY ALL")
        return {(r[0], r[1]): (r[2], r[3], r[4]) for r in zip(*[c.to_pylist() for c in rows.columns], strict=True)}

    @staticmethod
    def _product_specs(ws: Any) -> dict[tuple[str, str], dict[str, tuple[float | None, float | None]]]:
        """Spec limits per product, for readings whose limits differ by product."""
        rows = ws.query("""SELECT station, name, product, lsl, usl FROM specs
                           WHERE (station, name) IN (SELECT (station, name) FROM specs GROUP BY ALL
                                                     HAVING count(DISTINCT (lsl, usl)) > 1)""")
        out: dict[tuple[str, str], dict[str, tuple[float | None, float | None]]] = {}
        for st, name, prod, lsl, usl in zip(*[c.to_pylist() for c in rows.columns], strict=True):
            out.setdefault((st, name), {})[prod] = (lsl, usl)
        return out

    @staticmethod
    def _events(ws: Any, hi: int) -> Events:
        """Maintenance and calibration times known up to batch `hi`, per station/machine/target."""
        # Work on one part (a tool, a fixture) is keyed `part`: it resets that part's wear, not
        # the wear of the machine's other parts.
        tbl = ws.query(
            f"""SELECT concat_ws(':', CASE WHEN target IN (SELECT DISTINCT fixture FROM steps) THEN 'part'
                                      ELSE kind END,
                                 coalesce(station, ''), coalesce(machine, ''), coalesce(target, '')) AS key,
                       epoch_us(t) AS t_us
                FROM events WHERE batch <= ? AND kind IN ({", ".join(f"'{k}'" for k in MAINTENANCE_KINDS)})
                ORDER BY t""",
            [hi],
        )
        keys = np.asarray(tbl.column("key").to_pylist(), dtype=object)
        t_us = tbl.column("t_us").to_numpy()
        return {str(k): t_us[keys == k] for k in dict.fromkeys(keys.tolist())}

    def _recipe_changes(self, ws: Any, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Times of recipe changes in these batches, per station whose series they re-stage."""
        tbl = ws.query(
            """SELECT epoch_us(t) AS t_us, station, target FROM events
               WHERE kind = 'recipe_change' AND batch > ? AND batch <= ? ORDER BY t""", [lo, hi])
        if tbl.num_rows == 0:
            return {}
        param_station = dict(zip(*[c.to_pylist() for c in ws.query(
            "SELECT name, any_value(station) FROM params GROUP BY name").columns], strict=True))
        order = ws.query(
            """SELECT s.station FROM steps s JOIN units u USING (unit_id) WHERE s.batch <= ?
               GROUP BY s.station ORDER BY median(epoch(s.t_in) - epoch(u.t_start))""", [hi]).column(0).to_pylist()
        out: dict[str, list[int]] = {}
        for t_us, station, target in zip(*[c.to_pylist() for c in tbl.columns], strict=True):
            changed = {station} if station else set()
            changed |= {param_station[n] for n in str(target or "").split(",") if n in param_station}
            for st in changed:
                i = order.index(st) if st in order else None
                for hit in order[i : i + 1 + self.config.restage_downstream] if i is not None else [st]:
                    out.setdefault(hit, []).append(int(t_us))
        return {k: np.asarray(sorted(v), dtype=np.int64) for k, v in out.items()}

    def _measurements(self, ws: Any, lo: int, hi: int, specs: dict[Any, Any], events: Events,
                      report: RunReport, changes: dict[str, np.ndarray] | None = None,
                      product_specs: dict[tuple[str, str], dict[str, tuple[float | None, float | None]]] | None = None,
                      made_at: dict[tuple[str, str], str] | None = None,
                      environment: set[tuple[str, str]] | None = None,
                      station_order: list[str] | None = None) -> list[Alarm]:
        pairs = sorted(environment or set())
        used = self._materials_used(ws) if self.config.lot_levels else {}
        materials = list(used)
        tbl = ws.query(_measurements_sql(made_at, pairs), [lo, hi, lo, hi])
        report.records["measurements"] = report.records.get("measurements", 0) + tbl.num_rows
        if tbl.num_rows == 0:
            return []
        machine = pc.fill_null(tbl.column("machine"), "")
        if environment:  # the room is the same whichever machine the unit visited: one series
            pair = pc.binary_join_element_wise(tbl.column("station"), tbl.column("name"), "\x1f")
            of_room = pc.is_in(pair, value_set=pa.array(sorted(f"{st}\x1f{n}" for st, n in environment)))
            machine = pc.if_else(of_room, "", machine)
        codes, labels = _encode_joined([tbl.column("station"), tbl.column("name"), machine])
        labels, groups, values, units, t_us = _series_of(tbl, codes, labels)
        products = np.asarray(tbl.column("product").to_pylist(), dtype=object)
        ref_end = self._ref_end(t_us)
        room = _RoomReadings(tbl, pairs)
        names = [self.lot_names.setdefault(m, []) for m in materials]
        lot_matrix = self._lot_matrix(ws, tbl, lo, hi, materials, names) if materials else None
        upstream = _materials_upstream(used, station_order or [])
        alarms: list[Alarm] = []
        lot_alarms: list[tuple[SeriesMonitor, Alarm]] = []  # judged once every series has seen the chunk
        for label, idx in zip(labels, groups, strict=True):
            if not len(idx):
                continue
            station, name, machine = label.split("\x1f")
            key = (station, name, machine or None)
            mon = self.series.get(key)
            if mon is None:
                mon = self.series[key] = SeriesMonitor(station, name, machine or None, self.config,
                                                       specs.get((station, name), (None, None, None)))
                mon.condition = bool(tbl.column("is_param")[int(idx[0])].as_py())
                mon.environment = (station, name) in (environment or set())
                mon.machine_station = str(tbl.column("made_at")[int(idx[0])].as_py() or station)
                mon.product_specs = (product_specs or {}).get((station, name), {})
            # the room's readings, only where the series learns its effect or removes it
            env = room.of(idx) if not mon.environment and (mon.chart is None or mon.env_effect) else None
            lots = None
            if lot_matrix is not None and (mon.chart is None or mon.lots or mon.lot_candidates):
                cols = upstream(station)  # only materials built in at or before the station can move its readings
                lots = (tuple(materials[j] for j in cols), lot_matrix[idx][:, cols], [names[j] for j in cols])
            a = mon.process(values[idx], units[idx], t_us[idx], hi, events, ref_end, (changes or {}).get(station),
                            products[idx], env, lots)
            if a is not None:
                alarms.append(a)
            lot_alarms += [(mon, x) for x in mon.take_lot_alarms()]
        alarms += [self._lot_or_machine(mon, x) for mon, x in lot_alarms]
        return alarms + self._watches(ws, tbl, hi, specs, events, changes or {})

    def _lot_or_machine(self, mon: SeriesMonitor, alarm: Alarm) -> Alarm:
        """A lot judged off on one machine is the machine's where the station's other machines
        read the same lot as they read their usual lots (a worn tool makes every lot it works
        look off; an off lot looks off on every machine that uses it)."""
        lot, material = alarm.scope.get("lot"), alarm.scope.get("material")
        if alarm.detector != "measurement_lot" or not mon.machine or lot is None:
            return alarm
        said = {}  # peer machine -> whether it reads the lot as it reads its other lots
        for (st, name, m), peer in self.series.items():
            if st != mon.station or name != mon.name or m in (None, mon.machine):
                continue
            levels = peer.lots if peer.lots is not None else peer.lot_candidates.get(str(material))
            if levels is not None and levels.material == material:
                verdict = levels.reads_usual(str(lot), peer.sd_unit, self.config.wander_alpha)
                if verdict is not None:
                    said[str(m)] = verdict
        if not said or not all(said.values()):
            return alarm
        usual = ", ".join(sorted(said))
        return dataclasses.replace(
            alarm, detector="measurement_lot_machine", entity=mon.entity, scope=mon.scope,
            effect={**alarm.effect, "lot": lot, "material": material},
            description=alarm.description.rstrip(".") + f"; the same lot reads as usual on {usual}: "
                                                        "the move is the machine's, not the lot's.")

    @staticmethod
    def _materials_used(ws: Any) -> dict[str, set[str]]:
        """The materials the line's units are built with (in name order: the lot columns' order),
        each with the stations that build it in."""
        tbl = ws.query("SELECT material, list(DISTINCT station) FROM materials GROUP BY 1 ORDER BY 1")
        return {str(m): set(st) for m, st in zip(tbl.column(0).to_pylist(), tbl.column(1).to_pylist(), strict=True)
                if m is not None}

    def _lot_matrix(self, ws: Any, tbl: pa.Table, lo: int, hi: int, materials: list[str],
                    names: list[list[str]]) -> np.ndarray:
        """Each reading's lot code of each material (a column each; -1: none known)."""
        look_back = max(0, lo - self.config.batches_per_chunk)  # lots recorded a chunk before their readings
        lots = ws.query(_unit_lots_sql(materials), [look_back, hi])
        codes = np.column_stack([_encode_lots(lots.column(f"lot{j}"), names[j]) for j in range(len(materials))])
        row = pc.fill_null(pc.index_in(tbl.column("unit_id"), value_set=lots.column("unit_id")), -1)
        row = row.to_numpy(zero_copy_only=False).astype(np.int64)
        if not len(codes):
            return np.full((tbl.num_rows, len(materials)), -1, dtype=np.int64)
        return np.where(row[:, None] >= 0, codes[np.maximum(row, 0)], -1)

    def _watches(self, ws: Any, tbl: pa.Table, hi: int, specs: dict[Any, Any], events: Events,
                 changes: dict[str, np.ndarray]) -> list[Alarm]:
        """Follow what know-how learned to watch, one entity at a time."""
        watches = active_watches(ws)
        if not watches:
            return []
        alarms = []
        for w in watches:
            rows = pc.and_(pc.equal(tbl.column("station"), w.station),
                           pc.is_in(tbl.column("name"), pa.array(w.measurements)))
            sub = tbl.filter(pc.fill_null(rows, False))
            level_col = sub.column(w.factor)
            sub = sub.filter(pc.is_valid(level_col))
            if sub.num_rows == 0:
                continue
            key_col = pc.binary_join_element_wise(sub.column("name"), sub.column(w.factor), "\x1f")
            labels, groups, values, units, ts = _series_of(sub, *_encode(key_col))
            products = np.asarray(sub.column("product").to_pylist(), dtype=object)
            for label, idx in zip(labels, groups, strict=True):
                name, level = label.split("\x1f")
                key = (w.id, w.station, name, level)
                mon = self.watched.get(key)
                if mon is None:
                    # A new watch learns its reference from what follows its setting (after the fix).
                    mon = self.watched[key] = SeriesMonitor(w.station, name, None, self.config,
                                                            specs.get((w.station, name), (None, None, None)),
                                                            watch=(w.id, w.factor, level), learned=w.moves.get(name))
                    mon.min_ref = self.config.watch_reference_records
                    mon.ref_start_us = int(ts[idx][0])
                    machine = sub.column("machine")[int(idx[0])].as_py()
                    mon.trend_from = self.series.get((w.station, name, machine))
                a = mon.process(values[idx], units[idx], ts[idx], hi, events, mon.ref_start_us, changes.get(w.station),
                                products[idx])
                if a is not None:
                    alarms.append(a)
        return alarms

    def _steps(self, ws: Any, lo: int, hi: int, report: RunReport, fixes: Fixes) -> list[Alarm]:
        factors = [f for f in self.config.step_factors if f in STEP_FACTORS]
        if not factors:
            return []
        cols = ", ".join(f"s.{f}" if f != "station" else "s.station AS station_group" for f in factors)
        tbl = ws.query(
            f"""
            SELECT s.unit_id, s.station, {cols}, s.result <> 'pass' AS failed, epoch_us(s.t_in) AS t_us
            FROM steps s
            WHERE s.batch > ? AND s.batch <= ?
              AND NOT EXISTS (SELECT 1 FROM steps p WHERE p.unit_id = s.unit_id AND p.station = s.station
                              AND p.t_in < s.t_in)
            ORDER BY s.batch, s.t_in, s.unit_id
            """,
            [lo, hi],
        )
        report.records["steps"] = report.records.get("steps", 0) + tbl.num_rows
        return self._feed_rates(tbl, "station", hi, fixes, lambda sub: {
            f: sub.column("station_group" if f == "station" else f) for f in factors})

    def _materials(self, ws: Any, lo: int, hi: int, report: RunReport, fixes: Fixes) -> list[Alarm]:
        factors = [f for f in self.config.material_factors if f in MATERIAL_FACTORS]
        if not factors:
            return []
        tbl = ws.query(
            """
            SELECT u.unit_id, m.material, m.lot, coalesce(m.supplier, '') AS supplier,
                   NOT u.first_pass AS failed, epoch_us(u.t_start) AS t_us
            FROM units u JOIN materials m USING (unit_id)
            WHERE u.batch > ? AND u.batch <= ? AND u.first_pass IS NOT NULL
            ORDER BY u.batch, u.t_start, u.unit_id
            """,
            [lo, hi],
        )
        report.records["units"] = report.records.get("units", 0) + tbl.num_rows
        # A lot is named within its supplier: keep them apart.
        return self._feed_rates(tbl, "material", hi, fixes, lambda sub: {
            f: pc.binary_join_element_wise(sub.column("supplier"), sub.column("lot"), ":") if f == "lot"
            else sub.column("supplier") for f in factors})

    @staticmethod
    def _fixes(ws: Any, hi: int) -> Fixes:
        """Actions applied on the line up to batch `hi`, in the order recorded: what they name (their
        parameters' values and their problem's scope: machine M2, station ASSY) and the line time
        they took effect."""
        tbl = ws.query("""SELECT epoch_us(t) AS t_us, detail FROM events
                         WHERE kind = 'action' AND batch <= ? AND json_extract_string(detail, '$.status') = 'applied'
                         ORDER BY batch, t""", [hi])
        out = []
        for t_us, detail in zip(tbl.column("t_us").to_pylist(), tbl.column("detail").to_pylist(), strict=True):
            d = json.loads(detail or "{}")
            names = {str(v) for v in (d.get("params") or {}).values() if isinstance(v, str | int)}
            problem = ws.get_artifact("problem", d["problem_id"]) if d.get("problem_id") else None
            names |= {str(v) for v in ((problem or {}).get("scope") or {}).values() if v is not None}
            out.append((names, int(t_us)))
        return out

    def _feed_rates(self, tbl: pa.Table, context: str, hi: int, fixes: Fixes,
                    columns: Callable[[pa.Table], dict[str, Any]]) -> list[Alarm]:
        """Feed the failure-rate stream of each (factor, context) — factors per station, lots and
        suppliers per material — with the rows of that context."""
        if tbl.num_rows == 0:
            return []
        ctx_codes, ctx_labels = _encode(tbl.column(context))
        fails = tbl.column("failed").to_numpy(zero_copy_only=False).astype(bool)
        units = np.asarray(tbl.column("unit_id").to_pylist(), dtype=object)
        t_us = tbl.column("t_us").to_numpy()
        alarms: list[Alarm] = []
        for c_i, ctx in enumerate(ctx_labels):
            rows = np.flatnonzero(ctx_codes == c_i)
            for factor, col in columns(tbl.take(pa.array(rows))).items():
                codes, labels = _encode(col)
                if all(lab is None for lab in labels):
                    continue
                stream = self.rates.get((factor, ctx))
                if stream is None:
                    stream = self.rates[(factor, ctx)] = RateStream(factor, ctx, self.config)
                    stream.fixes_seen = len(fixes)
                for names, t_fix in fixes[stream.fixes_seen:]:
                    if context == "station" and ctx not in names:
                        continue  # a fix at another station says nothing of this one's groups
                    stream.forget_before(names, t_fix)
                stream.fixes_seen = len(fixes)
                alarms += stream.process(codes, labels, fails[rows], units[rows], t_us[rows], hi, self._ref_end(t_us))
        return alarms


def _state_classes() -> dict[str, type]:
    """The only classes a saved state may rebuild: the monitor's own."""
    classes: list[type] = [MonitorEngine, EngineConfig, SeriesMonitor, LotLevels, RateStream, CUSUMChart, EWMAChart,
                           IndividualsChart, XbarChart, StagedChart, GroupRateMonitor, PChart, RuleState]
    return {c.__name__: c for c in classes}


def run_monitor(ws: Any, config: EngineConfig | None = None, reset: bool = False,
                progress: Any = None) -> RunReport:
    """Load (or create) the workspace's engine, process new batches, save it."""
    if reset:
        path = MonitorEngine.state_path(ws)
        if path.exists():
            path.unlink()
    engine = MonitorEngine.load(ws, config)
    if config is not None and reset:
        engine.config = config
    return engine.run(ws, progress=progress)
