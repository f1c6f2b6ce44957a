"""`wavefront codesign receivers --velocity ...`: the user's own scene, recorded once, K of N candidate cells.

A 30 x 40 model (dx 10 m, 2000-4000 m/s), two surface shots, 200 samples of 2 ms: dt above
the CFL limit, so every run here also exercises the sub-stepping.
"""
import json
import math

import numpy as np
import pytest
import torch

from wavefront.cli import main
from wavefront.errors import ConfigError
from wavefront.imaging.placement import (LayoutLoss, check_capacity, mask_cells, random_layout, regular_layout,
                                         select_receivers, swap_refine)
from wavefront.imaging.scene import record_cells, substeps
from wavefront.imaging.wave import check_stability, ricker

NY, NX = 30, 40


def _velocity() -> np.ndarray:
    v = np.full((NY, NX), 2000.0, np.float32)
    v[12:] = 3000.0
    v[22:] = 4000.0
    return v


def _mask() -> np.ndarray:
    """A borehole (column 33, rows 2-25), a surface line of every 3rd cell (reaching both corners), two single cells."""
    m = np.zeros((NY, NX), bool)
    m[2:26, 33] = True
    m[0, ::3] = True
    m[10, 5] = m[20, 8] = True
    return m


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("scene")
    np.save(d / "v.npy", _velocity())
    p = np.zeros((NY, NX), np.float32)
    p[16:19, 24:27] = 300.0  # a small fast inclusion
    np.save(d / "p.npy", p)
    np.save(d / "m.npy", _mask())
    (d / "s.json").write_text(json.dumps({"positions": [[1, 5], [1, 20]], "frequency_hz": 15}))
    return d


def _argv(d, out, *extra, k="4", task=("--task", "sensitivity", "--perturbation")):
    args = ["codesign", "receivers", "--velocity", str(d / "v.npy"), "--dx", "10", "--dt", "0.002", "--nt", "200",
            "--sources", str(d / "s.json"), "--candidates", str(d / "m.npy"), "--num-receivers", k,
            "--min-spacing", "3", "--seed", "0", "--threads", "1", "--out", str(out)]
    if task:
        args += [*task, str(d / "p.npy")] if task[-1] == "--perturbation" else list(task)
    return args + list(extra)


@pytest.fixture(scope="module")
def sensitivity_run(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(_argv(scene, out)) == 0
    return out


def test_learned_receivers_lie_in_the_mask_at_least_min_spacing_apart(sensitivity_run):
    rec = json.loads((sensitivity_run / "receivers.json").read_text())
    pos = np.array(rec["positions"])
    assert pos.shape == (4, 2)
    assert all(_mask()[r, c] for r, c in pos)
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(len(pos)) * 1e9
    assert d.min() >= 3
    assert (sensitivity_run / "receivers.png").stat().st_size > 0


def test_learned_loss_is_at_most_the_best_baseline_and_every_baseline_is_valid(sensitivity_run):
    res = json.loads((sensitivity_run / "results.json").read_text())
    rec = json.loads((sensitivity_run / "receivers.json").read_text())
    assert set(res["baselines"]) == {"regular", "random", "greedy"}
    best = min(b["loss"] for b in res["baselines"].values())
    assert res["learned"]["loss"] <= best
    assert rec["loss"] == res["learned"]["loss"] and rec["positions"] == res["learned"]["positions"]
    for name, b in res["baselines"].items():
        pos = np.array(b["positions"])
        assert len(pos) == 4 and all(_mask()[r, c] for r, c in pos), name
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(4) * 1e9
        assert d.min() >= 3, name
    assert res["substeps"] == 2 and res["solver_dt_s"] == pytest.approx(0.001)


def test_same_seed_and_threads_give_identical_receivers_json(scene, sensitivity_run, tmp_path):
    assert main(_argv(scene, tmp_path / "again")) == 0
    assert (tmp_path / "again" / "receivers.json").read_bytes() == (sensitivity_run / "receivers.json").read_bytes()


def test_sensitivity_loss_is_minus_the_perturbed_share_of_the_energy(scene, sensitivity_run):
    """The reported loss is recomputed from two independent recordings at the learned positions."""
    rec = json.loads((sensitivity_run / "receivers.json").read_text())
    v = torch.from_numpy(np.load(scene / "v.npy"))
    dv = torch.from_numpy(np.load(scene / "p.npy"))
    src = torch.tensor([[1, 5], [1, 20]])
    cells = torch.tensor(rec["positions"])
    d0, _ = record_cells(v, 10.0, 0.002, 200, 15.0, src, cells)
    d1, _ = record_cells(v + dv, 10.0, 0.002, 200, 15.0, src, cells)
    expect = -float(((d1.double() - d0.double()) ** 2).sum() / (d0.double() ** 2).sum())
    assert rec["loss"] == pytest.approx(expect, rel=1e-6)
    assert rec["loss"] < 0


def test_dt_above_cfl_is_substepped_and_matches_deepwave_resampling_and_a_fine_dt_run():
    """dt = 2 ms at 4000 m/s and 10 m breaks CFL (limit 1.53 ms): it runs as 2 steps of 1 ms.

    Against deepwave's own sub-stepping (it FFT-resamples the wavelet up and the traces down)
    the traces agree to 2.1e-5 of their norm (measured) when they have decayed by the last
    sample (0.6 s here): the FFT's band-limiting of a 15 Hz Ricker sampled at 250 Hz; 1e-4
    leaves a 5x margin. Cut at 0.3 s, while still ringing, deepwave's periodic FFT wraps the
    end onto the start (1.7e-3, with -0.1 at t = 0): the sub-stepping here does not resample. Against a run at dt = 1 ms (within
    CFL) kept every 2nd sample, the solver does the same arithmetic: equal to float round-off.
    """
    import deepwave

    v = torch.from_numpy(_velocity())
    with pytest.raises(ConfigError, match="CFL"):
        check_stability(0.002, 10.0, 4000.0)
    assert substeps(0.002, 10.0, 4000.0) == 2 and substeps(0.001, 10.0, 4000.0) == 1
    src = torch.tensor([[1, 20]])
    cells = mask_cells(torch.from_numpy(_mask()))
    coarse, n_sub = record_cells(v, 10.0, 0.002, 300, 15.0, src, cells)
    assert n_sub == 2 and coarse.shape == (1, len(cells), 300)
    fine, n1 = record_cells(v, 10.0, 0.001, 600, 15.0, src, cells)
    assert n1 == 1
    assert torch.allclose(coarse, fine[..., ::2], rtol=0, atol=1e-6 * float(fine.abs().max()))
    ref = deepwave.scalar(v, 10.0, 0.002, source_amplitudes=ricker(15.0, 300, 0.002).view(1, 1, -1),
                          source_locations=src.view(1, 1, 2), receiver_locations=cells.view(1, -1, 2),
                          pml_width=20, accuracy=4, pml_freq=15.0).receiver_amplitudes
    assert float((coarse - ref).norm() / ref.norm()) < 1e-4


def test_candidates_on_the_model_edge_and_a_localisation_task(scene, tmp_path):
    """A full-width surface line (row 0, columns 0-39) as a rectangle: no margin from the edge is needed."""
    out = tmp_path / "o"
    argv = _argv(scene, out, k="3", task=("--task", "localisation"))
    argv[argv.index("--candidates") + 1] = "0:1,0:40"
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    pos = np.array(res["learned"]["positions"])
    assert (pos[:, 0] == 0).all() and res["candidates"] == NX
    assert res["learned"]["loss"] <= min(b["loss"] for b in res["baselines"].values())


def test_a_user_loss_from_a_file_gets_data_s_k_nt_and_the_batch(scene, tmp_path, monkeypatch):
    """A loss that prefers small columns: the optimum on the surface line at spacing 3 is columns 0, 3, 6.

    Greedy selection also calls the loss on partial layouts (1 to K receivers).
    """
    (tmp_path / "myloss.py").write_text(
        "def leftmost(data, batch):\n"
        "    k = batch['positions'].shape[0]\n"
        "    assert data.shape == (2, k, 200) and 1 <= k <= 3, data.shape\n"
        "    assert batch['positions'].shape == (k, 2) and batch['perturbed'] is None\n"
        "    assert batch['source_positions'].tolist() == [[1, 5], [1, 20]] and batch['dt_s'] == 0.002\n"
        "    return float(batch['positions'][:, 1].sum())\n")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o"
    argv = _argv(scene, out, "--loss", "myloss:leftmost", k="3", task=())
    argv[argv.index("--candidates") + 1] = "0:1,0:40"
    assert main(argv) == 0
    rec = json.loads((out / "receivers.json").read_text())
    assert sorted(rec["positions"]) == [[0, 0], [0, 3], [0, 6]] and rec["loss"] == 9.0


@pytest.mark.parametrize("change,message", [
    ({"--velocity": "{d}/missing.npy"}, "velocity='{d}/missing.npy': no such file"),
    ({"--velocity": "{d}/v3.npy"}, "must be a 2-D array [rows, cols], got shape [2, 30, 40]"),
    ({"--velocity": "{d}/vnan.npy"}, "must be finite everywhere; 1 cells are NaN or inf"),
    ({"--velocity": "{d}/vneg.npy"}, "must be positive everywhere (m/s); its minimum is 0"),
    ({"--candidates": "{d}/mshape.npy"}, "the mask must have the velocity model's shape [30, 40], got [30, 41]"),
    ({"--candidates": "{d}/mempty.npy"}, "the mask has no cells"),
    ({"--num-receivers": "60"}, "num_receivers=60: must be at most the 40 candidate cells"),
    ({"--num-receivers": "30", "--min-spacing": "5"}, "num_receivers=30: the 40 candidate cells hold at most"),
    ({"--min-spacing": "-1"}, "min_spacing=-1.0: must be >= 0 (cells)"),
    ({"--task": None, "--perturbation": None, "--loss": "no_such_module_xyz:f"},
     "loss='no_such_module_xyz:f': cannot import no_such_module_xyz (ModuleNotFoundError"),
    ({"--task": "fwi"}, "task='fwi': must be one of sensitivity, localisation, inversion"),
    ({"--perturbation": None}, "--task sensitivity needs --perturbation"),
    ({"--sources": "{d}/bad.json"}, "sources.positions=[1, 99]: must lie inside the 30x40 model"),
    ({"--epochs": "3"}, "epochs=3: belongs to the built-in scene"),
    ({"--task": "localisation", "--perturbation": None, "--sources": "{d}/one.json"},
     "sources.positions=[[1, 5]]: --task localisation needs at least two sources"),
])
def test_bad_scene_input_is_one_line_and_exit_code_2(scene, tmp_path, capsys, change, message):
    d = scene
    np.save(d / "v3.npy", np.stack([_velocity()] * 2))
    bad = _velocity().copy()
    bad[3, 4] = np.nan
    np.save(d / "vnan.npy", bad)
    bad[3, 4] = 0.0
    np.save(d / "vneg.npy", bad)
    np.save(d / "mshape.npy", np.ones((NY, NX + 1), bool))
    np.save(d / "mempty.npy", np.zeros((NY, NX), bool))
    (d / "bad.json").write_text(json.dumps({"positions": [[1, 99]], "frequency_hz": 15}))
    (d / "one.json").write_text(json.dumps({"positions": [[1, 5]], "frequency_hz": 15}))
    argv = _argv(scene, tmp_path / "o")
    for opt, value in change.items():
        if opt in argv:
            i = argv.index(opt)
            del argv[i:i + 2]
        if value is not None:
            argv += [opt, value.format(d=d)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(d=d) in err, err
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- the selector alone
def _synthetic(seed: int, n_cells: int = 60):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(20, 20, generator=g) < n_cells / 400
    cells = mask_cells(mask)
    field = torch.randn(3, len(cells), 50, generator=g)
    perturbed = field + 0.3 * torch.randn(3, len(cells), 50, generator=g) * torch.rand(1, len(cells), 1, generator=g)
    from wavefront.imaging.placement import sensitivity_loss
    return cells, LayoutLoss(field, cells, sensitivity_loss, perturbed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_selector_on_scattered_cells_respects_spacing_and_beats_or_ties_every_baseline(seed):
    cells, layout_loss = _synthetic(seed)
    sel = select_receivers(layout_loss, 5, 2.5, seed)
    for arm in [sel["learned"], *sel["baselines"].values()]:
        p = cells[torch.tensor(arm["indices"])].double()
        d = torch.cdist(p, p) + torch.eye(5) * 1e9
        assert len(set(arm["indices"])) == 5 and float(d.min()) >= 2.5
        assert arm["loss"] == pytest.approx(layout_loss(arm["indices"]))
    assert sel["learned"]["loss"] <= min(b["loss"] for b in sel["baselines"].values())


def test_swap_refinement_never_worsens_its_start():
    cells, layout_loss = _synthetic(3)
    for start in (regular_layout(cells, 4, 2.0), random_layout(cells, 4, 2.0, seed=7)):
        idx, value = swap_refine(layout_loss, start, 2.0)
        assert value <= layout_loss(start) and value == pytest.approx(layout_loss(idx))


def test_capacity_on_a_line_is_exact():
    cells = mask_cells(torch.ones(1, 10, dtype=torch.bool))  # 10 cells in a row: at spacing 3, columns 0, 3, 6, 9
    check_capacity(cells, 4, 3.0)
    with pytest.raises(ConfigError, match="hold at most 4 receivers 3 cells apart"):
        check_capacity(cells, 5, 3.0)
    assert math.isclose(len(regular_layout(cells, 4, 3.0)), 4)


def test_the_readme_recipe_runs_and_places_receivers_on_its_mask(capsys):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- recipe: scene receivers -->")[1].split("<!-- end recipe -->")[0]
    code = block.split("```python")[1].split("```")[0]
    assert len(code.strip().splitlines()) <= 25
    ns: dict = {}
    exec(compile(code, "README.md recipe", "exec"), ns)
    learned = ns["result"]["learned"]
    pos = torch.tensor(learned["positions"])
    assert len(pos) == 4 and bool(ns["mask"][pos[:, 0], pos[:, 1]].all())
    assert float((torch.cdist(pos.double(), pos.double()) + torch.eye(4) * 1e9).min()) >= 3
    assert learned["loss"] <= min(b["loss"] for b in ns["result"]["baselines"].values())
    assert ns["n_sub"] == 2  # 2 ms at 3500 m/s and 10 m: sub-stepped
    assert str(learned["positions"]) in capsys.readouterr().out


def test_a_wavelet_file_and_an_h5_velocity_give_the_ricker_run_s_layout(scene, sensitivity_run, tmp_path):
    """The Ricker's own samples at dt, given as a wavelet file, are interpolated to the 1 ms solver step.

    The band-limited interpolation is within 6e-9 of the Ricker evaluated at the fine step, so
    the traces and the chosen layout are the same as the Ricker run's.
    """
    import h5py

    from wavefront.imaging.scene import upsample_wavelet

    w = ricker(15.0, 200, 0.002, dtype=torch.float64)
    assert float((upsample_wavelet(w, 2) - ricker(15.0, 400, 0.001, dtype=torch.float64)).abs().max()) < 1e-8
    np.save(tmp_path / "w.npy", w.float().numpy())
    (tmp_path / "s.json").write_text(json.dumps({"positions": [[1, 5], [1, 20]], "frequency_hz": 15, "wavelet": "w.npy"}))
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["velocity"] = _velocity()
    argv = _argv(scene, tmp_path / "o")
    argv[argv.index("--sources") + 1] = str(tmp_path / "s.json")
    argv[argv.index("--velocity") + 1] = str(tmp_path / "v.h5")
    assert main(argv) == 0
    got = json.loads((tmp_path / "o" / "receivers.json").read_text())
    ref = json.loads((sensitivity_run / "receivers.json").read_text())
    assert got["positions"] == ref["positions"] and got["loss"] == pytest.approx(ref["loss"], rel=1e-4)


def test_a_wavelet_of_the_wrong_length_is_one_line(scene, tmp_path, capsys):
    np.save(tmp_path / "w.npy", np.zeros(50, np.float32))
    (tmp_path / "s.json").write_text(json.dumps({"positions": [[1, 5]], "frequency_hz": 15, "wavelet": "w.npy"}))
    argv = _argv(scene, tmp_path / "o")
    argv[argv.index("--sources") + 1] = str(tmp_path / "s.json")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be a 1-D array of nt=200 samples, got shape [50]" in err


def test_inversion_task_is_the_d_optimal_logdet_over_several_perturbations(scene, tmp_path):
    """Two inclusions, two Jacobian columns: the reported loss is -logdet(J^T J / ||d||^2 + 1e-6 I) at the layout."""
    p = np.zeros((2, NY, NX), np.float32)
    p[0, 16:19, 24:27] = 300.0
    p[1, 6:9, 10:13] = -200.0
    np.save(tmp_path / "p2.npy", p)
    out = tmp_path / "o"
    argv = _argv(scene, out, "--perturbation", str(tmp_path / "p2.npy"), task=("--task", "inversion"))
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["learned"]["loss"] <= min(b["loss"] for b in res["baselines"].values())
    v = torch.from_numpy(_velocity())
    src, cells = torch.tensor([[1, 5], [1, 20]]), torch.tensor(res["learned"]["positions"])
    d0 = record_cells(v, 10.0, 0.002, 200, 15.0, src, cells)[0].double()
    jac = torch.stack([(record_cells(v + torch.from_numpy(p[m]), 10.0, 0.002, 200, 15.0, src, cells)[0].double() - d0)
                       .reshape(-1) for m in range(2)])
    gram = jac @ jac.T / d0.pow(2).sum()
    assert res["learned"]["loss"] == pytest.approx(-float(torch.logdet(gram + 1e-6 * torch.eye(2))), rel=1e-6)


@pytest.mark.parametrize("body,message", [
    ("return float('nan')", "loss=nan: must return a finite number"),
    ("return data.sum(-1)", "loss='Tensor': must return a scalar"),
])
def test_a_user_loss_that_returns_no_finite_scalar_is_one_line(scene, tmp_path, capsys, body, message):
    (tmp_path / "bad_loss.py").write_text(f"def f(data, batch):\n    {body}\n")
    argv = _argv(scene, tmp_path / "o", "--loss", f"{tmp_path / 'bad_loss.py'}:f", task=())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_loss_file_that_does_not_exist_is_one_line(scene, tmp_path, capsys):
    argv = _argv(scene, tmp_path / "o", "--loss", f"{tmp_path / 'nope.py'}:f", task=())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no such file {tmp_path / 'nope.py'}" in err, err


@pytest.mark.parametrize("extra,expect", [([], (0.0, 0, 8)), (["--min-spacing", "2.5", "--seed", "5", "--restarts", "2"],
                                                                (2.5, 5, 2))])
def test_scene_options_and_their_documented_defaults_reach_the_selector(scene, tmp_path, monkeypatch, capsys, extra,
                                                                         expect):
    """--min-spacing (default 0 cells), --seed (default 0) and --restarts (default 8) are handed on as given."""
    import wavefront.imaging.scene as scene_module

    calls = []

    def stub(v, dx, dt, nt, sources, freq_hz, mask, k, min_spacing, loss, task, out, **kwargs):
        calls.append((min_spacing, kwargs["seed"], kwargs["restarts"], k, dx, dt, nt, tuple(v.shape), int(mask.sum())))
        return {"learned": {"loss": 0.0, "method": "stub", "positions": []}, "baselines": {}, "loss_evaluations": 0}

    monkeypatch.setattr(scene_module, "run_scene_codesign", stub)
    argv = _argv(scene, tmp_path / "o")
    for opt in ("--min-spacing", "--seed"):
        i = argv.index(opt)
        del argv[i:i + 2]
    assert main(argv + extra) == 0, capsys.readouterr().err
    assert calls == [(*expect, 4, 10.0, 0.002, 200, (NY, NX), int(_mask().sum()))]
