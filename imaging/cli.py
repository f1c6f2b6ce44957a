"""``wavefront codesign``: learn a sensor layout or a receiver array jointly with its network."""
from __future__ import annotations

import argparse
from pathlib import Path

from wavefront.errors import ConfigError
from wavefront.utils import any_int, check_output_folder, finite_float, positive_int


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
    if args.image_size < max(pixels):
        raise ConfigError("pixels", args.pixels, f"the layout has more pixels than the {args.image_size}x{args.image_size} image")
    _positive("test_images", args.test_images)
    with cpu_flush_to_zero():  # see wave.cpu_flush_to_zero: a cheap guard against slow subnormal arithmetic
        result = run_layout_experiment(args.task, pixels, args.layout, args.epochs, args.seeds, args.out,
                                       image_size=args.image_size, num_train=args.train_images,
                                       num_val=args.val_images, num_test=args.test_images)
    s = result["summary"]
    print(f"test accuracy over seeds {args.seeds}: learned {s['learned']['mean']:.4f} +- {s['learned']['std']:.4f}, "
          f"regular {s['regular']['mean']:.4f} +- {s['regular']['std']:.4f}, "
          f"foveated {s['foveated']['mean']:.4f} +- {s['foveated']['std']:.4f}")
    for base in ("regular", "foveated"):
        print(f"  learned - {base}: {format_difference(s[f'learned_minus_{base}'])}")
    print(f"results in {args.out}")
    return 0


def _receivers(args: argparse.Namespace) -> int:
    from wavefront.imaging.codesign import WAVE_TASKS, format_difference, run_receiver_experiment
    from wavefront.imaging.wave import cpu_flush_to_zero

    if args.scene not in WAVE_TASKS:
        raise ConfigError("scene", args.scene, f"must be one of {', '.join(WAVE_TASKS)}")
    _positive("receivers", args.receivers)
    _positive("epochs", args.epochs)
    _positive("train_shots", args.train_shots)
    _positive("val_shots", args.val_shots)
    if not args.noise >= 0:  # also refuses nan
        raise ConfigError("noise", args.noise, "must be >= 0")
    check_output_folder("out", args.out)
    _positive("test_shots", args.test_shots)
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
    lay.add_argument("--task", default="stripe-glyph", help="image task (stripe-glyph)")
    lay.add_argument("--pixels", default="16x16", help="sensor pixels HxW")
    lay.add_argument("--layout", default="rectangular", choices=["rectangular", "curvilinear"])
    lay.add_argument("--epochs", type=positive_int, default=30)
    lay.add_argument("--seeds", type=any_int, nargs="+", default=[0, 1, 2, 3, 4])
    lay.add_argument("--image-size", type=positive_int, default=64, help="high-resolution scene size in pixels")
    lay.add_argument("--train-images", type=positive_int, default=2048)
    lay.add_argument("--val-images", type=positive_int, default=1024)
    lay.add_argument("--test-images", type=positive_int, default=1024, help="held-out images the results are reported on")
    lay.add_argument("--out", type=Path, default=Path("runs/layout"))
    lay.set_defaults(func=_layout)

    rec = sub.add_parser("receivers", help="learn K receiver positions jointly with a network; compare with regular "
                                           "arrays over the line and over the source patch")
    rec.add_argument("--scene", default="source-localisation", help="wave task (source-localisation)")
    rec.add_argument("--receivers", type=positive_int, default=8, help="K, the number of receivers")
    rec.add_argument("--epochs", type=positive_int, default=30)
    rec.add_argument("--seeds", type=any_int, nargs="+", default=[0, 1, 2, 3, 4])
    rec.add_argument("--noise", type=finite_float, default=3.0, help="trace noise std, in units of the field's RMS")
    rec.add_argument("--train-shots", type=positive_int, default=768)
    rec.add_argument("--val-shots", type=positive_int, default=256)
    rec.add_argument("--test-shots", type=positive_int, default=256, help="held-out shots the results are reported on")
    rec.add_argument("--out", type=Path, default=Path("runs/receivers"))
    rec.set_defaults(func=_receivers)

    codesign.set_defaults(func=lambda args: (codesign.print_help(), 2)[1])
