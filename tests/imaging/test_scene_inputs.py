"""The co-design scene's inputs at their boundaries, and its sub-stepping rule against deepwave's own."""
import json

import numpy as np
import pytest
import torch

from wavefront.errors import ConfigError
from wavefront.imaging.scene import load_candidates, load_perturbation, load_sources, substeps
from wavefront.imaging.wave import deepwave_step_ratio


def test_a_rectangle_is_half_open_and_must_lie_inside_the_model():
    mask = load_candidates("2:5,3:7", (10, 12))
    assert int(mask.sum()) == 3 * 4
    assert bool(mask[2:5, 3:7].all()) and not bool(mask[:, 7].any()) and not bool(mask[5].any())
    assert int(load_candidates("0:10,0:12", (10, 12)).sum()) == 120  # the whole model, last row and column included
    for spec in ("0:11,0:12", "0:10,0:13", "3:3,0:4"):
        with pytest.raises(ConfigError, match="candidates"):
            load_candidates(spec, (10, 12))


def test_a_source_on_the_last_cell_is_inside_and_one_past_it_is_refused(tmp_path):
    p = tmp_path / "src.json"
    p.write_text(json.dumps({"positions": [[9, 11]], "frequency_hz": 15}))
    cells, f, wavelet = load_sources(p, (10, 12))
    assert cells.tolist() == [[9, 11]] and f == 15.0 and wavelet is None
    for pos in ([10, 0], [0, 12]):
        p.write_text(json.dumps({"positions": [pos], "frequency_hz": 15}))
        with pytest.raises(ConfigError, match="sources.positions"):
            load_sources(p, (10, 12))


def test_a_perturbation_that_would_make_a_velocity_non_positive_is_refused(tmp_path):
    v = torch.full((4, 5), 2000.0)
    dv = np.zeros((4, 5))
    dv[1, 2] = -1999.0
    np.save(tmp_path / "ok.npy", dv)
    assert float(load_perturbation(tmp_path / "ok.npy", v)[1, 2]) == -1999.0
    dv[1, 2] = -2000.0  # v + dv = 0 m/s
    np.save(tmp_path / "bad.npy", dv)
    with pytest.raises(ConfigError, match="positive"):
        load_perturbation(tmp_path / "bad.npy", v)


@pytest.mark.parametrize("dt, dx, v_max", [(0.001, 10.0, 3000.0), (0.004, 10.0, 3000.0), (0.002, 5.0, 4500.0),
                                           (0.003, 10.0, 2000.0), (0.01, 10.0, 1500.0)])
def test_substeps_are_deepwaves_own_step_ratio(dt, dx, v_max):
    assert substeps(dt, dx, v_max) == deepwave_step_ratio(dx, dt, v_max)
