"""``wavefront codesign``: learn a sensor layout or a receiver array jointly with its network."""
from __future__ import annotations

import argparse
from pathlib import Path

from wavefront.errors import ConfigError
from wavefront.utils import (check_output_folder, finite_float, nonnegative_int, positive_float,
                             positive_int, refuse_to_replace, seed_int, thread_count)


def _pixels(text: str) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ConfigError("pixels", text, "must look like HxW, e.g. 16x16") from None
    return h, w


def _positive(field: str, value: int) -> int:
    if value < 1:
        raise ConfigError(field, value, "must be a positive integer")
    return value


def _layout(args: argparse.Namespace) -> int:
    from wavefront.imaging.codesign import IMAGE_TASKS, format_difference, run_layout_experiment
    from wavefront.imaging.wave import cpu_flush_to_zero

    import torch

    if args.task not in IMAGE_TASKS:
        raise ConfigError("task", args.task, f"must be one of {', '.join(IMAGE_TASKS)}")
    pixels = _pixels(args.pixels)
    if min(pixels) < 1:
        raise ConfigError("pixels", args.pixels, "both sides must be positive integers")
    _positive("image_size", args.image_size)
    _positive("epochs", args.epochs)
    _positive("train_images", args.train_images)
    _positive("val_images", args.val_images)
    check_output_folder("out", args.out)
    refuse_to_replace("out", args.out, ("results.json",), args.overwrite)
    if args.image_size < max(pixels):
        raise ConfigError("pixels", args.pixels, f"the layout has more pixels than the {args.image_size}x{args.image_size} image")
    _positive("test_images", args.test_images)
    from wavefront.utils import check_memory

    counts = {k: getattr(args, k) for k in ("train_images", "val_images", "test_images")}
    n, size, worst = sum(counts.values()), args.image_size, max(counts, key=counts.get)
    hint = f"{n} images of {size}x{size} (train + val + test) are held at once; lower --image-size or the counts"
    # float32 scenes, held for the whole run: the counts at the default 64x64 first, so the message names the culprit
    check_memory(worst, counts[worst], 4 * min(size, 64) ** 2 * n, "cpu", hint)
    check_memory("image_size", size, 4 * size * size * n, "cpu", hint)
    with cpu_flush_to_zero():  # see wave.cpu_flush_to_zero: a cheap guard against slow subnormal arithmetic
        result = run_layout_experiment(args.task, pixels, args.layout, args.epochs, args.seeds, args.out,
                                       image_size=args.image_size, num_train=args.train_images,
                                       num_val=args.val_images, num_test=args.test_images)
    s = result["summary"]
    arms = ", ".join(f"{a} {s[a]['mean']:.4f} +- {s[a]['std']:.4f}" for a in ("learned", *result["baselines"]))
    print(f"{args.task}, {torch.get_num_threads()} torch thread(s); test accuracy over seeds {args.seeds}: {arms}")
    for base in result["baselines"]:
        print(f"  learned - {base}: {format_difference(s[f'learned_minus_{base}'])}")
    print(f"results in {args.out}")
    return 0


# Options of the user-scene path (--velocity ...) and of the built-in scene (--scene ...): neither takes the other's.
_SCENE_REQUIRED = ("dx", "dt", "nt", "sources", "candidates", "num_receivers")
_SCENE_ONLY = ("dx", "dt", "nt", "sources", "candidates", "num_receivers", "min_spacing", "task", "perturbation", "loss",
               "seed", "restarts")
_BUILTIN_ONLY = ("scene", "receivers", "epochs", "seeds", "noise", "train_shots", "val_shots", "test_shots")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scene_receivers(args: argparse.Namespace) -> int:
    """``codesign receivers --velocity ...``: K of the candidate cells for the user's own scene, recorded once."""
    import time

    from wavefront.imaging.scene import (load_candidates, load_perturbation, load_sources, load_velocity,
                                         resolve_task, run_scene_codesign)

    for name in _BUILTIN_ONLY:
        if getattr(args, name) is not None:
            raise ConfigError(name, getattr(args, name), "belongs to the built-in scene; it cannot be combined with --velocity")
    for name in _SCENE_REQUIRED:
        if getattr(args, name) is None:
            raise ConfigError(name, None, f"{_option(name)} is required with --velocity")
    min_spacing = 0.0 if args.min_spacing is None else args.min_spacing
    if not min_spacing >= 0:
        raise ConfigError("min_spacing", min_spacing, "must be >= 0 (cells)")
    task, loss = resolve_task(args.task, args.loss)
    if args.perturbation is None and args.task in ("sensitivity", "inversion"):
        raise ConfigError("perturbation", None, f"--task {args.task} needs --perturbation P.npy (m/s, added to the model)")
    v = load_velocity(args.velocity)
    shape = tuple(v.shape)
    sources, freq_hz, wavelet = load_sources(args.sources, shape, args.nt)
    if args.task == "localisation" and len(sources) < 2:
        raise ConfigError("sources.positions", sources.tolist(), "--task localisation needs at least two sources to tell apart")
    mask = load_candidates(args.candidates, shape)
    dv = load_perturbation(args.perturbation, v) if args.perturbation is not None else None
    check_output_folder("out", args.out)
    refuse_to_replace("out", args.out, ("results.json",), args.overwrite)
    seed = 0 if args.seed is None else args.seed
    start = time.perf_counter()
    result = run_scene_codesign(v, args.dx, args.dt, args.nt, sources, freq_hz, mask, args.num_receivers, min_spacing,
                                loss, task, args.out, perturbation=dv, seed=seed,
                                restarts=8 if args.restarts is None else args.restarts, wavelet=wavelet)
    seconds = time.perf_counter() - start
    bl = result["baselines"]
    print(f"{task}: loss learned {result['learned']['loss']:.6g} ({result['learned']['method']}), "
          + ", ".join(f"{n} {b['loss']:.6g}" for n, b in bl.items()))
    print(f"learned receivers (row, col): {result['learned']['positions']}")
    print(f"{result['loss_evaluations']} loss evaluations, {seconds:.1f} s; results in {args.out}")
    return 0


def _check_shot_memory(args: argparse.Namespace) -> None:
    """Refuses shot counts whose recordings (float32 [N, T, Hr, Wr], all three splits held at once) would not fit."""
    from wavefront.imaging.tasks import WaveScene
    from wavefront.utils import check_memory

    scene = WaveScene()
    hr, wr = scene.candidate.shape
    per_shot = 4 * (scene.nt // scene.decimate) * hr * wr
    counts = {k: getattr(args, k) for k in ("train_shots", "val_shots", "test_shots")}
    worst = max(counts, key=counts.get)
    check_memory(worst, counts[worst], per_shot * sum(counts.values()), "cpu",
                 f"{sum(counts.values())} recorded shots (train + val + test, {per_shot / 1e3:.0f} kB each) are held "
                 "at once; lower the shot counts")


def _receivers(args: argparse.Namespace) -> int:
    from wavefront.imaging.codesign import WAVE_TASKS, format_difference, run_receiver_experiment
    from wavefront.imaging.wave import cpu_flush_to_zero

    if args.velocity is not None:
        return _scene_receivers(args)
    for name in _SCENE_ONLY:
        if getattr(args, name) is not None:
            raise ConfigError(name, getattr(args, name), "needs --velocity (the user-scene path)")
    defaults = {"scene": "source-localisation", "receivers": 8, "epochs": 30, "seeds": [0, 1, 2, 3, 4], "noise": 3.0,
                "train_shots": 768, "val_shots": 256, "test_shots": 256}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.scene not in WAVE_TASKS:
        raise ConfigError("scene", args.scene, f"must be one of {', '.join(WAVE_TASKS)}")
    _positive("receivers", args.receivers)
    _positive("epochs", args.epochs)
    _positive("train_shots", args.train_shots)
    _positive("val_shots", args.val_shots)
    if not args.noise >= 0:  # also refuses nan
        raise ConfigError("noise", args.noise, "must be >= 0")
    check_output_folder("out", args.out)
    refuse_to_replace("out", args.out, ("results.json",), args.overwrite)
    _positive("test_shots", args.test_shots)
    _check_shot_memory(args)
    with cpu_flush_to_zero():
        result = run_receiver_experiment(args.scene, args.receivers, args.epochs, args.seeds, args.out,
                                         noise=args.noise, num_train=args.train_shots, num_val=args.val_shots,
                                         num_test=args.test_shots)
    s = result["summary"]
    print(f"test source RMSE over seeds {args.seeds}: learned {s['learned']['mean']:.2f} +- {s['learned']['std']:.2f} m, "
          f"regular line {s['regular']['mean']:.2f} +- {s['regular']['std']:.2f} m, "
          f"over the source patch {s['patch']['mean']:.2f} +- {s['patch']['std']:.2f} m")
    for base in ("regular", "patch"):
        print(f"  learned - {base}: {format_difference(s[f'learned_minus_{base}'], ' m')}")
    print(f"results in {args.out}")
    return 0


def add_commands(subparsers) -> None:
    """Adds ``codesign layout`` and ``codesign receivers`` to the wavefront parser."""
    codesign = subparsers.add_parser("codesign", help="learn sensor layouts or receiver positions with the network")
    sub = codesign.add_subparsers(dest="codesign_command", metavar="WHAT", parser_class=type(codesign))

    lay = sub.add_parser("layout", help="learn a pixel layout jointly with a classifier; compare with the regular "
                                        "grid and a foveated layout")
    lay.add_argument("--task", default="stripe-glyph", help="image task: stripe-glyph (glyph near the centre) or "
                                                         "two-site-glyph (glyph at one of two off-centre sites); default "
                                                         "stripe-glyph")
    lay.add_argument("--pixels", default="16x16", help="sensor pixels HxW (default 16x16)")
    lay.add_argument("--layout", default="rectangular", choices=["rectangular", "curvilinear"],
                     help="the learned layout's family (default rectangular)")
    lay.add_argument("--epochs", type=positive_int, default=30, help="training epochs per layout and seed (default 30)")
    lay.add_argument("--seeds", type=seed_int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds (default 0 1 2 3 4)")
    lay.add_argument("--image-size", type=positive_int, default=64, help="high-resolution scene size in pixels (default 64)")
    lay.add_argument("--train-images", type=positive_int, default=2048, help="default 2048")
    lay.add_argument("--val-images", type=positive_int, default=1024, help="default 1024")
    lay.add_argument("--test-images", type=positive_int, default=1024,
                     help="held-out images the results are reported on (default 1024)")
    lay.add_argument("--threads", type=thread_count, help="torch CPU threads (default: torch's, one per core, at most the container's CPU quota); results "
                                                        "depend on it, and results.json records it")
    lay.add_argument("--out", type=Path, default=Path("runs/layout"), help="results folder (default runs/layout)")
    lay.add_argument("--overwrite", action="store_true", help="replace the results an earlier run left in --out")
    lay.set_defaults(func=_layout)

    rec = sub.add_parser("receivers", help="place K receivers: on your own scene (--velocity ...: record once, choose K "
                                           "of the candidate cells), or learn them with a network on the built-in scene")
    scene = rec.add_argument_group("your own scene (--velocity)")
    scene.add_argument("--velocity", help="velocity model, a 2-D array in m/s (.npy, or .h5 with one dataset)")
    scene.add_argument("--dx", type=positive_float, help="cell size in m (required with --velocity)")
    scene.add_argument("--dt", type=positive_float,
                       help="sample interval in s, above the CFL limit sub-stepped (required with --velocity)")
    scene.add_argument("--nt", type=positive_int, help="time samples (required with --velocity)")
    scene.add_argument("--sources", help='JSON {"positions": [[row, col], ...], "frequency_hz": f}: one Ricker shot each '
                                               '(or add "wavelet": "w.npy", nt samples at --dt); required with --velocity')
    scene.add_argument("--candidates", help="allowed cells: a boolean mask .npy of the model's shape, or r0:r1,c0:c1 "
                                            "(required with --velocity)")
    scene.add_argument("--num-receivers", type=positive_int, help="K receivers to place (required with --velocity)")
    scene.add_argument("--min-spacing", type=finite_float, help="minimum distance between receivers, in cells (default 0)")
    scene.add_argument("--task", help="built-in loss: sensitivity or inversion (need --perturbation), or localisation; "
                                      "--task or --loss is required with --velocity")
    scene.add_argument("--perturbation", help="velocity perturbation .npy (m/s, added to the model), [rows, cols]; "
                                              "[M, rows, cols] for --task inversion (one Jacobian column each)")
    scene.add_argument("--loss", help="your loss, module:function or file.py:function, called as loss(data [S, K, nt], batch)")
    scene.add_argument("--seed", type=seed_int, help="seed of the random baseline and the random restarts (default 0)")
    scene.add_argument("--restarts", type=nonnegative_int, help="seeded random starts for the swap search, besides "
                                                               "greedy and the best baseline (default 8)")
    builtin = rec.add_argument_group("built-in scene (source-localisation with a network)")
    builtin.add_argument("--scene", help="wave task: source-localisation (the default and only one)")
    builtin.add_argument("--receivers", type=positive_int, help="K, the number of receivers (default 8)")
    builtin.add_argument("--epochs", type=positive_int, help="default 30")
    builtin.add_argument("--seeds", type=seed_int, nargs="+", help="default 0 1 2 3 4")
    builtin.add_argument("--noise", type=finite_float, help="trace noise std, in units of the field's RMS (default 3)")
    builtin.add_argument("--train-shots", type=positive_int, help="default 768")
    builtin.add_argument("--val-shots", type=positive_int, help="default 256")
    builtin.add_argument("--test-shots", type=positive_int, help="held-out shots the results are reported on (default 256)")
    rec.add_argument("--threads", type=thread_count, help="torch CPU threads (default: torch's, one per core, at most the container's CPU quota)")
    rec.add_argument("--out", type=Path, default=Path("runs/receivers"), help="results folder (default runs/receivers)")
    rec.add_argument("--overwrite", action="store_true", help="replace the results an earlier run left in --out")
    rec.set_defaults(func=_receivers)

    codesign.set_defaults(func=lambda args: (codesign.print_help(), 2)[1])
