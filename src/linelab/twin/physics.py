"""The hidden quality model of the twin (documented in MODEL.md; keep the two in step).

Every function here is vectorised over units. The simulator (`line.py`) draws the random parts
and samples defects from these probabilities; the oracle (`expected_first_pass_yield`) feeds the
same functions a fixed-seed sample of baseline conditions and averages the probabilities, so the
oracle and the simulated line agree by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import numpy as np
from scipy.special import expit, ndtr

# ---- print + SPI -----------------------------------------------------------------------------
PRINT_CENTRE_PRESSURE = 8.0  # kg: the hidden best squeegee pressure
PRINT_SCALE_PRESSURE = 2.0
PRINT_CENTRE_SPEED = 55.0  # mm/s: the hidden best print speed
PRINT_SCALE_SPEED = 25.0
PASTE_SD_BEST = 4.0  # % volume, board to board, at the best print settings
PASTE_SD_GROWTH = 0.25  # relative growth of that spread per squared normalised distance from best
STENCIL_DRIFT_PER_1000 = 0.6  # % volume lost per 1000 prints since the last clean (normal wear)
SPI_NOISE = 1.5  # % volume, SPI gauge repeatability
SPI_LSL, SPI_USL = 65.0, 135.0

# ---- placement ---------------------------------------------------------------------------------
PLACE_SD = {"P1": 0.017, "P2": 0.019}  # mm per axis, a fresh nozzle
PLACE_WEAR_GROWTH = 0.15  # relative growth of that spread over one nozzle swap interval (normal wear)
MISALIGN_SCALE = 0.045  # mm
VACUUM_NOMINAL = 62.0  # kPa

# ---- reflow -----------------------------------------------------------------------------------
ZONE6_OFFSET = 15.0  # zone 6 runs this much below the peak-zone setpoint
ZONE_SD = 0.6
PEAK_LAG_BASE = 6.0  # board peak sits this far below the peak-zone setpoint at 80 cm/min
PEAK_LAG_PER_CM = 0.18  # each cm/min faster lowers the board peak by this much
PEAK_BOARD_SD = 1.0
PEAK_BEST = 243.0  # degC: middle of the paste's process window
TAL_BEST = 70.0  # s above liquidus: middle of the window
TAL_PER_DEGC = 2.2
TAL_PER_CM = 0.6
TAL_SD = 2.5
OVEN_LENGTH_CM = 450.0

# ---- test -------------------------------------------------------------------------------------
VOUT_NOMINAL, VOUT_SD, VOUT_TESTER_SD = 5.0, 0.034, 0.004
VOUT_LSL, VOUT_USL = 4.90, 5.10
TESTER_BASE_BIAS = {"T1": 0.002, "T2": -0.002}  # V, calibrated testers are not perfect either
RIPPLE_MEDIAN, RIPPLE_SDLOG, RIPPLE_MEAS_SDLOG, RIPPLE_USL = 22.0, 0.17, 0.02, 40.0
RIPPLE_PER_BAD_LOT_LOGIT = 0.12  # a bad capacitor lot raises ripple by this fraction per unit of magnitude
ICC_MEAN, ICC_SD, ICC_MEAS_SD, ICC_USL = 12.0, 0.9, 0.1, 16.0
CONTACT_FAIL_P = 0.0025  # fixture contact opens: a false fail that passes on retest
REWORK_SUCCESS_P = 0.93

# ---- environment ------------------------------------------------------------------------------
RH_MEAN, RH_DAILY_AMPLITUDE, RH_DAY_SD, RH_NOISE = 44.0, 6.0, 3.0, 0.8
TEMP_MEAN, TEMP_DAILY_AMPLITUDE, TEMP_NOISE = 23.0, 1.2, 0.3
SHIFT_HANDLING_BASE = {"A": 0.0, "B": 0.1, "C": 0.3}  # logit: night shift handles a bit worse

AOI_CODES = (
    "INSUFFICIENT",
    "BRIDGE",
    "MISALIGN",
    "TOMBSTONE",
    "COLD_JOINT",
    "DEWETTING",
    "SOLDER_BALL",
    "HANDLING",
)
TEST_CODES = ("CONTACT", "VOUT_LOW", "VOUT_HIGH", "RIPPLE_HIGH", "ICC_HIGH")


def hinge(x: np.ndarray, width: float = 3.0) -> np.ndarray:
    """A smooth max(0, x): defects rise once a variable leaves its window."""
    return width * np.logaddexp(0.0, x / width)


def paste_volume_mean_sd(pressure: np.ndarray, speed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of deposited paste volume (% of aperture) for the print settings.

    More pressure wipes the apertures cleaner and faster strokes fill them less, so both lower
    the volume; away from the best settings the print also gets less repeatable.
    """
    up = (pressure - PRINT_CENTRE_PRESSURE) / PRINT_SCALE_PRESSURE
    us = (speed - PRINT_CENTRE_SPEED) / PRINT_SCALE_SPEED
    mean = 100.0 - 5.0 * up - 6.0 * us
    sd = PASTE_SD_BEST * (1.0 + PASTE_SD_GROWTH * (up * up + us * us))
    return mean, sd


def spi_pass_probability(volume: np.ndarray) -> np.ndarray:
    """Probability that SPI reads the true volume inside its limits."""
    return ndtr((SPI_USL - volume) / SPI_NOISE) - ndtr((SPI_LSL - volume) / SPI_NOISE)


def board_profile(
    zone6: np.ndarray, zone7: np.ndarray, conveyor: np.ndarray, z_peak: np.ndarray, z_tal: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Board peak temperature and time above liquidus from the zone actuals and conveyor speed."""
    dc = conveyor - 80.0
    peak = 0.25 * (zone6 + ZONE6_OFFSET) + 0.75 * zone7 - PEAK_LAG_BASE - PEAK_LAG_PER_CM * dc
    peak = peak + PEAK_BOARD_SD * z_peak
    tal = TAL_BEST + TAL_PER_DEGC * (peak - PEAK_BEST) - TAL_PER_CM * dc + TAL_SD * z_tal
    return peak, tal


def aoi_logits(
    volume: np.ndarray,
    humidity: np.ndarray,
    offset_r: np.ndarray,
    peak: np.ndarray,
    tal: np.ndarray,
    conveyor: np.ndarray,
    tombstone_boost: np.ndarray | float,
    handling_logit: np.ndarray | float,
) -> np.ndarray:
    """Log-odds of each AOI defect mechanism, shape (n, len(AOI_CODES))."""
    n = volume.shape[0]
    out = np.empty((n, len(AOI_CODES)))
    slump = 0.05 * hinge(humidity - 55.0)
    out[:, 0] = -6.6 + 0.22 * hinge(100.0 - volume - 2.0)
    out[:, 1] = -6.6 + 0.22 * hinge(volume - 100.0 - 2.0) + slump
    out[:, 2] = -7.4 + (offset_r / MISALIGN_SCALE) ** 2
    out[:, 3] = -7.2 + 0.05 * (conveyor - 80.0) + tombstone_boost
    out[:, 4] = -6.8 + 0.5 * hinge(PEAK_BEST - peak - 1.0) + 0.12 * hinge(TAL_BEST - tal - 3.0)
    out[:, 5] = -6.8 + 0.35 * hinge(peak - PEAK_BEST - 1.0) + 0.10 * hinge(tal - TAL_BEST - 3.0)
    out[:, 6] = -7.2 + 0.25 * hinge(humidity - 55.0) + 0.10 * hinge(peak - 246.0)
    out[:, 7] = -7.6 + handling_logit
    return out


def test_pass_probability(bias: np.ndarray | float, ripple_factor: np.ndarray | float = 1.0) -> np.ndarray:
    """Probability that one functional-test visit passes (vout, ripple, Icc limits, fixture contact)."""
    sd = np.hypot(VOUT_SD, VOUT_TESTER_SD)
    mu = VOUT_NOMINAL + bias
    p_vout = ndtr((VOUT_USL - mu) / sd) - ndtr((VOUT_LSL - mu) / sd)
    sdlog = np.hypot(RIPPLE_SDLOG, RIPPLE_MEAS_SDLOG)
    p_ripple = ndtr(np.log(RIPPLE_USL / (RIPPLE_MEDIAN * ripple_factor)) / sdlog)
    p_icc = ndtr((ICC_USL - ICC_MEAN) / np.hypot(ICC_SD, ICC_MEAS_SD))
    return (1.0 - CONTACT_FAIL_P) * p_vout * p_ripple * p_icc


def humidity_baseline(hour: np.ndarray, day_offset: np.ndarray) -> np.ndarray:
    """Ambient RH (%) without excursions: a daily cycle peaking mid-afternoon plus the day's weather."""
    return RH_MEAN + RH_DAILY_AMPLITUDE * np.sin(2 * np.pi * (hour - 9.0) / 24.0) + day_offset


def temperature_baseline(hour: np.ndarray) -> np.ndarray:
    return TEMP_MEAN + TEMP_DAILY_AMPLITUDE * np.sin(2 * np.pi * (hour - 10.0) / 24.0)


def shift_of_hour(hour: np.ndarray) -> np.ndarray:
    """0 = A (06-14), 1 = B (14-22), 2 = C (22-06)."""
    return ((hour - 6.0) % 24.0 // 8.0).astype(np.int8)


ORACLE_SEED = 20250106
ORACLE_UNITS = 100_000


@lru_cache(maxsize=4)
def _oracle_sample(stencil_clean_every: int, nozzle_swap_every: int, n: int) -> dict[str, np.ndarray]:
    """Fixed-seed baseline conditions: no problems, maintenance on its schedule, a year of weather."""
    rng = np.random.default_rng(ORACLE_SEED)
    hour = rng.uniform(0, 24, n)
    shift = shift_of_hour(hour)
    rh = humidity_baseline(hour, RH_DAY_SD * rng.standard_normal(n)) + RH_NOISE * rng.standard_normal(n)
    machine_p2 = rng.random(n) < 0.5
    wear = PLACE_WEAR_GROWTH * rng.random(n)  # uniform position within the swap interval
    sd = np.where(machine_p2, PLACE_SD["P2"], PLACE_SD["P1"]) * (1.0 + wear)
    offset_r = sd * np.hypot(rng.standard_normal(n), rng.standard_normal(n))
    tester_t2 = rng.random(n) < 0.5
    bias = np.where(tester_t2, TESTER_BASE_BIAS["T2"], TESTER_BASE_BIAS["T1"])
    handling = np.array([SHIFT_HANDLING_BASE[s] for s in "ABC"])[shift]
    return {
        "z": rng.standard_normal((8, n)),
        "rh": rh,
        "drift": STENCIL_DRIFT_PER_1000 * rng.uniform(0, stencil_clean_every, n) / 1000.0,
        "offset_r": offset_r,
        "handling": handling,
        "test_pass": test_pass_probability(bias),
    }


def expected_first_pass_yield(
    recipe: Mapping[str, float],
    stencil_clean_every: int | None = 5000,
    nozzle_swap_every: int | None = 60000,
    n: int = ORACLE_UNITS,
) -> float:
    """Noise-free first-pass yield of `recipe` with no problem active (fixed-seed Monte Carlo).

    The random conditions (weather, shift, nozzle, tester, board-to-board noise) are drawn once
    with a fixed seed, and defect probabilities are averaged rather than sampled, so the result
    is a smooth, deterministic function of the recipe.
    """
    del nozzle_swap_every  # normal nozzle wear is averaged over one interval whatever its length
    s = _oracle_sample(stencil_clean_every or 5000, 0, n)
    z = s["z"]
    pressure = recipe["squeegee_pressure"] + 0.05 * z[0]
    speed = recipe["print_speed"] + 0.3 * z[1]
    conveyor = recipe["conveyor_speed"] + 0.15 * z[2]
    setpoint = recipe["peak_temp_setpoint"]
    zone6 = setpoint - ZONE6_OFFSET + ZONE_SD * z[3]
    zone7 = setpoint + ZONE_SD * z[4]
    mean, sd = paste_volume_mean_sd(pressure, speed)
    volume = mean - s["drift"] + sd * z[5]
    peak, tal = board_profile(zone6, zone7, conveyor, z[6], z[7])
    logits = aoi_logits(volume, s["rh"], s["offset_r"], peak, tal, conveyor, 0.0, s["handling"])
    p_aoi_pass = np.prod(1.0 - expit(logits), axis=1)
    p = spi_pass_probability(volume) * p_aoi_pass * s["test_pass"]
    return float(p.mean())
