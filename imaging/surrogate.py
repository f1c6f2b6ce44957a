"""Wave surrogates for the a-priori compression study: data, training and errors.

A :class:`~wavefront.imaging.compressed.WaveSurrogate` predicts the next wavefield snapshot
from the two previous ones and the velocity model. The data are deepwave simulations of
random layered models with an inclusion, one Ricker shot each (:func:`make_sequences`); the
error is the relative L2 error ``||u_pred - u_true|| / ||u_true||``, one step
(:func:`rel_l2`) or after h steps of rollout on the network's own predictions
(:func:`rollout_rel_l2`). ``scripts/surrogate_compression.py`` runs the study.
"""
from __future__ import annotations

import torch

from wavefront.imaging.compressed import CompressedConv2d, path_macs
from wavefront.imaging.wave import Region, random_layered_model, record_region, ricker

V_SCALE = 3000.0  # m/s; velocities enter the network as v / V_SCALE
DX_M, DT_S, FREQ_HZ = 10.0, 0.001, 15.0
TARGET_ERROR_RATIO, TARGET_PARAM_RATIO = 1.10, 5.0
SPLIT_SEEDS = {"train": 1000, "val": 2000, "test": 3000}


def make_sequences(num_models: int, seed: int, size: int, nt: int, stride: int, dx_m: float, dt_s: float,
                   freq_hz: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (snapshots [N, T, size, size] float32 in solver units, v / V_SCALE [N, size, size]).

    One random layered model and one Ricker shot per sequence; snapshots every ``stride``
    steps, after the source has stopped injecting (a free wave from there on).
    """
    g = torch.Generator().manual_seed(seed)
    wavelet = ricker(freq_hz, nt, dt_s).reshape(1, 1, -1)
    start = _first_free_snapshot(stride, dt_s, freq_hz)
    snaps, vs = [], []
    for _ in range(num_models):
        v = random_layered_model((size, size), g, num_layers=3, v_range=(1500.0, 3500.0))
        loc = torch.randint(4, size - 4, (1, 1, 2), generator=g)
        field = record_region(v, dx_m, dt_s, wavelet, loc, Region(0, size, 0, size), pml_width=10, freq_hz=freq_hz)[0]
        snaps.append(field[stride - 1::stride][start:].contiguous())
        vs.append(v / V_SCALE)
    return torch.stack(snaps), torch.stack(vs)


def _first_free_snapshot(stride: int, dt_s: float, freq_hz: float) -> int:
    """Returns the index of the first snapshot (every ``stride`` steps) after the Ricker source has stopped (2 x 1.5 / f)."""
    return int(2 * 1.5 / freq_hz / dt_s / stride)


def snapshots_kept(nt: int, stride: int, dt_s: float, freq_hz: float) -> int:
    """Returns T, the snapshots a sequence of :func:`make_sequences` keeps: every ``stride``-th of ``nt`` steps
    once the source has stopped (may be <= 0: too few steps)."""
    return nt // stride - _first_free_snapshot(stride, dt_s, freq_hz)


def triplets(seqs: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
    """Returns (u_prev, u_now, u_next, v), each [N (T - 2), size, size]: every one-step example of ``seqs``."""
    snaps, v = seqs
    n, t = snaps.shape[:2]
    flat = lambda x: x.reshape(n * (t - 2), *x.shape[2:])  # noqa: E731
    return [flat(snaps[:, :-2]), flat(snaps[:, 1:-1]), flat(snaps[:, 2:]), flat(v[:, None].expand(-1, t - 2, -1, -1))]


def rel_l2(model, data, scale) -> float:
    """Returns ||pred - u_next|| / ||u_next|| over ``data`` (teacher forced: true inputs every step).

    ``model=None`` is linear extrapolation in time, ``2 u_now - u_prev``.
    """
    u0, u1, u2, v = data
    with torch.no_grad():
        pred = model(u0 / scale, u1 / scale, v) * scale if model is not None else 2 * u1 - u0
    return float((pred - u2).norm() / u2.norm())


def rollout_rel_l2(model, seqs, scale, horizons: list[int]) -> dict[str, float]:
    """Returns {h: ||u_h - true_h|| / ||true_h||} after h steps fed on the model's own predictions.

    Every sequence starts from its first two true snapshots; step h predicts snapshot h + 1.
    ``model=None`` rolls out linear extrapolation.
    """
    snaps, v = seqs
    horizons = [h for h in horizons if h <= snaps.shape[1] - 2]
    prev, now = snaps[:, 0], snaps[:, 1]
    out = {}
    with torch.no_grad():
        for h in range(1, max(horizons) + 1):
            nxt = model(prev / scale, now / scale, v) * scale if model is not None else 2 * now - prev
            prev, now = now, nxt
            if h in horizons:
                true = snaps[:, h + 1]
                out[str(h)] = float((nxt - true).norm() / true.norm())
    return out


def separable_path(model):
    """Returns ``model`` with every compressed layer forced onto its separable path (same function)."""
    for m in model.modules():
        if isinstance(m, CompressedConv2d):
            macs = path_macs(m.in_channels, m.out_channels, m.kernel_size, m.rank)
            m.path = min(("spatial-first", "mix-first"), key=macs.get)
    return model


def train(model, train_data, scale, steps, batch, lr, seed):
    """Adam with a one-cycle schedule peaking at ``lr``; mean squared error on scaled fields."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    # torch ends the warm-up at step pct_start * steps - 1 and divides by its length from step 0: at exactly 10 steps
    # that is 0 / 0, so 10 steps warm up over 15 % (every other count keeps 10 %, as before)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1 if steps != 10 else 0.15)
    u0, u1, u2, v = (t / scale if i < 3 else t for i, t in enumerate(train_data))
    for _ in range(steps):
        idx = torch.randint(0, len(u0), (batch,), generator=g)
        loss = ((model(u0[idx], u1[idx], v[idx]) - u2[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model
