"""All of wavefront's GPU measurements in one time-boxed run, ready before any GPU is.

    python scripts/gpu_run.py --out gpu-out --setup .gpu            # a bare GPU machine with torch
    python scripts/gpu_run.py --out /tmp/smoke --smoke              # the same parts on CPU, tiny sizes

Parts, each in its own process with its own time box (a failing or overrunning part is
recorded and the next one runs). ``--smoke`` has no time boxes: it checks the script end to
end with fixed sizes and steps, so a loaded machine is slower, never wrong.

- ``a`` generation: wavefront's TDL-A channel with per-frame delay spread and Doppler, against
  Sionna's ``GenerateOFDMChannel`` (one delay spread per instance), at batch 1k / 10k / 50k;
- ``b`` data path: frames drawn on the GPU (the training path), HDF5 shards through
  ``H5FrameDataset``, and the official ``.mat`` loader (``MatDataset``) on the same frames;
- ``c`` training: samples/s at batch 128 and 1024 for the official code in fp32 and in its AMP
  (its own ``TrainingLoop``), and wavefront in fp32, bf16, and bf16 with ``forward_real``
  compiled. Every cell is one optimiser step on the same batch: forward, loss, backward, step;
- ``d`` inference: frames/s at batch 1024 and batch-1 latency, eager, compiled, CUDA graphs;
- ``e`` wave: ``scripts/bench_wave.py`` (learnable receivers against deepwave's integer and
  Hicks receivers);
- ``f`` full-size AdaFortiTran (d 128, 6 layers) trained for the time left on frames drawn on
  the GPU inside the loop (bf16, compiled, fused AdamW), then evaluated on the three paper
  suites against LS, robust and genie LMMSE and the bound. Writes the checkpoint and its card.

``--setup DIR`` (built by ``bash scripts/gpu_prepare.sh OFFICIAL_REPO``) first installs what a bare machine lacks from ``DIR/whl/*.whl`` and
``DIR/deepwave.tar.xz`` (a tar of the unpacked deepwave wheel), and makes the repository
importable as ``wavefront`` without pip; ``DIR/official`` (or ``--official``) is a copy of the
official AdaFortiTran repository (its ``src/``), which is never committed here.

Writes ``OUT/results.json`` (every part's numbers, status and seconds), ``OUT/summary.md``
(the tables), ``OUT/part_<x>.log`` and, from part f, ``OUT/adafortitran-full.safetensors``
with ``OUT/adafortitran-full.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PART_NAMES = {"a": "generation", "b": "data path", "c": "training", "d": "inference", "e": "wave", "f": "full-size training",
              "g": "MIMO generation"}
# Seconds per part on the GPU (f takes what is left of --budget-s, at least its entry here).
TIME_BOX = {"a": 40, "b": 45, "c": 130, "d": 90, "e": 70, "f": 150, "g": 30}


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def _device(args):
    import torch

    if args.device != "auto":
        return torch.device(args.device)
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def _seconds_per_call(fn, dev, min_s: float, min_calls: int = 3, warmup: int = 1) -> float:
    """Returns wall seconds per call of ``fn`` on ``dev`` (:func:`wavefront.bench.seconds_per_call`)."""
    from wavefront.bench import seconds_per_call

    return seconds_per_call(fn, min_s, min_calls, warmup, device=dev)


def _card(dev) -> str:
    import torch

    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def _official_path(args) -> Path | None:
    for cand in (args.official, Path(args.setup) / "official" if args.setup else None):
        if cand and (Path(cand) / "src" / "models").is_dir():
            return Path(cand).resolve()
    return None


def _import_official(args):
    """Returns the official ``src`` package's pieces, or raises RuntimeError saying why not."""
    path = _official_path(args)
    if path is None:
        raise RuntimeError("official AdaFortiTran code not provided (--official DIR holding src/)")
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    import importlib

    mods = {}
    mods["schemas"] = importlib.import_module("src.config.schemas")
    mods["ada"] = importlib.import_module("src.models.adafortitran")
    return mods


def _official_model(mods, dev, pilot_shape, grid_shape, dims):
    sc = mods["schemas"]
    sysc = sc.SystemConfig(ofdm={"num_scs": grid_shape[0], "num_symbols": grid_shape[1]},
                           pilot={"num_scs": pilot_shape[0], "num_symbols": pilot_shape[1]})
    patches = (grid_shape[0] // 3) * (grid_shape[1] // 2)
    mc = sc.ModelConfig(model_type="adafortitran", patch_size=(3, 2), num_layers=dims["num_layers"],
                        model_dim=dims["model_dim"], num_head=dims["num_heads"], activation="gelu", dropout=0.1,
                        max_seq_len=max(512, patches), pos_encoding_type="learnable", adaptive_token_length=6,
                        channel_adaptivity_hidden_sizes=[7, 42, 2 * patches], device=str(dev))
    return mods["ada"].AdaFortiTranEstimator(sysc, mc)


def _official_training_loop(args):
    """Returns the official ``TrainingLoop`` class, or None where its module cannot be imported (no tensorboard)."""
    try:
        import importlib

        return importlib.import_module("src.main.trainer").TrainingLoop
    except Exception:  # noqa: BLE001 - any import failure means: use the transcription below
        return None


def _random_batch(dev, batch, pilot_shape, grid_shape):
    import torch

    g = torch.Generator(device=dev).manual_seed(batch)
    pilots = torch.randn(batch, *pilot_shape, dtype=torch.complex64, device=dev, generator=g)
    h = torch.randn(batch, *grid_shape, dtype=torch.complex64, device=dev, generator=g)
    meta = {"snr_db": torch.rand(batch, device=dev, generator=g) * 25,
            "delay_spread_s": (25 + torch.rand(batch, device=dev, generator=g) * 275) * 1e-9,
            "doppler_hz": 50 + torch.rand(batch, device=dev, generator=g) * 950}
    # the official code reads (file number, SNR dB, delay spread ns, Doppler Hz, N, type), each [B, 1]
    meta_off = (torch.zeros(batch, 1, device=dev), meta["snr_db"][:, None], meta["delay_spread_s"][:, None] * 1e9,
                meta["doppler_hz"][:, None], torch.zeros(batch, 1, device=dev), ["TDL-A"] * batch)
    return pilots, h, meta, meta_off


def _save_partial(args, result) -> None:
    """Writes what a part has measured so far: a part stopped by its time box keeps its finished rows."""
    path = Path(args.out) / f"part_{args.part}.json"
    path.write_text(json.dumps({"result": result, "partial": True}, indent=1))


def _sizes(args) -> dict:
    # smoke: torch.compile with the "eager" backend traces forward_real (graph breaks would
    # show) without Inductor's code generation, which takes minutes on 2 CPU cores
    if args.smoke:
        return {"compile": {"backend": "eager"}, "train_steps": 30, "gen_batches": [64, 256], "train_batches": [8, 16], "infer_batch": 16, "dims": {"model_dim": 16, "num_layers": 1, "num_heads": 2},
                "min_s": 0.2, "h5_frames": 200, "mat_frames": 100, "workers": [0, 2], "suite_frames": 60,
                "eval_every": 10, "val_frames": 64, "train_batch": 16,
                "wave": ["--shots", "1", "--nt", "100", "--repeats", "1", "--regions", "line", "--no-memory"],
                "compressed": ["--batch", "2", "--size", "16", "--repeats", "1", "--no-memory"],
                "mimo_preset": None, "mimo_batches": [2]}
    return {"compile": {}, "train_steps": None, "gen_batches": [1000, 10000, 50000], "train_batches": [128, 1024], "infer_batch": 1024,
            "dims": {"model_dim": 128, "num_layers": 6, "num_heads": 4}, "min_s": 1.5, "h5_frames": 20000,
            "mat_frames": 20000, "workers": [0, 4, 8, 16], "suite_frames": 2000, "eval_every": 250, "val_frames": 4096,
            "train_batch": 1024, "wave": ["--shots", "50", "--repeats", "3", "--threads", "8"],
            "compressed": ["--batch", "64", "--size", "32", "128", "--repeats", "10"],
            "mimo_preset": "mimo-chest", "mimo_batches": [8, 64]}


# ---------------------------------------------------------------------------------------
# parts: each returns a JSON-able dict
# ---------------------------------------------------------------------------------------
def part_a(args, dev, S) -> dict:
    """Generation: wavefront's channel and frames (per-frame conditions) against Sionna's GenerateOFDMChannel."""
    import torch

    from wavefront.sim.fading import ofdm_channel
    from wavefront.sim.profiles import channel_profile
    from wavefront.sim.config import SystemConfig
    from wavefront.sim.frames import FrameGenerator
    from wavefront.utils import make_generator

    cfg = SystemConfig.from_dict({"channel": {"profile": "A", "snr_db": 10.0, "delay_spread_s": [25e-9, 300e-9],
                                              "doppler_hz": [50.0, 1000.0]}})
    o = cfg.ofdm
    prof = channel_profile("A")
    gen = FrameGenerator(cfg, dev)

    import sionna.phy
    from sionna.phy import SPEED_OF_LIGHT
    from sionna.phy.channel import GenerateOFDMChannel
    from sionna.phy.channel.tr38901 import TDL
    from sionna.phy.ofdm import ResourceGrid

    sdev = f"cuda:{dev.index or 0}" if dev.type == "cuda" else "cpu"
    sionna.phy.config.device = sdev
    rg = ResourceGrid(num_ofdm_symbols=o.num_symbols, fft_size=o.num_subcarriers,
                      subcarrier_spacing=o.subcarrier_spacing_hz, cyclic_prefix_length=round(o.cyclic_prefix_ratio * o.num_subcarriers),
                      pilot_pattern="empty", device=sdev)
    speed = lambda fd: fd * SPEED_OF_LIGHT / o.carrier_frequency_hz  # noqa: E731
    tdl = TDL("A", 300e-9, o.carrier_frequency_hz, min_speed=speed(50.0), max_speed=speed(1000.0), device=sdev)
    sionna_gen = GenerateOFDMChannel(tdl, rg, normalize_channel=False, device=sdev)
    rows = []
    for b in S["gen_batches"]:
        g = make_generator(1, dev)
        ds = (25 + 275 * torch.rand(b, device=dev, generator=g)) * 1e-9
        fd = 50 + 950 * torch.rand(b, device=dev, generator=g)
        t_ch = _seconds_per_call(lambda: ofdm_channel(o, prof, ds, fd, 20, g), dev, S["min_s"])
        t_fr = _seconds_per_call(lambda: gen.generate(b, seed=2, with_data=False), dev, S["min_s"])
        t_si = _seconds_per_call(lambda: sionna_gen(b), dev, S["min_s"])
        rows.append({"batch": b, "wavefront_channel_fps": b / t_ch, "wavefront_frames_fps": b / t_fr,
                     "sionna_generate_ofdm_channel_fps": b / t_si, "ratio_channel_vs_sionna": t_si / t_ch})
        print(json.dumps(rows[-1]), flush=True)
    return {"what": "TDL-A 120x14; wavefront: per-frame delay spread U(25,300) ns and Doppler U(50,1000) Hz, recorded; "
                    "frames = channel + pilots + noise + LS pilots (no data). Sionna: GenerateOFDMChannel(TDL, 300 ns, "
                    "speeds for 50-1000 Hz), normalize_channel=False: one delay spread per instance, Doppler drawn "
                    "internally and not returned", "rows": rows}


def part_b(args, dev, S) -> dict:
    """Data path: on-device frames (training path), HDF5 shards, and the official .mat loader."""
    import tempfile

    import torch
    from torch.utils.data import DataLoader

    from wavefront.datasets import DatasetSpec, H5FrameDataset, generate_dataset
    from wavefront.datasets.matfiles import export_mat
    from wavefront.estimators.data import OnTheFlySource
    from wavefront.sim.config import SystemConfig

    out = {}
    cfg = SystemConfig.from_dict({"channel": {"profile": "A", "snr_db": [0.0, 25.0], "delay_spread_s": [25e-9, 300e-9],
                                              "doppler_hz": [50.0, 1000.0]}})
    bsz = S["train_batch"]
    src = OnTheFlySource(cfg, bsz, seed=0, device=dev)
    step = iter(range(10**9))
    t = _seconds_per_call(lambda: src.batch(next(step)), dev, S["min_s"])
    out["on_the_fly_fps"] = bsz / t
    out["on_the_fly_batch"] = bsz
    print(json.dumps(out), flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="wf-data-"))
    # integer conditions so that the same frames can be named in the official .mat layout
    fixed = SystemConfig.from_dict({"channel": {"profile": "A", "snr_db": 10.0, "delay_spread_s": 100e-9, "doppler_hz": 500.0}})
    t0 = time.perf_counter()
    generate_dataset(DatasetSpec(fixed, 7, S["h5_frames"], shard_frames=min(10000, S["h5_frames"]), batch_size=1000),
                     tmp / "h5", device=dev)
    out["h5_write_fps"] = S["h5_frames"] / (time.perf_counter() - t0)
    ds = H5FrameDataset(tmp / "h5")
    rows = []
    for w in S["workers"]:
        dl = DataLoader(ds, batch_size=1024, shuffle=True, num_workers=w, persistent_workers=False,
                        generator=torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        n = sum(b["h"].shape[0] for b in dl)
        rows.append({"loader": "wavefront H5FrameDataset", "workers": w, "frames": n, "fps": n / (time.perf_counter() - t0)})
        print(json.dumps(rows[-1]), flush=True)

    try:
        mods = _import_official(args)
        import importlib

        MatDataset = importlib.import_module("src.data.dataset").MatDataset
    except Exception as exc:  # noqa: BLE001
        out["official_mat"] = f"skipped: {exc}"
        MatDataset = None
    if MatDataset is not None:
        # export a shard's worth of frames as one .mat file per frame, as the reference data come
        sub = tmp / "h5-sub"
        generate_dataset(DatasetSpec(fixed, 7, S["mat_frames"], shard_frames=S["mat_frames"], batch_size=1000), sub, device="cpu")
        t0 = time.perf_counter()
        n_mat = export_mat(sub, tmp / "mat")
        out["mat_write_fps"] = n_mat / (time.perf_counter() - t0)
        mat_dir = next(p.parent for p in (tmp / "mat").rglob("*.mat"))
        mds = MatDataset(mat_dir, mods["schemas"].PilotParams(num_scs=12, num_symbols=2))
        for w in S["workers"]:
            dl = DataLoader(mds, batch_size=1024, shuffle=True, num_workers=w)
            t0 = time.perf_counter()
            n = sum(b[0].shape[0] for b in dl)
            rows.append({"loader": "official MatDataset (scipy.io.loadmat)", "workers": w, "frames": n,
                         "fps": n / (time.perf_counter() - t0)})
            print(json.dumps(rows[-1]), flush=True)
    out["loaders"] = rows
    out["cpu_cores"] = os.cpu_count()
    return out


def _wavefront_model(dev, dims, compiled=None):
    import torch

    from wavefront.estimators import create
    from wavefront.sim.config import preset

    torch.manual_seed(0)
    m = create("adafortitran", preset("default"), **dims).to(dev)
    if compiled is not None:
        m.compile_real(dynamic=False, **compiled)
    return m


def part_c(args, dev, S) -> dict:
    """Training samples/s: the official loop (fp32, AMP) against wavefront's step (fp32, bf16, bf16 compiled)."""
    import torch
    from torch import nn

    from wavefront.estimators import count_parameters
    from wavefront.estimators.train import channel_mse

    pilot_shape, grid_shape, dims = (12, 2), (120, 14), S["dims"]
    try:
        mods = _import_official(args)
        TrainingLoop = _official_training_loop(args)
        official_error = None
    except Exception as exc:  # noqa: BLE001
        mods, TrainingLoop, official_error = None, None, str(exc)
    cuda = dev.type == "cuda"
    results = {"rows": [], "official": official_error or ("src.main.trainer.TrainingLoop" if TrainingLoop else
                                                          "official model; loop transcribed (trainer import failed)")}

    def official_step_fn(batch, amp):
        model = _official_model(mods, dev, pilot_shape, grid_shape, dims)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.995)
        scaler = torch.amp.GradScaler("cuda") if amp else None
        pilots, h, _, meta_off = batch
        if TrainingLoop is not None:
            loop = TrainingLoop(model, opt, sched, nn.MSELoss(), dev, scaler, None)
            return lambda: loop.train_epoch([(pilots, h, meta_off)]), model
        cat = lambda x: torch.cat((x.real, x.imag), dim=1)  # noqa: E731 - src.utils.concat_complex_channel

        def step():  # TrainingLoop.train_epoch's body for one batch, as written there
            opt.zero_grad()
            est = model(pilots, meta_off)
            if scaler:
                with torch.autocast("cuda", dtype=torch.float16):
                    loss = nn.functional.mse_loss(cat(est), cat(h))
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss = nn.functional.mse_loss(cat(est), cat(h))
                loss.backward()
                opt.step()
            _ = 2 * loss.item() * pilots.shape[0]
            sched.step()
        return step, model

    def wavefront_step_fn(batch, amp, compiled):
        # at small batches a step is kernel launches: CUDA graphs (reduce-overhead) replay them at once
        opts = None if not compiled else {**S["compile"], **({"mode": "reduce-overhead"} if cuda and batch[0].shape[0] <= 256 else {})}
        model = _wavefront_model(dev, dims, opts)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=cuda)
        pilots, h, meta, _ = batch

        def step():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and cuda):
                loss = channel_mse(model(pilots, meta), h)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step, model

    variants = []
    if mods is not None:
        variants += [("official-fp32", "official fp32 (two passes, Adam, loss.item() per step)", lambda b: official_step_fn(b, False)),
                     ("official-amp", "official AMP (autocast around the loss only, GradScaler)",
                      lambda b: official_step_fn(b, True) if cuda else None)]
    variants += [("wavefront-fp32", "wavefront fp32 (one pass, fused AdamW)", lambda b: wavefront_step_fn(b, False, False)),
                 ("wavefront-bf16", "wavefront bf16 autocast", lambda b: wavefront_step_fn(b, True, False) if cuda else None),
                 ("wavefront-bf16-compiled", "wavefront bf16 autocast, forward_real compiled (CUDA graphs at batch <= 256)",
                  lambda b: wavefront_step_fn(b, True, True))]
    for b in S["train_batches"]:
        batch = _random_batch(dev, b, pilot_shape, grid_shape)
        for key, name, make in variants:
            row = {"key": key, "variant": name, "batch": b}
            try:
                made = make(batch)
                if made is None:
                    row["samples_per_s"] = None
                    row["note"] = "needs CUDA"
                else:
                    fn, model = made
                    row["parameters"] = count_parameters(model)
                    row["samples_per_s"] = b / _seconds_per_call(fn, dev, S["min_s"], warmup=3 if "compiled" in key else 2)
                    del model
            except Exception as exc:  # noqa: BLE001 - a failing variant is a row, not the end of the part
                row["error"] = f"{type(exc).__name__}: {exc}"[:400]
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
            _save_partial(args, results)
            if cuda:
                torch.cuda.empty_cache()
    by = {(r["key"], r["batch"]): r.get("samples_per_s") for r in results["rows"]}
    ratios = {}
    for b in S["train_batches"]:
        base = by.get(("official-fp32", b))
        best = max((v for (n, bb), v in by.items() if bb == b and n.startswith("wavefront") and v), default=None)
        if base and best:
            ratios[f"best wavefront / official fp32 @ {b}"] = best / base
        if base and by.get(("wavefront-fp32", b)):
            ratios[f"wavefront fp32 / official fp32 @ {b} (same precision)"] = by[("wavefront-fp32", b)] / base
        amp = by.get(("official-amp", b))
        if amp and by.get(("wavefront-bf16", b)):
            ratios[f"wavefront bf16 / official AMP @ {b}"] = by[("wavefront-bf16", b)] / amp
    results["ratios"] = ratios
    return results


def part_d(args, dev, S) -> dict:
    """Inference: frames/s at the big batch and batch-1 latency (eager, compiled, CUDA graphs)."""
    import torch

    from wavefront.estimators.estimator import CudaGraphForward

    pilot_shape, grid_shape, dims = (12, 2), (120, 14), S["dims"]
    cuda = dev.type == "cuda"
    rows = []

    def measure(name, batch, fn, warmup=2):
        row = {"variant": name, "batch": batch}
        try:
            s = _seconds_per_call(fn, dev, S["min_s"], min_calls=10, warmup=warmup)
            row.update(frames_per_s=batch / s, latency_ms=1e3 * s)
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {exc}"[:400]
        rows.append(row)
        print(json.dumps(row), flush=True)
        _save_partial(args, {"rows": rows})

    try:
        mods = _import_official(args)
    except Exception as exc:  # noqa: BLE001
        mods = None
        rows.append({"variant": "official", "error": str(exc)})
    for b in (S["infer_batch"], 1):
        pilots, _, meta, meta_off = _random_batch(dev, b, pilot_shape, grid_shape)
        if mods is not None:
            om = _official_model(mods, dev, pilot_shape, grid_shape, dims).eval()

            def off():
                with torch.no_grad():
                    om(pilots, meta_off)
            measure("official fp32, two passes", b, off)
            del om
        m = _wavefront_model(dev, dims).eval()

        def eager():
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                m(pilots, meta)
        measure("wavefront bf16, one pass, eager" if cuda else "wavefront fp32, one pass, eager", b, eager)
        if cuda:
            try:
                graphed = CudaGraphForward(m, b, amp=True)
                measure("wavefront bf16, eager kernels in one CUDA graph", b, lambda: graphed(pilots, meta))
            except Exception as exc:  # noqa: BLE001
                rows.append({"variant": "wavefront CUDA graph", "batch": b, "error": f"{type(exc).__name__}: {exc}"[:400]})
        mode = "reduce-overhead" if cuda else None
        mc = _wavefront_model(dev, dims, {**S["compile"], **({"mode": mode} if mode else {})}).eval()

        def compiled():
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                mc(pilots, meta)
        measure(f"wavefront {'bf16 ' if cuda else ''}compiled ({mode or 'default'}{', CUDA graphs' if cuda else ''})", b,
                compiled, warmup=3)
        if cuda:  # Inductor's fused kernels, with the eager wrapper, all captured in one graph
            try:
                mg = _wavefront_model(dev, dims, dict(S["compile"])).eval()
                graphed_c = CudaGraphForward(mg, b, amp=True)
                measure("wavefront bf16 compiled (default), whole call in one CUDA graph", b, lambda: graphed_c(pilots, meta))
            except Exception as exc:  # noqa: BLE001
                rows.append({"variant": "wavefront compiled + CUDA graph", "batch": b, "error": f"{type(exc).__name__}: {exc}"[:400]})
        del m, mc
    best = {}
    for r in rows:
        if r.get("frames_per_s") and r["variant"].startswith("wavefront"):
            key = "best_frames_per_s" if r["batch"] != 1 else "best_batch1_latency_ms"
            val = r["frames_per_s"] if r["batch"] != 1 else r["latency_ms"]
            if key not in best or (val > best[key] if r["batch"] != 1 else val < best[key]):
                best[key] = val
    return {"rows": rows, **best}


def part_e(args, dev, S) -> dict:
    """Wave: scripts/bench_wave.py (learnable receivers against deepwave) and scripts/bench_compressed.py, on this device."""
    out = {}
    deadline = None if args.part_timeout is None else time.perf_counter() + args.part_timeout - 5
    for name, script, extra in (("wave", "bench_wave.py", S["wave"]), ("compressed", "bench_compressed.py", S["compressed"])):
        cmd = [sys.executable, str(REPO / "scripts" / script), "--device", dev.type, *extra]
        left = None if deadline is None else deadline - time.perf_counter()
        if left is not None and left < 5:
            out[name] = {"command": " ".join(cmd[1:]), "error": "no time left in the part's box"}
            continue
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=left)
            rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
            out[name] = {"command": " ".join(cmd[1:]), "rows": rows}
            if p.returncode != 0:
                out[name]["error"] = f"exit {p.returncode}: {p.stderr[-600:]}"
        except subprocess.TimeoutExpired as exc:
            rows = [json.loads(line) for line in (exc.stdout or b"").decode(errors="replace").splitlines() if line.startswith("{")]
            out[name] = {"command": " ".join(cmd[1:]), "rows": rows, "error": f"timed out after {left:.0f} s"}  # left is set here
        _save_partial(args, out)
    if not out.get("wave", {}).get("rows"):
        raise RuntimeError(f"bench_wave gave no rows: {out.get('wave')}")
    return out


def part_f(args, dev, S) -> dict:
    """Full-size AdaFortiTran trained on GPU-drawn frames for a fixed budget, then the paper suites."""
    import torch

    from wavefront.estimators.checkpoint import export
    from wavefront.estimators.estimator import LearnedEstimator, load_estimator
    from wavefront.estimators.evaluate import evaluate
    from wavefront.estimators.train import TrainConfig, default_warmup, train
    from wavefront.sim.config import SystemConfig, preset

    t_start = time.perf_counter()
    budget = args.part_timeout or 0.0  # smoke: no time box; the steps are fixed by _sizes
    from wavefront import paper

    channel = {**{k: list(v) for k, v in paper.TRAIN_RANGES.items()}, "profile": "A"}
    config = SystemConfig.from_dict({"ofdm": preset("default").ofdm.model_dump(), "channel": channel})
    bsz = S["train_batch"]
    # size the cosine schedule from part c's measured throughput (less for drawing frames and validation)
    rate = None
    pc = Path(args.out) / "part_c.json"
    if pc.exists():
        measured = {r.get("key"): r.get("samples_per_s") for r in json.loads(pc.read_text()).get("result", {}).get("rows", [])
                    if r.get("batch") == bsz}
        rate = measured.get("wavefront-bf16-compiled") or (measured.get("wavefront-bf16") or 0) * 1.3 or None
    eval_reserve = 45.0 if not args.smoke else 15.0
    train_s = max(10.0, budget - eval_reserve - 40.0)  # 40 s: start-up and compilation
    if rate is None:
        rate = 11000.0 if dev.type == "cuda" else 200.0
    steps = S["train_steps"] or max(20, int(0.9 * rate * train_s / bsz))
    run_dir = Path(args.out) / "run-full"
    tc = TrainConfig(model="adafortitran", model_overrides=dict(S["dims"]), steps=steps, batch_size=bsz, lr=args.lr,
                     warmup_steps=default_warmup(steps), eval_every=min(S["eval_every"], steps), val_frames=S["val_frames"],
                     patience=0, device=str(dev), amp=True, compile=dev.type == "cuda", out_dir=str(run_dir),
                     time_limit_min=None if args.smoke else train_s / 60, progress=False, seed=0,
                     conditions="estimated")
    print(f"training {steps} steps of batch {bsz} (measured {rate:.0f} samples/s), {train_s:.0f} s budget", flush=True)
    t0 = time.perf_counter()
    fallback = None
    try:
        res = train(tc, config)
    except Exception as exc:  # noqa: BLE001 - compilation trouble must not cost the whole run: retry eager
        if not tc.compile:
            raise
        traceback.print_exc()
        fallback = f"compiled training failed ({type(exc).__name__}: {str(exc)[:200]}); retrained eager"
        left = train_s - (time.perf_counter() - t0)
        tc.compile, tc.time_limit_min, tc.out_dir = False, max(left, 20.0) / 60, str(run_dir) + "-eager"
        tc.steps = max(20, int(tc.steps * left / train_s * 0.6))
        tc.warmup_steps, tc.eval_every = default_warmup(tc.steps), min(tc.eval_every, tc.steps)
        run_dir = Path(tc.out_dir)
        res = train(tc, config)
    train_min = (time.perf_counter() - t0) / 60
    dest = export(run_dir / "best.safetensors", Path(args.out) / "adafortitran-full.safetensors")
    est = load_estimator(str(dest), config, device=dev)
    est = LearnedEstimator(est.model, name="adafortitran", device=dev, amp=dev.type == "cuda")
    # the model given conditions estimated from the pilots, and (second column) the true ones
    rows = evaluate(est, config, points="paper", frames_per_point=S["suite_frames"], conditions="estimated",
                    baselines=("ls-linear", "lmmse-robust", "lmmse-estimated", "mmse-bayes", "lmmse-genie"), seed=1,
                    device=dev, chunk=S["suite_frames"])
    in_dist = [r for r in rows if r["snr_db"] <= 25 and r["delay_spread_ns"] <= 300 and r["doppler_hz"] <= 1000]
    card = {
        "model": "adafortitran", "model_options": dict(S["dims"]), "system_config": json.loads(config.to_json()),
        "recipe": f"scripts/gpu_run.py --parts f (batch {bsz}, lr {args.lr}, AdamW fused, warm-up + cosine over {steps} "
                  f"steps, bf16 autocast, forward_real compiled, frames drawn on the GPU each step)",
        "device": _card(dev), "torch": torch.__version__, "steps": res["step"], "scheduled_steps": steps,
        "stopped": res["stopped"], "batch_size": bsz, "frames_seen": res["step"] * bsz, "train_minutes": round(train_min, 2),
        "val_frames": S["val_frames"], "val_conditions": channel, "val_mse_db": round(res["best_val_mse_db"], 2),
        "val_ls_linear_mse_db": round(res["val_ls_linear_db"], 2) if res["val_ls_linear_db"] else None,
        "parameters": res["parameters"], "file_bytes": dest.stat().st_size,
        "conditions_given": "SNR, delay spread and Doppler estimated from the pilots, in training and in the suites "
                            "(the '(true cond.)' column gives it the true ones)", "fallback": fallback,
        "suite_results": rows,
        "max_gap_in_distribution_db": max(r["gap_to_bound_db"] for r in in_dist) if in_dist else None,
        "max_gap_in_distribution_true_conditions_db": max(r["adafortitran (true cond.)_db"] - r["mmse_bound_db"]
                                                          for r in in_dist) if in_dist else None,
    }
    dest.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    card["seconds"] = time.perf_counter() - t_start
    return card


def part_g(args, dev, S) -> dict:
    """MIMO generation at the mimo-chest preset: wavefront's frames against Sionna's TDL with R antennas and the
    same exponential receive correlation, then GenerateOFDMChannel (users as Sionna's batch)."""
    import sionna.phy
    from sionna.phy import SPEED_OF_LIGHT
    from sionna.phy.channel import GenerateOFDMChannel, exp_corr_mat
    from sionna.phy.channel.tr38901 import TDL
    from sionna.phy.ofdm import ResourceGrid

    from wavefront.sim.config import SystemConfig, preset
    from wavefront.sim.mimo import MimoFrameGenerator

    cfg = preset(S["mimo_preset"]) if S["mimo_preset"] else SystemConfig.from_dict(
        {"ofdm": {"num_subcarriers": 48, "pilot_subcarrier_spacing": 2},
         "mimo": {"num_rx_antennas": 4, "num_users": 2, "rx_correlation": 0.7}})
    o, ch, m = cfg.ofdm, cfg.channel, cfg.mimo
    sdev = f"cuda:{dev.index or 0}" if dev.type == "cuda" else "cpu"
    sionna.phy.config.device = sdev
    rg = ResourceGrid(num_ofdm_symbols=o.num_symbols, fft_size=o.num_subcarriers, subcarrier_spacing=o.subcarrier_spacing_hz,
                      device=sdev)
    speed = float(ch.doppler_hz) * SPEED_OF_LIGHT / o.carrier_frequency_hz
    tdl = TDL(ch.profile, float(ch.delay_spread_s), o.carrier_frequency_hz, min_speed=speed, max_speed=speed,
              num_rx_ant=m.num_rx_antennas, rx_corr_mat=exp_corr_mat(m.rx_correlation, m.num_rx_antennas).to(sdev),
              device=sdev)
    sionna_gen = GenerateOFDMChannel(tdl, rg, normalize_channel=False, device=sdev)
    gen = MimoFrameGenerator(cfg, dev)
    rows = []
    for b in S["mimo_batches"]:
        t_fr = _seconds_per_call(lambda: gen.generate(b, seed=2), dev, S["min_s"])
        t_si = _seconds_per_call(lambda: sionna_gen(b * m.num_users), dev, S["min_s"])
        rows.append({"batch": b, "wavefront_frames_fps": b / t_fr, "sionna_channel_fps": b / t_si,
                     "ratio_vs_sionna": t_si / t_fr})
        print(json.dumps(rows[-1]), flush=True)
    return {"what": f"{S['mimo_preset'] or 'small MIMO'}: {m.num_rx_antennas} antennas (rho {m.rx_correlation:g}) x "
                    f"{m.num_users} users, {o.num_subcarriers}x{o.num_symbols}; wavefront frames (channel, pilots, data, "
                    "noise) against Sionna's channel alone", "rows": rows}


PARTS = {"a": part_a, "b": part_b, "c": part_c, "d": part_d, "e": part_e, "f": part_f, "g": part_g}


# ---------------------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------------------
_BACKGROUND: list = []


def _setup(setup: Path, env: dict) -> list[str]:
    """Installs the wheels (and deepwave) into a private site folder and makes ``wavefront`` importable."""
    notes = []
    site = Path("/tmp/wf-site")
    site.mkdir(exist_ok=True)
    whls = sorted(str(p) for p in (setup / "whl").glob("*.whl"))
    if whls:
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                            "--no-cache-dir", "--upgrade", "--target", str(site), *whls], capture_output=True, text=True)
        notes.append(f"pip install of {len(whls)} wheels: exit {r.returncode} {r.stderr[-300:]}")
    xz = setup / "deepwave.tar.xz"
    if xz.exists() and not (site / "deepwave").exists():
        # unpacked in the background (363 MB); only part e needs it, and it waits for it
        _BACKGROUND.append(subprocess.Popen(["tar", "xJf", str(xz), "-C", str(site)]))
        notes.append("deepwave: unpacking in the background")
    # the repository as the `wavefront` package, without pip: a folder of links (pyproject's package-dir map)
    farm = Path("/tmp/wf-pkg/wavefront")
    if not farm.exists():
        farm.mkdir(parents=True)
        for item in (REPO / "wavefront").iterdir():
            (farm / item.name).symlink_to(item)
        for sub in ("sim", "estimators", "datasets", "imaging"):
            (farm / sub).symlink_to(REPO / sub)
    env["PYTHONPATH"] = os.pathsep.join([str(farm.parent), str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return notes


def _run_part(part: str, args, env: dict, timeout: float | None) -> dict:
    """Runs one part in a child process, killed after ``timeout`` seconds (None: no time box)."""
    out = Path(args.out)
    log = out / f"part_{part}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--out", str(out), "--device", args.device,
           "--lr", str(args.lr)] + (["--part-timeout", f"{timeout:.0f}"] if timeout else [])
    for flag in ("smoke",):
        if getattr(args, flag):
            cmd.append(f"--{flag}")
    for key in ("setup", "official", "inject_failure"):
        if getattr(args, key):
            cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    (out / f"part_{part}.json").unlink(missing_ok=True)
    t0 = time.perf_counter()
    status = "ok"
    with open(log, "w") as f:
        try:
            p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout)
            if p.returncode != 0:
                status = f"failed (exit {p.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - t0
    res_path = out / f"part_{part}.json"
    saved = json.loads(res_path.read_text()) if res_path.exists() else {}
    result = saved.get("result")
    if saved.get("partial") and status == "ok":
        status = "failed (partial result)"
    tail = log.read_text()[-1500:] if status != "ok" else None
    return {"part": part, "name": PART_NAMES[part], "status": status, "seconds": round(seconds, 1),
            "time_box_s": round(timeout) if timeout else None,
            "result": result, **({"log_tail": tail} if tail else {})}


def _fmt(v, nd=0):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return str(v)


def summary_md(results: dict) -> str:
    """Returns the measured tables as Markdown."""
    lines = [f"# GPU run: {results['device']}", "", f"torch {results['torch']}, smoke={results['smoke']}, "
             f"total {results['seconds']:.0f} s", ""]
    for p in results["parts"]:
        box = f" of {p['time_box_s']} s" if p["time_box_s"] else " (no time box)"
        lines.append(f"## ({p['part']}) {p['name']}: {p['status']}, {p['seconds']} s{box}")
        r = p.get("result") or {}
        if p["part"] == "a" and r:
            lines += ["| batch | wavefront channel f/s | wavefront frames f/s | Sionna GenerateOFDMChannel f/s | channel ratio |",
                      "|---|---|---|---|---|"]
            lines += [f"| {x['batch']} | {_fmt(x['wavefront_channel_fps'])} | {_fmt(x['wavefront_frames_fps'])} | "
                      f"{_fmt(x['sionna_generate_ofdm_channel_fps'])} | {x['ratio_channel_vs_sionna']:.2f}x |" for x in r["rows"]]
        elif p["part"] == "b" and r:
            lines.append(f"on-device frames (training path, batch {r.get('on_the_fly_batch')}): {_fmt(r.get('on_the_fly_fps'))} frames/s; "
                         f"HDF5 write {_fmt(r.get('h5_write_fps'))} frames/s; .mat write {_fmt(r.get('mat_write_fps'))} files/s")
            lines += ["", "| loader | workers | frames/s |", "|---|---|---|"]
            lines += [f"| {x['loader']} | {x['workers']} | {_fmt(x['fps'])} |" for x in r.get("loaders", [])]
            if isinstance(r.get("official_mat"), str):
                lines.append(f"official loader: {r['official_mat']}")
        elif p["part"] == "c" and r:
            bs = sorted({x["batch"] for x in r["rows"]})
            names = list(dict.fromkeys(x["variant"] for x in r["rows"]))
            lines += ["| variant | " + " | ".join(f"batch {b} samples/s" for b in bs) + " |", "|---" * (len(bs) + 1) + "|"]
            for n in names:
                cells = []
                for b in bs:
                    x = next((y for y in r["rows"] if y["variant"] == n and y["batch"] == b), {})
                    cells.append(_fmt(x.get("samples_per_s")) if "error" not in x else "error: " + x["error"][:60])
                lines.append(f"| {n} | " + " | ".join(cells) + " |")
            lines += [f"- {k}: {v:.2f}x" for k, v in r.get("ratios", {}).items()]
        elif p["part"] == "d" and r:
            lines += ["| variant | batch | frames/s | ms per call |", "|---|---|---|---|"]
            lines += [f"| {x['variant']} | {x.get('batch')} | {_fmt(x.get('frames_per_s'))} | {_fmt(x.get('latency_ms'), 3)} |"
                      if "error" not in x else f"| {x['variant']} | {x.get('batch')} | error: {x['error'][:80]} | |"
                      for x in r["rows"]]
        elif p["part"] == "e" and r:
            for sub in r.values():
                lines.append(f"`{sub['command']}`" + (f" ({sub['error'][:120]})" if sub.get("error") else ""))
                lines += ["", "```"] + [json.dumps(x) for x in sub.get("rows", [])] + ["```", ""]
        elif p["part"] == "f" and r:
            lines.append(f"{r['steps']} steps x {r['batch_size']} = {r['frames_seen']:,} frames in {r['train_minutes']} min "
                         f"({r['stopped']}); val {r['val_mse_db']} dB (LS-linear {r['val_ls_linear_mse_db']} dB); "
                         f"max in-distribution gap to the bound {r['max_gap_in_distribution_db']} dB; conditions: {r['conditions_given']}")
            cols = [c for c in r["suite_results"][0] if c.endswith("_db") and c != "snr_db"]
            lines += ["", "| sweep | SNR | DS ns | Dop Hz | " + " | ".join(cols) + " |", "|---" * (4 + len(cols)) + "|"]
            lines += [f"| {x['sweep']} | {x['snr_db']:g} | {x['delay_spread_ns']:g} | {x['doppler_hz']:g} | "
                      + " | ".join(f"{x[c]:.2f}" for c in cols) + " |" for x in r["suite_results"]]
        elif p["part"] == "g" and r:
            lines += [r["what"], "", "| batch | wavefront frames/s | Sionna channel/s | ratio |", "|---|---|---|---|"]
            lines += [f"| {x['batch']} | {_fmt(x['wavefront_frames_fps'], 1)} | {_fmt(x['sionna_channel_fps'], 1)} | "
                      f"{x['ratio_vs_sionna']:.2f}x |" for x in r["rows"]]
        if p.get("log_tail"):
            lines += ["", "```", p["log_tail"][-600:], "```"]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder (JSON, logs, checkpoint)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, CPU allowed: checks the script end to end in minutes")
    ap.add_argument("--parts", default="abcdefg", help="which parts to run, e.g. 'acf' (default: all)")
    ap.add_argument("--budget-s", type=float, help="wall-clock budget of the whole run [s] (default 530; --smoke runs without time boxes)")
    ap.add_argument("--setup", help="folder with whl/*.whl, deepwave.tar.xz and official/ to install first")
    ap.add_argument("--official", help="a copy of the official AdaFortiTran repository (holding src/)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--lr", type=float, default=1e-3, help="part f's peak learning rate")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--part-timeout", type=float, default=None, help=argparse.SUPPRESS)  # None: no time box
    ap.add_argument("--inject-failure", help=argparse.SUPPRESS)  # tests: this part raises, the others must still run
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        ap.error(f"--out {out}: is a file; give a folder")
    bad = sorted(set(args.parts) - set(PARTS))
    if bad:
        ap.error(f"--parts {args.parts!r}: unknown part {bad[0]!r}; choose letters from {''.join(PARTS)}")
    out.mkdir(parents=True, exist_ok=True)
    if args.budget_s is None:
        args.budget_s = 530.0

    if args.part:  # one part, in this (child) process
        import torch

        torch.set_num_threads(min(8, os.cpu_count() or 1) if not args.smoke else 2)
        dev = _device(args)
        t0 = time.perf_counter()
        try:
            if args.inject_failure == args.part:
                raise RuntimeError("injected failure (--inject-failure)")
            result = PARTS[args.part](args, dev, _sizes(args))
        except Exception:
            traceback.print_exc()
            return 1
        (out / f"part_{args.part}.json").write_text(json.dumps({"result": result, "seconds": time.perf_counter() - t0}, indent=1))
        return 0

    t_start = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    notes = _setup(Path(args.setup), env) if args.setup else []
    for n in notes:
        print(n, flush=True)
    probe = subprocess.run([sys.executable, "-c", "import torch, json; d = torch.cuda.is_available(); print(json.dumps("
                            "{'torch': torch.__version__, 'device': torch.cuda.get_device_name(0) if d else 'cpu'}))"],
                           capture_output=True, text=True, env=env)
    info = json.loads(probe.stdout.strip().splitlines()[-1]) if probe.returncode == 0 else {"torch": "?", "device": "?"}
    # --smoke checks the script end to end on any machine: a time box there would make a loaded
    # machine fail a correct script, so smoke parts run to completion (fixed sizes and steps).
    boxes = None if args.smoke else TIME_BOX
    results = {"device": info["device"], "torch": info["torch"], "smoke": args.smoke, "setup_notes": notes,
               "official_code": str(_official_path(args) or "not provided"), "parts": [], "seconds": 0.0}
    order = [p for p in PARTS if p in args.parts]
    for i, part in enumerate(order):
        box = None
        if boxes is not None:
            left = args.budget_s - (time.perf_counter() - t_start)
            later = sum(boxes[p] for p in order[i + 1:])
            box = boxes[part] if part != "f" else max(boxes["f"], left)
            box = min(box, max(left - later, 10.0))
        if part == "e":
            for proc in _BACKGROUND:
                proc.wait()
        print(f"--- part {part} ({PART_NAMES[part]}), " + (f"time box {box:.0f} s" if box else "no time box"), flush=True)
        rec = _run_part(part, args, env, box)
        print(f"    {rec['status']} in {rec['seconds']} s", flush=True)
        results["parts"].append(rec)
        results["seconds"] = time.perf_counter() - t_start
        (out / "results.json").write_text(json.dumps(results, indent=1))  # after each part: a killed run keeps the rest
    (out / "summary.md").write_text(summary_md(results))
    print(summary_md(results))
    return 0 if all(p["status"] == "ok" for p in results["parts"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
