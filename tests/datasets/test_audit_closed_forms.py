"""The leakage audit's residual, tolerance range and report figures against hand computations."""
import math

import numpy as np
import pytest

from wavefront.datasets.audit import FrameSet, _summarise, aligned_residual, tolerance_linear
from wavefront.errors import ConfigError


@pytest.mark.parametrize("theta", [0.0, 0.3, 1.2])
def test_aligned_residual_is_the_distance_after_the_best_common_phase(theta):
    # a on one RE, b rotated by theta towards another RE of the same subcarrier: no ramp can help,
    # so min over phi ||a - b e^{j phi}||^2 = 2 - 2 cos(theta) (energy of one frame: 1)
    a = np.zeros((4, 3), complex)
    a[0, 0] = 1.0
    b = np.zeros((1, 4, 3), complex)
    b[0, 0, 0], b[0, 0, 1] = math.cos(theta) * np.exp(0.7j), math.sin(theta)
    assert aligned_residual(a, b)[0] == pytest.approx(2 - 2 * math.cos(theta), abs=1e-12)


def test_the_tolerance_range_is_minus_150_to_minus_10_db():
    assert tolerance_linear(-10) == pytest.approx(0.1) and tolerance_linear(-150) == pytest.approx(1e-15)
    for bad in (-9.0, 0.0, -151.0, float("nan")):
        with pytest.raises(ConfigError, match="tolerance_db"):
            tolerance_linear(bad)


def _set(name, ds_ns, fd):
    n = len(ds_ns)
    return FrameSet(name, "hdf5", (2, 2), np.arange(n, dtype=float), np.asarray(ds_ns, float) * 1e-9,
                    np.asarray(fd, float), lambda idx: None, lambda i: f"f{i}")


def test_report_figures_from_hand_made_realization_labels():
    # set a: 4 frames, realizations 0 0 1 2; set b: 3 frames, realizations 0 3 4
    a, b = _set("a", [100, 100, 50, 50], [300, 300, 10, 10]), _set("b", [100, 25, 25], [300, 5, 5])
    labels = np.array([0, 0, 1, 2, 0, 3, 4])
    rep = _summarise([a, b], np.array([0, 4, 7]), labels, 5, -60.0, 10)
    sa, sb = rep.sets
    assert (sa.frames, sa.realizations, sa.repeating_frames, sa.largest_group) == (4, 3, 2, 2)
    assert (sb.frames, sb.realizations, sb.repeating_frames) == (3, 3, 0)
    (ov,) = rep.overlaps
    assert (ov.shared_realizations, ov.frames_a, ov.frames_b) == (1, 2, 1)
    assert ov.fraction_a == pytest.approx(2 / 4) and ov.fraction_b == pytest.approx(1 / 3, abs=1e-6)
    (g,) = rep.groups  # realization 0: three frames, all at 100 ns / 300 Hz
    assert g.frames == 3 and g.per_set == {"a": 2, "b": 1}
    assert g.conditions == [[100.0, 300.0, 3]] and g.snr_db == [0.0, 1.0]
