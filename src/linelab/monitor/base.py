"""The shape every detector shares.

`fit(reference)` learns limits from a phase-I window the user vouches for; `update(x)` takes
new data — a whole batch or one record — and returns a `Scores` with one row per record.
Detectors carry just enough state (last values, running sums, counters) that feeding the
same data in one batch or one record at a time gives the same answers: the streaming path
*is* the batch path called with a batch of one, so there is a single implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Scores:
    """Per-record output of `update`: the monitored statistic(s), their limits and alarms.

    `statistic` and `alarm` have one entry per record. `extra` holds chart-specific series
    (the moving range, T² and SPE separately, the rule that fired ...), each one per record.
    """

    statistic: np.ndarray
    alarm: np.ndarray
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.alarm)

    @property
    def n_alarms(self) -> int:
        return int(np.count_nonzero(self.alarm))

    @property
    def first_alarm(self) -> int | None:
        hits = np.flatnonzero(self.alarm)
        return int(hits[0]) if hits.size else None

    @staticmethod
    def concat(parts: list[Scores]) -> Scores:
        """Join per-record outputs of consecutive `update` calls (e.g. a stream) into one."""
        if not parts:
            return Scores(np.empty(0), np.empty(0, dtype=bool))

        def cat(get: Any) -> np.ndarray | None:
            vals = [get(p) for p in parts]
            return None if any(v is None for v in vals) else np.concatenate(vals)

        keys = parts[0].extra.keys()
        return Scores(
            statistic=np.concatenate([p.statistic for p in parts]),
            alarm=np.concatenate([p.alarm for p in parts]),
            lower=cat(lambda p: p.lower),
            upper=cat(lambda p: p.upper),
            extra={k: np.concatenate([p.extra[k] for p in parts]) for k in keys},
        )


class NotFittedError(RuntimeError):
    """`update` was called before `fit`."""


class Detector:
    """Base class: subclasses implement `fit` and `_update` (vectorised over a batch)."""

    fitted_: bool = False
    n_seen_: int = 0

    def fit(self, reference: Any) -> Detector:  # pragma: no cover - interface
        raise NotImplementedError

    def update(self, x: Any) -> Scores:
        if not self.fitted_:
            raise NotFittedError(f"{type(self).__name__}.update called before fit")
        scores = self._update(self._as_batch(x))
        self.n_seen_ += len(scores)
        return scores

    def score(self, x: Any) -> Scores:
        """Alias of `update`, for code written against scikit-learn-like detectors."""
        return self.update(x)

    # A single record is a scalar for univariate charts, a 1-D row for multivariate ones.
    def _as_batch(self, x: Any) -> np.ndarray:
        arr = np.asarray(x, dtype=float)
        return arr.reshape(1) if arr.ndim == 0 else arr

    def _update(self, x: np.ndarray) -> Scores:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def state(self) -> dict[str, Any]:
        """Readable state: limits and current statistic, JSON-friendly."""
        out: dict[str, Any] = {"detector": type(self).__name__, "n_seen": self.n_seen_}
        for k, v in vars(self).items():
            if k.endswith("_") and not k.startswith("_") and k not in ("fitted_", "n_seen_"):
                out[k[:-1]] = _jsonable(v)
        return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist() if v.size <= 256 else f"array{v.shape}"
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return repr(v)
