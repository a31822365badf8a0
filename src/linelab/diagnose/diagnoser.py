"""The Diagnoser: from a reference table, an incident table and a symptom to ranked causes.

    dx = Diagnoser(dag="dag_edges.csv").fit(normal, faulty, target="Station5_mp_84")
    dx.causes_[0].evidence     # plain words
    dx.report_                 # the whole Diagnosis (pydantic): onset, confounding, check

Ranking. A candidate must be able to cause the symptom (an ancestor in the causal graph when
one is given), be supported (BH q <= alpha) and not be accounted for by another candidate
(nested or aliased levels, a measurement whose shift is confined to one level, a measurement
that only passes on the shift of an upstream factor: a mediator). Among those,
candidates that account for a real part of the excess (share >= 20 %) come first, ordered by
evidence (-log10 q, capped at 30 so that huge data sets do not tie everything at the floor)
plus 10 x share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
from threadpoolctl import threadpool_limits

from . import categorical, continuous
from .causal import CausalModel, counterfactual_share, load_dag, load_stages, propagate, stage_dag
from .coincidence import recent_history, within_period
from .confounding import Group, relate, separating_experiment
from .data import MISSING, Prepared, TableLike, UserError, prepare
from .model import Cause, Confounding, Diagnosis, Onset
from .onset import _fmt_time, change_point, describe, match_events
from .stats import bh_adjust, neglog10
from .symptom import Symptom, make_symptom
from .text import cause_text, summary_text

EVIDENCE_CAP = 30.0
MIN_SHARE = 0.2
MAX_PAIRS = 8  # top categorical candidates compared pairwise for nesting and aliasing
MEDIATOR_T = 3.0  # |slope / se| in the reference for a factor to count as driving a measurement
MEDIATOR_FRACTION = (0.5, 2.0)  # a measurement's shift over what its upstream factor's shift predicts


class Diagnoser:
    """Rank candidate root causes of a symptom that appeared between reference and incident data.

    Parameters
    ----------
    dag: causal graph over the columns (networkx DiGraph, edge list, or CSV `source,target`).
        With it, a continuous column's evidence is the change of its own mechanism (residuals
        given its parents), and only ancestors of the target rank as causes.
    stages: where no causal graph is known, each column's stage along the line (its station's
        position: 1, 2, ...). A column is then judged by the change of its own mechanism given the
        columns of earlier stages (a reading that only passes on an upstream shift stays put), and a
        column of a later stage than the target is no cause. Columns without a stage are judged
        by their plain shift. Ignored when `dag` is given.
    kinds: override the kind of columns ("categorical", "continuous", "time", "environment").
    time_column: column ordering the rows in time, for onset estimation.
    events: events to match with the onset: dicts with at least `t` (and kind/machine/target).
    exclude: columns that are not candidates (identifiers, other symptoms).
    nested: {inner: outer} columns whose levels lie within another's (a material's lot within its
        supplier): where an inner level holds the very same incident units as an outer one, the
        inner level is the cause the data can name, not a rival to it.
    alpha: false-discovery rate for calling a candidate supported.
    symptom: "auto", "rate", "mean" or "spread": how the target's change is measured.
    attribution: fit the gradient-boosting attribution model for continuous factors.
    target_label: how the symptom is named in the plain-words output (default: the column).
    """

    def __init__(
        self,
        *,
        dag: Any = None,
        stages: Mapping[str, float] | str | Path | None = None,
        kinds: Mapping[str, str] | None = None,
        time_column: str | None = None,
        events: Sequence[Mapping[str, Any]] | None = None,
        exclude: Sequence[str] = (),
        nested: Mapping[str, str] | None = None,
        alpha: float = 0.05,
        symptom: str = "auto",
        attribution: bool = True,
        max_levels: int = 500,
        random_state: int = 0,
        target_label: str | None = None,
    ) -> None:
        self.dag = dag
        self.stages = stages
        self.kinds = dict(kinds or {})
        self.time_column = time_column
        self.events = [dict(e) for e in (events or [])]
        self.exclude = list(exclude)
        self.nested = dict(nested or {})
        self.alpha = alpha
        self.symptom = symptom
        self.attribution = attribution
        self.max_levels = max_levels
        self.random_state = random_state
        self.target_label = target_label

    # -- public API -------------------------------------------------------------------------
    def fit(self, reference: TableLike, incident: TableLike, target: str) -> Diagnoser:
        if self.symptom not in {"auto", "rate", "mean", "spread"}:
            raise UserError(f"symptom must be auto, rate, mean or spread, not {self.symptom!r}")
        self._reference, self._incident, self.target_ = reference, incident, target
        prep = prepare(
            reference,
            incident,
            target,
            kinds=self.kinds,
            exclude=self.exclude,
            time_column=self.time_column,
            max_levels=self.max_levels,
        )
        self.prepared_ = prep
        self.symptom_ = make_symptom(prep.y_ref, prep.y_inc, prep.binary, self.symptom)
        self.stages_ = load_stages(self.stages) if self.stages is not None and self.dag is None else {}
        if self.dag is not None:
            self.graph_ = load_dag(self.dag)
        elif self.stages_:
            self.graph_ = stage_dag(self.stages_, [*prep.columns, target])
        else:
            self.graph_ = None
        # single-threaded numerics: the matrices here are small, and on a busy machine thread
        # pools oversubscribe the cores and run several times slower
        with threadpool_limits(limits=1):
            self.report_ = self._diagnose(prep, self.symptom_)
        self.causes_ = self.report_.causes
        return self

    def update(self, incident: TableLike) -> Diagnoser:
        """Add incident rows and diagnose again (same answer as fitting on all rows at once)."""
        import pyarrow as pa

        from .data import to_arrow

        both = pa.concat_tables(
            [to_arrow(self._incident, "incident"), to_arrow(incident, "incident")], promote_options="permissive"
        )
        return self.fit(self._reference, both, self.target_)

    def rank_of(self, factor: str, level: str | None = None) -> int | None:
        """1-based rank of a factor (and level), or None when it is not among the causes."""
        for c in self.causes_:
            if c.factor == factor and (level is None or c.level == str(level)):
                return c.rank
        return None

    def score(self, truth: Sequence[tuple[str, str | None]] | tuple[str, str | None], k: int = 1) -> float:
        """1.0 when a true cause is in the top k (truth: (factor, level) pairs), else 0.0."""
        pairs = [truth] if isinstance(truth, tuple) else list(truth)
        ranks = [self.rank_of(f, lv) for f, lv in pairs]
        return float(any(r is not None and r <= k for r in ranks))

    def summary(self) -> str:
        return self.report_.summary

    # -- the work ---------------------------------------------------------------------------
    def _diagnose(self, prep: Prepared, sym: Symptom) -> Diagnosis:
        graph = self.graph_
        target = prep.target
        ancestors: set[str] | None = None
        if graph is not None and target in graph:
            ancestors = nx.ancestors(graph, target)
        causes: list[Cause] = []
        family_p: list[float] = []  # every test made, for Benjamini-Hochberg
        level_tables: dict[str, categorical.LevelStats] = {}
        groups: dict[str, Group] = {}
        total_excess = sym.excess

        # categorical factors: one candidate per level carrying excess
        to_units = self._plot_units(sym)
        for name, col in prep.columns.items():
            if col.kind != "categorical":
                continue
            ls = categorical.level_stats(col, sym)
            level_tables[name] = ls
            tested = ls.n_inc >= categorical.MIN_UNITS
            family_p.extend(ls.p_value[tested].tolist())
            for j in np.flatnonzero(tested & (ls.excess > 0) & (ls.levels != MISSING)):
                level = str(ls.levels[j])
                cause = Cause(
                    factor=name,
                    level=level,
                    kind="categorical",
                    effect=float(ls.effect[j]),
                    effect_label=self._level_effect_label(sym, bool(ls.only_level[j])),
                    p_value=float(ls.p_value[j]),
                    share=float(np.clip(ls.excess[j] / total_excess, 0.0, 1.0)) if total_excess else None,
                    upstream=ancestors is None or (graph is not None and name not in graph) or name in ancestors,
                    details={
                        "n_incident": int(ls.n_inc[j]),
                        "n_reference": int(ls.n_ref[j]),
                        "incident_level": float(ls.sum_inc[j] / ls.n_inc[j]),
                        "reference_level": float(ls.sum_ref[j] / ls.n_ref[j]) if ls.n_ref[j] else None,
                        "others_level": float((sym.s_inc.sum() - ls.sum_inc[j]) / (sym.s_inc.size - ls.n_inc[j]))
                        if sym.s_inc.size > ls.n_inc[j]
                        else None,
                        "excess": float(ls.excess[j]),
                        "share_method": "count",
                        "p_specific": float(ls.p_spec[j]),
                        "p_change": float(ls.p_change[j]),
                        "whole_incident": bool(ls.only_level[j]),
                    },
                    plot=categorical.plot_data(ls, int(j), center=to_units[0], scale=to_units[1], sign=to_units[2]),
                )
                causes.append(cause)
                groups[cause.label] = Group(cause.label, name, level, ls.ref_codes == j, ls.inc_codes == j)

        # continuous factors: shift of the factor, or of its own mechanism when the DAG is known
        cont = [c for c, col in prep.columns.items() if col.kind in ("continuous", "environment")]
        mech_model: CausalModel | None = None
        if graph is not None and cont:
            ref = {c: prep.columns[c].ref for c in cont}
            inc = {c: prep.columns[c].inc for c in cont}
            ref[target], inc[target] = prep.y_ref, prep.y_inc
            # only possible causes need their mechanism: ancestors of the target (all, if the
            # target is not in the graph); the rest are judged by their plain shift
            in_graph = [c for c in cont if c in graph and (ancestors is None or c in ancestors)]
            if target in graph:
                in_graph.append(target)
            mech_model = CausalModel(graph).fit(self._finite(ref), in_graph)
            self._mech_inputs = (ref, inc)
        # A graph that names most continuous columns describes them all: one it leaves out is
        # isolated (cannot reach the symptom). Otherwise a missing column is simply unknown.
        dag_covers = graph is not None and sum(c in graph for c in cont) >= 0.5 * max(len(cont), 1)
        # with the symptom in the causal graph its mechanisms judge the factors; otherwise time could
        judge_within = (graph is None or target not in graph) and sym.mode != "case-control"
        for name in cont:
            col = prep.columns[name]
            sh = continuous.shift_stats(col)
            details: dict[str, Any] = {
                "median_reference": sh.median_ref,
                "median_incident": sh.median_inc,
                "robust_sd": sh.scale,
                "z_shift": sh.z_shift,
                "spread_ratio": sh.spread_ratio,
                "p_shift": sh.p_value,
            }
            p, effect, label = sh.p_value, sh.z_shift, "shift of the factor (reference sds)"
            if mech_model is not None and name in mech_model.mechanisms:
                ms = mech_model.shift(inc, name)
                p, effect = ms.p_value, ms.mean_shift
                label = "shift of its own mechanism (residual sds given its causes)"
                details.update(
                    mechanism_parents=ms.parents,
                    mechanism_model=ms.model,
                    mechanism_r2=ms.r2,
                    residual_shift=ms.mean_shift,
                    residual_spread_ratio=ms.spread_ratio,
                    p_mechanism=ms.p_value,
                )
            # a factor's shift counts as the symptom's cause only if the symptom also follows it
            # within the periods, where that could show (intersection-union, as for levels)
            w = within_period(col.ref, col.inc, sym.s_ref, sym.s_inc) if judge_within else None
            if w is not None and w.judged:
                details["p_within_period"] = w.p_along
                p = max(p, w.p_along)
            family_p.append(p)
            causes.append(
                Cause(
                    factor=name,
                    kind="environment" if col.kind == "environment" else "continuous",
                    effect=float(effect),
                    effect_label=label,
                    delta=float(np.nanmean(col.inc) - np.nanmean(col.ref)),
                    p_value=float(p),
                    upstream=ancestors is None
                    or (graph is not None and name not in graph and not dag_covers)
                    or name in ancestors,
                    details=details,
                    plot=continuous.plot_data(col),
                )
            )

        # Benjamini-Hochberg over every test made (levels without excess included)
        if family_p:
            p_all = np.array(family_p)
            order = np.argsort(p_all)
            sorted_p, sorted_q = p_all[order], bh_adjust(p_all)[order]
            for c in causes:  # each candidate's p is in the family: look its q up
                k = int(np.searchsorted(sorted_p, c.p_value, side="right")) - 1
                c.q_value = float(sorted_q[max(k, 0)])
        for c in causes:
            c.score = float(neglog10(c.q_value))

        self._stage_order(causes, target)
        # measurements that moved because an upstream factor moved pass its effect on: its mediators
        mediators = self._mediators(prep, causes)
        # share of the excess for continuous candidates (a factor's includes what its mediators carry)
        self._continuous_shares(prep, sym, causes, mech_model, target, mediators)
        self._coincidences(prep, sym, causes)
        # nesting, aliasing and mediation
        confounded = self._relations(causes, groups, sym, prep)
        ranked = self._rank(causes)
        onset = self._onset(prep, sym, ranked, level_tables)
        for c in ranked:
            c.confidence = float(max(0.0, 1.0 - c.q_value) * (0.5 if c.confounded_with else 1.0))
            c.evidence = cause_text(c, sym, self.target_label or target)
        top = ranked[0] if ranked else None
        supported_top = top is not None and top.q_value <= self.alpha and top.upstream
        explained_share = top.share if top is not None else None
        report = Diagnosis(
            target=self.target_label or target,
            symptom_mode=sym.mode,
            n_reference=int(sym.s_ref.size),
            n_incident=int(sym.s_inc.size),
            reference_level=sym.reference_level,
            incident_level=sym.incident_level,
            excess=float(total_excess),
            causes=ranked,
            onset=onset,
            confounded=confounded,
            explained_share=explained_share,
            explained=bool(supported_top and explained_share is not None and explained_share >= 0.5),
            confident=bool(supported_top and top is not None and not top.confounded_with and top.explained_by is None),
            skipped=prep.skipped,
        )
        report.summary = summary_text(report)
        return report

    def _stage_order(self, causes: list[Cause], target: str) -> None:
        """With stages instead of a graph, a column of a later stage than the symptom cannot have
        caused it, and one of the symptom's own stage may have (the order within a stage is unknown)."""
        own = self.stages_.get(target)
        if own is None:
            return
        for c in causes:
            stage = self.stages_.get(c.factor)
            if stage is None:
                continue
            c.upstream = stage <= own
            if not c.upstream:
                c.details["downstream_evidence"] = f"taken at a later stage ({stage:g}) than {target} ({own:g})"

    @staticmethod
    def _finite(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.ones(len(next(iter(data.values()))), bool)
        for v in data.values():
            ok &= np.isfinite(v)
        return {k: v[ok] for k, v in data.items()}

    @staticmethod
    def _level_effect_label(sym: Symptom, whole: bool) -> str:
        against = "its own reference" if whole else "the other levels in the incident"
        if sym.mode == "case-control":
            return "odds ratio of affected vs unaffected units"
        if sym.mode == "rate":
            return f"symptom rate ratio against {against}"
        return f"symptom shift (target sds) against {against}"

    def _mediators(self, prep: Prepared, causes: list[Cause]) -> dict[str, dict[str, float]]:
        """Measurements whose shift is passed on from a supported upstream factor.

        A measurement M downstream of a factor P in the causal graph is P's mediator when M's
        shift follows P's: the slope of M on P in the reference (normal running, where P varies
        on its own) times P's shift accounts for at least half of M's shift, in its direction, and
        not for more than twice it (then the slope is no mechanism that M's shift followed).
        M is then accounted for by P (the oven zone ran cold, so the time above liquidus fell),
        and P is credited with what M carries. Mechanism residuals cannot make this call when P
        has left its normal range: they rest on a fit that is extrapolated there.

        Returns {P: {M: slope of M on P}}, with chains (P -> M1 -> M2) credited to the first P.
        """
        graph = self.graph_
        if graph is None:
            return {}
        conts = {c.factor: c for c in causes if c.kind in ("continuous", "environment") and c.factor in graph}
        sources = [c for c in conts.values() if c.q_value <= self.alpha and c.upstream]
        if not sources:
            return {}
        parent_of: dict[str, tuple[Cause, float, float]] = {}  # M -> (P, slope, fraction)
        for m in conts.values():
            if m.details.get("p_shift", 1.0) > self.alpha or not m.delta:
                continue
            anc = nx.ancestors(graph, m.factor)
            for p in sources:
                if p.factor not in anc or not p.delta:
                    continue
                slope, se = reference_slope(prep.columns[p.factor].ref, prep.columns[m.factor].ref)
                if not np.isfinite(se) or abs(slope) < MEDIATOR_T * se:
                    continue
                frac = slope * p.delta / m.delta
                lo, hi = MEDIATOR_FRACTION
                if lo <= frac <= hi and (
                    m.factor not in parent_of or abs(np.log(frac)) < abs(np.log(parent_of[m.factor][2]))
                ):
                    parent_of[m.factor] = (p, slope, frac)
        out: dict[str, dict[str, float]] = {}
        for name, (p, slope, frac) in parent_of.items():
            root, seen = p, {name}
            while root.factor in parent_of and root.factor not in seen:  # up the chain to its first factor
                seen.add(root.factor)
                root = parent_of[root.factor][0]
            if root is not p:
                slope, _ = reference_slope(prep.columns[root.factor].ref, prep.columns[name].ref)
            m = conts[name]
            m.explained_by = root.label
            m.details["mediates"] = root.label
            m.details["explained_by_evidence"] = (
                f"it passes on the shift of {p.factor}"
                + (f" (itself {root.factor}'s)" if root is not p else "")
                + f": in the reference it moves {parent_of[name][1]:.3g} per unit of {p.factor}, which accounts "
                f"for {100 * frac:.0f}% of its shift ({m.delta:+.3g})"
            )
            out.setdefault(root.factor, {})[name] = slope
        return out

    def _continuous_shares(
        self,
        prep: Prepared,
        sym: Symptom,
        causes: list[Cause],
        mech_model: CausalModel | None,
        target: str,
        mediators: dict[str, dict[str, float]] | None = None,
    ) -> None:
        cont = [c for c in causes if c.kind in ("continuous", "environment")]
        if not cont:
            return
        if mech_model is not None and target in mech_model.mechanisms:
            _, inc = self._mech_inputs
            inc_ok = self._finite(inc)
            for c in sorted(cont, key=lambda c: -c.score)[:15]:
                if c.upstream and c.factor in mech_model.mechanisms:
                    share = counterfactual_share(
                        mech_model, inc_ok, c.factor, target, sym.transform, sym.excess_per_unit
                    )
                    if share is not None:
                        # counterfactuals through extrapolated mechanisms can overshoot: they are
                        # shown (clipped) but do not steer the ranking
                        c.details.update(share_method="counterfactual", share_raw=share)
                        c.share = float(np.clip(share, 0.0, 1.0))
            return
        if not self.attribution or sym.mode == "case-control":
            return
        supported = [c.factor for c in sorted(cont, key=lambda c: -c.score) if c.q_value <= self.alpha][:8]
        mediators = {f: mediators[f] for f in supported if mediators and f in mediators}
        # the mediators of a supported factor enter the model: the symptom may follow them most closely
        supported += [m for f in list(supported) for m in mediators.get(f, {}) if m not in supported]
        columns = {k: v for k, v in prep.columns.items() if k in set(supported) or v.kind == "categorical"}
        # rows with a missing continuous value cannot enter the model
        ok_r = np.ones(sym.s_ref.size, bool)
        ok_i = np.ones(sym.s_inc.size, bool)
        for k in supported:
            ok_r &= np.isfinite(columns[k].ref)
            ok_i &= np.isfinite(columns[k].inc)
        if ok_r.sum() < 20 or ok_i.sum() < 20:
            return
        from .data import Column

        def rows(v: Column) -> Column:
            if v.levels is None or v.ref_codes is None or v.inc_codes is None:
                return Column(v.name, v.kind, v.ref[ok_r], v.inc[ok_i])
            return Column(v.name, v.kind, v.ref[ok_r], v.inc[ok_i], v.levels, v.ref_codes[ok_r], v.inc_codes[ok_i])

        sub = {k: rows(v) for k, v in columns.items()}
        cf_fn = None
        if mech_model is not None:
            inc_rows = np.flatnonzero(ok_i)
            full_inc = {c: prep.columns[c].inc for c in mech_model.center if c in prep.columns}

            def cf_fn(factor: str, sample: np.ndarray) -> dict[str, np.ndarray]:
                picked = inc_rows[sample]
                data = {c: v[picked] for c, v in full_inc.items()}
                if factor not in data:  # a candidate outside the causal model: map it on its own
                    data[factor] = prep.columns[factor].inc[picked]
                out = propagate(mech_model, data, factor, prep.columns[factor].ref)
                if factor in mediators:
                    # had the factor stayed, its mediators would have moved back by what it passed on
                    moved = np.nan_to_num(prep.columns[factor].inc[picked] - out[factor])
                    for m, slope in mediators[factor].items():
                        out[m] = prep.columns[m].inc[picked] - slope * moved
                return out

        args = (sym.s_ref[ok_r], sym.s_inc[ok_i], supported, self.random_state)
        attr = continuous.attribute(sub, *args, counterfactual=cf_fn)
        if attr is None:
            return
        # A level that merely ran while a factor drifted (a paste lot during stencil clogging) can
        # soak up the factor's effect in the joint model; a model on the continuous factors alone
        # says how much the factor could account for. The larger share counts; levels that the
        # factor explains away are then found by the adjustment check in `_relations`.
        alone = {k: v for k, v in sub.items() if v.kind != "categorical"}
        attr_alone = continuous.attribute(alone, *args, counterfactual=cf_fn) if len(alone) < len(sub) else None
        for c in cont:
            if c.factor in attr.shares:
                raw = attr.shares[c.factor]
                if attr_alone is not None:
                    raw = max(raw, attr_alone.shares.get(c.factor, raw))
                c.details.update(share_method="model", share_raw=raw, attribution_model_r2=attr.model_r2)
                together = [g for g in attr.groups.get(c.factor, []) if g != c.factor]
                if together:
                    c.details["attributed_with"] = together
                c.share = float(np.clip(raw, 0.0, 1.0))

    def _coincidences(self, prep: Prepared, sym: Symptom, causes: list[Cause]) -> None:
        """A continuous factor whose shift came with the incident's time but which the symptom does
        not follow within the periods keeps only the share its within-period slope accounts for
        (see `coincidence`): the room's daily swing is not the lot's failures."""
        if sym.mode == "case-control":
            return
        for c in causes:
            if c.kind not in ("continuous", "environment") or c.q_value > self.alpha:
                continue
            if c.details.get("share_method") == "counterfactual":
                continue  # a causal model of the symptom itself judged it
            col = prep.columns[c.factor]
            w = within_period(col.ref, col.inc, sym.s_ref, sym.s_inc)
            if w is None:
                continue
            c.details["within_period"] = {"slope": w.slope, "se": w.se, "needed": w.needed, "share": w.share}
            if w.coincidence and (c.share is None or c.share > w.share):
                c.details["share_before_within_period"] = c.share
                c.details["coincidence"] = (
                    f"its shift would need the symptom to move {w.needed:.3g} per unit of it; within the "
                    f"periods it moves {w.slope:.3g} (se {w.se:.2g})"
                )
                c.share = w.share

    def _new_at_onset(self, a: Cause, b: Cause, ga: Group, gb: Group, sym: Symptom, prep: Prepared) -> Cause | None:
        """Of two candidates holding the same incident units, the one that was running just before
        the onset without the symptom, when the other began with it (else None)."""
        if prep.time_ref is None or ga.ref.size == 0:
            return None
        order = np.argsort(prep.time_ref, kind="stable")
        # Just before the onset first; then the whole reference: a shift or a crew works in turns
        # and may not have worked in the hours before the onset, but it did the days before, and
        # a lot that never ran before the onset is the newer explanation.
        # (Over the whole reference a shift ran a third of the time: "old" is a smaller share of
        # what it would have had running as now, "new" next to nothing.)
        for last, old, new in ((max(int(sym.s_inc.size), 50), 0.5, 0.2), (int(order.size), 0.2, 0.05)):
            ra, rb = (recent_history(g.ref, order, sym.s_ref, last) for g in (ga, gb))
            ea, eb = (last * float(g.inc.mean()) for g in (ga, gb))  # units each would have had, running as now
            old_a = ra.units >= max(old * ea, categorical.MIN_UNITS) and ra.z < 2.5
            old_b = rb.units >= max(old * eb, categorical.MIN_UNITS) and rb.z < 2.5
            new_a, new_b = ra.units < new * ea, rb.units < new * eb
            when = "just before the onset" if last < order.size else "before the onset"
            if old_a and new_b:
                a.details["recent_units"], a.details["ran_when"] = ra.units, when
                return a
            if old_b and new_a:
                b.details["recent_units"], b.details["ran_when"] = rb.units, when
                return b
        return None

    def _inner_of(self, a: Cause, b: Cause, ga: Group, gb: Group) -> Cause | None:
        """The inner level of a nested pair holding the very same incident units (a lot, its supplier)."""
        inner = a if self.nested.get(a.factor) == b.factor else b if self.nested.get(b.factor) == a.factor else None
        return inner if inner is not None and ga.inc.any() and np.array_equal(ga.inc, gb.inc) else None

    def _relations(
        self, causes: list[Cause], groups: dict[str, Group], sym: Symptom, prep: Prepared
    ) -> list[Confounding]:
        cats = [c for c in causes if c.kind == "categorical" and c.q_value <= self.alpha and c.upstream]
        cats = sorted(cats, key=self._strength, reverse=True)[:MAX_PAIRS]
        by_label = {c.label: c for c in causes}

        def explain(weak: Cause, strong: Cause, evidence: str) -> None:
            """`weak` is explained by `strong`, unless `strong` is already explained (through a
            chain) by `weak`: explanations end at a cause, they never run in a circle (a tool
            explaining its machine, the machine a recipe, the recipe the tool, left no cause)."""
            if weak.explained_by is not None:
                return
            link: Cause | None = strong
            while link is not None:
                if link is weak:
                    return
                link = by_label.get(link.explained_by) if link.explained_by else None
            weak.explained_by = strong.label
            weak.details["explained_by_evidence"] = evidence

        out: list[Confounding] = []
        for i, a in enumerate(cats):
            for b in cats[i + 1 :]:
                if a.factor == b.factor:
                    continue
                ga, gb = groups[a.label], groups[b.label]
                inner = self._inner_of(a, b, ga, gb)
                if inner is not None:
                    outer = b if inner is a else a
                    explain(outer, inner, f"its units in the incident are all {inner.label}'s")
                    continue
                rel = relate(ga, gb, sym)
                if rel.verdict == "a_explains_b":
                    explain(b, a, self._explain_words(gb, ga, rel.b_only, rel.a_only))
                elif rel.verdict == "b_explains_a":
                    explain(a, b, self._explain_words(ga, gb, rel.a_only, rel.b_only))
                elif rel.verdict == "interaction" and (pair := self._clearly_stronger_pair(a, b)) is not None:
                    # the excess sits where both occur; the much stronger one carries it
                    strong, weak = pair
                    explain(weak, strong, f"its excess appears only together with {strong.label}")
                elif rel.verdict in ("confounded", "interaction"):
                    old = self._new_at_onset(a, b, ga, gb, sym, prep)
                    if old is not None:
                        new = b if old is a else a
                        explain(old, new, f"it ran {old.details['ran_when']} ({old.details['recent_units']} units) "
                                          f"without the symptom; {new.label} began with it")
                    a.confounded_with.append(b.label)
                    b.confounded_with.append(a.label)
                    text, n = separating_experiment(ga, gb, sym, rel)
                    if rel.verdict == "interaction":
                        text = "the symptom appears only where both occur together; " + text
                    out.append(
                        Confounding(causes=[a.label, b.label], overlap=rel.overlap, experiment=text, units_per_arm=n)
                    )
        # a continuous factor whose shift is confined to one supported level is that level's doing
        for c in causes:
            if c.kind not in ("continuous", "environment") or c.q_value > self.alpha:
                continue
            col = prep.columns[c.factor]
            for lv in cats:
                g = groups[lv.label]
                if g.inc.sum() < 5 or (~g.inc).sum() < 5:
                    continue
                ref_med = np.nanmedian(col.ref)
                scale = max(c.details.get("robust_sd", 1.0), 1e-12)
                # compare within stretches of time where the level ran side by side with others:
                # a lot that merely followed another one in time says nothing about confinement
                mixed = self._concurrent_rows(g.inc, prep.time_inc)
                if mixed is None:
                    continue
                inside = abs(_mean(col.inc[g.inc & mixed]) - ref_med) / scale
                outside = abs(_mean(col.inc[~g.inc & mixed]) - ref_med) / scale
                if inside >= 1.0 and outside < 0.25 * inside:
                    c.explained_by = lv.label
                    c.details["explained_by_evidence"] = (
                        f"its shift is confined to {lv.factor} {lv.level} "
                        f"({inside:.1f} sd there, {outside:.1f} sd elsewhere)"
                    )
                    break
        self._adjust_levels_for_continuous(causes, cats, groups, sym, prep)
        return out

    def _adjust_levels_for_continuous(
        self, causes: list[Cause], cats: list[Cause], groups: dict[str, Group], sym: Symptom, prep: Prepared
    ) -> None:
        """A level whose excess disappears once a shifted continuous factor is accounted for is that
        factor's doing (a paste lot that merely ran while the stencil clogged): the symptom is
        predicted from the factor alone (binned), and the level's contrast is measured again on
        what the factor leaves unexplained.

        Conversely, the excess a level still carries over the other levels once the factor is
        accounted for is not the factor's (humidity rose during the incident, but shift A's extra
        handling damage is shift A's): the level that keeps the most is taken out of the symptom,
        and the factor's share is at most what the factor alone predicts of the rest."""
        conts = [
            c
            for c in causes
            if c.kind in ("continuous", "environment")
            and c.q_value <= self.alpha
            and c.explained_by is None
            and (self._ranking_share(c) or 0.0) >= MIN_SHARE
        ]
        for x in sorted(conts, key=self._strength, reverse=True)[:3]:
            col = prep.columns[x.factor]
            pred_ref, pred_inc = binned_prediction(col.ref, col.inc, sym.s_ref, sym.s_inc)
            r_inc, r_ref = sym.s_inc - pred_inc, sym.s_ref - pred_ref
            kept, keeper = 0.0, None  # the level keeping the largest excess once the factor is accounted for
            for lv in cats:
                if lv.explained_by is not None:
                    continue
                g = groups[lv.label]
                if g.inc.sum() < 5:
                    continue
                if (~g.inc).sum() < 5:
                    # the level ran through the whole incident: measure it against the reference
                    raw = _mean(sym.s_inc[g.inc]) - _mean(sym.s_ref)
                    left = _mean(r_inc[g.inc]) - _mean(r_ref)
                else:
                    raw = _mean(sym.s_inc[g.inc]) - _mean(sym.s_inc[~g.inc])
                    left = _mean(r_inc[g.inc]) - _mean(r_inc[~g.inc])
                if raw > 0 and left < 0.3 * raw:
                    lv.explained_by = x.label
                    lv.details["explained_by_evidence"] = (
                        f"its excess over other levels drops from {raw:.3g} to {left:.3g} per unit "
                        f"once {x.factor} is accounted for"
                    )
                elif raw > 0 and left > 0 and (~g.inc).sum() >= 5 and float(g.inc.sum()) * left > kept:
                    kept, keeper = float(g.inc.sum()) * left, (lv, left)
            if keeper is not None and x.share is not None and sym.excess_per_unit > 0:
                lv, left = keeper
                g = groups[lv.label]
                # the level's own contrast out of both periods: what it keeps in the incident, and
                # whatever it had in the reference
                base = _mean(sym.s_ref[g.ref]) - _mean(sym.s_ref[~g.ref]) if g.ref.any() and (~g.ref).any() else 0.0
                rest_ref, rest_inc = binned_prediction(
                    col.ref, col.inc, sym.s_ref - base * g.ref, sym.s_inc - left * g.inc
                )
                rest = max(0.0, (_mean(rest_inc) - _mean(rest_ref)) / sym.excess_per_unit)
                if rest < x.share:
                    x.details.update(share_before_levels=x.share, share_without=lv.label)
                    x.share = rest

    @staticmethod
    def _concurrent_rows(mask: np.ndarray, times: np.ndarray | None, bins: int = 20) -> np.ndarray | None:
        """Incident rows in time bins where the level and other levels both ran; None when the level
        hardly ever ran alongside others (no fair comparison possible)."""
        if times is None:
            return np.ones(mask.size, bool)
        order = np.argsort(times, kind="stable")
        b = np.empty(mask.size, np.int64)
        b[order] = np.arange(mask.size) * bins // max(mask.size, 1)
        n_in = np.bincount(b, weights=mask.astype(float), minlength=bins)
        n_out = np.bincount(b, weights=(~mask).astype(float), minlength=bins)
        ok_bins = (n_in >= 5) & (n_out >= 5)
        rows = ok_bins[b]
        if (mask & rows).sum() < 0.3 * mask.sum():
            return None
        return rows

    @classmethod
    def _clearly_stronger_pair(cls, a: Cause, b: Cause) -> tuple[Cause, Cause] | None:
        """(stronger, weaker) where one of the two, not yet explained, is clearly the weaker;
        whichever was listed first."""
        if b.explained_by is None and cls._clearly_stronger(a, b):
            return a, b
        if a.explained_by is None and cls._clearly_stronger(b, a):
            return b, a
        return None

    @staticmethod
    def _clearly_stronger(a: Cause, b: Cause) -> bool:
        share_a, share_b = a.share or 0.0, b.share or 0.0
        return share_a >= share_b + 0.1 or a.effect >= 3 * max(b.effect, 1e-9)

    @staticmethod
    def _explain_words(weak: Group, strong: Group, weak_only, strong_only) -> str:
        if strong_only.n == 0:
            return (
                f"{weak.label} without {strong.label} ({weak_only.n} units) shows no excess; "
                f"{strong.label} lies inside {weak.label}"
            )
        return (
            f"{weak.label} without {strong.label} ({weak_only.n} units) shows no excess, while {strong.label} "
            f"without {weak.label} ({strong_only.n} units) still does"
        )

    @staticmethod
    def _plot_units(sym: Symptom) -> tuple[float, float, float]:
        """How a per-unit score goes back to the symptom's own units (center, scale, sign): a
        measured mean as the mean; a spread as the mean distance from the reference's median (the
        score is that distance in reference sds); a rate is plotted as it is."""
        if sym.mode == "mean":
            return sym.center, sym.scale, sym.sign
        if sym.mode == "spread":
            return 0.0, sym.scale, sym.sign
        return 0.0, 1.0, 1.0

    @staticmethod
    def _ranking_share(c: Cause) -> float | None:
        if c.share is None or c.details.get("share_method") == "counterfactual":
            return None
        return float(np.clip(c.share, 0.0, 1.0))

    def _strength(self, c: Cause) -> float:
        share = self._ranking_share(c)
        # shares are estimates: differences in the third decimal must not decide a rank
        return min(c.score, EVIDENCE_CAP) + 10.0 * (0.5 if share is None else round(share, 2))

    def _rank(self, causes: list[Cause]) -> list[Cause]:
        def key(c: Cause):
            share = self._ranking_share(c)
            relevant = share is None or share >= MIN_SHARE
            return (
                c.upstream,
                c.q_value <= self.alpha,
                c.explained_by is None,
                relevant,
                self._strength(c),
                c.score,
                abs(c.effect),  # among equally strong, correlated measurements: the one that moved most
            )

        ranked = sorted(causes, key=key, reverse=True)
        for i, c in enumerate(ranked, 1):
            c.rank = i
        return ranked

    def _onset(
        self, prep: Prepared, sym: Symptom, ranked: list[Cause], level_tables: dict[str, categorical.LevelStats]
    ) -> Onset | None:
        if prep.time_ref is None or prep.time_inc is None:
            return None
        t = np.concatenate([prep.time_ref, prep.time_inc])
        s = np.concatenate([sym.s_ref, sym.s_inc])
        cp = change_point(t, s)
        if cp is None:
            return None
        events = match_events(cp, self.events)
        onset = Onset(
            index=cp.index,
            at=_fmt_time(cp.at),
            before=cp.before,
            after=cp.after,
            events=events,
            text=describe(cp, events, self.target_label or prep.target),
        )
        # the top few causes get their own onset: the change of the symptom on their rows
        for c in ranked[:3]:
            if c.kind == "categorical" and c.factor in level_tables:
                ls = level_tables[c.factor]
                j = int(np.flatnonzero(ls.levels == c.level)[0])
                mask = np.concatenate([ls.ref_codes == j, ls.inc_codes == j])
                own = change_point(t[mask], s[mask])
            elif c.kind in ("continuous", "environment"):
                col = prep.columns[c.factor]
                own = change_point(t, np.concatenate([col.ref, col.inc]))
            else:
                own = None
            if own is not None:
                c.onset = _fmt_time(own.at)
                near = match_events(own, self.events)
                if near:
                    c.details["events_at_onset"] = near[:3]
        return onset


def reference_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of y on x and its standard error (inf when it cannot be estimated)."""
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < 30:
        return 0.0, float("inf")
    xc, yc = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    sxx = float(xc @ xc)
    if sxx <= 0:
        return 0.0, float("inf")
    slope = float(xc @ yc) / sxx
    resid = yc - slope * xc
    return slope, float(np.sqrt(float(resid @ resid) / (n - 2) / sxx))


def _mean(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else 0.0


def binned_prediction(
    x_ref: np.ndarray, x_inc: np.ndarray, s_ref: np.ndarray, s_inc: np.ndarray, bins: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """The symptom predicted from one factor alone: its mean in quantile bins of the pooled factor."""
    x = np.concatenate([x_ref, x_inc])
    s = np.concatenate([s_ref, s_inc])
    ok = np.isfinite(x)
    edges = np.unique(np.quantile(x[ok], np.linspace(0, 1, bins + 1))) if ok.any() else np.array([0.0])
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, max(edges.size - 2, 0))
    idx = np.where(ok, idx, edges.size)  # missing values get a bin of their own
    n = np.bincount(idx, minlength=edges.size + 1)
    tot = np.bincount(idx, weights=s, minlength=edges.size + 1)
    mean = np.where(n > 0, tot / np.maximum(n, 1), s.mean())
    pred = mean[idx]
    return pred[: x_ref.size], pred[x_ref.size :]


def diagnose_tables(
    reference: TableLike | str | Path,
    incident: TableLike | str | Path,
    target: str,
    **kwargs: Any,
) -> Diagnosis:
    """One-call form of Diagnoser(**kwargs).fit(reference, incident, target).report_."""
    return Diagnoser(**kwargs).fit(reference, incident, target).report_
