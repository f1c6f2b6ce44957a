"""The bound of any layout, the local search, and ``wavefront pilots optimise``."""
import json

import numpy as np
import pytest
import torch

from wavefront.cli import main
from wavefront.errors import ConfigError
from wavefront.sim.config import OFDMConfig, preset
from wavefront.sim.lmmse import genie_mse
from wavefront.sim.pilot_design import BoundEvaluator, axis_values, optimise_layout, staggered_lattice
from wavefront.sim.pilots import apply_pilots, read_layout_file

SMALL = OFDMConfig(num_subcarriers=36, num_symbols=14)


def _positions(layout):
    return np.stack([layout.subcarrier_indices, layout.symbol_indices], 1)


@pytest.fixture(scope="module")
def small_evaluator():
    return BoundEvaluator(SMALL, "A", (100e-9, 300e-9), (200.0, 1000.0), (0.0, 10.0, 20.0))


@pytest.mark.parametrize("profile", ["A", "D"])
def test_evaluator_bound_equals_genie_mse_for_any_layout(profile):
    ev = BoundEvaluator(SMALL, profile, (50e-9, 300e-9), (100.0, 900.0), (0.0, 25.0))
    rng = np.random.default_rng(1)
    flat = rng.choice(36 * 14, 10, replace=False)
    layouts = [[(int(i // 14), int(i % 14)) for i in flat], [(f, t) for f in (0, 12, 24) for t in (2, 11)]]
    for pos in layouts:
        o = SMALL.model_copy(update={"pilot_positions": tuple(sorted(pos))})
        ref = genie_mse(o, ev.snr_db[None, None, :], ev.ds[:, None, None], ev.fd[None, :, None], profile=profile)
        got = ev.bound(np.asarray(sorted(pos)))[0]
        assert torch.allclose(got, ref, rtol=0, atol=1e-10)


def test_fast_move_scores_equal_the_direct_objective(small_evaluator):
    start = staggered_lattice(8, 4, (36, 14), 0.5)
    occupied = {tuple(p) for p in start.tolist()}
    targets = np.asarray([(f, t) for f in range(0, 36, 5) for t in range(0, 14, 3) if (f, t) not in occupied])
    fast = small_evaluator.move_objectives(start, 3, targets)
    trial = np.repeat(start[None], len(targets), 0)
    trial[:, 3] = targets
    assert torch.allclose(fast, small_evaluator.objective(trial), rtol=0, atol=1e-8)


def test_a_single_pilots_move_scores_are_its_direct_objective(small_evaluator):
    targets = np.asarray([(f, t) for f in range(0, 36, 7) for t in range(0, 14, 4)])
    fast = small_evaluator.move_objectives(np.asarray([[18, 7]]), 0, targets)
    assert torch.allclose(fast, small_evaluator.objective(targets[:, None, :]), rtol=0, atol=1e-8)


def test_axis_values_are_equal_steps_of_at_most_step_and_bad_ranges_are_refused():
    assert axis_values("snr_db", (0.0, 25.0), 5.0) == (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
    np.testing.assert_allclose(axis_values("doppler_hz", (0.0, 1000.0), 300.0), [0.0, 250.0, 500.0, 750.0, 1000.0])
    assert axis_values("snr_db", (-10.0, -10.0), 5.0) == (-10.0,) and axis_values("snr_db", (-10.0, 0.0), 10.0) == (-10.0, 0.0)
    with pytest.raises(ConfigError, match=r"doppler_hz=\(100\.0, 50\.0\): .*low <= high"):
        axis_values("doppler_hz", (100.0, 50.0), 10.0)
    with pytest.raises(ConfigError, match=r"delay_spread_s=\(-1e-08, 1e-07\): must be >= 0"):
        axis_values("delay_spread_s", (-1e-8, 1e-7), 25e-9)


def test_staggered_lattice_spreads_symbols_evenly_and_shifts_each_by_its_fraction_of_the_spacing():
    # 3 symbols over 14: 0, 14/3 -> 5, 28/3 -> 9; 2 subcarriers each, 18 apart; symbol j shifted by (j f mod 1) x 18
    lat = lambda frac: sorted(map(tuple, staggered_lattice(6, 3, (36, 14), frac).tolist()))  # noqa: E731
    assert lat(0.25) == sorted([(0, 0), (18, 0), (4, 5), (22, 5), (9, 9), (27, 9)])
    assert lat(0.5) == sorted([(0, 0), (18, 0), (9, 5), (27, 5), (0, 9), (18, 9)])  # 2 x 0.5 = 1: no shift
    assert staggered_lattice(7, 3, (36, 14), 0.0) is None and staggered_lattice(40, 1, (36, 14), 0.0) is None


def test_the_search_ends_at_a_local_optimum_after_a_pass_without_a_move(small_evaluator):
    class Count:
        n = 0

        def update(self, k):
            self.n += k

        def set_postfix_str(self, s):
            pass

    bar = Count()
    res = optimise_layout(small_evaluator, 6, radius_f=3, radius_t=1, max_passes=8, seed=1, progress=bar)
    assert bar.n == 8 * 6  # the bar ends full whether or not the search stopped early
    assert res.passes < 8 and res.history[-1] == res.history[-2] and len(res.history) == res.passes + 1
    assert all(b <= a for a, b in zip(res.history, res.history[1:]))  # never uphill
    pos = _positions(res.layout)
    occupied = {tuple(p) for p in pos.tolist()}
    for i, (f0, t0) in enumerate(pos.tolist()):  # no free position within the radii lowers the objective
        targets = np.asarray([(f0 + df, t0 + dt) for df in range(-3, 4) for dt in range(-1, 2)
                              if 0 <= f0 + df < 36 and 0 <= t0 + dt < 14 and (f0 + df, t0 + dt) not in occupied])
        assert float(small_evaluator.move_objectives(pos, i, targets).min()) >= res.objective_db - 1e-9, i


def test_local_search_lowers_the_objective_below_every_start(small_evaluator):
    res = optimise_layout(small_evaluator, 8, radius_f=4, radius_t=2, max_passes=3, seed=0)
    assert res.layout.num_pilots == 8 and res.moves > 0
    assert res.objective_db < res.start_objective_db - 0.05
    assert res.objective_db == pytest.approx(float(small_evaluator.objective(_positions(res.layout)[None])[0]), abs=1e-9)
    for n_t in (2, 4, 8):
        lat = staggered_lattice(8, n_t, (36, 14), 0.5)
        assert res.objective_db < float(small_evaluator.objective(lat[None])[0])


def test_num_pilots_outside_the_grid_is_refused(small_evaluator):
    with pytest.raises(ConfigError, match=r"num_pilots=0: must be an integer in 1\.\.504"):
        optimise_layout(small_evaluator, 0)


def test_pilots_optimise_writes_a_layout_that_sweep_reads(tmp_path, capsys):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text("ofdm:\n  num_subcarriers: 36\n")
    out = tmp_path / "opt"
    rc = main(["pilots", "optimise", "--num-pilots", "8", "--config", str(cfg), "--doppler-hz", "200:1000:400",
               "--delay-spread-ns", "300", "--snr-db", "10:20:10", "--max-passes", "2", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "optimised" in printed and "block-12x2" in printed and "paper suites" in printed
    data = json.loads((out / "layout.json").read_text())
    assert len(data["positions"]) == 8 and data["objective"]["doppler_hz"] == [200.0, 600.0, 1000.0]
    rows = {r["condition"]: r for r in data["bound_db"]}
    assert rows["objective (mean over ranges)"]["optimised"] <= rows["objective (mean over ranges)"]["block-12x2"]
    assert (out / "layout.png").stat().st_size > 0
    layout = read_layout_file(out / "layout.json", (36, 14))
    assert layout.num_pilots == 8
    rc = main(["sweep", "--config", str(cfg), "--pilots", str(out / "layout.json"), "--estimators", "lmmse-genie",
               "--snr-db", "20", "--doppler-hz", "1000", "--delay-spread-ns", "300", "--frames", "20", "--out",
               str(tmp_path / "sweep"), "--no-progress", "--device", "cpu"])
    assert rc == 0
    res = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert res["rows"][0]["pilots"] == layout.describe()


def test_optimised_bound_row_matches_genie_mse_of_the_written_layout(tmp_path, capsys):
    out = tmp_path / "opt"
    assert main(["pilots", "optimise", "--num-pilots", "24", "--doppler-hz", "1000", "--delay-spread-ns", "300",
                 "--snr-db", "20", "--max-passes", "1", "--radius-f", "2", "--radius-t", "1", "--out", str(out),
                 "--no-progress"]) == 0
    capsys.readouterr()
    data = json.loads((out / "layout.json").read_text())
    cfg = apply_pilots(preset("default"), str(out / "layout.json"))
    row = next(r for r in data["bound_db"] if r["condition"] == "300 ns, 1000 Hz, 20 dB")
    assert row["optimised"] == pytest.approx(10 * np.log10(float(genie_mse(cfg, 20, 300e-9, 1000.0))), abs=1e-3)
    assert row["lattice-4x6"] == pytest.approx(-19.96, abs=0.01) and row["block-12x2"] == pytest.approx(-4.75, abs=0.01)
    assert row["optimised"] <= row["lattice-4x6"]  # it starts at the best lattice and only moves downhill


@pytest.mark.parametrize("argv,message", [
    (["--num-pilots", "0"], "num_pilots=0: must be in 1..1680"),
    (["--num-pilots", "4", "--doppler-hz", "a:b"], "doppler_hz='a:b': must be v, a:b or a:b:step"),
    (["--num-pilots", "4", "--snr-db", "20:10"], "snr_db='20:10': needs low <= high"),
    (["--num-pilots", "4", "--profile", "Z"], "channel.profile='Z': unknown profile"),
    (["--num-pilots", "4", "--doppler-hz=-50:100"], "doppler_hz=(-50.0, 100.0): must be >= 0"),
])
def test_bad_optimise_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
    rc = main(["pilots", "optimise", *argv, "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and err.count("\n") == 0
    assert not (tmp_path / "o").exists()


def test_a_search_too_large_for_memory_is_one_line_exit_2_before_allocating(tmp_path, capsys, monkeypatch):
    # --num-pilots 1680 (the whole grid, a valid count) allocated 32.5 GB for one [3, 12, 20, P, P] complex128 block
    # and died in a traceback; now its size is estimated first: 4 such blocks for 3 start layouts, 16 bytes each
    import wavefront.utils

    monkeypatch.setattr(wavefront.utils, "available_memory_bytes", lambda device="cpu": 2 * 10 ** 9)
    rc = main(["pilots", "optimise", "--num-pilots", "1680", "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    need = 16 * 4 * 3 * 12 * 20 * 1680 ** 2 / 1e9  # GB: 4 blocks x 3 layouts x 12 x 20 conditions x P^2
    assert rc == 2 and err.count("\n") == 0, err
    assert f"num_pilots=1680: needs about {need:.3g} GB of cpu memory at once, 2 GB available" in err


def test_search_bytes_is_the_larger_of_the_batched_bound_and_a_move(small_evaluator):
    from wavefront.sim.pilot_design import search_bytes

    D, V, S = small_evaluator.shape  # 2 x 2 x 3
    assert search_bytes(small_evaluator, 24, 40, 112) == 16 * 4 * 40 * D * V * 24 ** 2
    assert search_bytes(small_evaluator, 24, 1, 112) == 16 * (4 * D * V * 24 ** 2 + 3 * D * V * S * 24 * 112)


def test_lattice_presets_that_do_not_fit_a_short_slot_are_refused_and_skipped_by_the_search(tmp_path, capsys):
    # lattice-4x6 sits on symbols 0, 4, 8, 12: on 12 symbols preset_fields built it anyway, and pilots optimise,
    # comparing every preset with as many pilots, died in a pydantic traceback
    from wavefront.sim.pilots import preset_fields

    with pytest.raises(ConfigError, match=r"pilots='lattice-4x6': does not fit the grid: positions\[18\]=\[5, 12\]: "
                                          r"outside the 120x12 grid"):
        preset_fields("lattice-4x6", (120, 12))
    assert len(preset_fields("lattice-3x8", (120, 12))["pilot_positions"]) == 24  # symbols 1, 6, 11 fit
    cfg = tmp_path / "short.yaml"
    cfg.write_text("ofdm:\n  num_subcarriers: 36\n  num_symbols: 12\n  pilot_symbols: [2, 9]\n")
    rc = main(["pilots", "optimise", "--num-pilots", "24", "--config", str(cfg), "--doppler-hz", "500",
               "--delay-spread-ns", "300", "--snr-db", "10", "--max-passes", "1", "--out", str(tmp_path / "o"),
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "o" / "layout.json").read_text())
    assert data["grid"] == [36, 12] and "lattice-4x6" not in data["bound_db"][0]


def test_the_configs_channel_profile_is_optimised_unless_profile_names_another(tmp_path, capsys):
    # a config for TDL-E (LoS: 8 dB below TDL-A at 1000 Hz on this grid) must not be optimised over TDL-A
    cfg = tmp_path / "e.yaml"
    cfg.write_text("ofdm:\n  num_subcarriers: 36\nchannel:\n  profile: E\n")
    common = ["pilots", "optimise", "--num-pilots", "8", "--config", str(cfg), "--doppler-hz", "500",
              "--delay-spread-ns", "300", "--snr-db", "20", "--max-passes", "1", "--no-progress"]
    rows = {}
    for name, extra in (("config", []), ("flag", ["--profile", "A"])):
        assert main([*common, "--out", str(tmp_path / name), *extra]) == 0, capsys.readouterr().err
        data = json.loads((tmp_path / name / "layout.json").read_text())
        rows[name] = (data["profile"], next(r for r in data["bound_db"] if r["condition"] == "300 ns, 1000 Hz, 20 dB"))
    capsys.readouterr()
    o = OFDMConfig(num_subcarriers=36)
    for name, profile in (("config", "E"), ("flag", "A")):
        assert rows[name][0] == f"TDL-{profile}"
        want = 10 * np.log10(float(genie_mse(o, 20, 300e-9, 1000.0, profile=profile)))  # block-12x2 on 36 x 14
        assert rows[name][1]["block-12x2"] == pytest.approx(want, abs=1e-3)
    assert rows["config"][1]["block-12x2"] < rows["flag"][1]["block-12x2"] - 5


def test_a_config_with_a_profile_the_bound_cannot_take_is_one_line_naming_the_config(tmp_path, capsys):
    cfg = tmp_path / "cdl.yaml"
    cfg.write_text("channel:\n  profile: CDL-B\n")
    rc = main(["pilots", "optimise", "--num-pilots", "8", "--config", str(cfg), "--out", str(tmp_path / "o"),
               "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0, err
    assert f"profile='CDL-B': pilots optimise supports the TDL profiles A..E and sparse (from --config {cfg})" in err
