"""Frames carry Sionna's QAM symbols of their own bits, whichever way the generator maps them."""
import pytest
import torch

from wavefront.sim.config import SystemConfig
from wavefront.sim.frames import FrameGenerator


@pytest.mark.parametrize("modulation", ["qpsk", "16qam", "64qam"])
def test_data_symbols_are_sionna_mapper_of_the_frame_bits(modulation):
    # Noise 1e-10 per RE (sd 1e-5): y = H x to 5e-5 on every data RE; a wrong symbol moves y by
    # |H| |dx| >= 0.3 |H| (0.15 for 64-QAM), above 1e-4 wherever |H| > 1e-3, nearly everywhere.
    cfg = SystemConfig.from_dict({"ofdm": {"modulation": modulation}, "channel": {"snr_db": 100.0}})
    gen = FrameGenerator(cfg)
    fr = gen.generate(7, seed=4)
    data = ~gen.pilot_mask
    want = gen.mapper(fr.codewords).to(torch.complex64)  # Sionna's Mapper: labels MSB first
    assert want.shape == fr.y[:, data].shape
    assert (fr.y[:, data] - fr.h[:, data] * want).abs().max() < 1e-4
