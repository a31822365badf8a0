"""Materials and their genealogy: lots of reels issued from stores to the line's feeders.

Each material has a stream of reels (a jar of paste, a stack of boards, a component reel). A
lot is a run of consecutive reels from one supplier. Feeders pull the next reel when theirs
runs out; reels of held lots are skipped. Streams are drawn from their own seeded generators,
so the lots a line sees do not depend on how production is chunked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Material:
    name: str
    station: str
    code: str
    suppliers: dict[str, float]  # supplier -> share of lots
    boards_per_reel: int
    reels_per_lot: tuple[int, int]  # inclusive range


MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material("SOLDER_PASTE", "PRINT", "SP", {"KESTREL": 1.0}, 3000, (1, 3)),
        Material("PCB", "PRINT", "PCB", {"BOARDTEK": 0.7, "CIRCUITA": 0.3}, 2000, (1, 2)),
        Material("CAP-22UF", "PLACE", "C22", {"NORVIK": 0.45, "SANWA": 0.35, "CORELIA": 0.20}, 2500, (2, 4)),
        Material("IND-4R7", "PLACE", "L47", {"SANWA": 0.6, "TAMARU": 0.4}, 2000, (2, 4)),
        Material("IC-PMIC", "PLACE", "U1", {"VEXA": 1.0}, 1500, (2, 5)),
    )
}
COMPONENTS = [m for m in MATERIALS.values() if m.station == "PLACE"]


@dataclass
class LotRegistry:
    """Every lot the stores have issued so far: index -> name, supplier, material."""

    names: list[str] = field(default_factory=list)
    suppliers: list[str] = field(default_factory=list)
    materials: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    _serial: dict[tuple[str, str], int] = field(default_factory=dict)

    def new_lot(self, material: Material, supplier: str) -> int:
        key = (material.name, supplier)
        serial = self._serial.get(key, 0) + 1
        self._serial[key] = serial
        name = f"{supplier[:3]}-{material.code}-{serial:05d}"
        self.index[name] = len(self.names)
        self.names.append(name)
        self.suppliers.append(supplier)
        self.materials.append(material.name)
        return self.index[name]


@dataclass
class Reel:
    lot: int
    reel_in_lot: int
    reels_in_lot: int


class MaterialStream:
    """The sequence of reels that stores issue for one material."""

    def __init__(self, material: Material, registry: LotRegistry, rng: np.random.Generator) -> None:
        self.material = material
        self.registry = registry
        self.rng = rng
        self.reels: list[Reel] = []
        self.next_index = 0
        self.last_reel_of: dict[int, int] = {}  # lot -> index of its last reel in `reels`
        self._suppliers = list(material.suppliers)
        self._shares = np.array(list(material.suppliers.values()))
        self._shares = self._shares / self._shares.sum()

    def _extend(self, lots: int = 32) -> None:
        lo, hi = self.material.reels_per_lot
        picks = self.rng.choice(len(self._suppliers), size=lots, p=self._shares)
        sizes = self.rng.integers(lo, hi + 1, size=lots)
        for pick, size in zip(picks, sizes, strict=True):
            lot = self.registry.new_lot(self.material, self._suppliers[pick])
            self.reels.extend(Reel(lot, k, int(size)) for k in range(int(size)))
            self.last_reel_of[lot] = len(self.reels) - 1

    def pull(self, held: set[int]) -> Reel:
        """The next reel whose lot is not on hold."""
        while True:
            while self.next_index >= len(self.reels):
                self._extend()
            reel = self.reels[self.next_index]
            self.next_index += 1
            if reel.lot not in held:
                return reel

    def exhausted(self, lot: int) -> bool:
        """Every reel of `lot` has been issued (or skipped while it was on hold)."""
        return self.next_index > self.last_reel_of.get(lot, -1)


@dataclass
class Feed:
    """One feeder slot (or the paste/board magazine at the printer) and what it holds now."""

    material: Material
    machine: str
    reel: Reel | None = None
    remaining: int = 0  # boards left on the loaded reel
