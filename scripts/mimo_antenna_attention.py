"""Antenna attention against the per-pair baseline and the genie over space, trained on MIMO frames at cpu-small.

Configuration: 8 receive antennas, 2 users, exponential correlation rho = 0.7, 48 x 14 at 15 kHz,
every 2nd subcarrier of symbols 3 and 12 (1-based) a pilot, dealt to the users (12 x 2 each);
channels over the prior: TDL-A, SNR 0-25 dB, delay spread 25-300 ns, Doppler 50-1000 Hz,
uniform per frame. Each model trains under the leaderboard's cpu-small budget (300 steps x 32
MIMO frames, user 0's 8 antennas a sample; :func:`wavefront.estimators.mimo_train.train_on_mimo_frames`,
AdamW lr 0.02, 20 warm-up steps, cosine, seed 0):

- ``gated-lmmse`` per (antenna, user): the per-pair baseline, on the same frames pair by pair;
- ``antenna-attention``: the same per-pair stage and attention across each user's antennas, with a
  learned logit per antenna distance (the array's geometry);
- ``antenna-attention`` without it (``position_bias=false``): permutation-equivariant over antennas.

Then, on the same evaluation frames (seeds from 10**6, ``--frames`` per SNR, both users), the NMSE
of each, of ``ls-linear`` and the 2-D genie per (antenna, user), of the genie over space (told
R_rx and each frame's conditions) and the closed-form bound, with the paired gaps and their
standard errors over frames (NMSE: the error energy of all frames over their channel energy; the
bound is the MSE per resource element of a unit-power channel, the same quantity in expectation). Writes ``docs/mimo-antenna-attention/results.{json,md}``;
with ``--ship`` it also replaces the shipped antenna-attention checkpoint,
``estimators/pretrained/antenna-attention-mimo-8x2.safetensors`` (``wavefront sweep --config
configs/mimo-8x2.yaml --estimators antenna-attention`` finds it). Without it the run's own
checkpoint in ``--run`` is evaluated and the tracked file stays as it is: training on another CPU
does not give the same bytes.

    python scripts/mimo_antenna_attention.py            # about 8 minutes on a loaded 2-core machine
"""
from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"ofdm": {"num_subcarriers": 48, "pilot_subcarrier_spacing": 2},
         "channel": {"snr_db": [0.0, 25.0], "delay_spread_s": [25e-9, 300e-9], "doppler_hz": [50.0, 1000.0]},
         "mimo": {"num_rx_antennas": 8, "num_users": 2, "rx_correlation": 0.7}}
BUDGET = {"steps": 300, "batch_size": 32, "lr": 0.02, "warmup_steps": 20, "seed": 0}
MODELS = {"gated-lmmse per pair": ("gated-lmmse", {}),
          "antenna-attention": ("antenna-attention", {}),
          "antenna-attention, no positions": ("antenna-attention", {"position_bias": False})}


def energy(x: torch.Tensor) -> torch.Tensor:
    """Returns [B] float64: each frame's energy over antennas, users, subcarriers and symbols."""
    return x.abs().square().flatten(1).sum(1).double()


def main() -> None:
    from wavefront.estimators import checkpoint as ckpt
    from wavefront.estimators.estimator import PRETRAINED_DIR
    from wavefront.estimators.leaderboard import paired_gap
    from wavefront.estimators.mimo_train import train_on_mimo_frames
    from wavefront.estimators.registry import count_parameters, create
    from wavefront.resolve import resolve_estimators
    from wavefront.sim.config import SystemConfig
    from wavefront.sim.mimo import MimoFrameGenerator, PerUser, mimo_estimators, mimo_genie_mse, user_configs

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=200, help="evaluation frames per SNR (the cpu-small suite's 200)")
    p.add_argument("--snr-db", default="0,5,10,15,20,25", help="comma-separated evaluation SNRs (dB, per RE)")
    p.add_argument("--out", default=str(ROOT / "docs" / "mimo-antenna-attention"))
    p.add_argument("--run", default="/tmp/mimo-antenna-attention", help="folder for the trained checkpoints")
    p.add_argument("--steps", type=int, default=BUDGET["steps"], help="training steps (300: cpu-small; fewer: a smoke run)")
    p.add_argument("--ship", action="store_true",
                   help="replace estimators/pretrained/antenna-attention-mimo-8x2.safetensors with this run's model")
    args = p.parse_args()
    budget = {**BUDGET, "steps": args.steps}
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="inter-carrier interference")
    cfg = SystemConfig.from_dict(SMALL)
    u0 = user_configs(cfg)[0]
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    trained, paths = {}, {}
    for label, (name, options) in MODELS.items():
        torch.manual_seed(BUDGET["seed"])
        model = create(name, u0, **options)
        log = train_on_mimo_frames(model, cfg, **budget)
        model.trained_conditions = "none"
        paths[label] = ckpt.save(run / f"{label.replace(' ', '-').replace(',', '')}.safetensors", model, u0, step=budget["steps"],
                                 trainer_state={"log": log}, rng=False)
        trained[label] = {"model": name, "options": options, "parameters": count_parameters(model), "log": log}
        print(label, log[-1], flush=True)
    dest = paths["antenna-attention"]
    if args.ship:  # the shipped one goes through the same lookup as `wavefront sweep --estimators antenna-attention`
        dest = PRETRAINED_DIR / "antenna-attention-mimo-8x2.safetensors"
        ckpt.save(dest, ckpt.Checkpoint(paths["antenna-attention"]).build_model(), u0, step=budget["steps"], rng=False)
    trained_on = (f"TDL-A, SNR 0-25 dB, delay spread 25-300 ns, Doppler 50-1000 Hz (uniform per frame), "
                  f"{budget['steps'] * BUDGET['batch_size']:,} MIMO frames (8 antennas, rho = 0.7), user 0's antennas, "
                  "pilots only; cpu-small: 300 steps x 32")
    ests = {"ls-linear": mimo_estimators(["ls-linear"], cfg)[0]}
    for label in MODELS:
        path = str(dest) if label == "antenna-attention" else str(paths[label])
        ests[label] = resolve_estimators([path], cfg)[0]
    ests["lmmse-genie per pair"] = PerUser("lmmse-genie", cfg)
    ests["lmmse-genie over space"] = mimo_estimators(["lmmse-genie"], cfg)[0]
    rows, t0 = [], time.perf_counter()
    for snr in [float(s) for s in args.snr_db.split(",")]:
        c = cfg.updated(channel={"snr_db": snr})
        gen = MimoFrameGenerator(c)
        nm, bound, h_energy = {k: [] for k in ests}, [], []
        for start in range(0, args.frames, 50):
            fr = gen.generate(min(50, args.frames - start), seed=10**6 + start, with_data=False)
            for k, e in ests.items():
                with torch.no_grad():
                    nm[k].append(energy(e.estimate(fr.pilots_ls, fr.meta) - fr.h))
            h_energy.append(energy(fr.h))
            bound.append(mimo_genie_mse(c, snr, fr.delay_spread_s.double(), fr.doppler_hz.double()))
        nm, total = {k: torch.cat(v) for k, v in nm.items()}, float(torch.cat(h_energy).sum())
        for k, v in nm.items():  # NMSE: the error energy of all frames over their channel energy
            row = {"snr_db": snr, "estimator": k, "frames": args.frames, "nmse_db": round(10 * math.log10(float(v.sum()) / total), 3)}
            for ref in ("gated-lmmse per pair", "lmmse-genie over space"):
                if k != ref:
                    gap, se = paired_gap(v, nm[ref])
                    row[f"gap_to_{ref}_db"], row[f"gap_to_{ref}_se_db"] = round(gap, 3), round(se, 3)
            e = ests[k]
            row["given"] = getattr(e, "given", None) or "pilots only"
            row["trained_on"] = trained_on if k in MODELS else None
            rows.append(row)
        rows.append({"snr_db": snr, "estimator": "bound (genie over space, closed form)", "frames": args.frames,
                     "nmse_db": round(10 * math.log10(float(torch.cat(bound).mean())), 3)})
        print(snr, {r["estimator"]: r["nmse_db"] for r in rows if r["snr_db"] == snr}, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"config": json.loads(cfg.to_json()), "budget": budget, "trained": trained, "trained_on": trained_on,
              "evaluation": f"{args.frames} frames per SNR from seed 10**6 in 50-frame batches, both users, delay spread "
                            "and Doppler uniform over the prior per frame; NMSE over antennas, users, subcarriers, symbols; "
                            "gaps paired over frames' error energies (delta-method SE); the bound is the closed-form MSE per RE "
                            "averaged over the frames' conditions",
              "eval_seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    card = {"model": "antenna-attention", "model_options": ckpt.Checkpoint(dest).hparams, "system_config": json.loads(u0.to_json()),
            "recipe": "python scripts/mimo_antenna_attention.py --ship", "device": "CPU, 1 thread", "torch": torch.__version__,
            "steps": budget["steps"], "batch_size": BUDGET["batch_size"], "frames_seen": budget["steps"] * BUDGET["batch_size"],
            "conditions_given": "pilots only (no SNR, delay spread or Doppler)", "trained_on_prior": trained_on,
            "serves": "8 antennas (any R runs), each user of the 48 x 14 Kronecker pattern with pilot spacing 2 and 2 users",
            "parameters": trained["antenna-attention"]["parameters"], "file_bytes": dest.stat().st_size,
            "results": "docs/mimo-antenna-attention/results.json"}
    dest.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
    snrs = sorted({r["snr_db"] for r in rows})
    names = list(ests) + ["bound (genie over space, closed form)"]
    lines = ["| estimator | given | trained on | " + " | ".join(f"{s:g} dB" for s in snrs) + " |",
             "|---|---|---|" + "---|" * len(snrs)]
    for k in names:
        cells = []
        for s in snrs:
            r = next(r for r in rows if r["snr_db"] == s and r["estimator"] == k)
            g = r.get("gap_to_gated-lmmse per pair_db")
            cells.append(f"{r['nmse_db']:.2f}" + (f" ({g:+.2f} ± {r['gap_to_gated-lmmse per pair_se_db']:.2f})"
                                                   if g is not None and k.startswith("antenna") else ""))
        given = next((r.get("given") for r in rows if r["estimator"] == k), "") or ""
        lines.append(f"| `{k}` | {given} | {'cpu-small, MIMO frames' if k in MODELS else ''} | " + " | ".join(cells) + " |")
    (out / "results.md").write_text("NMSE [dB] (antenna attention: its paired gap to `gated-lmmse per pair` ± SE)\n\n"
                                    + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
