"""Per-unit random draws: a unit's noise depends on the seed, the draw and the unit's index only.

The loop looks at the line as often as it likes; were the noise drawn per produced chunk, the
same seed would make a different line for every look size, and a change to how often the loop
looks could not be told from a change of luck. Each named draw reads from fixed pages of
`PAGE` units, each page its own seeded generator, so any chunk reads the same values.
"""

from __future__ import annotations

import numpy as np

PAGE = 4096

# One stream per draw; append only (a new name at the end leaves every other draw as it was).
STREAMS = (
    "takt", "rh", "temp", "pressure", "speed", "conveyor", "zone6", "zone7",
    "volume", "spi_noise", "spi_height", "spi_area",
    "volume2", "spi2_noise", "spi2_height", "spi2_area",
    "print_s", "spi_s", "reprint_wait_s", "reprint_s", "spi2_s",
    "placer", "nozzle", "off_x", "off_y", "vacuum", "place_s", "peak", "tal",
    "aoi_s", "aoi_draw", "rework_wait_s", "rework_s", "reinspect_s", "rework_ok",
    "tester", "fixture", "vout", "ripple", "icc", "test_s",
    "test1_vout", "test1_ripple", "test1_icc", "test1_contact",
    "retest_fixture", "test2_vout", "test2_ripple", "test2_icc", "test2_contact",
    "retest_wait_s", "retest_s", "pack_s",
)
_STREAM = {name: k for k, name in enumerate(STREAMS)}


class UnitNoise:
    """The draws of units `i0 .. i0 + n - 1` (a draw for a subset of them: index the full draw)."""

    def __init__(self, seed: int, i0: int, n: int) -> None:
        self.seed, self.i0, self.n = seed, i0, n

    def _draw(self, name: str, width: int, normal: bool) -> np.ndarray:
        lo, hi = self.i0, self.i0 + self.n
        p0, p1 = lo // PAGE, (hi - 1) // PAGE
        pages = []
        for p in range(p0, p1 + 1):
            rng = np.random.default_rng([self.seed, 1000 + _STREAM[name], p])
            pages.append(rng.standard_normal((PAGE, width)) if normal else rng.random((PAGE, width)))
        out = np.concatenate(pages)[lo - p0 * PAGE: hi - p0 * PAGE]
        return out[:, 0] if width == 1 else out

    # `at`: the positions (in the chunk) of the units a visit concerns (a reprint, a retest).
    def normal(self, name: str, at: np.ndarray | None = None) -> np.ndarray:
        d = self._draw(name, 1, True)
        return d if at is None else d[at]

    def random(self, name: str, width: int = 1, at: np.ndarray | None = None) -> np.ndarray:
        """Uniform on [0, 1): shape (n,), or (n, width) for a draw per unit and code."""
        d = self._draw(name, width, False)
        return d if at is None else d[at]

    def uniform(self, name: str, lo: float, hi: float, at: np.ndarray | None = None) -> np.ndarray:
        return lo + (hi - lo) * self.random(name, at=at)

    def integers(self, name: str, k: int, at: np.ndarray | None = None) -> np.ndarray:
        """Uniform on 0 .. k-1."""
        return np.minimum((self.random(name, at=at) * k).astype(np.int64), k - 1)
