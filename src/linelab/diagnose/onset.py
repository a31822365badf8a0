"""When did it start? Change-point of a series (ruptures) and the events around that moment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ruptures as rpt
from scipy.stats import poisson

MAX_BINS = 400  # the series is averaged into at most this many equal-count bins: fast at 1M rows


@dataclass
class ChangePoint:
    index: int  # position in the time-sorted series where the new regime starts
    at: Any  # time (or clock value) of that position
    before: float
    after: float
    bin_width: Any  # typical duration of one bin, to size the event-matching window


def _fmt_time(t: Any) -> str:
    if isinstance(t, np.datetime64):
        return str(np.datetime_as_string(t, unit="s")).replace("T", " ")
    if isinstance(t, (float, np.floating)) and float(t).is_integer():
        return f"{int(t):,}"
    return str(t)


def change_point(times: np.ndarray, values: np.ndarray, min_bins: int = 8) -> ChangePoint | None:
    """Single most likely step change of `values` ordered by `times` (binary segmentation, L2)."""
    ok = np.isfinite(values)
    if times.dtype.kind == "f":
        ok &= np.isfinite(times)
    times, values = times[ok], values[ok]
    if values.size < 2 * min_bins:
        return None
    order = np.argsort(times, kind="stable")
    t, v = times[order], values[order]
    n_bins = int(min(MAX_BINS, max(min_bins, v.size // 20)))
    edges = np.linspace(0, v.size, n_bins + 1).astype(int)
    sums = np.add.reduceat(v, edges[:-1])
    counts = np.diff(edges)
    means = sums / counts
    if np.ptp(means) == 0:
        return None
    algo = rpt.Binseg(model="l2", min_size=2, jump=1).fit(means.reshape(-1, 1))
    bkp = algo.predict(n_bkps=1)[0]
    if bkp <= 0 or bkp >= n_bins:
        return None
    idx = int(edges[bkp])
    before = float(v[:idx].mean())
    after = float(v[idx:].mean())
    span = t[-1] - t[0]
    return ChangePoint(idx, t[idx], before, after, span / n_bins)


def step_inside(times: np.ndarray, values: np.ndarray, reference: np.ndarray, min_rows: int = 30,
                min_z: float = 4.0) -> Any | None:
    """Where an incident window holds a clear step well after its start, and its rows before the step
    look like the reference (within a tenth of the excess after it, per unit, and their noise): the
    time the step begins, else None. A problem's window can open long before its cause (a detector that crossed
    its limit on a slow wander first); judged on the whole window, the cause's units are diluted
    by hours of normal ones and whatever happened to run through them all ranks first."""
    ok = np.isfinite(values)
    times, values = times[ok], values[ok]
    reference = reference[np.isfinite(reference)]
    if values.size < 4 * min_rows or reference.size < min_rows:
        return None
    cp = change_point(times, values)
    if cp is None or cp.index < values.size // 5 or values.size - cp.index < min_rows:
        return None
    v = values[np.argsort(times, kind="stable")]
    if np.isin(values, (0.0, 1.0)).all() and np.isin(reference, (0.0, 1.0)).all() and not _like_reference(
            v[: cp.index], reference):
        return None
    base, sd = float(reference.mean()), float(reference.std())
    sd = sd if sd > 0 else float(values.std()) or 1.0
    early, late = float(v[: cp.index].mean()) - base, float(v[cp.index:].mean()) - base
    z_late = late / (sd / np.sqrt(values.size - cp.index))
    if abs(z_late) < min_z or abs(early) > 0.1 * abs(late) + 2 * sd / np.sqrt(cp.index):
        return None
    return cp.at


def _like_reference(failed: np.ndarray, reference: np.ndarray, alpha: float = 1e-3) -> bool:
    """Whether units' failures are no more than the reference's rate explains (Poisson; half a
    failure added to a reference with none, which does not show the rate is nil). Failures before a
    step are the incident's own evidence: an intermittent fault's earlier bursts (5 failures in
    1,130 units beside a reference of none in 7,591) are no reference, and cutting them off left its
    last burst's 81 units, in which every lot, shift and product that ran looked as guilty as the machine."""
    rate = (float(reference.sum()) + 0.5) / (reference.size + 1)
    return float(poisson.sf(float(failed.sum()) - 1, rate * failed.size)) > alpha


def match_events(cp: ChangePoint, events: Sequence[dict[str, Any]], window_bins: float = 3.0) -> list[dict]:
    """Events within a few bins of the change, nearest first; events shortly before count most."""
    if not events:
        return []
    out = []
    width = cp.bin_width * window_bins
    for ev in events:
        t = ev.get("t")
        if t is None:
            continue
        t = np.datetime64(t, "us") if isinstance(cp.at, np.datetime64) else float(t)
        delta = t - cp.at
        if -width <= delta <= width / 2:
            # printed from the parsed instant: the event's own datetime or text would keep its microseconds
            item = {k: (_fmt_time(t) if k == "t" else v) for k, v in ev.items() if v is not None}
            dist = abs(delta / cp.bin_width) if cp.bin_width else 0.0
            item["bins_from_onset"] = round(float(dist), 2)
            out.append(item)
    return sorted(out, key=lambda e: e["bins_from_onset"])


def describe(cp: ChangePoint, events: list[dict], what: str = "the symptom") -> str:
    text = f"{what} changed at {_fmt_time(cp.at)} (from {cp.before:.3g} to {cp.after:.3g} per unit)"
    if events:
        ev = events[0]
        label = " ".join(str(ev[k]) for k in ("kind", "machine", "target") if ev.get(k))
        text += f", next to the event {label} at {ev.get('t')}"
    return text
