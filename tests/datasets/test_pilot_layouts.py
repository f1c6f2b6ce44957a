"""Scattered pilot layouts through shards, readers, .mat export, learned models and the train/evaluate commands."""
import csv

import h5py
import numpy as np
import pytest
import torch

from wavefront.cli import main
from wavefront.datasets import H5FrameDataset
from wavefront.datasets.shards import read_shard
from wavefront.errors import ConfigError
from wavefront.estimators.blocks import PilotInterpolator
from wavefront.estimators.registry import create
from wavefront.sim.config import preset
from wavefront.sim.estimators import get_classical
from wavefront.sim.frames import FrameGenerator
from wavefront.sim.pilots import apply_pilots

GEN = ["--threads", "1", "--no-progress", "--device", "cpu", "--batch-size", "8"]


def test_scattered_shards_store_positions_and_pilots_as_n_by_p(tmp_path):
    out = tmp_path / "lat"
    assert main(["generate", "--frames", "12", "--shard-frames", "8", "--pilots", "lattice-4x6", "--out", str(out), *GEN]) == 0
    layout = apply_pilots(preset("default"), "lattice-4x6").ofdm.pilot_layout
    a = read_shard(out / "shard-00000.h5")
    assert a.pilots_ls.shape == (8, 24) and a.pilots_rx.shape == (8, 24) and a.pilot_symbols.shape == (24,)
    assert [tuple(p) for p in a.pilot_positions.tolist()] == list(layout.positions)
    assert np.array_equal(a.pilot_subcarriers, layout.subcarrier_indices)
    # the stored LS pilots are the true channel at the positions plus noise, in position order
    err = a.pilots_ls - a.h_true[:, layout.subcarrier_indices, layout.symbol_indices]
    assert np.mean(np.abs(err) ** 2) == pytest.approx(0.1, rel=0.5)  # 10 dB per RE
    sample = H5FrameDataset(out)[9]
    assert sample["pilots"].shape == (24,)
    assert main(["verify", "--data", str(out), "--no-progress"]) == 0


def test_kronecker_shards_carry_no_positions_dataset(tmp_path):
    out = tmp_path / "blk"
    assert main(["generate", "--frames", "4", "--pilots", "nr-dmrs-type2-pos1", "--out", str(out), *GEN]) == 0
    with h5py.File(out / "shard-00000.h5") as f:
        assert "pilot_positions" not in f and f["pilots_ls"].shape == (4, 40, 2)
        assert f["pilot_subcarriers"][:6].tolist() == [0, 1, 6, 7, 12, 13]


def test_mat_export_refuses_a_scattered_layout_before_writing(tmp_path, capsys):
    data = tmp_path / "lat"
    assert main(["generate", "--frames", "2", "--pilots", "lattice-3x8", "--out", str(data), *GEN]) == 0
    capsys.readouterr()
    rc = main(["export-mat", "--data", str(data), "--out", str(tmp_path / "mat"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "covers Kronecker layouts only" in err and err.count("\n") == 0
    assert not (tmp_path / "mat").exists()


def test_models_take_b_by_p_or_refuse_a_scattered_layout_clearly():
    cfg = apply_pilots(preset("default"), "lattice-4x6")
    fr = FrameGenerator(cfg).generate(3, seed=0, with_data=False)
    meta = fr.meta
    for name, kw in (("adafortitran", {"model_dim": 8, "num_layers": 1, "num_heads": 2}), ("linear", {}),
                     ("channelnet", {}), ("gated-lmmse", {})):
        assert create(name, cfg, **kw)(fr.pilots_ls, meta).shape == (3, 120, 14)
    for name in ("reesnet", "interpolatenet", "espcn"):
        with pytest.raises(ConfigError, match="convolves the \\[P_f, P_t\\] pilot grid"):
            create(name, cfg)
    # the grid that channelnet and convnext refine is the ls-linear estimate
    interp = PilotInterpolator(cfg.ofdm)
    ls = get_classical("ls-linear", cfg).estimate(fr.pilots_ls, meta)
    assert torch.allclose(torch.complex(interp(fr.pilots_ls.real), interp(fr.pilots_ls.imag)), ls, atol=1e-5)


def test_train_and_evaluate_follow_the_layout_and_refuse_another(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "linear", "--on-the-fly", "default", "--pilots", "lattice-4x6", "--steps", "2",
                 "--batch-size", "8", "--eval-every", "2", "--val-frames", "8", "--device", "cpu", "--out", str(run),
                 "--no-progress"]) == 0
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(run / "best.safetensors"), "--points", "paper", "--frames-per-point",
                 "4", "--baselines", "ls-linear,lmmse-genie", "--device", "cpu", "--out", str(out), "--no-plots"]) == 0
    table = list(csv.DictReader(open(out / "results.csv")))
    assert float(table[0]["mmse_bound_db"]) == pytest.approx(-7.99, abs=0.01)  # the lattice's bound at 0 dB, 200 ns, 500 Hz
    capsys.readouterr()
    rc = main(["evaluate", "--checkpoint", str(run / "best.safetensors"), "--pilots", "block-12x2", "--device", "cpu",
               "--out", str(tmp_path / "e2"), "--frames-per-point", "2"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "is for pilots 24 scattered pilots" in err and err.count("\n") == 0
