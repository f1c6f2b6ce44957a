"""Training on MIMO frames drawn on the fly: one user's antennas as a sample, for per-pair and cross-antenna models.

:func:`user_batch` turns a :class:`~wavefront.sim.mimo.MimoFrameGenerator` batch into user 0's
pilots and channels on every antenna; :func:`train_on_mimo_frames` is one readable loop (data,
forward, loss, backward, step) over them. A model with ``antenna_axis`` sees ``[B, R, P_f, P_t]``
at once; any other (a SISO model, the per-pair baseline) sees the same pairs as ``[B R, P_f, P_t]``,
so both learn from identical frames. Users 1..U-1 are not used: their pilots are user 0's moved along
the subcarriers (Kronecker pattern) and their channels are independent draws of the same law, so
they would add frames, not information a frequency-shift-invariant model lacks.
"""
from __future__ import annotations

import math
import time

import torch

from wavefront.errors import ConfigError


def user_batch(generator, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns user 0's ``(pilots [B, R, P_f', P_t], h [B, R, F, T])`` complex64 from ``batch_size`` MIMO frames of ``seed``."""
    fr = generator.generate(batch_size, seed=seed, with_data=False)
    return fr.pilots_ls[:, :, 0], fr.h[:, :, 0]


def mimo_forward(model, pilots: torch.Tensor) -> torch.Tensor:
    """Returns ``[B, R, F, T]``: the model across antennas (``antenna_axis``), else pair by pair on ``[B R, ...]``."""
    if getattr(model, "antenna_axis", False):
        return model(pilots)
    B, R = pilots.shape[:2]
    return model(pilots.reshape(B * R, *pilots.shape[2:])).reshape(B, R, *model.grid_shape)


def train_on_mimo_frames(model, config, steps: int = 300, batch_size: int = 32, lr: float = 0.01,
                         warmup_steps: int = 20, seed: int = 0, log_every: int = 100) -> list[dict]:
    """Trains ``model`` in place on user 0 of MIMO frames of ``config`` (drawn on the fly) and returns the log.

    AdamW (no weight decay), linear warm-up then cosine decay to zero, the mean squared error
    over antennas and the grid. Step ``i`` draws frames from seed ``seed + i`` (training seeds
    start at 0; evaluation seeds elsewhere start at 10**6). Log rows: ``{"step", "train_mse_db",
    "elapsed_s"}``, the loss averaged over the last ``log_every`` steps.
    """
    from wavefront.sim.mimo import MimoFrameGenerator

    if not isinstance(steps, int) or steps < 1:
        raise ConfigError("steps", steps, "must be a positive integer")
    gen = MimoFrameGenerator(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / max(1, warmup_steps)) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, i / steps))))
    model.train()
    log, acc, t0 = [], [], time.perf_counter()
    for step in range(steps):
        pilots, h = user_batch(gen, batch_size, seed + step)
        loss = (mimo_forward(model, pilots) - h).abs().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        acc.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            log.append({"step": step + 1, "train_mse_db": round(10 * math.log10(sum(acc) / len(acc)), 3),
                        "elapsed_s": round(time.perf_counter() - t0, 1)})
            acc = []
    model.eval()
    return log
