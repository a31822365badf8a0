"""The kinds of line the zoo builds: stations, machines, readings, materials, environment, recipe.

Each kind is plain data; `linelab.zoo.line.ZooLine` gives it physics (one model for all kinds):

    reading = nominal[product] + machine offset + natural wear since the last tool change/service
              + lot offset + env coefficient * (env - base) + recipe effect + noise  (+ problems)

in units of the reading's sigma where a field says "sigma". A reading recorded at a tester
station also carries that tester's bias (what it reads, not what the product is). A station
fails a unit when a reading leaves its product's spec, or at its base defect rate; a station
with `rework` sends failures through REWORK and tests them again; elsewhere a failed unit leaves
the line. `targets` say where each kind of injected problem strikes on this line.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StationDef:
    name: str
    machines: tuple[str, ...]
    description: str = ""
    cycle_s: float = 60.0
    tester: bool = False  # its machine's bias moves what is read, not the product
    base_fail: float = 0.0  # random defects (code `defect`)
    defect: str = ""
    handling: bool = False  # people handle the unit here: shift/operator problems strike here
    rework: bool = False  # failures are reworked (REWORK) and tested again once
    tool_change_every: int = 0  # planned: resets natural wear only (units of the line)
    service_every: int = 0  # planned maintenance: resets wear and the machine's problems
    calibrate_every: int = 0  # planned calibration of a tester: resets its drift


@dataclass(frozen=True)
class ReadingDef:
    name: str
    station: str  # where it is recorded
    nominal: dict[str, float]  # per product
    sigma: float
    unit: str = ""
    source: str | None = None  # station whose machine makes it (default: where recorded)
    spec_k: float = 4.5  # spec half-width in sigmas around the nominal
    upper_only: bool = False  # one-sided spec (a leak rate)
    machine_sd: float = 0.25  # spread of machine offsets, sigmas
    wear: float = 0.0  # sigmas per 1,000 units since the machine's last tool change/service
    lot: tuple[str, float] | None = None  # (material, lot-to-lot sd in sigmas)
    env: tuple[str, float] | None = None  # (environment reading, sigmas per its unit)

    @property
    def maker(self) -> str:
        return self.source or self.station


@dataclass(frozen=True)
class MaterialDef:
    name: str
    station: str
    suppliers: tuple[str, ...]
    lot_size: int  # units per lot, on average


@dataclass(frozen=True)
class EnvDef:
    name: str
    station: str  # per-unit reading (params) taken here; also a signals series
    base: float
    daily_amp: float
    noise: float
    unit: str = ""


@dataclass(frozen=True)
class SettingDef:
    name: str
    station: str
    reading: str  # the reading it moves
    low: float
    high: float
    default: float
    best: float  # hidden: where the reading is centred and tightest
    step: float
    gain: float  # sigmas of the reading per unit of (setting - best)
    unit: str = ""


@dataclass(frozen=True)
class LineKind:
    name: str
    line: str
    description: str
    units_per_day: int
    hours: tuple[float, float]  # working window each day
    shifts: tuple[str, ...]
    operators_per_shift: int
    products: dict[str, float]  # product -> share of work orders
    work_order: int  # units per work order (one product each)
    stations: tuple[StationDef, ...]
    readings: tuple[ReadingDef, ...]
    materials: tuple[MaterialDef, ...]
    env: tuple[EnvDef, ...]
    settings: tuple[SettingDef, ...]
    run_units: int  # a scenario's default length
    chunk: int  # units per chunk when fed online (a few hours)
    targets: dict[str, dict[str, str]] = field(default_factory=dict)
    serial_prefix: str = "SN"

    def station(self, name: str) -> StationDef:
        return next(s for s in self.stations if s.name == name)

    def reading(self, name: str) -> ReadingDef:
        return next(r for r in self.readings if r.name == name)

    @property
    def has_rework(self) -> bool:
        return any(s.rework for s in self.stations)


S = StationDef
R = ReadingDef

ASSEMBLY = LineKind(
    name="assembly", line="ASM-2", serial_prefix="AS",
    description="automotive pump assembly: press-fit, torque, leak test, end-of-line test; 2 products",
    units_per_day=2000, hours=(6.0, 30.0), shifts=("A", "B", "C"), operators_per_shift=3,
    products={"PUMP-A": 0.6, "PUMP-B": 0.4}, work_order=250,
    stations=(
        S("PRESS", ("PR1", "PR2"), "bearing press-fit", cycle_s=40, service_every=9000),
        S("SCREW", ("TQ1", "TQ2", "TQ3"), "cover screwing, torque/angle", cycle_s=55, service_every=9000),
        S("LEAK", ("LK1", "LK2"), "pressure-decay leak test", cycle_s=70, tester=True, rework=True,
          calibrate_every=7000, defect="LEAK_HIGH"),
        S("EOL", ("EOL1", "EOL2"), "end-of-line motor test", cycle_s=45, tester=True, calibrate_every=7000),
        S("VIS", ("VIS1",), "visual check and pack", cycle_s=30, base_fail=0.003, defect="COSMETIC",
          handling=True),
    ),
    readings=(
        R("press_force_kn", "PRESS", {"PUMP-A": 12.0, "PUMP-B": 14.5}, 0.30, "kN", lot=("housing", 0.3)),
        R("press_depth_mm", "PRESS", {"PUMP-A": 8.00, "PUMP-B": 9.50}, 0.04, "mm", lot=("housing", 0.4)),
        R("torque_nm", "SCREW", {"PUMP-A": 6.0, "PUMP-B": 8.0}, 0.12, "N·m", wear=0.15),
        R("angle_deg", "SCREW", {"PUMP-A": 540.0, "PUMP-B": 720.0}, 15.0, "deg", env=("humidity_pct", 0.03)),
        R("leak_rate_sccm", "LEAK", {"PUMP-A": 1.0, "PUMP-B": 1.4}, 0.25, "sccm", upper_only=True, spec_k=4.0,
          lot=("seal", 0.3), env=("air_temp_c", 0.25)),
        R("current_a", "EOL", {"PUMP-A": 2.0, "PUMP-B": 2.6}, 0.05, "A"),
        R("noise_db", "EOL", {"PUMP-A": 42.0, "PUMP-B": 44.0}, 1.0, "dB"),
    ),
    materials=(MaterialDef("housing", "PRESS", ("CastCo", "AlFab"), 1500),
               MaterialDef("seal", "SCREW", ("SealTec", "RubCo"), 2500)),
    env=(EnvDef("air_temp_c", "LEAK", 22.0, 2.0, 0.6, "degC"),
         EnvDef("humidity_pct", "SCREW", 45.0, 5.0, 2.0, "%RH")),
    settings=(SettingDef("torque_target_nm", "SCREW", "torque_nm", -0.5, 0.5, 0.0, 0.1, 0.05, 4.0, "N·m"),),
    run_units=20000, chunk=500,
    targets={
        "machine_step": {"station": "PRESS", "reading": "press_force_kn"},
        "machine_drift": {"station": "SCREW", "reading": "torque_nm"},
        "tester_drift": {"station": "LEAK", "reading": "leak_rate_sccm"},
        "lot_shift": {"material": "housing", "reading": "press_depth_mm"},
        "bad_lot_fails": {"material": "seal", "station": "LEAK", "defect": "LEAK_HIGH"},
        "aliased_lot": {"material": "seal", "station": "LEAK", "defect": "LEAK_HIGH"},
        "env_excursion": {"env": "air_temp_c"},
        "shift_handling": {"station": "VIS", "defect": "COSMETIC"},
        "operator_handling": {"station": "VIS", "defect": "COSMETIC"},
        "product_specific": {"station": "EOL", "reading": "current_a", "product": "PUMP-B"},
        "intermittent": {"station": "EOL", "defect": "EOL_NO_CONTACT"},
    },
)

MACHINING = LineKind(
    name="machining", line="CELL-7", serial_prefix="MC",
    description="shaft machining cell: lathes with tool wear, mills, deburr, CMM; lots of bar stock",
    units_per_day=600, hours=(6.0, 22.0), shifts=("A", "B"), operators_per_shift=2,
    products={"SHAFT-20": 0.5, "SHAFT-25": 0.5}, work_order=100,
    stations=(
        S("TURN", ("L1", "L2", "L3"), "CNC lathes", cycle_s=180, tool_change_every=500, service_every=4000),
        S("MILL", ("M1", "M2"), "keyway milling", cycle_s=120, service_every=4000),
        S("DEBURR", ("DB1",), "manual deburr", cycle_s=60, base_fail=0.002, defect="BURR", handling=True),
        S("CMM", ("CMM1", "CMM2"), "coordinate measuring machine", cycle_s=240, tester=True, calibrate_every=3000),
    ),
    readings=(
        R("diameter_mm", "CMM", {"SHAFT-20": 20.000, "SHAFT-25": 25.000}, 0.004, "mm", source="TURN", wear=0.9,
          lot=("bar_stock", 0.3), env=("coolant_temp_c", 0.35)),
        R("length_mm", "CMM", {"SHAFT-20": 120.0, "SHAFT-25": 150.0}, 0.02, "mm", source="TURN"),
        R("keyway_pos_mm", "CMM", {"SHAFT-20": 12.0, "SHAFT-25": 15.0}, 0.006, "mm", source="MILL", wear=0.1),
        R("roughness_ra_um", "CMM", {"SHAFT-20": 0.8, "SHAFT-25": 0.9}, 0.05, "um", source="TURN", wear=0.5,
          upper_only=True),
    ),
    materials=(MaterialDef("bar_stock", "TURN", ("SteelA", "SteelB"), 400),),
    env=(EnvDef("coolant_temp_c", "TURN", 24.0, 1.5, 0.4, "degC"),
         EnvDef("shop_temp_c", "CMM", 20.0, 0.5, 0.2, "degC")),
    settings=(SettingDef("feed_mm_rev", "TURN", "roughness_ra_um", 0.10, 0.30, 0.20, 0.17, 0.01, 12.0, "mm/rev"),),
    run_units=6000, chunk=200,
    targets={
        "machine_step": {"station": "MILL", "reading": "keyway_pos_mm"},
        "machine_drift": {"station": "MILL", "reading": "keyway_pos_mm"},
        "tester_drift": {"station": "CMM", "reading": "diameter_mm"},
        "lot_shift": {"material": "bar_stock", "reading": "length_mm"},
        "bad_lot_fails": {"material": "bar_stock", "station": "CMM", "defect": "CRACK"},
        "aliased_lot": {"material": "bar_stock", "station": "CMM", "defect": "CRACK"},
        "env_excursion": {"env": "coolant_temp_c"},
        "shift_handling": {"station": "DEBURR", "defect": "BURR"},
        "operator_handling": {"station": "DEBURR", "defect": "BURR"},
        "product_specific": {"station": "TURN", "reading": "length_mm", "product": "SHAFT-25"},
        "intermittent": {"station": "TURN", "defect": "CHATTER"},
    },
)

MEDDEV = LineKind(
    name="meddev", line="MD-1", serial_prefix="MD",
    description="low-volume medical monitor line, one shift, three products, rework at functional test",
    units_per_day=100, hours=(7.0, 15.0), shifts=("D",), operators_per_shift=3,
    products={"MON-1": 0.5, "MON-2": 0.3, "MON-3": 0.2}, work_order=20,
    stations=(
        S("ASSY", ("B1", "B2"), "manual assembly benches", cycle_s=900, base_fail=0.004, defect="ASSY_ERROR",
          handling=True),
        S("PROG", ("PG1",), "firmware programming", cycle_s=120, base_fail=0.002, defect="PROG_FAIL"),
        S("CAL", ("CAL1", "CAL2"), "sensor calibration", cycle_s=300, service_every=1500),
        S("FT", ("FT1", "FT2"), "functional test", cycle_s=400, tester=True, rework=True, calibrate_every=1200),
        S("INSP", ("IN1",), "final inspection", cycle_s=120, base_fail=0.003, defect="LABEL", handling=True),
    ),
    readings=(
        R("sensor_offset_mv", "CAL", {"MON-1": 0.0, "MON-2": 5.0, "MON-3": -3.0}, 0.5, "mV", lot=("sensor", 0.4)),
        R("supply_ma", "FT", {"MON-1": 35.0, "MON-2": 42.0, "MON-3": 50.0}, 0.8, "mA", lot=("pcb", 0.2)),
        R("accuracy_pct", "FT", {"MON-1": 0.0, "MON-2": 0.0, "MON-3": 0.0}, 0.15, "%", env=("room_temp_c", 0.2)),
        R("alarm_db", "FT", {"MON-1": 70.0, "MON-2": 72.0, "MON-3": 75.0}, 0.6, "dB"),
    ),
    materials=(MaterialDef("pcb", "ASSY", ("PCBx", "PCBy"), 150), MaterialDef("sensor", "ASSY", ("SenseCo",), 80)),
    env=(EnvDef("room_temp_c", "FT", 22.0, 1.0, 0.4, "degC"), EnvDef("humidity_pct", "ASSY", 40.0, 4.0, 2.0, "%RH")),
    settings=(SettingDef("cal_gain", "CAL", "sensor_offset_mv", 0.9, 1.1, 1.0, 1.02, 0.005, 30.0),),
    run_units=2000, chunk=100,
    targets={
        "machine_step": {"station": "CAL", "reading": "sensor_offset_mv"},
        "machine_drift": {"station": "CAL", "reading": "sensor_offset_mv"},
        "tester_drift": {"station": "FT", "reading": "supply_ma"},
        "lot_shift": {"material": "pcb", "reading": "supply_ma"},
        "bad_lot_fails": {"material": "sensor", "station": "FT", "defect": "SENSOR_DEAD"},
        "aliased_lot": {"material": "sensor", "station": "FT", "defect": "SENSOR_DEAD"},
        "env_excursion": {"env": "room_temp_c"},
        "operator_handling": {"station": "ASSY", "defect": "ASSY_ERROR"},
        "product_specific": {"station": "FT", "reading": "alarm_db", "product": "MON-3"},
        "intermittent": {"station": "PROG", "defect": "PROG_FAIL"},
    },
)

PROCESS = LineKind(
    name="process", line="FILL-3", serial_prefix="PF",
    description="gel filling plant: mixers, four fillers, cappers, check-weigher; room climate as signals",
    units_per_day=20000, hours=(6.0, 30.0), shifts=("A", "B", "C"), operators_per_shift=2,
    products={"GEL-200": 0.7, "GEL-350": 0.3}, work_order=2000,
    stations=(
        S("MIX", ("MX1", "MX2"), "batch mixers", cycle_s=30, service_every=30000),
        S("FILL", ("F1", "F2", "F3", "F4"), "piston fillers", cycle_s=8, service_every=30000),
        S("CAP", ("C1", "C2"), "cappers", cycle_s=5, service_every=30000),
        S("CHECK", ("CW1", "CW2"), "check-weighers", cycle_s=2, tester=True, calibrate_every=25000),
        S("CASE", ("CP1",), "manual case packing", cycle_s=10, base_fail=0.002, defect="DENT", handling=True),
    ),
    readings=(
        R("viscosity_cp", "MIX", {"GEL-200": 200.0, "GEL-350": 350.0}, 6.0, "cP", lot=("resin", 0.5),
          env=("room_temp_c", 0.2)),
        R("net_weight_g", "CHECK", {"GEL-200": 200.0, "GEL-350": 350.0}, 0.8, "g", source="FILL", wear=0.02),
        R("cap_torque_ncm", "CAP", {"GEL-200": 120.0, "GEL-350": 150.0}, 4.0, "N·cm", lot=("cap", 0.3),
          env=("humidity_pct", 0.2)),
    ),
    materials=(MaterialDef("resin", "MIX", ("ChemA", "ChemB"), 5000), MaterialDef("cap", "CAP", ("CapCo",), 8000)),
    env=(EnvDef("room_temp_c", "MIX", 21.0, 2.0, 0.5, "degC"), EnvDef("humidity_pct", "CAP", 50.0, 3.0, 1.0, "%RH")),
    settings=(SettingDef("fill_offset_g", "FILL", "net_weight_g", -2.0, 2.0, 0.0, 0.4, 0.1, 1.0, "g"),),
    run_units=30000, chunk=2500,
    targets={
        "machine_step": {"station": "FILL", "reading": "net_weight_g"},
        "machine_drift": {"station": "CAP", "reading": "cap_torque_ncm"},
        "tester_drift": {"station": "CHECK", "reading": "net_weight_g"},
        "lot_shift": {"material": "resin", "reading": "viscosity_cp"},
        "bad_lot_fails": {"material": "cap", "station": "CHECK", "defect": "CAP_LEAK"},
        "aliased_lot": {"material": "cap", "station": "CHECK", "defect": "CAP_LEAK"},
        "env_excursion": {"env": "humidity_pct"},
        "shift_handling": {"station": "CASE", "defect": "DENT"},
        "operator_handling": {"station": "CASE", "defect": "DENT"},
        "product_specific": {"station": "CAP", "reading": "cap_torque_ncm", "product": "GEL-350"},
        "intermittent": {"station": "FILL", "defect": "NO_FILL"},
    },
)

KINDS: dict[str, LineKind] = {k.name: k for k in (ASSEMBLY, MACHINING, MEDDEV, PROCESS)}
