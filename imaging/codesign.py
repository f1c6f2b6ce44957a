"""Co-design training: a sensor layout (or receiver set) learned jointly with its network.

Each run trains, on the same data, epochs and seed, the learnable sensor and a fixed
regular sensor with the same sensor count, and returns both task metrics. One readable
loop per task; plots and checkpoints are written by :func:`save_run`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wavefront.errors import ConfigError
from wavefront.imaging.layouts import SensorSimulator, make_layout, regular_corners
from wavefront.imaging.tasks import GlyphNet, SourceScenes, TraceNet, WaveScene, stripe_glyph_scenes
from wavefront.imaging.wave import LearnableReceivers

IMAGE_TASKS = ("stripe-glyph",)
WAVE_TASKS = ("source-localisation",)


def _batches(n: int, batch: int, generator: torch.Generator):
    perm = torch.randperm(n, generator=generator)
    for i in range(0, n, batch):
        yield perm[i:i + batch]


# ----------------------------------------------------------------------------- layouts
def train_layout(task: str, pixels: tuple[int, int], layout: str, learnable: bool, epochs: int, seed: int,
                 num_train: int = 2048, num_val: int = 1024, image_size: int = 64, batch: int = 64,
                 lr: float = 2e-3, layout_lr: float = 5e-2) -> dict:
    """Returns {"val_accuracy", "sensor", "net", "corners"} for one layout co-design run.

    ``learnable=False`` trains the network behind the fixed regular layout (the baseline).
    Data are regenerated from fixed seeds, so every run of a seed sees the same images.
    """
    if task not in IMAGE_TASKS:
        raise ConfigError("task", task, f"must be one of {IMAGE_TASKS}")
    torch.manual_seed(seed)
    x_train, y_train = stripe_glyph_scenes(num_train, torch.Generator().manual_seed(10_000 + seed), image_size)
    x_val, y_val = stripe_glyph_scenes(num_val, torch.Generator().manual_seed(20_000 + seed), image_size)
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
        acc = float((net(sensor(x_val)).argmax(-1) == y_val).float().mean())
        corners = sensor.layout.corners().detach()
    return {"val_accuracy": acc, "sensor": sensor, "net": net, "corners": corners, "example": x_val[0, 0]}


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
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- receivers
def _receiver_data_scale(field: torch.Tensor) -> float:
    return float(field.pow(2).mean().sqrt())


def train_receivers(task: str, num_receivers: int, learnable: bool, epochs: int, seed: int,
                    data: dict | None = None, scene: WaveScene = WaveScene(), num_train: int = 768,
                    num_val: int = 256, batch: int = 32, lr: float = 2e-3, receiver_lr: float = 3e-2,
                    noise: float = 0.5) -> dict:
    """Returns {"val_rmse_m", "receivers", "net", "positions"} for one receiver co-design run.

    Sources are localised from K noisy traces (noise std ``noise`` times the RMS of the
    recorded field). ``data`` (from :func:`receiver_data`) lets several runs share one
    simulation; the noise draws depend on ``seed`` only.
    """
    if task not in WAVE_TASKS:
        raise ConfigError("task", task, f"must be one of {WAVE_TASKS}")
    torch.manual_seed(seed)
    receivers = LearnableReceivers(num_receivers, scene.candidate, scene.shape, learnable=learnable)
    if data is None:
        data = receiver_data(scene, num_train, num_val)
    f_train, s_train, f_val, s_val = data["train"] + data["val"]
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

    for _ in range(epochs):
        for idx in _batches(len(f_train), batch, g):
            loss = F.mse_loss(predict(f_train[idx], g), s_train[idx] / norm)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        err = (predict(f_val, torch.Generator().manual_seed(30_000 + seed)) - s_val / norm) * norm * scene.dx_m
        rmse = float(err.pow(2).sum(-1).mean().sqrt())
    return {"val_rmse_m": rmse, "receivers": receivers, "net": net, "positions": receivers.positions().detach()}


def receiver_data(scene: WaveScene, num_train: int, num_val: int, kernel: str = "sinc") -> dict:
    """Returns {"train": (field, sources), "val": (field, sources)} simulated once for all runs."""
    rec = LearnableReceivers(1, scene.candidate, scene.shape, kernel=kernel).recording
    sim = SourceScenes(scene)
    return {"train": sim.fields(num_train, 1, rec), "val": sim.fields(num_val, 2, rec)}


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
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- saving
def summarise(per_seed: list[dict], metric: str, higher_is_better: bool) -> dict:
    """Returns mean, std and win count of learned vs regular over seeds."""
    def stats(key):
        xs = [r[key][metric] for r in per_seed]
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / max(1, len(xs) - 1))
        return {"mean": mean, "std": std}

    learned, regular = stats("learned"), stats("regular")
    better = (lambda a, b: a > b) if higher_is_better else (lambda a, b: a < b)
    wins = sum(better(r["learned"][metric], r["regular"][metric]) for r in per_seed)
    return {"metric": metric, "learned": learned, "regular": regular,
            "learned_beats_regular_on_mean": better(learned["mean"], regular["mean"]),
            "seeds_won": f"{wins}/{len(per_seed)}"}


# ----------------------------------------------------------------------------- experiments
def run_layout_experiment(task: str, pixels: tuple[int, int], layout: str, epochs: int, seeds: list[int],
                          out: Path, log=print, **kwargs) -> dict:
    """Trains learned and regular layouts for each seed; writes JSON, plots and checkpoints to ``out``.

    Returns the summary (per-seed validation accuracies, mean and std over seeds).
    """
    out = Path(out)
    per_seed = []
    for seed in seeds:
        learned = train_layout(task, pixels, layout, True, epochs, seed, **kwargs)
        regular = train_layout(task, pixels, layout, False, epochs, seed, **kwargs)
        row = {"seed": seed, "learned": {"val_accuracy": learned["val_accuracy"]},
               "regular": {"val_accuracy": regular["val_accuracy"]}}
        log(f"seed {seed}: learned {layout} accuracy {learned['val_accuracy']:.4f}, "
            f"regular accuracy {regular['val_accuracy']:.4f}")
        per_seed.append(row)
        out.mkdir(parents=True, exist_ok=True)
        plot_layouts(learned["example"], {"regular": regular_corners(pixels, learned["example"].shape),
                                          f"learned {layout}": learned["corners"]},
                     out / f"layout_seed{seed}.png",
                     f"{task}, {pixels[0]}x{pixels[1]} pixels, seed {seed}\naccuracy learned "
                     f"{learned['val_accuracy']:.3f} vs regular {regular['val_accuracy']:.3f}")
        torch.save({"learned_sensor": learned["sensor"].state_dict(), "learned_net": learned["net"].state_dict(),
                    "regular_net": regular["net"].state_dict(), "layout": layout, "pixels": pixels},
                   out / f"checkpoint_seed{seed}.pt")
    result = {"task": task, "pixels": list(pixels), "layout": layout, "epochs": epochs, "seeds": list(seeds),
              "per_seed": per_seed, "summary": summarise(per_seed, "val_accuracy", higher_is_better=True)}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    return result


def run_receiver_experiment(task: str, num_receivers: int, epochs: int, seeds: list[int], out: Path,
                            log=print, scene: WaveScene = WaveScene(), num_train: int = 768, num_val: int = 256,
                            **kwargs) -> dict:
    """Trains learned and regular K-receiver arrays per seed on one shared simulation.

    Writes JSON, plots and checkpoints to ``out``; returns the summary (validation RMSE in m).
    """
    out = Path(out)
    # Checks K against the candidate line before spending minutes on the simulation.
    LearnableReceivers(num_receivers, scene.candidate, scene.shape)
    data = receiver_data(scene, num_train, num_val)
    per_seed = []
    for seed in seeds:
        learned = train_receivers(task, num_receivers, True, epochs, seed, data=data, scene=scene, **kwargs)
        regular = train_receivers(task, num_receivers, False, epochs, seed, data=data, scene=scene, **kwargs)
        row = {"seed": seed, "learned": {"val_rmse_m": learned["val_rmse_m"], "positions": learned["positions"].tolist()},
               "regular": {"val_rmse_m": regular["val_rmse_m"], "positions": regular["positions"].tolist()}}
        log(f"seed {seed}: learned array RMSE {learned['val_rmse_m']:.2f} m, regular array RMSE {regular['val_rmse_m']:.2f} m")
        per_seed.append(row)
        out.mkdir(parents=True, exist_ok=True)
        plot_receivers(scene, {"regular": regular["positions"], "learned": learned["positions"]},
                       out / f"receivers_seed{seed}.png",
                       f"{task}, K={num_receivers}, seed {seed}\nRMSE learned {learned['val_rmse_m']:.1f} m "
                       f"vs regular {regular['val_rmse_m']:.1f} m")
        torch.save({"learned_receivers": learned["receivers"].state_dict(), "learned_net": learned["net"].state_dict(),
                    "regular_net": regular["net"].state_dict(), "num_receivers": num_receivers},
                   out / f"checkpoint_seed{seed}.pt")
    result = {"task": task, "num_receivers": num_receivers, "epochs": epochs, "seeds": list(seeds),
              "per_seed": per_seed, "summary": summarise(per_seed, "val_rmse_m", higher_is_better=False)}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    return result
