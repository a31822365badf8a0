"""Problems: alarms grouped into incidents a person can act on.

An alarm is one detector's verdict on one scope (a measurement on a machine, the defect rate
of a shift, a material lot). Alarms about the same *entity* (a station's machine, a shift, a
lot) while a problem about it is still open join that problem as more evidence, so a
persisting incident is one problem, never an alarm storm. A problem stores scope, onset
estimate, first and latest evidence, severity, chart data, status and a sentence that a
non-statistician understands. Problems are workspace artefacts of kind "problem".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from linelab.errors import NotFound, UserError
from linelab.model import Alarm, Evidence, Problem, Signal

__all__ = ["ACTIVE", "KIND", "LISTING_FIELDS", "STATUSES", "TRANSITIONS", "Alarm", "Evidence", "Problem",
           "ProblemBook", "Signal", "check_move", "get_problem", "is_condition", "list_problems", "resolve",
           "set_status"]

KIND = "problem"
STATUSES = ("open", "diagnosed", "fixing", "resolved", "false_alarm")
ACTIVE = ("open", "diagnosed", "fixing")
# Allowed moves; a problem can always be closed as resolved or as a false alarm.
TRANSITIONS = {
    "open": {"diagnosed", "fixing", "resolved", "false_alarm"},
    "diagnosed": {"fixing", "resolved", "false_alarm", "open"},
    "fixing": {"resolved", "diagnosed", "false_alarm", "open"},
    "resolved": {"open"},
    "false_alarm": {"open"},
}


def _now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def _loss_rate(signal: dict[str, Any]) -> float:
    """Share of units a signal's problem loses now: failures over the reference rate, or units
    out of spec over the reference's share (a reading still in spec loses none)."""
    effect = signal.get("effect") or {}
    if effect.get("excess_rate") is not None:
        return max(float(effect["excess_rate"]), 0.0)
    if effect.get("out_of_spec_now") is not None:
        return max(float(effect["out_of_spec_now"]) - float(effect.get("out_of_spec_reference") or 0.0), 0.0)
    return 0.0


def _severity(signals: list[dict[str, Any]]) -> dict[str, Any]:
    # Signals of one incident see largely the same units: the largest, not the sum, counts.
    return {
        "units_affected": max(s["units_affected"] for s in signals),
        "yield_lost_units": round(max(s["yield_lost_units"] for s in signals), 2),
        "loss_rate": round(max(_loss_rate(s) for s in signals), 4),
        "signals": len(signals),
    }


class ProblemBook:
    """Opens and extends problems in a workspace from a stream of alarms."""

    def __init__(self, ws: Any, merge_gap_s: float = 24 * 3600.0, coincide_s: float = 6 * 3600.0) -> None:
        self.ws = ws
        self.merge_gap_s = merge_gap_s
        self.coincide_s = coincide_s
        self.opened: list[str] = []
        self.updated: set[str] = set()

    def _recent(self, p: dict[str, Any], t: str | None) -> bool:
        last = p["latest_evidence"].get("t")
        if t is None or last is None:
            return True
        return (datetime.fromisoformat(t) - datetime.fromisoformat(last)).total_seconds() <= self.merge_gap_s

    def _open_for(self, alarm: Alarm) -> dict[str, Any] | None:
        """The active problem this alarm belongs to: same entity, same family, or same units; or
        the closed problem whose episode it still is (a detector's alarm outlasting the fix)."""
        every = self.ws.list_artifacts(KIND)
        for p in reversed(every):
            if p.get("status") not in ACTIVE and self._same_episode(p, alarm):
                return p
        active = list(reversed([p for p in every if p.get("status") in ACTIVE]))
        mine = set(alarm.units)
        gathered: dict[str, set[str]] = {}

        def units(p: dict[str, Any]) -> set[str]:  # each problem's units, gathered once for the rules below
            if p["id"] not in gathered:
                gathered[p["id"]] = _units(p)
            return gathered[p["id"]]

        if alarm.kind == "defect_rate" and mine:
            # The same failures judged again in a later window are the same incident, however long
            # the line took to make the units between (a slow line checks its rates days apart).
            for p in active:
                if any(s["key"] == alarm.key for s in p["signals"]) and len(mine & units(p)) >= 0.5 * len(mine):
                    return p
        # Only problems with recent evidence take new alarms: the same thing alarming again after a
        # quiet spell is a new incident (a returning problem), not more of an old one.
        active = [p for p in active if self._recent(p, alarm.first.t)]
        for p in active:
            if p.get("entity") == alarm.entity:
                return p
        if alarm.family:
            for p in active:
                if any(s.get("family") == alarm.family for s in p["signals"]):
                    return p
        if alarm.kind == "defect_rate" and alarm.onset.t:
            # Failures that start rising together with an open problem are its consequence: with a
            # condition (every unit of its spell is its unit), by time alone; with a product
            # reading, only when the failing units are that problem's off-centre units beyond
            # chance (handling damage on shift C is not a paste-volume shift starting that day).
            t0 = datetime.fromisoformat(alarm.onset.t)
            for p in active:
                onset = p["onset"].get("t")
                if onset and abs((t0 - datetime.fromisoformat(onset)).total_seconds()) <= self.coincide_s and (
                        is_condition(p) or self._echo(mine, units(p))):
                    return p
            for p in active:
                if (p.get("kind") != "defect_rate" and not is_condition(p)
                        and self._excess_inside(alarm, p, mine, units(p))):
                    return p
        if len(mine) >= 5:
            for p in active:
                theirs = units(p)
                # Most units shared both ways: a problem spanning every unit of a spell (the
                # weather) must not swallow a small problem that happens inside it.
                if len(theirs) >= 5 and len(mine & theirs) >= 0.5 * len(mine | theirs):
                    return p
                if len(mine & theirs) >= 0.8 * len(mine) and self._echo(mine, theirs):
                    return p
        return None

    def _echo(self, mine: set[str], theirs: set[str]) -> bool:
        """Whether `mine` lie inside `theirs` far beyond chance: the failures a bad lot causes, seen
        again through the operators who tested them. Chance is the share of the units built over
        `mine`'s span that are theirs, so a problem holding every unit of a spell (the weather, a
        burst of off-centre prints) swallows nothing that falls inside that spell."""
        row = self.ws.query(
            "WITH s AS (SELECT min(t_start) AS t0, max(t_start) AS t1 FROM units "
            "WHERE unit_id IN (SELECT unnest(?::VARCHAR[]))) "
            "SELECT count(*) FILTER (WHERE u.unit_id IN (SELECT unnest(?::VARCHAR[]))), count(*) "
            "FROM s, units u WHERE u.t_start BETWEEN s.t0 AND s.t1",
            [sorted(mine), sorted(theirs)]).to_pylist()[0]
        k, n = (int(v or 0) for v in row.values())
        if not k or not n or k >= n:
            return False
        shared = len(mine & theirs)
        from scipy.stats import binomtest  # here: listing problems must not load SciPy

        return float(binomtest(shared, len(mine), k / n, alternative="greater").pvalue) < 1e-6

    def _excess_inside(self, alarm: Alarm, problem: dict[str, Any], mine: set[str], theirs: set[str]) -> bool:
        """Whether a rise in failures lies wholly in an open problem's units since its onset: its
        failures among them far beyond the rate it is judged against, and among the other units built
        meanwhile no more than that rate explains. A slow drift's failures rise as slowly, and their
        change point can fall hours from the drift's onset (a machine wearing over 2,000 units: 11 h
        before), so this does not ask the two onsets to coincide."""
        onset, last = problem["onset"].get("t"), alarm.latest.t
        p0 = float(alarm.effect.get("reference_rate") or 0.0)
        if not onset or not last or not theirs or not mine or p0 <= 0:
            return False
        row = self.ws.query(
            "SELECT count(*), count(*) FILTER (WHERE unit_id IN (SELECT unnest(?::VARCHAR[]))), "
            "count(*) FILTER (WHERE unit_id IN (SELECT unnest(?::VARCHAR[]))), "
            "count(*) FILTER (WHERE unit_id IN (SELECT unnest(?::VARCHAR[])) "
            "AND unit_id IN (SELECT unnest(?::VARCHAR[]))) "
            "FROM units WHERE t_start BETWEEN ?::TIMESTAMP AND ?::TIMESTAMP",
            [sorted(theirs), sorted(mine), sorted(mine), sorted(theirs), onset, last]).to_pylist()[0]
        n, k, failed, inside = (int(v or 0) for v in row.values())
        if not k or n <= k or not inside:
            return False
        from scipy.stats import binomtest, poisson  # here: listing problems must not load SciPy

        beyond = float(binomtest(inside, k, min(p0, 1.0), alternative="greater").pvalue) < 1e-6
        return beyond and float(poisson.sf(failed - inside - 1, p0 * (n - k))) > 0.01

    @staticmethod
    def _same_episode(p: dict[str, Any], alarm: Alarm) -> bool:
        """The same failure-rate series, alarming from an onset no later than the problem's last
        evidence: its moving window still holds the incident's failures after the fix."""
        last = p["latest_evidence"].get("t")
        return bool(alarm.kind == "defect_rate" and alarm.onset.t and last and alarm.onset.t <= last
                    and any(s["key"] == alarm.key for s in p["signals"]))

    def join(self, alarm: Alarm) -> str | None:
        """File a supporting alarm: it extends the problem it belongs to, and opens none."""
        return self.add(alarm) if self._open_for(alarm) is not None else None

    def add(self, alarm: Alarm) -> str:
        """File an alarm: extend the open problem it belongs to, or open a new one."""
        signal = asdict(alarm)
        signal["key"] = alarm.key
        signal["units"] = signal["units"][-2000:]
        problem = self._open_for(alarm)
        if problem is None:
            pid = self.ws.next_id(KIND, "PRB")
            problem = {
                "id": pid,
                "status": "open",
                "kind": alarm.kind,
                "entity": alarm.entity,
                "scope": alarm.scope,
                "onset": asdict(alarm.onset),
                "first_evidence": asdict(alarm.first),
                "latest_evidence": asdict(alarm.latest),
                "signals": [],
                "history": [{"status": "open", "at": _now(), "note": f"opened by {alarm.detector}"}],
                "created": _now(),
            }
            self.opened.append(pid)
        if alarm.watch and not problem.get("watch"):
            problem["watch"] = alarm.watch
        signals = [s for s in problem["signals"] if s["key"] != alarm.key]
        old = next((s for s in problem["signals"] if s["key"] == alarm.key), None)
        if old is not None:  # the same series alarming again: keep its first evidence
            signal["first"] = old["first"]
            signal["onset"] = old["onset"]
        signals.append(signal)
        problem["signals"] = signals
        if (alarm.latest.t or "") > (problem["latest_evidence"].get("t") or ""):
            problem["latest_evidence"] = asdict(alarm.latest)
        # Failures that a problem of another kind causes do not date it: its own chart dates the
        # change better than a change point in the failures it brings (a slow drift's, hours off).
        consequence = alarm.kind == "defect_rate" and problem["kind"] != "defect_rate"
        if (alarm.onset.t or "9") < (problem["onset"].get("t") or "9") and not consequence:
            problem["onset"] = asdict(alarm.onset)
        # The headline stays with the signal that opened the problem: the first, most direct view.
        lead = next((s for s in signals if s["key"] == problem.get("lead")), signal)
        problem["lead"] = lead["key"]
        others = len(signals) - 1
        problem["description"] = lead["description"] + (
            f" ({others} related signal{'s' if others > 1 else ''} grouped here.)" if others else "")
        problem["chart"] = lead["chart"]
        problem["severity"] = _severity(signals)
        if is_condition(problem):
            # A process condition out of its window fails no unit by itself: its cost is what its
            # units have lost since the onset.
            from linelab.monitor.cost import condition_cost  # NumPy: not for `linelab problems`, which only lists

            lost = condition_cost(self.ws, lead["scope"], problem["onset"].get("t"))
            problem["severity"]["yield_lost_units"] = round(max(problem["severity"]["yield_lost_units"], lost), 2)
        problem["updated"] = _now()
        self.ws.put_artifact(KIND, problem["id"], problem)
        self.updated.add(problem["id"])
        return problem["id"]


def _units(problem: dict[str, Any]) -> set[str]:
    """The units that carry a problem's evidence, over all its signals."""
    return {u for s in problem["signals"] for u in s.get("units", [])}


def is_condition(problem: dict[str, Any]) -> bool:
    """Whether the problem's own measurement is a process condition (a zone temperature, the
    humidity), not a product measurement: grouped signals of other readings do not count."""
    name = (problem.get("scope") or {}).get("measurement")
    return bool(name) and any((s.get("effect") or {}).get("condition") and (s.get("scope") or {}).get("measurement")
                              == name for s in problem.get("signals") or [])


# What a listing of problems shows (`linelab problems`, POST /api/problems, `monitor run`'s open problems):
# the small keys of a problem, not its charts, units and signals.
LISTING_FIELDS = ("id", "status", "entity", "onset", "severity", "description")


def list_problems(ws: Any, status: str | None = None, fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Problems (in `status`, if given), oldest first: whole, or only the payload keys in `fields`
    (e.g. `LISTING_FIELDS`), which the store extracts without reading the rest in Python."""
    if status and status not in STATUSES:
        raise UserError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    if fields is None:
        return ws.list_artifacts(KIND, status)
    return ws.list_artifacts(KIND, status, fields=fields)


def get_problem(ws: Any, pid: str) -> dict[str, Any]:
    p = ws.get_artifact(KIND, pid)
    if p is None:
        raise NotFound(f"no problem {pid!r} (see `linelab problems`)")
    return p


def set_status(ws: Any, pid: str, status: str, note: str = "") -> dict[str, Any]:
    """Move a problem along open → diagnosed → fixing → resolved (or false_alarm)."""
    p = get_problem(ws, pid)
    if status not in STATUSES:
        raise UserError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    check_move(p, status)
    p["status"] = status
    p["history"].append({"status": status, "at": _now(), "note": note})
    ws.put_artifact(KIND, pid, p)
    return p


def check_move(problem: dict[str, Any], status: str) -> None:
    """A UserError unless the problem may move to `status` (staying where it is is allowed)."""
    if status != problem["status"] and status not in TRANSITIONS[problem["status"]]:
        raise UserError(f"problem {problem['id']} is {problem['status']}; it can move to "
                        f"{', '.join(sorted(TRANSITIONS[problem['status']]))}")


def resolve(ws: Any, pid: str, note: str = "", resolution: dict[str, Any] | None = None) -> dict[str, Any]:
    """Close a problem as resolved, keeping how it was solved (cause, fix, the know-how entry) with it."""
    p = set_status(ws, pid, "resolved", note)
    if resolution:
        p["resolution"] = {**(p.get("resolution") or {}), **resolution}
        ws.put_artifact(KIND, pid, p)
    return p
