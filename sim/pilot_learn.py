"""Learned pilot positions: P continuous pilot positions trained end to end with a complex linear estimator.

The channel is a sum of sinusoids, ``H(f, t) = sum_l a_l(t) exp(-j 2 pi f tau_l)`` with
``a_l(t) = sqrt(P_l / N) sum_n exp(j (2 pi f_d c_n t + phi_n))`` (:mod:`wavefront.sim.fading`),
analytic in continuous frequency and time. So a pilot may sit at a continuous position
``u = (subcarrier, symbol)`` in ``[0, F-1] x [0, T-1]`` (frequency ``f_0 + u_0 scs``, time
``u_1 T_sym``), and the gradient of the grid MSE flows into the positions through ``H``.

Each step draws B frames over the paper's training ranges (TDL-A, delay spread 25-300 ns,
Doppler 50-1000 Hz, SNR 0-25 dB per resource element, uniform per frame), evaluates from the
*same* sinusoid draws the grid ``H`` [B, F, T] (exactly :func:`~wavefront.sim.fading.ofdm_channel`)
and the pilots ``H(u_i)`` [B, P], adds complex Gaussian noise of the config's variance at the SNR (``10^(-SNR/10)`` per RE) to the
pilots (the LS estimate at unit-modulus pilots), and takes one Adam step on the estimator and the
positions (their own learning rate) on the grid MSE. The estimator is one complex linear map
``C^P -> C^(F T)``: the family of every linear estimator, the robust LMMSE over the training
distribution included. After training the positions are rounded to distinct grid points, the
estimator is fine-tuned on the rounded layout (positions frozen), and it is evaluated on fresh
frames from the project's frame generator at the paper's 21 test points and at
300 ns / 1000 Hz / 20 dB, beside the genie LMMSE and the layout's own MMSE bound. The same
estimator, trained with the same steps, draws and schedule on the *fixed* init layout, shows what
moving the pilots bought. A closed-form least-squares fit of the same linear family on each layout
(:func:`fit_linear`) shows how far Adam's map is from the best one:

    python scripts/pilot_learn.py --init block-12x2,lattice-4x6 --steps 3000 --out runs/pilot-learn

runs it (the command lives in ``scripts/pilot_learn.py``).

Why it keeps its own channel sampler and loop: :class:`~wavefront.sim.frames.FrameGenerator`
samples the channel on the grid, while the positions need ``H`` at continuous (f, t) with
gradients to them; :func:`pilot_channel` evaluates the generator's own sinusoid draws there, and
:func:`grid_channel` equals :func:`~wavefront.sim.fading.ofdm_channel` bit for bit (a test holds
it). The one training loop (:mod:`wavefront.estimators.train`) trains registry models on frames
with fixed pilots; here two parameter groups (the map and the positions) move together, then the
positions are rounded and frozen, which that loop has no notion of; and ``sim`` may not import
``estimators``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from wavefront import paper
from wavefront.errors import ConfigError
from wavefront.sim.config import OFDMConfig, SystemConfig
from wavefront.sim.estimators import Estimator, classical_estimators
from wavefront.sim.experiment import prior_config, run_experiment, simulated_points
from wavefront.sim.lmmse import genie_mse
from wavefront.sim import fading
from wavefront.sim.fading import SinusoidDraws, draw_sinusoids
from wavefront.sim.pilots import PilotLayout, flat_pilots
from wavefront.sim.profiles import ChannelProfile, channel_profile, subcarrier_offsets_hz

CHANNEL = {**{k: list(v) for k, v in paper.TRAIN_RANGES.items()}, "profile": "A"}
HEADLINE = {"sweep": "headline", "axis": "", "snr_db": 20.0, "delay_spread_s": 300e-9, "doppler_hz": 1000.0}


# ---------------------------------------------------------------------------------------
# The channel at continuous pilot positions
# ---------------------------------------------------------------------------------------
def grid_axes(ofdm: OFDMConfig) -> tuple[float, float, float]:
    """Returns ``(f_0, scs, T_sym)``: subcarrier 0's baseband frequency (Hz), the spacing (Hz), the symbol period (s).

    Subcarrier ``k`` sits at ``f_0 + k scs`` (:func:`subcarrier_offsets_hz`), symbol ``n`` starts at
    ``n T_sym`` (:func:`symbol_times_s`); a continuous position uses the same affine maps.
    """
    f = subcarrier_offsets_hz(ofdm)
    return float(f[0]), float(ofdm.subcarrier_spacing_hz), float(ofdm.symbol_duration_s)


def pilot_channel(ofdm: OFDMConfig, profile: ChannelProfile, draws: SinusoidDraws, tau_s: torch.Tensor,
                  positions: torch.Tensor) -> torch.Tensor:
    """Returns ``H`` [B, P] at continuous pilot positions, complex of ``positions``' real dtype; differentiable in them.

    ``draws``: the frames' sinusoids (:func:`draw_sinusoids`, TDL; NLoS taps plus an optional LoS
    path at tap 0). ``tau_s`` [B, L] tap delays (s). ``positions`` [P, 2] float32 or float64:
    ``(subcarrier, symbol)`` in grid units, 0-based, not necessarily integer. At integer positions
    this is :func:`~wavefront.sim.fading.ofdm_channel` of the same draws at those grid points.
    Built from real cos/sin (no complex autograd) so that float64 gives exact finite differences.
    """
    if profile.is_cdl:
        raise ConfigError("profile", profile.name, "continuous pilot positions are implemented for TDL profiles")
    dt = positions.dtype
    f0, scs, t_sym = grid_axes(ofdm)
    f = f0 + positions[:, 0] * scs  # [P] Hz
    t = positions[:, 1] * t_sym  # [P] s
    cos_n, phi = draws.cosines.to(dt), draws.phases_rad.to(dt)  # [B, L, N]
    B, L, N = cos_n.shape
    w = (2 * math.pi) * draws.doppler_hz.to(dt).reshape(B, 1, 1, 1)  # rad/s
    arg = (w * cos_n.unsqueeze(-1)) * t + phi.unsqueeze(-1)  # [B, L, N, P]
    amp = torch.as_tensor(np.sqrt(profile.nlos_powers / N), dtype=dt).reshape(1, L, 1)
    a_re, a_im = torch.cos(arg).sum(2) * amp, torch.sin(arg).sum(2) * amp  # [B, L, P]
    if profile.is_los:
        arg0 = w.reshape(B, 1) * profile.los_cos_aoa * t + draws.los_phase_rad.to(dt)  # [B, P]
        s = math.sqrt(profile.los_power)
        a_re = torch.cat([a_re[:, :1] + s * torch.cos(arg0).unsqueeze(1), a_re[:, 1:]], 1)
        a_im = torch.cat([a_im[:, :1] + s * torch.sin(arg0).unsqueeze(1), a_im[:, 1:]], 1)
    theta = (2 * math.pi) * tau_s.to(dt).unsqueeze(-1) * f  # [B, L, P]
    c, s_ = torch.cos(theta), torch.sin(theta)
    # a exp(-j theta) = (a_re + j a_im)(c - j s)
    h_re = (a_re * c + a_im * s_).sum(1)
    h_im = (a_im * c - a_re * s_).sum(1)
    return torch.complex(h_re, h_im)


def grid_channel(ofdm: OFDMConfig, profile: ChannelProfile, draws: SinusoidDraws, tau_s: torch.Tensor) -> torch.Tensor:
    """Returns ``H`` [B, F, T] complex64 on the grid from ``draws`` and ``tau_s`` [B, L] (s): what ``ofdm_channel`` computes."""
    return fading.grid_channel(ofdm, profile, draws, tau_s.float())


def draw_training_frames(config: SystemConfig, profile: ChannelProfile, batch: int, generator: torch.Generator):
    """Returns ``(draws, tau_s [B, L] float32 s, noise_var [B] float32)`` for ``batch`` frames, uniform over ``config``'s ranges.

    Delay spread (s), Doppler (Hz) and SNR (dB, in the config's ``snr_convention``) are each uniform per frame
    over ``config.channel``'s ``[lo, hi]`` ranges (or equal to its value); ``noise_var = config.noise_variance(SNR)``
    (``10^(-SNR/10)`` under the per-RE convention).
    """
    ch = config.channel

    def uniform(lo_hi):  # a [lo, hi] range, or one value
        lo, hi = (float(lo_hi), float(lo_hi)) if isinstance(lo_hi, (int, float)) else (float(v) for v in lo_hi)
        return lo + (hi - lo) * torch.rand(batch, generator=generator)

    ds, fd, snr = uniform(ch.delay_spread_s), uniform(ch.doppler_hz), uniform(ch.snr_db)
    draws = draw_sinusoids(profile, fd, ch.num_sinusoids, generator)
    tau = ds.reshape(-1, 1) * torch.as_tensor(profile.norm_delays, dtype=torch.float32)
    return draws, tau, config.noise_variance(snr).float()


def add_pilot_noise(h_pilots: torch.Tensor, noise_var: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Returns the LS pilot estimates [B, P] complex: ``h_pilots`` [B, P] plus circular complex Gaussian noise.

    ``noise_var`` [B] is the per-resource-element noise variance ``E|n|^2`` (linear); with
    unit-modulus pilot symbols the LS estimate ``y / x`` carries noise of that same variance.
    """
    B, P = h_pilots.shape
    n = torch.view_as_complex(torch.randn(B, P, 2, generator=generator)) * torch.sqrt(noise_var / 2).unsqueeze(1)
    return h_pilots + n


# ---------------------------------------------------------------------------------------
# Positions and estimator
# ---------------------------------------------------------------------------------------
def fold(x: torch.Tensor) -> torch.Tensor:
    """Returns ``x`` reflected into [0, 1] (a triangle wave of period 2): identity on [0, 1], slope +-1 everywhere."""
    return 1 - (torch.remainder(x, 2.0) - 1).abs()


class PilotPositions(nn.Module):
    """``P`` continuous pilot positions [P, 2] (subcarrier, symbol) in ``[0, F-1] x [0, T-1]``.

    Parametrised by unconstrained coordinates ``r`` [P, 2] in grid-normalised units, folded into
    the grid by reflection at its edges (:func:`fold`): a pilot that the gradient pushes past an
    edge comes back inside, and a pilot that starts on the edge (subcarrier 0, symbol 0) still has
    a gradient, which a sigmoid would all but kill there.
    """

    def __init__(self, init_positions, grid_shape: tuple[int, int]):
        super().__init__()
        scale = torch.tensor([grid_shape[0] - 1, grid_shape[1] - 1], dtype=torch.float64)
        self.register_buffer("scale", scale)
        self.raw = nn.Parameter(torch.as_tensor(init_positions, dtype=torch.float64) / scale)

    def forward(self) -> torch.Tensor:
        """Returns the positions [P, 2] float64 (grid units)."""
        return fold(self.raw) * self.scale


class ComplexLinear(nn.Module):
    """One complex linear map from the ``P`` pilot LS values to the ``F*T`` grid: ``h_hat = W p``, ``W`` [F*T, P].

    Stored as real and imaginary parts (float32), initialised to zero.
    """

    def __init__(self, num_pilots: int, grid_shape: tuple[int, int]):
        super().__init__()
        self.grid_shape = tuple(grid_shape)
        n = grid_shape[0] * grid_shape[1]
        self.w_re = nn.Parameter(torch.zeros(n, num_pilots))
        self.w_im = nn.Parameter(torch.zeros(n, num_pilots))

    def forward(self, pilots: torch.Tensor) -> torch.Tensor:
        """Returns ``H_hat`` [B, F, T] complex64 from pilots [B, P] complex64."""
        w = torch.complex(self.w_re, self.w_im)
        return (pilots.to(torch.complex64) @ w.T).reshape(pilots.shape[0], *self.grid_shape)

    def permuted(self, order: list[int]) -> None:
        """Reorders the pilot columns in place: new column ``i`` is old column ``order[i]``."""
        with torch.no_grad():
            self.w_re.copy_(self.w_re[:, order].clone())
            self.w_im.copy_(self.w_im[:, order].clone())


class LinearEstimator(Estimator):
    """The trained :class:`ComplexLinear` behind the project's estimator interface (``needs = "none"``).

    ``estimate(pilots [B, P_f, P_t] or [B, P] complex64, meta) -> H_hat [B, F, T] complex64``;
    the pilots are in ``layout``'s position order, which the model's columns follow.
    """

    needs = "none"

    def __init__(self, name: str, model: ComplexLinear, layout: PilotLayout, trained_on: str):
        self.name, self.model, self.layout, self.trained_on = name, model, layout, trained_on

    @torch.no_grad()
    def estimate(self, pilots: torch.Tensor, meta) -> torch.Tensor:
        return self.model(flat_pilots(pilots, self.layout))


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------
def cosine(step: int, total: int) -> float:
    """Returns the cosine learning-rate factor ``0.5 (1 + cos(pi step / total))`` in [0, 1]."""
    return 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))


def train(config: SystemConfig, model: ComplexLinear, positions: PilotPositions, steps: int, batch: int, lr: float,
          pos_lr: float, seed: int, learn_positions: bool, warmup: float = 0.1, desc: str = "train",
          progress: bool = True) -> list[dict]:
    """Trains ``model`` (and ``positions`` if ``learn_positions``) for ``steps`` Adam steps; returns a loss log.

    ``lr``, ``pos_lr``: peak learning rates (cosine decay to 0); the positions' rate is in grid-
    normalised units per step and is held at 0 for the first ``warmup`` fraction of the steps,
    while the estimator learns from zero. ``seed`` fixes the frames, so two runs with the same
    seed see the same channels and noise. The log holds the mean training MSE (linear, per
    resource element) every ``max(steps // 20, 1)`` steps.
    """
    profile = channel_profile(config.channel.profile)
    gen = torch.Generator().manual_seed(seed)
    params = [{"params": model.parameters(), "lr": lr}]
    if learn_positions:
        params.append({"params": positions.parameters(), "lr": 0.0})
    opt = torch.optim.Adam(params)
    positions.requires_grad_(learn_positions)
    start = int(warmup * steps) if learn_positions else 0
    log, acc, n = [], 0.0, 0
    every = max(steps // 20, 1)
    bar = tqdm(range(steps), desc=desc, unit="step", dynamic_ncols=True, disable=not progress)
    for step in bar:
        opt.param_groups[0]["lr"] = lr * cosine(step, steps)
        if learn_positions:
            opt.param_groups[1]["lr"] = 0.0 if step < start else pos_lr * cosine(step - start, steps - start)
        draws, tau, nv = draw_training_frames(config, profile, batch, gen)
        with torch.no_grad():
            h = grid_channel(config.ofdm, profile, draws, tau)
        u = positions() if learn_positions else positions().detach()
        hp = pilot_channel(config.ofdm, profile, draws, tau, u.float())
        loss = (model(add_pilot_noise(hp, nv, gen)) - h).abs().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        acc, n = acc + float(loss.detach()), n + 1
        if (step + 1) % every == 0 or step + 1 == steps:
            log.append({"step": step + 1, "train_mse_db": round(10 * math.log10(acc / n), 3)})
            bar.set_postfix_str(f"mse {log[-1]['train_mse_db']:.2f} dB")
            acc, n = 0.0, 0
    bar.close()
    positions.requires_grad_(False)
    return log


@torch.no_grad()
def fit_linear(config: SystemConfig, layout: PilotLayout, frames: int, batch: int, seed: int) -> ComplexLinear:
    """Returns the best linear map for ``layout`` over ``config``'s ranges, fitted in closed form from ``frames`` frames.

    ``W = S_hp S_pp^-1`` with the sample moments ``S_hp = mean(h p^H)`` [F*T, P] and
    ``S_pp = mean(p p^H)`` [P, P] (complex128) of fresh frames drawn as in training: the least-
    squares linear estimator, i.e. the LMMSE over the training distribution (robust to every
    condition at once), up to sampling error. The same family as the trained map, so the two
    differ only by how well Adam converged.
    """
    profile = channel_profile(config.channel.profile)
    gen = torch.Generator().manual_seed(seed)
    pos = torch.as_tensor(layout.positions, dtype=torch.float32)
    P, n = layout.num_pilots, config.ofdm.grid_shape[0] * config.ofdm.grid_shape[1]
    s_hp = torch.zeros(n, P, dtype=torch.complex128)
    s_pp = torch.zeros(P, P, dtype=torch.complex128)
    done = 0
    while done < frames:
        b = min(batch, frames - done)
        draws, tau, nv = draw_training_frames(config, profile, b, gen)
        h = grid_channel(config.ofdm, profile, draws, tau).reshape(b, n).to(torch.complex128)
        p = add_pilot_noise(pilot_channel(config.ofdm, profile, draws, tau, pos), nv, gen).to(torch.complex128)
        s_hp += h.T @ p.conj()
        s_pp += p.T @ p.conj()
        done += b
    w = torch.linalg.solve(s_pp.T, s_hp.T).T  # W S_pp = S_hp
    model = ComplexLinear(P, config.ofdm.grid_shape)
    model.w_re.copy_(w.real.float())
    model.w_im.copy_(w.imag.float())
    return model


def round_positions(positions: np.ndarray, grid_shape: tuple[int, int]) -> list[tuple[int, int]]:
    """Returns distinct grid points [P] of ``(subcarrier, symbol)``, one per continuous position [P, 2], in input order.

    Each position goes to its nearest grid point; where several round to the same point, they are
    placed in order of their distance to their rounded point (closest first), each on the nearest
    free grid point (Euclidean in grid units; ties to the lower subcarrier, then symbol).
    """
    F, T = grid_shape
    pos = np.asarray(positions, dtype=np.float64)
    if len(pos) > F * T:
        raise ConfigError("positions", len(pos), f"more pilots than the {F}x{T} grid has points")
    rounded = np.clip(np.rint(pos), 0, [F - 1, T - 1])
    order = np.argsort(np.linalg.norm(pos - rounded, axis=1), kind="stable")
    grid = np.stack(np.meshgrid(np.arange(F), np.arange(T), indexing="ij"), -1).reshape(-1, 2)
    free = np.ones(len(grid), dtype=bool)
    out: list[tuple[int, int] | None] = [None] * len(pos)
    for i in order:
        d = np.where(free, ((grid - pos[i]) ** 2).sum(1), np.inf)
        k = int(np.argmin(d))  # first minimum: lower subcarrier, then lower symbol
        free[k] = False
        out[i] = (int(grid[k, 0]), int(grid[k, 1]))
    return out


# ---------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------
def closed_form_bounds(config: SystemConfig, conditions: list[dict]) -> dict:
    """Returns the genie-LMMSE bound (dB) of ``config``'s layout at the headline point and its mean over the other points."""
    snr = torch.tensor([c["snr_db"] for c in conditions], dtype=torch.float64)
    ds = torch.tensor([c["delay_spread_s"] for c in conditions], dtype=torch.float64)
    fd = torch.tensor([c["doppler_hz"] for c in conditions], dtype=torch.float64)
    db = 10 * torch.log10(genie_mse(config, snr, ds, fd))
    head = [i for i, c in enumerate(conditions) if c["sweep"] == "headline"]
    suite = [i for i, c in enumerate(conditions) if c["sweep"] != "headline"]
    return {"bound_db_300ns_1000hz_20db": float(db[head].mean()), "bound_db_suite_mean": float(db[suite].mean())}


def evaluate(estimators: list, config: SystemConfig, layout_name: str, frames: int,
             baselines: tuple[str, ...] = ("lmmse-genie",)) -> list[dict]:
    """Returns table rows for ``estimators`` and the classical ``baselines`` on fresh frames of ``config`` (their layout).

    Frames come from the project's frame generator (seed 1, the channel and noise of
    :func:`simulated_points`), at the paper's 21 test points and 300 ns / 1000 Hz / 20 dB;
    estimators that take conditions are given the true ones. One row per estimator: MSE, the
    layout's bound and the gap (dB) at 300 ns / 1000 Hz / 20 dB and averaged over the 21 points.
    """
    points = simulated_points(config, paper.points() + [HEADLINE], frames, 300, seed=1, with_data=False)
    prior = prior_config(config, points)
    rows = run_experiment(points, list(estimators) + classical_estimators(list(baselines), prior), frames=frames,
                          conditions="true", condition_prior=prior, progress=False)
    out = []
    for name in dict.fromkeys(r.estimator for r in rows):
        mine = [r for r in rows if r.estimator == name]
        suite = [r for r in mine if r.sweep != "headline"]
        head = next(r for r in mine if r.sweep == "headline")
        mean = lambda k: sum(getattr(r, k) for r in suite) / len(suite)  # noqa: E731
        out.append({"estimator": name, "layout": layout_name, "mse_db_300ns_1000hz_20db": head.mse_db,
                    "bound_db_300ns_1000hz_20db": head.bound_db, "gap_db_300ns_1000hz_20db": head.gap_db,
                    "mse_db_suite_mean": mean("mse_db"), "bound_db_suite_mean": mean("bound_db"),
                    "gap_db_suite_mean": mean("gap_db")})
    return out


def markdown_table(rows: list[dict]) -> str:
    """Returns the rows as a markdown table (MSE, bound and gap in dB)."""
    lines = ["| estimator | layout | MSE dB (300 ns, 1000 Hz, 20 dB) | bound | gap | MSE dB (suite mean) | bound | gap |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['estimator']} | {r['layout']} | {r['mse_db_300ns_1000hz_20db']:.2f} | "
                     f"{r['bound_db_300ns_1000hz_20db']:.2f} | {r['gap_db_300ns_1000hz_20db']:.2f} | "
                     f"{r['mse_db_suite_mean']:.2f} | {r['bound_db_suite_mean']:.2f} | {r['gap_db_suite_mean']:.2f} |")
    return "\n".join(lines)


def plot_layouts(path: Path, grid_shape: tuple[int, int], panels: list[tuple[str, np.ndarray, np.ndarray, list]]) -> None:
    """Draws one panel per init: init pilots, the learned continuous positions and their rounding, on the F x T grid.

    ``panels``: ``(title, init [P, 2], learned [P, 2], rounded [P] of (subcarrier, symbol))`` in grid
    units; a grey line joins each pilot's start to its end (its displacement, not its path).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    F, T = grid_shape
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 7), squeeze=False)
    for ax, (title, init, learned, rounded) in zip(axes[0], panels):
        r = np.asarray(rounded)
        for a, b in zip(init, learned):
            ax.plot([a[1], b[1]], [a[0], b[0]], color="0.75", lw=0.6, zorder=1)
        ax.scatter(init[:, 1], init[:, 0], s=40, facecolors="none", edgecolors="tab:blue", label="init", zorder=2)
        ax.scatter(learned[:, 1], learned[:, 0], s=10, color="tab:orange", label="learned (continuous)", zorder=3)
        ax.scatter(r[:, 1], r[:, 0], s=40, marker="s", facecolors="none", edgecolors="tab:red",
                   label="learned (rounded)", zorder=4)
        ax.set_xlim(-0.5, T - 0.5)
        ax.set_ylim(-1, F)
        ax.set_xticks(range(T))
        ax.set_xlabel("OFDM symbol")
        ax.set_ylabel("subcarrier")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
