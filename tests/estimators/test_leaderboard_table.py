"""The leaderboard's arithmetic on hand-made rows: the paired gap's closed form, the ranking, the throughput ratio and
the worst in-prior suite gap (a point outside the paper's prior never counts)."""
import csv
import json
import math

import pytest
import torch

from wavefront.estimators.leaderboard import build_table, make_spec, paired_gap, point_row, write_outputs

DB_PER_LN = 10 / math.log(10)  # d(10 log10 x)/dx at x = 1


def test_paired_gap_is_the_ratio_of_means_with_the_delta_method_se_of_the_paired_differences():
    e, r = torch.tensor([1.0, 3.0], dtype=torch.float64), torch.tensor([1.0, 1.0], dtype=torch.float64)
    gap, se = paired_gap(e, r)
    assert gap == pytest.approx(10 * math.log10(2.0), abs=1e-12)
    # d = e / 2 - r / 1 = (-0.5, 0.5): sample std 1/sqrt(2), over sqrt(2) frames -> 0.5
    assert se == pytest.approx(DB_PER_LN * 0.5, abs=1e-12)
    # a common factor per frame cancels in the pairing: no spread, no error
    assert paired_gap(2 * e, e) == pytest.approx((10 * math.log10(2.0), 0.0), abs=1e-12)


def test_a_mimo_point_row_is_mse_db_its_relative_se_the_bound_and_the_paired_gap():
    point = {"snr_db": 10.0, "reference": torch.tensor([1.0, 1.0], dtype=torch.float64),
             "bound": torch.tensor([0.25, 0.75], dtype=torch.float64), "in_prior": True}
    row = point_row(point, torch.tensor([1.0, 3.0], dtype=torch.float64))
    assert row["frames"] == 2 and row["in_prior"] is True
    assert row["mse_db"] == pytest.approx(10 * math.log10(2.0), abs=1e-12)
    assert row["mse_se_db"] == pytest.approx(DB_PER_LN * (math.sqrt(2) / math.sqrt(2)) / 2.0, abs=1e-12)  # std/sqrt(n)/mean
    assert row["bound_db"] == pytest.approx(10 * math.log10(0.5), abs=1e-12)
    assert (row["gap_to_mmse_bayes_db"], row["gap_se_db"]) == pytest.approx((10 * math.log10(2.0), DB_PER_LN * 0.5))


def _suites(mse_db):
    """Three paper-suite points at 200 ns, 500 Hz: SNR 10 and 20 dB inside the paper's prior, 30 dB outside it."""
    return [{"sweep": "snr", "axis": "snr_db", "snr_db": s, "delay_spread_ns": 200.0, "doppler_hz": 500.0, "frames": 4,
             "mse_db": m, "mse_se_db": 0.1, "bound_db": m - 3} for s, m in zip((10.0, 20.0, 30.0), mse_db)]


def _row(name, risk, fps, suites, **kw):
    return {"name": name, "given": "pilots only", "bayes_risk_db": risk, "gap_to_mmse_bayes_db": risk + 15.0,
            "gap_se_db": 0.01, "parameters": 0, "flops_per_frame": None, "frames_per_s": fps, "latency_ms": 1.0,
            "suites": suites, **kw}


def test_rows_rank_by_bayes_risk_with_throughput_over_the_genie_and_the_worst_in_prior_gap(tmp_path):
    spec = make_spec(["linear"], steps=1, batch_size=1)
    classical = [_row("mmse-bayes", -15.0, 10.0, _suites((-10.0, -20.0, -25.0))),
                 _row("lmmse-genie", -16.0, 100.0, _suites((-10.5, -20.5, -25.5)))]
    # the learned row's suite gaps to mmse-bayes: 0.5 and 2 dB inside the prior, 5 dB at the out-of-prior 30 dB
    learned = [_row("net", -14.0, 50.0, _suites((-9.5, -18.0, -20.0)), trained_on="prior", parameters=10)]
    table = build_table(classical, learned, genie_fps=100.0, spec=spec)
    rows = table["rows"]
    assert [r["name"] for r in rows] == ["lmmse-genie", "mmse-bayes", "net"]  # lowest Bayes risk first
    assert [r["throughput_vs_genie"] for r in rows] == pytest.approx([1.0, 0.1, 0.5])
    assert [r["kind"] for r in rows] == ["classical", "classical", "learned"]
    write_outputs(table, tmp_path, spec)
    flat = {r["name"]: r for r in csv.DictReader(open(tmp_path / "leaderboard.csv"))}
    assert [flat[n]["rank"] for n in ("lmmse-genie", "mmse-bayes", "net")] == ["1", "2", "3"]
    assert float(flat["net"]["worst_in_prior_suite_gap_db"]) == pytest.approx(2.0)
    assert float(flat["lmmse-genie"]["worst_in_prior_suite_gap_db"]) == pytest.approx(-0.5)
    assert float(flat["mmse-bayes"]["worst_in_prior_suite_gap_db"]) == 0.0
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| 1 | lmmse-genie |" in md and "| 3 | net |" in md



@pytest.mark.parametrize("order", [0, 1, 2])
def test_a_diverged_model_whose_bayes_risk_is_nan_ranks_last_wherever_it_comes(tmp_path, order):
    """NaN compares false both ways, so a sort by Bayes risk alone left a diverged model wherever it came in."""
    spec = make_spec(["linear"], steps=1, batch_size=1)
    classical = [_row("mmse-bayes", -15.0, 10.0, _suites((-10.0, -20.0, -25.0))),
                 _row("lmmse-genie", -16.0, 100.0, _suites((-10.5, -20.5, -25.5)))]
    learned = [_row("net", -14.0, 50.0, _suites((-9.5, -18.0, -20.0)), trained_on="prior")]
    learned.insert(order, _row("diverged", math.nan, 50.0, _suites((math.nan,) * 3), trained_on="prior"))
    rows = build_table(classical, learned, genie_fps=100.0, spec=spec)["rows"]
    assert [r["name"] for r in rows] == ["lmmse-genie", "mmse-bayes", "net", "diverged"]

class _Spy:
    """Returns zeros and records the ``meta`` it is handed."""

    name, given = "spy", "spy"

    def __init__(self, needs):
        self.needs, self.seen = needs, []

    def estimate(self, pilots, meta):
        self.seen.append(meta)
        return torch.zeros(pilots.shape[0], 12, 4, dtype=torch.complex64)


@pytest.mark.parametrize("needs", ["noise", "conditions"])
def test_a_row_that_reads_the_noise_or_the_conditions_gets_them_estimated_unless_told_the_truth(needs):
    from wavefront.estimators.leaderboard import estimate_frames
    from wavefront.sim.conditions import estimate_conditions
    from wavefront.sim.config import SystemConfig
    from wavefront.sim.frames import FrameGenerator

    cfg = SystemConfig().updated(ofdm={"num_subcarriers": 12, "num_symbols": 4, "pilot_subcarrier_spacing": 2,
                                       "pilot_symbols": [0, 3]}, channel={"snr_db": [0.0, 20.0]})
    fr = FrameGenerator(cfg).generate(6, seed=3, with_data=False)
    est = _Spy(needs)
    estimate_frames(est, cfg, fr, "estimated")
    told = estimate_conditions(fr.pilots_ls, cfg)
    assert torch.equal(est.seen[0]["noise_var"], told["noise_var"])
    assert not torch.equal(est.seen[0]["noise_var"], fr.noise_var)  # 6 frames over 0-20 dB: the estimate is not the truth
    est = _Spy(needs)
    estimate_frames(est, cfg, fr, "true")
    assert torch.equal(est.seen[0]["noise_var"], fr.noise_var)


def test_a_mimo_point_is_in_the_prior_up_to_and_including_its_top_snr():
    from wavefront.estimators.leaderboard import MIMO_POINTS_DB, mimo_points
    from wavefront.sim.config import SystemConfig

    class Zero:
        def estimate(self, pilots, meta):
            return torch.zeros(*pilots.shape[:3], 12, 4, dtype=torch.complex64)

    spec = make_spec(["linear"], steps=1, batch_size=1, frames_per_point=2)
    for top, expected in ((20.0, [True, True, True]), (10.0, [True, True, False])):
        cfg = SystemConfig().updated(
            ofdm={"num_subcarriers": 12, "num_symbols": 4, "pilot_subcarrier_spacing": 2, "pilot_symbols": [0, 3]},
            channel={"snr_db": [0.0, top], "delay_spread_s": [50e-9, 150e-9], "doppler_hz": [100.0, 300.0]},
            mimo={"num_rx_antennas": 2, "num_users": 2, "rx_correlation": 0.5})
        pts = mimo_points(cfg, spec, Zero())
        assert [p["snr_db"] for p in pts] == list(MIMO_POINTS_DB) == [0.0, 10.0, 20.0]
        assert [p["in_prior"] for p in pts] == expected
        assert all(bool((p["frames"].snr_db == p["snr_db"]).all()) for p in pts)


def _tiny_cfg(**kw):
    from wavefront.sim.config import SystemConfig

    return SystemConfig().updated(ofdm={"num_subcarriers": 12, "num_symbols": 4, "pilot_subcarrier_spacing": 2,
                                        "pilot_symbols": [0, 3]}, channel={"snr_db": [0.0, 20.0]}, **kw)


def test_each_chunk_of_frames_gets_its_own_frames_conditions():
    from wavefront.estimators.leaderboard import estimate_frames
    from wavefront.sim.frames import FrameGenerator

    cfg = _tiny_cfg()
    fr = FrameGenerator(cfg).generate(7, seed=3, with_data=False)
    est = _Spy("conditions")
    out = estimate_frames(est, cfg, fr, "true", chunk=3)
    assert out.shape == (7, 12, 4)
    assert [len(m["snr_db"]) for m in est.seen] == [3, 3, 1]
    # chunk k is frames 3k .. 3k+2: their own SNRs, not the first chunk's again
    assert torch.equal(torch.cat([m["snr_db"] for m in est.seen]), fr.snr_db)
    assert torch.equal(torch.cat([m["noise_var"] for m in est.seen]), fr.noise_var)


def test_throughput_is_frames_over_the_best_time_on_one_thread_and_restores_the_threads(monkeypatch):
    import types

    import wavefront.estimators.leaderboard as lb
    from wavefront.sim.frames import FrameGenerator

    ticks = iter(range(0, 10_000, 2))  # a clock in which every timed call takes exactly 2 s
    monkeypatch.setattr(lb, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    cfg = _tiny_cfg()
    fr = FrameGenerator(cfg).generate(5, seed=3, with_data=False)

    class Counting(_Spy):
        def estimate(self, pilots, meta):
            self.threads.append(torch.get_num_threads())
            return torch.zeros(pilots.shape[0], 12, 4, dtype=torch.complex64)

    est = Counting("none")
    est.threads = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cost = lb.throughput(est, fr, cfg, "true", batch=4)
        assert torch.get_num_threads() == 2  # the caller's threads come back
    finally:
        torch.set_num_threads(before)
    assert cost["frames_per_s"] == pytest.approx(4 / 2.0)  # 4 frames of a batch in one 2 s call
    assert cost["latency_ms"] == pytest.approx(2000.0)  # one frame, 2 s
    assert len(est.threads) == 1 + 3 + 1 + 5 and set(est.threads) == {1}  # every measured call on one thread


@pytest.mark.parametrize("antennas, expected", [(4, 128), (64, 16)])
def test_a_mimo_run_holds_out_as_many_pairs_as_the_siso_leaderboard_at_least_16_frames(antennas, expected, tmp_path):
    from wavefront.estimators.leaderboard import mimo_train_config, train_config

    cfg = _tiny_cfg(mimo={"num_rx_antennas": antennas, "num_users": 2, "rx_correlation": 0.5})
    spec = make_spec(["linear"], steps=1, batch_size=1, frames_per_point=2)
    siso = train_config(spec, "linear", 0, tmp_path, progress=False)
    mimo = mimo_train_config(spec, cfg, "linear", 0, tmp_path, user=1, progress=False)
    assert siso.val_frames == 512
    assert mimo.val_frames == expected == max(16, siso.val_frames // antennas)  # 512 pairs = 128 frames x 4 antennas
    assert mimo.user == 1 and mimo.out_dir == str(tmp_path / "u1")


def test_the_classical_cache_is_reused_for_the_same_spec_and_recomputed_for_another(tmp_path):
    from wavefront.estimators.leaderboard import run_leaderboard

    cfg = _tiny_cfg().updated(channel={"delay_spread_s": [50e-9, 150e-9], "doppler_hz": [100.0, 300.0]})
    spec = make_spec(["linear"], steps=1, batch_size=4, bayes_frames=8, frames_per_point=2)
    run_leaderboard(spec, cfg, tmp_path, progress=False)
    path = tmp_path / "classical.json"
    true_risk = {r["name"]: r["bayes_risk_db"] for r in json.loads(path.read_text())["rows"]}

    def rerun_with_marked_cache(cached_spec_change):
        cache = json.loads(path.read_text())
        for r in cache["rows"]:
            r["bayes_risk_db"] = 99.0  # a mark no measurement gives
        cache["spec"].update(cached_spec_change)
        path.write_text(json.dumps(cache))
        table = run_leaderboard(spec, cfg, tmp_path, progress=False)
        return {r["name"]: r["bayes_risk_db"] for r in table["rows"] if r["name"] in true_risk}

    assert set(rerun_with_marked_cache({}).values()) == {99.0}  # same spec: the cache is the row, nothing rerun
    # a cache of another spec (other frames per point) is measured again, on the same frames as before
    assert rerun_with_marked_cache({"frames_per_point": 3}) == pytest.approx(true_risk, abs=1e-9)
