import pytest

from wavefront.sim.config import SystemConfig


@pytest.fixture
def small_config():
    """The default 120 x 14 grid with uniform draws over all three conditions."""
    return SystemConfig.from_dict({"channel": {"snr_db": [0.0, 25.0], "delay_spread_s": [25e-9, 300e-9],
                                               "doppler_hz": [50.0, 1000.0]}})
