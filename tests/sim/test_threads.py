"""Frames do not depend on the thread count: a (config, seed) pair gives the same bits with 1 or 2 threads.

On CPU, torch splits a large elementwise op across threads, and where a thread's chunk ends
the vectorised and the scalar code paths meet; for complex products the two round
differently. Generation must not depend on where that split falls (DESIGN.md: bit-identical
frames on the same device and library versions).
"""
import warnings

import pytest
import torch

from wavefront.sim.config import SystemConfig
from wavefront.sim.frames import FrameGenerator
from wavefront.sim.pilots import apply_pilots

CASES = {
    "tdl-a": {"channel": {"profile": "A", "doppler_hz": [0, 1000], "snr_db": [0, 30], "delay_spread_s": [50e-9, 300e-9]}},
    "tdl-d-16qam": {"ofdm": {"modulation": "16qam"}, "channel": {"profile": "D", "doppler_hz": 700, "snr_db": 20}},
    "cdl-c": {"channel": {"profile": "CDL-C", "doppler_hz": 400, "travel_azimuth_deg": 30}},
    "tdl-a-ici": {"channel": {"profile": "A", "doppler_hz": [0, 1000], "ici": True}},
    "lattice": {"channel": {"profile": "A", "doppler_hz": [0, 1000]}},
}


@pytest.mark.parametrize("name", list(CASES))
def test_frames_are_bit_identical_with_one_and_two_threads(name):
    before = torch.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cfg = SystemConfig.from_dict(CASES[name])
                if name == "lattice":
                    cfg = apply_pilots(cfg, "lattice-4x6")
                fr = FrameGenerator(cfg).generate(125, seed=5, with_data=True)
            out.append((fr.h, fr.y, fr.pilots_rx, fr.bits))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*out):
        assert torch.equal(a, b)
