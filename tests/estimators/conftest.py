import pytest

from wavefront.sim.config import SystemConfig, preset


@pytest.fixture(scope="session")
def default_config():
    return preset("default")


@pytest.fixture(scope="session")
def narrow_config():
    """A second grid: 72 x 14, pilots on every 6th subcarrier from 1 and on symbols 4 and 11 (1-based)."""
    return SystemConfig.from_dict({"ofdm": {"num_subcarriers": 72, "pilot_subcarrier_spacing": 6,
                                            "pilot_subcarrier_offset": 1, "pilot_symbols": [3, 10]}})
