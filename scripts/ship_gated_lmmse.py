"""Trains the shipped ``gated-lmmse`` on CPU and writes ``estimators/pretrained/gated-lmmse-default.{safetensors,json}``.

The recipe (one thread, about two minutes on a loaded 2-core machine):

    wavefront train --model gated-lmmse --on-the-fly configs/prior-12x2.yaml --steps 1500 --batch-size 128 \\
        --lr 0.02 --warmup-steps 50 --weight-decay 0 --eval-every 250 --patience 0 --seed 0 --device cpu --out RUN

then ``python scripts/ship_gated_lmmse.py RUN``: keeps the model's tensors only (no optimiser or RNG
state) and writes the card with the Bayes risk against ``mmse-bayes`` on 2,000 prior frames.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch

RECIPE = ("wavefront train --model gated-lmmse --on-the-fly configs/prior-12x2.yaml --steps 1500 --batch-size 128 "
          "--lr 0.02 --warmup-steps 50 --weight-decay 0 --eval-every 250 --patience 0 --seed 0 --device cpu; "
          "python scripts/ship_gated_lmmse.py RUN")


def main(run: str) -> None:
    from wavefront.estimators import checkpoint as ckpt
    from wavefront.estimators.estimator import PRETRAINED_DIR
    from wavefront.estimators.leaderboard import bayes_risk_frames, paired_gap_db
    from wavefront.sim.prior_lmmse import BayesMMSE

    torch.set_num_threads(1)
    ck = ckpt.Checkpoint(Path(run) / "last.safetensors")
    model = ck.build_model().eval()
    config = ck.system_config
    dest = PRETRAINED_DIR / "gated-lmmse-default.safetensors"
    ckpt.save(dest, model, config, step=ck.step, rng=False)
    frames = bayes_risk_frames(config, 2000, seed=7)
    with torch.no_grad():
        gap, se = paired_gap_db(model(frames.pilots_ls), BayesMMSE(config).estimate(frames.pilots_ls), frames.h)
    log = list(csv.DictReader(open(Path(run) / "log.csv")))
    card = {"model": "gated-lmmse", "model_options": ck.hparams, "system_config": json.loads(config.to_json()),
            "recipe": RECIPE, "device": "CPU, 1 thread", "torch": torch.__version__, "steps": ck.step,
            "batch_size": 128, "frames_seen": ck.step * 128, "train_minutes": round(float(log[-1]["elapsed_s"]) / 60, 2),
            "val_frames": 2048, "val_mse_db": float(log[-1]["val_mse_db"]),
            "val_ls_linear_mse_db": float(log[-1]["val_ls_linear_db"]),
            "parameters": sum(p.numel() for p in model.parameters()), "file_bytes": dest.stat().st_size,
            "conditions_given": "pilots only (no SNR, delay spread or Doppler)",
            "trained_on_prior": "TDL-A, 12 x 2 pilots, SNR 0-25 dB, delay spread 25-300 ns, Doppler 50-1000 Hz, "
                                "uniform per frame, drawn on the fly",
            "bayes_risk_gap_to_mmse_bayes_db": round(gap, 4), "bayes_risk_gap_se_db": round(se, 4),
            "bayes_risk_frames": 2000,
            "note": "the filter bank (4 x 4 cells of the prior's delay spread x Doppler box, noise levels every 1 dB "
                    "over 0-30 dB) is rebuilt from model_options and the profile; the checkpoint holds the learned "
                    "gate and shrinkage only"}
    dest.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
    print(f"wrote {dest}; Bayes risk {gap:+.3f} +- {se:.3f} dB against mmse-bayes")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="the training run's --out folder (holds last.safetensors and log.csv)")
    main(ap.parse_args().run)
