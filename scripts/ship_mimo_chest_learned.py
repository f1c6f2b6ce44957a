"""Ships ``gated-lmmse`` for one user's pilots at ``mimo-chest`` and checks it per (antenna, user) on MIMO frames.

The recipe (one thread, about three minutes on a loaded 2-core machine; the leaderboard's
cpu-small budget of 300 steps x batch 32; the SNR prior widened to the preset's -12 dB):

    wavefront train --model gated-lmmse --set 'prior_snr_db=[-12.0, 25.0]' --on-the-fly configs/mimo-chest-user.yaml \\
        --steps 300 --batch-size 32 --lr 0.02 --warmup-steps 20 --weight-decay 0 --eval-every 100 --patience 0 \\
        --seed 0 --device cpu --conditions none --out RUN

then ``python scripts/ship_mimo_chest_learned.py RUN``: writes the weights (no optimiser or RNG
state) to ``estimators/pretrained/gated-lmmse-mimo-chest.safetensors`` and its card, which holds
the NMSE on ``mimo-chest`` frames (16 antennas, 4 users, TDL-A 100 ns, 100 Hz, rho = 0.7) of the
model applied per (antenna, user), beside ``ls-linear``, the 2-D genie per (antenna, user) and the
genie over space, and the paired gap to the per-pair genie with its standard error over frames.
``wavefront sweep --preset mimo-chest --estimators gated-lmmse`` then finds this checkpoint
(:func:`wavefront.estimators.estimator.shipped_for`): user 0 has its layout, users 1-3 the same
layout moved by 1-3 subcarriers, which the model takes (``frequency_shift_invariant``).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import torch

RECIPE = ("wavefront train --model gated-lmmse --set 'prior_snr_db=[-12.0, 25.0]' --on-the-fly "
          "configs/mimo-chest-user.yaml --steps 300 --batch-size 32 --lr 0.02 --warmup-steps 20 --weight-decay 0 "
          "--eval-every 100 --patience 0 --seed 0 --device cpu --conditions none --out RUN; "
          "python scripts/ship_mimo_chest_learned.py RUN")


def per_frame_nmse(h_hat: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Returns [B] float64: each frame's error energy over its channel energy (over antennas, users, grid)."""
    return (h_hat - h).abs().square().flatten(1).sum(1).double() / h.abs().square().flatten(1).sum(1).double()


def check(snrs: list[float], frames: int, seed: int) -> list[dict]:
    """Returns one row per SNR: NMSE [dB] of each estimator on the same mimo-chest frames, and the paired gaps."""
    from wavefront.estimators.leaderboard import paired_gap
    from wavefront.resolve import resolve_estimators
    from wavefront.sim.config import preset
    from wavefront.sim.experiment import prior_config
    from wavefront.sim.mimo import MimoFrameGenerator, PerUser, mimo_estimators

    cfg = preset("mimo-chest")
    prior = prior_config(cfg, [{"snr_db": s} for s in snrs])
    ests = {"ls-linear": mimo_estimators(["ls-linear"], cfg)[0],
            "gated-lmmse": resolve_estimators(["gated-lmmse"], prior)[0],
            "lmmse-genie per pair": PerUser("lmmse-genie", cfg),
            "lmmse-genie over space": mimo_estimators(["lmmse-genie"], cfg)[0]}
    rows = []
    for snr in snrs:
        c = cfg.updated(channel={"snr_db": snr})
        gen = MimoFrameGenerator(c)
        nm = {k: [] for k in ests}
        for start in range(0, frames, 4):
            fr = gen.generate(min(4, frames - start), seed=seed + start, with_data=False)
            for k, e in ests.items():
                with torch.no_grad():
                    nm[k].append(per_frame_nmse(e.estimate(fr.pilots_ls, fr.meta), fr.h))
        nm = {k: torch.cat(v) for k, v in nm.items()}
        row = {"snr_db": snr, "frames": frames}
        row.update({f"{k}_db": round(10 * math.log10(float(v.mean())), 3) for k, v in nm.items()})
        for ref in ("lmmse-genie per pair", "ls-linear"):
            gap, se = paired_gap(nm["gated-lmmse"], nm[ref])
            row[f"gap_to_{ref.replace(' ', '_')}_db"], row[f"gap_to_{ref.replace(' ', '_')}_se_db"] = round(gap, 3), round(se, 3)
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    from wavefront.estimators import checkpoint as ckpt
    from wavefront.estimators.estimator import PRETRAINED_DIR

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="the training run's folder (its last.safetensors and log.csv)")
    p.add_argument("--snr-db", default="-12,-7,-2,10", help="comma-separated SNRs of the check (dB, per RE)")
    p.add_argument("--frames", type=int, default=8, help="mimo-chest frames per SNR (each 64 antenna-user pairs)")
    args = p.parse_args()
    torch.set_num_threads(1)
    ck = ckpt.Checkpoint(Path(args.run) / "last.safetensors")
    model = ck.build_model().eval()
    model.trained_conditions = ck.conditions
    dest = PRETRAINED_DIR / "gated-lmmse-mimo-chest.safetensors"
    ckpt.save(dest, model, ck.system_config, step=ck.step, rng=False)
    log = list(csv.DictReader(open(Path(args.run) / "log.csv")))
    rows = check([float(s) for s in args.snr_db.split(",")], args.frames, seed=11)
    card = {"model": "gated-lmmse", "model_options": ck.hparams, "system_config": json.loads(ck.system_config.to_json()),
            "recipe": RECIPE, "device": "CPU, 1 thread", "torch": torch.__version__, "steps": ck.step,
            "batch_size": 32, "frames_seen": ck.step * 32, "budget": "the leaderboard's cpu-small (300 steps x batch 32)",
            "train_minutes": round(float(log[-1]["elapsed_s"]) / 60, 2),
            "val_frames": 2048, "val_mse_db": float(log[-1]["val_mse_db"]),
            "val_ls_linear_mse_db": float(log[-1]["val_ls_linear_db"]),
            "parameters": sum(p.numel() for p in model.parameters()), "file_bytes": dest.stat().st_size,
            "conditions_given": "pilots only (no SNR, delay spread or Doppler)",
            "trained_on_prior": "TDL-A, one mimo-chest user's pilots (156 x 2: every 4th subcarrier of 624, symbols 3 "
                                "and 12, 30 kHz), SNR -12-25 dB, delay spread 25-300 ns, Doppler 50-1000 Hz, uniform "
                                "per frame, SISO frames drawn on the fly",
            "serves": "every (antenna, user) pair of mimo-chest: user u's pilots are user 0's moved by u subcarriers, "
                      "and the model's learned gate and shrinkage depend on pilot differences only "
                      "(frequency_shift_invariant); the bank is rebuilt for each user's layout",
            "mimo_chest_check": {"config": "mimo-chest preset: 16 antennas, 4 users, rho = 0.7, TDL-A 100 ns, 100 Hz; "
                                           "NMSE over antennas, users, subcarriers and symbols; seeds 11.. in 4-frame batches",
                                 "rows": rows},
            "note": "the filter bank (4 x 4 cells of the prior's delay spread x Doppler box, noise levels every 1 dB over "
                    "-12-25 dB) is rebuilt from model_options and the profile; the checkpoint holds the learned gate "
                    "and shrinkage only"}
    dest.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
    print(f"wrote {dest} ({dest.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
