import pytest
import torch

from wavefront.sim.config import SystemConfig, preset


@pytest.fixture(autouse=True)
def one_thread():
    # On a shared 2-core machine two torch threads per process spend most time waiting on each
    # other (measured 12x slower for small conv/transformer steps); one thread, then restore.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def default_config():
    return preset("default")


@pytest.fixture(scope="session")
def narrow_config():
    """A second grid: 72 x 14, pilots on every 6th subcarrier from 1 and on symbols 4 and 11 (1-based)."""
    return SystemConfig.from_dict({"ofdm": {"num_subcarriers": 72, "pilot_subcarrier_spacing": 6,
                                            "pilot_subcarrier_offset": 1, "pilot_symbols": [3, 10]}})
