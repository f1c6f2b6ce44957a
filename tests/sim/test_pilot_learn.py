"""wavefront.sim.pilot_learn: the channel at continuous pilot positions, its gradient, rounding and the training loop."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wavefront.sim import pilot_learn
from wavefront.sim.config import preset
from wavefront.sim.fading import draw_sinusoids, ofdm_channel
from wavefront.sim.lmmse import genie_mse
from wavefront.sim.pilots import apply_pilots
from wavefront.sim.profiles import channel_profile

torch.set_num_threads(1)


GRID = (120, 14)


def _config(**channel):
    return preset("default").updated(channel={**pilot_learn.CHANNEL, **channel})


def _frames(profile_name: str, seed: int):
    """Three frames spanning the ranges: their draws, delays and the grid channel ``ofdm_channel`` gives for the same seed."""
    cfg = _config(profile=profile_name)
    prof = channel_profile(profile_name)
    ds = torch.tensor([25e-9, 140e-9, 300e-9])
    fd = torch.tensor([50.0, 480.0, 1000.0])
    h = ofdm_channel(cfg.ofdm, prof, ds, fd, cfg.channel.num_sinusoids, torch.Generator().manual_seed(seed))
    draws = draw_sinusoids(prof, fd, cfg.channel.num_sinusoids, torch.Generator().manual_seed(seed))
    tau = ds.reshape(-1, 1) * torch.as_tensor(prof.norm_delays, dtype=torch.float32)
    return cfg, prof, draws, tau, h


@pytest.mark.parametrize("profile_name", ["A", "D"])  # NLoS, and LoS (the specular path at tap 0)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_continuous_sampler_equals_the_grid_channel_at_integer_positions(profile_name, dtype):
    cfg, prof, draws, tau, h = _frames(profile_name, seed=7)
    F, T = GRID
    pos = torch.stack(torch.meshgrid(torch.arange(F), torch.arange(T), indexing="ij"), -1).reshape(-1, 2).to(dtype)
    hp = pilot_learn.pilot_channel(cfg.ofdm, prof, draws, tau, pos).reshape(-1, F, T)
    assert h.abs().square().mean() > 0.3  # a real channel, not zeros
    # float32 phases of up to ~40 rad (the tap delay phase at the band edge) round to ~4e-6
    assert (hp.to(torch.complex64) - h).abs().max() < 1e-5
    # and the training path's grid channel is ofdm_channel exactly
    assert torch.equal(pilot_learn.grid_channel(cfg.ofdm, prof, draws, tau), h)


def test_sampler_between_grid_points_is_the_closed_form_sum_of_sinusoids():
    """At a non-integer position, H = sum_l a_l(t) exp(-j 2 pi f tau_l) with the draws' sinusoids, written out directly."""
    cfg, prof, draws, tau, _ = _frames("A", seed=3)
    pos = torch.tensor([[37.3, 5.6], [0.25, 12.9]], dtype=torch.float64)
    got = pilot_learn.pilot_channel(cfg.ofdm, prof, draws, tau, pos)
    f = -60 * 15e3 + pos[:, 0] * 15e3  # subcarrier 0 of 120 sits at -60 scs (Sionna's convention)
    t = pos[:, 1] * cfg.ofdm.symbol_duration_s
    c, phi = draws.cosines.double(), draws.phases_rad.double()  # [B, L, N]
    N = c.shape[-1]
    w = 2 * math.pi * draws.doppler_hz.double().reshape(-1, 1, 1, 1)
    a = torch.exp(1j * (w * c[..., None] * t + phi[..., None])).sum(2)  # [B, L, P]
    a = a * torch.as_tensor(np.sqrt(prof.nlos_powers / N)).reshape(1, -1, 1)
    want = (a * torch.exp(-2j * math.pi * tau.double()[..., None] * f)).sum(1)
    assert (got - want).abs().max() < 1e-10


def test_gradient_wrt_positions_matches_central_differences():
    """float64 throughout: autograd through the fold, the sinusoids and the delay phase equals finite differences."""
    cfg, prof, draws, tau, _ = _frames("D", seed=11)
    gen = torch.Generator().manual_seed(0)
    init = np.array([[0.0, 0.0], [119.0, 13.0], [37.3, 5.6], [80.9, 9.2]])
    positions = pilot_learn.PilotPositions(init, GRID)
    with torch.no_grad():
        positions.raw.add_(torch.tensor([[0.01, 0.02], [-0.003, 0.01], [0.2, -0.1], [1.3, 0.7]], dtype=torch.float64))
    target = torch.complex(torch.randn(3, 4, generator=gen, dtype=torch.float64),
                           torch.randn(3, 4, generator=gen, dtype=torch.float64))

    def loss(raw):
        positions.raw.data.copy_(raw)
        return (pilot_learn.pilot_channel(cfg.ofdm, prof, draws, tau, positions()) - target).abs().square().sum()

    raw0 = positions.raw.detach().clone()
    positions.raw.grad = None
    loss(raw0).backward()
    grad = positions.raw.grad.clone()
    fd = torch.zeros_like(raw0)
    eps = 1e-6
    with torch.no_grad():
        for i in range(raw0.shape[0]):
            for j in range(2):
                e = torch.zeros_like(raw0)
                e[i, j] = eps
                fd[i, j] = (loss(raw0 + e) - loss(raw0 - e)) / (2 * eps)
    assert grad.abs().min() > 1e-3  # every coordinate is felt: both axes, every pilot
    assert torch.allclose(grad, fd, rtol=1e-6, atol=1e-6 * float(grad.abs().max())), (grad, fd)


def test_rounding_gives_distinct_nearest_points_and_resolves_collisions_to_the_nearest_free_one():
    pos = np.array([[0.2, 0.1], [0.3, 0.2], [5.6, 3.4], [119.4, 13.3], [-0.4, 14.2]])
    got = pilot_learn.round_positions(pos, GRID)
    # (0.2, 0.1) is closer to (0, 0) than (0.3, 0.2) is, so it keeps it; (0.3, 0.2) goes to the nearest
    # free point, (1, 0) at distance^2 0.53 rather than (0, 1) at 0.73; the rest round, clipped into the grid.
    assert got == [(0, 0), (1, 0), (6, 3), (119, 13), (0, 13)]
    many = pilot_learn.round_positions(np.full((6, 2), [50.0, 7.0]), GRID)
    assert len(set(many)) == 6 and many[0] == (50, 7)
    # the 4-neighbourhood fills before the diagonals; the sixth takes the first diagonal (lower subcarrier, symbol)
    assert sorted(many[1:5]) == [(49, 7), (50, 6), (50, 8), (51, 7)] and many[5] == (49, 6)


def test_fold_reflects_at_the_grid_edges_with_period_two():
    x = torch.tensor([0.0, 0.3, 1.0, 1.25, 1.9, 2.4, -0.3, -1.6], dtype=torch.float64)
    want = torch.tensor([0.0, 0.3, 1.0, 0.75, 0.1, 0.4, 0.3, 0.4], dtype=torch.float64)
    torch.testing.assert_close(pilot_learn.fold(x), want, rtol=0, atol=1e-12)


def test_rounding_more_pilots_than_grid_points_is_refused():
    from wavefront.errors import ConfigError

    with pytest.raises(ConfigError, match=r"positions=7: more pilots than the 3x2 grid has points"):
        pilot_learn.round_positions(np.zeros((7, 2)), (3, 2))
    assert sorted(pilot_learn.round_positions(np.zeros((6, 2)), (3, 2))) == [(f, t) for f in range(3) for t in range(2)]


def test_permuted_columns_follow_the_pilots_new_order():
    # the model's column i belongs to pilot i; after permuted(order) column i is old column order[i], so feeding the
    # pilots in the new order (new pilot i = old pilot order[i]) gives the same estimate
    gen = torch.Generator().manual_seed(2)
    model = pilot_learn.ComplexLinear(4, (3, 2))
    with torch.no_grad():
        model.w_re.copy_(torch.randn(6, 4, generator=gen))
        model.w_im.copy_(torch.randn(6, 4, generator=gen))
    p = torch.complex(torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen))
    before = model(p)
    order = [2, 0, 3, 1]  # not its own inverse
    model.permuted(order)
    torch.testing.assert_close(model(p[:, order]), before, rtol=1e-6, atol=1e-6)


def test_cosine_schedule_runs_from_one_to_zero():
    assert [pilot_learn.cosine(s, 8) for s in (0, 4, 8)] == pytest.approx([1.0, 0.5, 0.0], abs=1e-15)
    assert pilot_learn.cosine(2, 8) == pytest.approx(0.5 + 0.5 / math.sqrt(2), abs=1e-15)


def _linear_and_positions(cfg, preset):
    """Returns (the preset's positions [P, 2] float64, a ComplexLinear estimator, learnable PilotPositions there)."""
    layout = apply_pilots(cfg, preset).ofdm.pilot_layout
    init = np.asarray(layout.positions, dtype=np.float64)
    return init, pilot_learn.ComplexLinear(layout.num_pilots, GRID), pilot_learn.PilotPositions(init, GRID)


def test_positions_are_held_through_the_warm_up():
    cfg = _config()
    init, model, positions = _linear_and_positions(cfg, "lattice-4x6")
    pilot_learn.train(cfg, model, positions, steps=3, batch=4, lr=1e-2, pos_lr=5e-2, seed=0, learn_positions=True,
                      warmup=1.0, progress=False)
    assert float(model.w_re.detach().abs().max()) > 0  # the estimator learnt
    torch.testing.assert_close(positions(), torch.as_tensor(init), rtol=0, atol=1e-9)


def test_training_noise_follows_the_configs_snr_convention():
    # pilot-grid SNR is the per-RE SNR less 10 log10(F T / P): the noise per RE is 10^(-(SNR + that) / 10)
    cfg = _config(snr_db=[10.0, 10.0], snr_convention="pilot-grid")
    F, T = cfg.ofdm.grid_shape
    offset = 10 * math.log10(F * T / cfg.ofdm.num_pilots)
    _, _, nv = pilot_learn.draw_training_frames(cfg, channel_profile("A"), 3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(nv, torch.full((3,), 10 ** (-(10.0 + offset) / 10)), rtol=1e-6, atol=0)


def test_closed_form_bounds_split_the_headline_from_the_suite():
    cfg = _config()
    points = [dict(pilot_learn.HEADLINE), {"sweep": "snr", "snr_db": 0.0, "delay_spread_s": 100e-9, "doppler_hz": 200.0},
              {"sweep": "snr", "snr_db": 25.0, "delay_spread_s": 50e-9, "doppler_hz": 600.0}]
    got = pilot_learn.closed_form_bounds(cfg, points)
    db = [10 * math.log10(float(genie_mse(cfg, p["snr_db"], p["delay_spread_s"], p["doppler_hz"]))) for p in points]
    assert got["bound_db_300ns_1000hz_20db"] == pytest.approx(db[0], abs=1e-9)
    assert got["bound_db_suite_mean"] == pytest.approx((db[1] + db[2]) / 2, abs=1e-9)


def test_pilot_noise_is_circular_with_the_per_re_variance():
    """LS at unit-modulus pilots: noise with E|n|^2 = 10^(-SNR/10) and E[n^2] = 0, independent of the channel."""
    cfg = _config(snr_db=[0.0, 25.0])
    nv = cfg.noise_variance(torch.tensor([0.0, 10.0, 25.0])).float()
    h = torch.full((3, 20000), 0.3 - 0.7j, dtype=torch.complex64)
    n = (pilot_learn.add_pilot_noise(h, nv, torch.Generator().manual_seed(0)) - h).to(torch.complex128)
    power = n.abs().square().mean(1)
    assert torch.allclose(power, nv.double(), rtol=0.03)  # 20000 samples: 0.7 % standard error
    assert (n.square().mean(1).abs() / power).max() < 0.03  # circular
    assert torch.allclose(nv, torch.tensor([1.0, 0.1, 10 ** -2.5]))


def _mse_on_fresh_frames(cfg, model, layout, frames: int = 2000) -> float:
    """Returns the linear MSE of ``model`` on fresh frames of ``cfg``, pilots from the continuous sampler at the layout."""
    prof = channel_profile(cfg.channel.profile)
    gen = torch.Generator().manual_seed(99)
    est = pilot_learn.LinearEstimator("linear", model, layout, "test")
    pos = torch.as_tensor(layout.positions, dtype=torch.float32)
    err = 0.0
    with torch.no_grad():
        for _ in range(frames // 500):
            draws, tau, nv = pilot_learn.draw_training_frames(cfg, prof, 500, gen)
            h = pilot_learn.grid_channel(cfg.ofdm, prof, draws, tau)
            hp = pilot_learn.pilot_channel(cfg.ofdm, prof, draws, tau, pos)
            err += float((est.estimate(pilot_learn.add_pilot_noise(hp, nv, gen), {}) - h).abs().square().mean())
    return err / (frames // 500)


def test_linear_estimator_trained_or_fitted_at_one_condition_reaches_its_lmmse_bound():
    """At one fixed condition the best linear map is the genie LMMSE, so the trained map's and the
    closed-form fit's MSE on fresh frames must land on the closed-form bound: not below it (noise too
    weak, or pilots not from the grid's channel), and not far above it (training loop, fit or noise wrong)."""
    cond = {"snr_db": [10.0, 10.0], "delay_spread_s": [100e-9, 100e-9], "doppler_hz": [500.0, 500.0]}
    cfg = apply_pilots(_config(**cond), "lattice-4x6")
    layout = cfg.ofdm.pilot_layout
    model = pilot_learn.ComplexLinear(layout.num_pilots, GRID)
    fixed = pilot_learn.PilotPositions(np.asarray(layout.positions, dtype=np.float64), GRID)
    pilot_learn.train(cfg, model, fixed, steps=300, batch=64, lr=2e-2, pos_lr=0.0, seed=0, learn_positions=False,
                      progress=False)
    assert torch.allclose(fixed(), torch.as_tensor(layout.positions, dtype=torch.float64), atol=1e-9)  # untouched
    fitted = pilot_learn.fit_linear(cfg, layout, frames=3000, batch=500, seed=5)
    bound_db = 10 * math.log10(float(genie_mse(cfg, 10.0, 100e-9, 500.0)))
    for m in (model, fitted):
        mse_db = 10 * math.log10(_mse_on_fresh_frames(cfg, m, layout))
        print(f"linear {mse_db:.3f} dB, bound {bound_db:.3f} dB")
        assert -0.25 < mse_db - bound_db < 0.5, (mse_db, bound_db)


def test_joint_training_moves_the_pilots_and_keeps_them_inside_the_grid():
    cfg = _config()
    init, model, positions = _linear_and_positions(cfg, "block-12x2")
    pilot_learn.train(cfg, model, positions, steps=60, batch=32, lr=1e-2, pos_lr=2e-2, seed=0, learn_positions=True,
                      progress=False)
    u = positions().detach().numpy()
    assert np.all(u >= 0) and np.all(u[:, 0] <= 119) and np.all(u[:, 1] <= 13)
    assert np.abs(u - init)[:, 1].max() > 0.5  # two pilot symbols cannot track 1000 Hz: pilots leave them


@pytest.mark.slow
@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be a positive integer"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--init", "block-99x1"], "layout 'block-99x1'"),
    (["--init", ","], "--init names no layout"),
])
def test_bad_arguments_are_one_line_errors(argv, message):
    script = Path(__file__).resolve().parents[2] / "scripts" / "pilot_learn.py"
    p = subprocess.run([sys.executable, str(script), *argv, "--reference", ""], capture_output=True, text=True)
    assert p.returncode == 2
    assert message in p.stderr and "Traceback" not in p.stderr
