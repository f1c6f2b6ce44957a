"""The AdaFortiTran paper's (ICC 2025) training ranges and test suites: the one home of these numbers.

Training draws (TDL-A, 120 x 14 grid, 15 kHz): SNR 0:5:25 dB, delay spread 25:25:300 ns,
Doppler 50:50:1000 Hz. They are also wavefront's default prior: what a receiver may meet.

Test sweeps, each with the other two conditions fixed:

- ``snr``: SNR 0:5:30 dB at delay spread 200 ns and Doppler 500 Hz;
- ``delay_spread``: 50:50:350 ns at SNR 10 dB and Doppler 600 Hz;
- ``doppler``: 200:200:1400 Hz at SNR 10 dB and delay spread 100 ns.

Points beyond the training ranges (SNR 30 dB, 350 ns, Doppler >= 1200 Hz) are the paper's
out-of-distribution test.
"""
from __future__ import annotations

from dataclasses import dataclass

# {field: (low, high)} in SI units (dB, s, Hz)
TRAIN_RANGES = {"snr_db": (0.0, 25.0), "delay_spread_s": (25e-9, 300e-9), "doppler_hz": (50.0, 1000.0)}
# the grid the paper's training draws lie on
TRAIN_STEPS = {"snr_db": 5.0, "delay_spread_s": 25e-9, "doppler_hz": 50.0}


@dataclass(frozen=True)
class PaperSweep:
    """One test sweep: ``axis`` (a channel field) over ``values`` (its unit), the others ``fixed``."""

    name: str       # "snr", "delay_spread", "doppler"
    axis: str       # "snr_db", "delay_spread_s" or "doppler_hz"
    values: tuple   # in the axis' unit (dB, s, Hz)
    fixed: dict     # the other two fields, in their units


TEST_SWEEPS: tuple[PaperSweep, ...] = (
    PaperSweep("snr", "snr_db", tuple(float(v) for v in range(0, 31, 5)), {"delay_spread_s": 200e-9, "doppler_hz": 500.0}),
    PaperSweep("delay_spread", "delay_spread_s", tuple(v * 1e-9 for v in range(50, 351, 50)),
               {"snr_db": 10.0, "doppler_hz": 600.0}),
    PaperSweep("doppler", "doppler_hz", tuple(float(v) for v in range(200, 1401, 200)),
               {"snr_db": 10.0, "delay_spread_s": 100e-9}),
)


def points() -> list[dict]:
    """Returns the 21 test points as dicts of ``sweep``, ``axis``, ``snr_db`` [dB], ``delay_spread_s`` [s], ``doppler_hz`` [Hz]."""
    return [{"sweep": sw.name, "axis": sw.axis, **sw.fixed, sw.axis: v} for sw in TEST_SWEEPS for v in sw.values]

