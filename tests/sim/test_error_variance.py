"""What the MIMO detector is told of each estimate's error: ``stated`` (Sionna's conventions) or ``calibrated``
(each estimator's own MSE on a held-out batch at the point)."""
import pytest
import torch

import wavefront.sim.experiment as ex
from wavefront.cli import main
from wavefront.sim.config import SystemConfig
from wavefront.sim.estimators import meta_for
from wavefront.sim.experiment import CALIBRATION_STREAM, condition_key
from wavefront.sim.mimo import frame_generator
from wavefront.sim.sweep import SweepSpec, classical_estimators, run_sweep
from wavefront.utils import derive_seed

SNR, DS, DOP = -3.0, 100e-9, 200.0


def small(**mimo) -> SystemConfig:
    return SystemConfig().updated(ofdm={"num_subcarriers": 48, "pilot_subcarrier_spacing": 2},
                                  channel={"delay_spread_s": DS, "doppler_hz": DOP},
                                  mimo={"num_rx_antennas": 4, "num_users": 2, "rx_correlation": 0.5, **mimo})


def _sweep(error_variance, monkeypatch, frames=16):
    """Runs a one-point MIMO sweep and returns ``{estimator: err_var [B] per detector call}`` and the result."""
    seen, names = {}, iter([])
    real = ex.lmmse_detect

    def spy(y, h_hat, noise_var, err_var):
        seen.setdefault(next(names), []).append(err_var.clone())
        return real(y, h_hat, noise_var, err_var)

    monkeypatch.setattr(ex, "lmmse_detect", spy)
    spec = SweepSpec(config=small(), axis="snr_db", values=[SNR], estimators=["perfect", "ls-linear", "lmmse-robust",
                     "lmmse-genie"], frames=frames, batch_size=8, seed=3, device="cpu", conditions="true",
                     error_variance=error_variance)
    order = ["perfect", "ls-linear", "lmmse-robust", "lmmse-genie"]
    names = iter(order * (frames // 8))
    result = run_sweep(spec, progress=False)
    return {k: torch.cat(v) for k, v in seen.items()}, result, spec


def test_calibrated_error_variance_is_each_estimators_mse_on_the_points_held_out_batch(monkeypatch):
    seen, result, spec = _sweep("calibrated", monkeypatch)
    cfg = small().updated(channel={"snr_db": SNR})
    cal = frame_generator(cfg, "cpu").generate(8, seed=derive_seed(3, condition_key(SNR, DS, DOP), CALIBRATION_STREAM),
                                               with_data=False)
    assert torch.equal(seen["perfect"], torch.zeros(16, dtype=torch.float64))
    # built as the sweep builds them (the robust LMMSE's design point is the prior's corner)
    for est in classical_estimators(["ls-linear", "lmmse-robust", "lmmse-genie"], spec.prior, spec.robust_options):
        want = float((est.estimate(cal.pilots_ls, meta_for(est.needs, cal.meta, None)) - cal.h).abs().square().mean())
        got = seen[est.name]
        assert torch.allclose(got, torch.full_like(got, want), rtol=1e-6, atol=0), est.name  # one value per point
        # the held-out batch speaks for the point: its MSE is the sweep's own (other frames) within MC error
        row = next(r for r in result.rows if r.estimator == est.name)
        measured = 10 ** (row.mse_db / 10)
        assert abs(want - measured) < 0.35 * measured, (est.name, want, measured)
    # robust and the genie state far less than sigma^2 at -3 dB, LS about sigma^2 (its pilots' noise)
    sigma2 = 10 ** (-SNR / 10)
    assert seen["lmmse-robust"][0] < 0.5 * sigma2 and seen["lmmse-genie"][0] < 0.2 * sigma2
    assert 0.5 * sigma2 < seen["ls-linear"][0] < 2 * sigma2


def test_stated_error_variance_is_sionnas_convention_and_the_default(monkeypatch):
    seen, _, _ = _sweep("stated", monkeypatch, frames=8)
    sigma2 = 10 ** (-SNR / 10)
    assert torch.equal(seen["perfect"], torch.zeros(8, dtype=torch.float64))
    assert torch.allclose(seen["ls-linear"], torch.full((8,), sigma2, dtype=torch.float64), rtol=1e-5)
    assert torch.allclose(seen["lmmse-robust"], seen["ls-linear"])
    assert bool((seen["lmmse-genie"] < 0.2 * sigma2).all())  # its closed-form MSE per frame
    assert SweepSpec.__dataclass_fields__["error_variance"].default == "stated"


def test_calibrated_error_variance_is_refused_without_a_mimo_detector(capsys):
    rc = main(["sweep", "--estimators", "ls-linear", "--snr-db", "10", "--frames", "8", "--error-variance",
               "calibrated", "--out", "/nonexistent/never-written"])
    err = capsys.readouterr().err
    assert rc == 2 and "error_variance='calibrated': is for the MIMO detector" in err and err.count("\n") == 1
    with pytest.raises(Exception, match="choose stated or calibrated"):
        SweepSpec(config=small(), axis="snr_db", values=[0.0], estimators=["ls-linear"], error_variance="oracle")
