import pytest
import torch

# One intra-op thread: on a 2-core machine shared with anything else, two torch threads
# spend most of their time waiting on each other (measured 5x slower for the channel
# statistics tests under load); one thread is never much slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts on one thread, and a command under test that sets ``--threads`` does not leak it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tmp_out(tmp_path):
    """A not-yet-existing output folder inside the test's temporary directory."""
    return tmp_path / "out"
