"""Co-design training: a sensor layout (or receiver set) learned jointly with its network.

Each seed trains, on the same data and epochs, the learnable sensor and fixed baselines with
the same sensor count (a regular sensor, and a hand-made one that uses what is known about
the task: a foveated layout, receivers spread over the source patch). Data come in three
splits: train, validation (kept for model selection; nothing selects on it yet) and a
held-out test split on which the results are reported. Comparisons are paired per seed:
the mean difference with its 95 % Student-t interval (:func:`paired_difference`).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from wavefront.errors import ConfigError
from wavefront.imaging.layouts import SensorSimulator, make_layout, regular_corners
from wavefront.imaging.tasks import (GlyphNet, SourceScenes, TraceNet, WaveScene, stripe_glyph_scenes,
                                     two_site_glyph_scenes)
from wavefront.imaging.wave import LearnableReceivers, regular_positions
from wavefront.utils import atomic_savefig, atomic_write_json

# Image tasks by name: (num, generator, size) -> (images [N, 1, size, size], labels [N]).
IMAGE_SCENES = {"stripe-glyph": stripe_glyph_scenes, "two-site-glyph": two_site_glyph_scenes}
IMAGE_TASKS = tuple(IMAGE_SCENES)
WAVE_TASKS = ("source-localisation",)


def _batches(n: int, batch: int, generator: torch.Generator):
    perm = torch.randperm(n, generator=generator)
    for i in range(0, n, batch):
        yield perm[i:i + batch]


# ----------------------------------------------------------------------------- statistics
def paired_difference(a: list[float], b: list[float]) -> dict:
    """Returns the mean of ``a - b`` (paired), its std, n, 95 % Student-t interval and two-sided p.

    ``ci95`` is ``mean -+ t_{0.975, n-1} std / sqrt(n)``; ``p_value`` is the paired t-test's.
    With n = 1 the interval is undefined (None) and so is p.
    """
    if len(a) != len(b) or not a:
        raise ConfigError("pairs", (len(a), len(b)), "need two equally long, non-empty lists")
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci95": None, "p_value": None}
    std = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    t = mean / (std / math.sqrt(n)) if std > 0 else math.copysign(math.inf, mean) if mean else 0.0
    p = float(2 * stats.t.sf(abs(t), n - 1)) if math.isfinite(t) else 0.0
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half], "p_value": p}


# ----------------------------------------------------------------------------- layouts
LAYOUT_SPLIT_SEEDS = {"train": 10_000, "val": 20_000, "test": 40_000}


def layout_splits(seed: int, num_train: int = 2048, num_val: int = 1024, num_test: int = 1024,
                  image_size: int = 64, task: str = "stripe-glyph") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Returns {"train", "val", "test"}: (images [N, 1, S, S] float32, labels [N] int64) of ``task``, fixed by ``seed``."""
    if task not in IMAGE_SCENES:
        raise ConfigError("task", task, f"must be one of {IMAGE_TASKS}")
    scenes = IMAGE_SCENES[task]
    try:  # the glyph sizes follow image_size, which the user sets: name it, and the smallest size that fits
        scenes(1, torch.Generator().manual_seed(0), image_size)
    except ConfigError as exc:
        fits = next((s for s in range(image_size + 1, 4 * image_size + 64) if _fits(scenes, s)), None)
        raise ConfigError("image_size", image_size, f"too small for {task} ({exc}); "
                                                    f"the smallest size that fits is {fits}") from None
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    return {name: scenes(sizes[name], torch.Generator().manual_seed(base + seed), image_size)
            for name, base in LAYOUT_SPLIT_SEEDS.items()}


def _fits(scenes, size: int) -> bool:
    try:
        scenes(1, torch.Generator().manual_seed(0), size)
    except ConfigError:
        return False
    return True


def accuracy(sensor: nn.Module, net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Returns the fraction of ``images`` [N, 1, S, S] the sensor + network classify as ``labels`` [N]."""
    with torch.no_grad():
        return float((net(sensor(images)).argmax(-1) == labels).float().mean())


def cross_entropy(sensor: nn.Module, net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Returns the mean cross-entropy (nats) of the sensor + network on ``images`` [N, 1, S, S], ``labels`` [N]."""
    with torch.no_grad():
        return float(F.cross_entropy(net(sensor(images)), labels))


def train_layout(task: str, pixels: tuple[int, int], layout: str, learnable: bool, epochs: int, seed: int,
                 num_train: int = 2048, num_val: int = 1024, num_test: int = 1024, image_size: int = 64,
                 batch: int = 64, lr: float = 2e-3, layout_lr: float = 5e-2) -> dict:
    """Returns {"val_accuracy", "test_accuracy", "test_loss", "sensor", "net", "corners", "example"} for one run.

    ``layout`` is ``rectangular`` or ``curvilinear`` (learnable or frozen at the regular
    grid) or ``foveated`` or ``two-fovea`` (always frozen). Data are regenerated from fixed seeds
    (:func:`layout_splits`), so every run of a seed sees the same images.
    """
    if task not in IMAGE_TASKS:
        raise ConfigError("task", task, f"must be one of {IMAGE_TASKS}")
    if layout in ("foveated", "two-fovea") and learnable:
        raise ConfigError("layout", layout, "is a fixed baseline; train it with learnable=False")
    torch.manual_seed(seed)
    data = layout_splits(seed, num_train, num_val, num_test, image_size, task)
    x_train, y_train = data["train"]
    sensor = SensorSimulator(make_layout(layout, pixels, (image_size, image_size)))
    for p in sensor.parameters():
        p.requires_grad_(learnable)
    net = GlyphNet()
    groups = [{"params": net.parameters(), "lr": lr}]
    if learnable:
        groups.append({"params": sensor.parameters(), "lr": layout_lr})
    opt = torch.optim.Adam(groups)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in _batches(num_train, batch, g):
            loss = F.cross_entropy(net(sensor(x_train[idx])), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        corners = sensor.layout.corners().detach()
    return {"val_accuracy": accuracy(sensor, net, *data["val"]), "test_accuracy": accuracy(sensor, net, *data["test"]),
            "test_loss": cross_entropy(sensor, net, *data["test"]),
            "sensor": sensor, "net": net, "corners": corners, "example": data["val"][0][0, 0]}


def plot_layouts(example: torch.Tensor, corners: dict[str, torch.Tensor], path: Path, title: str) -> None:
    """Writes a PNG: the layouts' cell grids drawn over an example scene [H, W]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(corners), figsize=(4 * len(corners), 4))
    for ax, (name, c) in zip(axes if len(corners) > 1 else [axes], corners.items()):
        ax.imshow(example.numpy(), cmap="gray", extent=(0, example.shape[1], example.shape[0], 0))
        c = c.numpy()
        for i in range(c.shape[0]):
            ax.plot(c[i, :, 1], c[i, :, 0], "r-", lw=0.6)
        for j in range(c.shape[1]):
            ax.plot(c[:, j, 1], c[:, j, 0], "r-", lw=0.6)
        ax.set_title(name)
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    try:
        atomic_savefig(fig, path, dpi=110)
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------- receivers
def _receiver_data_scale(field: torch.Tensor) -> float:
    return float(field.pow(2).mean().sqrt())


RECEIVER_STARTS = ("line", "patch")


def start_positions(start: str, num_receivers: int, scene: WaveScene) -> torch.Tensor:
    """Returns K positions [K, 2] (cells): evenly over the whole candidate line, or over the source patch's columns."""
    if start == "line":
        return regular_positions(num_receivers, scene.candidate)
    if start == "patch":
        sr = scene.source_region
        return regular_positions(num_receivers, scene.candidate, span=(sr.x0, sr.x1 - 1))
    raise ConfigError("start", start, f"must be one of {RECEIVER_STARTS}")


def train_receivers(task: str, num_receivers: int, learnable: bool, epochs: int, seed: int,
                    data: dict | None = None, scene: WaveScene = WaveScene(), num_train: int = 768,
                    num_val: int = 256, num_test: int = 256, batch: int = 32, lr: float = 2e-3,
                    receiver_lr: float = 3e-2, noise: float = 0.5, start: str = "line") -> dict:
    """Returns {"val_rmse_m", "test_rmse_m", "receivers", "net", "positions"} for one receiver run.

    Sources are localised from K noisy traces (noise std ``noise`` times the RMS of the
    recorded field). ``start`` places the K receivers (:func:`start_positions`); with
    ``learnable=False`` they stay there. ``data`` (from :func:`receiver_data`) lets several
    runs share one simulation; the noise draws depend on ``seed`` only.
    """
    if task not in WAVE_TASKS:
        raise ConfigError("task", task, f"must be one of {WAVE_TASKS}")
    torch.manual_seed(seed)
    receivers = LearnableReceivers(num_receivers, scene.candidate, scene.shape, learnable=learnable,
                                   initial_positions=start_positions(start, num_receivers, scene))
    if data is None:
        data = receiver_data(scene, num_train, num_val, num_test)
    f_train, s_train = data["train"]
    scale = _receiver_data_scale(f_train)
    ny, nx = scene.shape
    norm = torch.tensor([ny, nx], dtype=torch.float32)
    net = TraceNet(num_receivers)
    groups = [{"params": net.parameters(), "lr": lr}]
    if learnable:
        groups.append({"params": receivers.parameters(), "lr": receiver_lr})
    opt = torch.optim.Adam(groups)
    g = torch.Generator().manual_seed(seed)

    def predict(field: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        traces = receivers(field) / scale
        traces = traces + noise * torch.randn(traces.shape, generator=gen)
        return net(traces, receivers.positions() / norm)

    def rmse_m(split: str, noise_seed: int) -> float:
        field, sources = data[split]
        with torch.no_grad():
            err = (predict(field, torch.Generator().manual_seed(noise_seed)) - sources / norm) * norm * scene.dx_m
        return float(err.pow(2).sum(-1).mean().sqrt())

    for _ in range(epochs):
        for idx in _batches(len(f_train), batch, g):
            loss = F.mse_loss(predict(f_train[idx], g), s_train[idx] / norm)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {"val_rmse_m": rmse_m("val", 30_000 + seed), "test_rmse_m": rmse_m("test", 40_000 + seed),
            "receivers": receivers, "net": net, "positions": receivers.positions().detach()}


def receiver_data(scene: WaveScene, num_train: int, num_val: int, num_test: int = 256, kernel: str = "sinc") -> dict:
    """Returns {"train", "val", "test"}: (field [N, T, Hr, Wr], sources [N, 2]), simulated once for all runs.

    The three splits draw source positions from seeds 1, 2 and 3.
    """
    rec = LearnableReceivers(1, scene.candidate, scene.shape, kernel=kernel).recording
    sim = SourceScenes(scene)
    return {"train": sim.fields(num_train, 1, rec), "val": sim.fields(num_val, 2, rec),
            "test": sim.fields(num_test, 3, rec)}


def plot_receivers(scene: WaveScene, positions: dict[str, torch.Tensor], path: Path, title: str) -> None:
    """Writes a PNG: receiver positions of each array over the velocity model and source patch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    v = scene.velocity()
    im = ax.imshow(v.numpy(), cmap="viridis", extent=(0, v.shape[1], v.shape[0], 0))
    fig.colorbar(im, ax=ax, label="velocity (m/s)")
    sr = scene.source_region
    ax.add_patch(plt.Rectangle((sr.x0, sr.y0), sr.x1 - sr.x0, sr.y1 - sr.y0, fill=False, ec="w", ls="--", label="sources"))
    for (name, pos), marker in zip(positions.items(), ("rv", "wo", "c^")):
        p = pos.numpy()
        ax.plot(p[:, 1], p[:, 0], marker, ms=7, label=name, mfc="none" if marker[1] == "o" else None)
    ax.set_xlabel("x (cells)")
    ax.set_ylabel("depth (cells)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    try:
        atomic_savefig(fig, path, dpi=110)
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------- experiments
def summarise(per_seed: list[dict], metric: str, higher_is_better: bool, baselines: tuple[str, ...]) -> dict:
    """Returns per-arm mean and std of ``metric`` and, per baseline, the paired difference learned - baseline.

    ``per_seed`` rows hold ``{arm: {metric: value}}`` for ``"learned"`` and each baseline.
    ``better`` says whether the 95 % interval lies wholly on the learned arm's good side
    (above zero if ``higher_is_better``, else below); ``wins`` counts seeds.
    """
    arms = ("learned", *baselines)
    out: dict = {"metric": metric, "higher_is_better": higher_is_better, "n": len(per_seed)}
    for arm in arms:
        xs = [r[arm][metric] for r in per_seed]
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / max(1, len(xs) - 1))
        out[arm] = {"mean": mean, "std": std}
    for base in baselines:
        d = paired_difference([r["learned"][metric] for r in per_seed], [r[base][metric] for r in per_seed])
        sign = 1 if higher_is_better else -1
        wins = sum(sign * (r["learned"][metric] - r[base][metric]) > 0 for r in per_seed)
        d["better"] = d["ci95"] is not None and sign * d["ci95"][0 if sign > 0 else 1] > 0
        d["wins"] = f"{wins}/{len(per_seed)}"
        out[f"learned_minus_{base}"] = d
    return out


def format_difference(d: dict, unit: str = "") -> str:
    """Returns 'mean [lo, hi] (p, wins)' for a :func:`summarise` difference."""
    if d["ci95"] is None:
        return f"{d['mean']:+.4g}{unit} (one seed: no interval)"
    lo, hi = d["ci95"]
    return f"{d['mean']:+.4g}{unit}, 95 % CI [{lo:+.4g}, {hi:+.4g}], p = {d['p_value']:.3g}, wins {d['wins']}"


# The hand-made layouts a task's learned layout is compared with: the central fovea, and where the glyph sits at
# one of two off-centre sites a fovea at each (the central one alone is near chance there, a strawman)
HAND_LAYOUTS = {"stripe-glyph": ("foveated",), "two-site-glyph": ("foveated", "two-fovea")}


def run_layout_experiment(task: str, pixels: tuple[int, int], layout: str, epochs: int, seeds: list[int],
                          out: Path, log=print, **kwargs) -> dict:
    """Trains, per seed, the learned layout, the regular grid and the task's hand-made layouts (:data:`HAND_LAYOUTS`);
    writes JSON, plots, checkpoints.

    Returns the summary: per-seed validation and test accuracies, and the paired test-accuracy
    differences learned - regular and learned - each hand-made layout with 95 % intervals.
    """
    out = Path(out)
    hand = HAND_LAYOUTS.get(task, ("foveated",))
    per_seed = []
    for seed in seeds:
        runs = {"learned": train_layout(task, pixels, layout, True, epochs, seed, **kwargs),
                "regular": train_layout(task, pixels, layout, False, epochs, seed, **kwargs)}
        runs |= {h: train_layout(task, pixels, h, False, epochs, seed, **kwargs) for h in hand}
        row = {"seed": seed} | {arm: {"val_accuracy": r["val_accuracy"], "test_accuracy": r["test_accuracy"],
                                      "test_loss": r["test_loss"]} for arm, r in runs.items()}
        scores = ", ".join(f"{arm} {row[arm]['test_accuracy']:.4f}" for arm in ("regular", *hand))
        log(f"seed {seed}: test accuracy learned {layout} {row['learned']['test_accuracy']:.4f}, {scores}")
        per_seed.append(row)
        out.mkdir(parents=True, exist_ok=True)
        learned = runs["learned"]
        plot_layouts(learned["example"], {"regular": regular_corners(pixels, learned["example"].shape),
                                          **{h: runs[h]["corners"] for h in hand},
                                          f"learned {layout}": learned["corners"]},
                     out / f"layout_seed{seed}.png",
                     f"{task}, {pixels[0]}x{pixels[1]} pixels, seed {seed}: test accuracy learned "
                     f"{row['learned']['test_accuracy']:.3f}, "
                     + ", ".join(f"{arm} {row[arm]['test_accuracy']:.3f}" for arm in ("regular", *hand)))
        torch.save({"learned_sensor": learned["sensor"].state_dict(), "learned_net": learned["net"].state_dict(),
                    **{f"{arm}_net": runs[arm]["net"].state_dict() for arm in ("regular", *hand)},
                    "layout": layout, "pixels": pixels}, out / f"checkpoint_seed{seed}.pt")
    # The thread count changes the float reduction order and so the training path; a rerun must use the same
    # count, so the results record it.
    result = {"task": task, "pixels": list(pixels), "layout": layout, "epochs": epochs, "seeds": list(seeds),
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "config": {k: v for k, v in kwargs.items()}, "per_seed": per_seed,
              "baselines": ["regular", *hand], "summary": summarise(per_seed, "test_accuracy", True, ("regular", *hand))}
    atomic_write_json(out / "results.json", result, indent=2)
    return result


def run_receiver_experiment(task: str, num_receivers: int, epochs: int, seeds: list[int], out: Path,
                            log=print, scene: WaveScene = WaveScene(), num_train: int = 768, num_val: int = 256,
                            num_test: int = 256, **kwargs) -> dict:
    """Trains, per seed, learned receivers and two fixed arrays (whole line, source patch) on one shared simulation.

    Writes JSON, plots and checkpoints to ``out``; returns the summary (test RMSE in m and the
    paired differences learned - line and learned - patch with 95 % intervals).
    """
    out = Path(out)
    # Checks K against the candidate line before spending minutes on the simulation.
    LearnableReceivers(num_receivers, scene.candidate, scene.shape)
    data = receiver_data(scene, num_train, num_val, num_test)
    per_seed = []
    for seed in seeds:
        runs = {"learned": train_receivers(task, num_receivers, True, epochs, seed, data=data, scene=scene, **kwargs),
                "regular": train_receivers(task, num_receivers, False, epochs, seed, data=data, scene=scene, **kwargs),
                "patch": train_receivers(task, num_receivers, False, epochs, seed, data=data, scene=scene,
                                         start="patch", **kwargs)}
        row = {"seed": seed} | {arm: {"val_rmse_m": r["val_rmse_m"], "test_rmse_m": r["test_rmse_m"],
                                      "positions": r["positions"].tolist()} for arm, r in runs.items()}
        log(f"seed {seed}: test RMSE learned {row['learned']['test_rmse_m']:.2f} m, regular line "
            f"{row['regular']['test_rmse_m']:.2f} m, over the source patch {row['patch']['test_rmse_m']:.2f} m")
        per_seed.append(row)
        out.mkdir(parents=True, exist_ok=True)
        plot_receivers(scene, {"regular": runs["regular"]["positions"], "learned": runs["learned"]["positions"],
                               "patch": runs["patch"]["positions"]},
                       out / f"receivers_seed{seed}.png",
                       f"{task}, K={num_receivers}, seed {seed}\ntest RMSE learned {row['learned']['test_rmse_m']:.1f} m, "
                       f"line {row['regular']['test_rmse_m']:.1f} m, patch {row['patch']['test_rmse_m']:.1f} m")
        torch.save({"learned_receivers": runs["learned"]["receivers"].state_dict(),
                    "learned_net": runs["learned"]["net"].state_dict(), "regular_net": runs["regular"]["net"].state_dict(),
                    "patch_net": runs["patch"]["net"].state_dict(), "num_receivers": num_receivers},
                   out / f"checkpoint_seed{seed}.pt")
    result = {"task": task, "num_receivers": num_receivers, "epochs": epochs, "seeds": list(seeds),
              "threads": torch.get_num_threads(), "torch": torch.__version__,  # as the layout experiment: see there
              "config": {"num_train": num_train, "num_val": num_val, "num_test": num_test} | kwargs,
              "per_seed": per_seed, "summary": summarise(per_seed, "test_rmse_m", False, ("regular", "patch"))}
    atomic_write_json(out / "results.json", result, indent=2)
    return result
