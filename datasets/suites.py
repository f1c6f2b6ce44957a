"""The standard test suites: fixed-condition sweeps written as one dataset folder per point.

``adafortitran``: the AdaFortiTran paper's three test sweeps (TDL-A, 120 x 14 grid;
:data:`wavefront.paper.TEST_SWEEPS`):

- ``SNR_test_set/SNR_{0,5,...,30}`` at delay spread 200 ns and Doppler 500 Hz;
- ``DS_test_set/DS_{50,100,...,350}`` (ns) at SNR 10 dB and Doppler 600 Hz;
- ``MDS_test_set/DOP_{200,400,...,1400}`` (Hz) at SNR 10 dB and delay spread 100 ns.

SNR follows the base config's ``channel.snr_convention``: per resource element by default;
the ``adafortitran-reference`` preset (``pilot-grid``) reproduces the reference generator's
noise level (see :mod:`wavefront.sim.config`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from wavefront.datasets.generate import DatasetSpec, write_json_atomic
from wavefront import paper
from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.utils import derive_seed


@dataclass(frozen=True)
class Sweep:
    folder: str          # e.g. "SNR_test_set"
    prefix: str          # point folder prefix, e.g. "SNR"
    axis: str            # ChannelConfig field swept
    values: tuple        # in the field's unit (delay spread in s)
    fixed: dict          # the other two fields, in their units
    label_scale: float   # value * label_scale is the integer in the folder name (ns for delay spread)


# folder, point prefix and label scale of each paper sweep in the reference data's layout
_PAPER_FOLDERS = {"snr": ("SNR_test_set", "SNR", 1.0), "delay_spread": ("DS_test_set", "DS", 1e9),
                  "doppler": ("MDS_test_set", "DOP", 1.0)}
SUITES: dict[str, tuple[Sweep, ...]] = {
    "adafortitran": tuple(Sweep(*_PAPER_FOLDERS[sw.name][:2], sw.axis, sw.values, sw.fixed, _PAPER_FOLDERS[sw.name][2])
                          for sw in paper.TEST_SWEEPS),
}
SUITE_BASE_PRESET = {"adafortitran": "adafortitran-paper"}


@dataclass
class SuitePoint:
    folder: str        # relative path, e.g. "SNR_test_set/SNR_10"
    spec: DatasetSpec


def suite_points(name: str, base: SystemConfig, frames_per_point: int, seed: int, shard_frames: int,
                 batch_size: int, compression: str = "none") -> list[SuitePoint]:
    """Returns every point of suite ``name`` as a dataset spec (point seeds derived from ``seed``)."""
    if name not in SUITES:
        raise ConfigError("suite", name, f"unknown; choose one of {', '.join(SUITES)}")
    points = []
    for si, sw in enumerate(SUITES[name]):
        for pi, v in enumerate(sw.values):
            cfg = base.updated(channel={**sw.fixed, sw.axis: v})
            label = f"{sw.prefix}_{round(v * sw.label_scale)}"
            extra = {"suite": {"name": name, "sweep": sw.folder, "axis": sw.axis, "value": v, "point": label,
                               "fixed": sw.fixed, "suite_seed": seed,
                               "point_seed": f"derive_seed(suite_seed, {si}, {pi})"}}
            spec = DatasetSpec(cfg, derive_seed(seed, si, pi), frames_per_point, shard_frames, batch_size,
                               compression, extra)
            points.append(SuitePoint(f"{sw.folder}/{label}", spec))
    return points


def write_suite_index(out: Path, name: str, points: list[SuitePoint], seed: int) -> None:
    """Writes ``out/suite.json``: the sweeps, their fixed values and every point's folder."""
    sweeps = []
    for sw in SUITES[name]:
        sweeps.append({"folder": sw.folder, "axis": sw.axis, "values": list(sw.values), "fixed": sw.fixed,
                       "points": [p.folder for p in points if p.folder.startswith(sw.folder + "/")]})
    base = json.loads(points[0].spec.config.to_json())
    write_json_atomic(Path(out) / "suite.json", {"suite": name, "seed": seed, "sweeps": sweeps,
                                                  "frames_per_point": points[0].spec.frames,
                                                  "ofdm": base["ofdm"], "profile": base["channel"]["profile"]})
