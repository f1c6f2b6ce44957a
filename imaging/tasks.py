"""Co-design tasks: synthetic scenes whose information is not uniform over the field.

- :func:`stripe_glyph_scenes`: an image task for sensor layouts. A small glyph near the
  centre carries the class in fine stripes; the rest of the field is clutter. Stripes of
  period 4 average to the same grey over any aligned 4-pixel cell, so a regular 4x
  down-sampling sensor sees the class only through the glyph's border, while a layout that
  spends its pixels on the centre can resolve it.
- :func:`two_site_glyph_scenes`: the same glyph classes at one of two off-centre sites,
  with a per-sample jitter and glyph size, so a hand-made central fovea misses the cue.
- :class:`SourceScenes`: a wave task for receiver placement. A Ricker source at an unknown
  position in a subsurface patch of a fixed layered model with an inclusion (OpenFWI scale:
  70 x 70 cells, dx 10 m, 15 Hz); receivers on a surface line record it with noise.

Small local networks (:class:`GlyphNet`, :class:`TraceNet`) stand in until the estimator
registry offers suitable ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wavefront.errors import ConfigError
from wavefront.imaging.wave import Region, add_inclusion, layered_velocity, record_region, ricker

GLYPH_CLASSES = ("horizontal", "vertical", "checker", "flat")


def stripe_glyph_scenes(num: int, generator: torch.Generator, size: int = 64, glyph: int = 16,
                        jitter: int = 3, periods: tuple[int, ...] = (4, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (images [num, 1, size, size] float32 in [0, 1], labels [num] int64 in 0..3).

    The glyph (``glyph`` px square, top-left within ``jitter`` px of centred) holds
    horizontal stripes, vertical stripes, a checkerboard, or flat grey of the same mean,
    with a stripe period drawn from ``periods`` (px) and a contrast drawn from [0.5, 1];
    smooth clutter and pixel noise fill the rest. Period-4 stripes are invisible to a
    regular sensor of 4-px cells; period-8 ones are visible, which gives a learned layout
    a gradient towards the centre to start from.
    """
    if glyph + 2 * jitter > size:
        raise ConfigError("glyph", glyph, f"with jitter {jitter} does not fit a {size}x{size} image")
    labels = torch.randint(0, 4, (num,), generator=generator)
    period = torch.tensor(periods)[torch.randint(0, len(periods), (num,), generator=generator)]
    coarse = torch.rand(num, 1, 5, 5, generator=generator)
    images = 0.2 + 0.4 * F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    images = images + 0.05 * torch.randn(num, 1, size, size, generator=generator)
    yy, xx = torch.meshgrid(torch.arange(glyph), torch.arange(glyph), indexing="ij")
    patterns = {}
    for p in periods:
        half = p // 2
        patterns[p] = torch.stack([
            ((yy // half) % 2).float(), ((xx // half) % 2).float(), (((yy // half) + (xx // half)) % 2).float(),
            torch.full((glyph, glyph), 0.5),
        ])
    contrast = 0.5 + 0.5 * torch.rand(num, generator=generator)
    offsets = torch.randint(-jitter, jitter + 1, (num, 2), generator=generator) + (size - glyph) // 2
    for n in range(num):
        y0, x0 = int(offsets[n, 0]), int(offsets[n, 1])
        pattern = patterns[int(period[n])][labels[n]]
        images[n, 0, y0:y0 + glyph, x0:x0 + glyph] = 0.5 + contrast[n] * (pattern - 0.5)
    return images.clamp(0, 1), labels


def _glyph_patterns(glyph: int, periods: tuple[int, ...]) -> dict[int, torch.Tensor]:
    """Returns {period: [4, glyph, glyph]}: horizontal, vertical, checker and flat-grey patterns in [0, 1]."""
    yy, xx = torch.meshgrid(torch.arange(glyph), torch.arange(glyph), indexing="ij")
    out = {}
    for p in periods:
        half = p // 2
        out[p] = torch.stack([
            ((yy // half) % 2).float(), ((xx // half) % 2).float(), (((yy // half) + (xx // half)) % 2).float(),
            torch.full((glyph, glyph), 0.5),
        ])
    return out


def two_site_glyph_sites(size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Returns the default glyph centres (row, col) of :func:`two_site_glyph_scenes`: 3/16 and 13/16 of the image."""
    a, b = round(3 * size / 16), round(13 * size / 16)
    return (a, a), (b, b)


def two_site_glyph_scenes(num: int, generator: torch.Generator, size: int = 64, glyphs: tuple[int, ...] | None = None,
                          jitter: int | None = None, periods: tuple[int, ...] = (4, 8),
                          sites: tuple[tuple[int, int], ...] | None = None,
                          return_boxes: bool = False):
    """Returns (images [num, 1, size, size] in [0, 1], labels [num] int64 in 0..3), and boxes [num, 4] if asked.

    The :func:`stripe_glyph_scenes` classes, but the glyph is not at the centre: each image
    draws one of two sites (default :func:`two_site_glyph_sites`, off-centre on the diagonal,
    at 12 and 52 px of a 64 px image), a glyph side from ``glyphs`` (px: the scale varies; default
    10, 12, 14 px at 64 px, scaled with ``size``) and a jitter of up to ``jitter`` px in each
    direction around the site (default 3 px at 64 px, scaled). A fovea at the centre
    misses the glyph; a regular 4 px sensor sees period-4 stripes as flat grey inside it; a
    layout must spend its fine cells on both sites (rows and columns through each) to
    resolve every sample. ``boxes`` are (y0, x0, y1, x1) in pixels, end exclusive.
    """
    sites = two_site_glyph_sites(size) if sites is None else sites
    if glyphs is None:
        glyphs = tuple(sorted({max(4, 2 * round(g * size / 128)) for g in (10, 12, 14)}))
    if jitter is None:
        jitter = round(3 * size / 64)
    for cy, cx in sites:
        for g in glyphs:
            if min(cy, cx) - jitter - g // 2 < 0 or max(cy, cx) + jitter + g - g // 2 > size:
                raise ConfigError("glyphs", glyphs, f"with jitter {jitter} around site {(cy, cx)} do not fit a "
                                                    f"{size}x{size} image")
    labels = torch.randint(0, 4, (num,), generator=generator)
    period = torch.tensor(periods)[torch.randint(0, len(periods), (num,), generator=generator)]
    side = torch.tensor(glyphs)[torch.randint(0, len(glyphs), (num,), generator=generator)]
    site = torch.randint(0, len(sites), (num,), generator=generator)
    shift = torch.randint(-jitter, jitter + 1, (num, 2), generator=generator)
    coarse = torch.rand(num, 1, 5, 5, generator=generator)
    images = 0.2 + 0.4 * F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    images = images + 0.05 * torch.randn(num, 1, size, size, generator=generator)
    contrast = 0.5 + 0.5 * torch.rand(num, generator=generator)
    patterns = {g: _glyph_patterns(g, periods) for g in glyphs}
    boxes = torch.empty(num, 4, dtype=torch.int64)
    for n in range(num):
        g = int(side[n])
        cy, cx = sites[int(site[n])]
        y0, x0 = cy + int(shift[n, 0]) - g // 2, cx + int(shift[n, 1]) - g // 2
        pattern = patterns[g][int(period[n])][labels[n]]
        images[n, 0, y0:y0 + g, x0:x0 + g] = 0.5 + contrast[n] * (pattern - 0.5)
        boxes[n] = torch.tensor([y0, x0, y0 + g, x0 + g])
    images = images.clamp(0, 1)
    return (images, labels, boxes) if return_boxes else (images, labels)


class GlyphNet(nn.Module):
    """A small CNN classifier: sensor images [B, 1, h, w] -> logits [B, num_classes]."""

    def __init__(self, num_classes: int = 4, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1, stride=2), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass(frozen=True)
class WaveScene:
    """Geometry and physics of the receiver task (OpenFWI scale by default)."""

    shape: tuple[int, int] = (70, 70)
    dx_m: float = 10.0
    dt_s: float = 0.001
    freq_hz: float = 15.0
    nt: int = 600
    decimate: int = 4  # keep every 4th sample (4 ms) after recording: Nyquist 125 Hz
    source_region: Region = Region(35, 60, 8, 30)  # rows (depth) and columns sources fall in
    candidate: Region = Region(2, 3, 4, 66)  # a surface line of 62 cells at depth 20 m
    pml_width: int = 20

    def velocity(self) -> torch.Tensor:
        """Returns the fixed model [ny, nx] (m/s): three layers and a fast inclusion."""
        ny = self.shape[0]
        v = layered_velocity(self.shape, [int(0.3 * ny), int(0.6 * ny)], [1800.0, 2400.0, 3000.0])
        return add_inclusion(v, (0.45 * ny, 0.55 * self.shape[1]), 0.1 * ny, 3500.0)


class SourceScenes:
    """Recorded candidate-line wavefields for random source positions in a fixed model.

    ``fields(num, seed, recording)`` returns (field [num, nt/decimate, Hr, Wr] float32,
    source positions [num, 2] in cells). Simulation happens once; receivers then sample it.
    """

    def __init__(self, scene: WaveScene = WaveScene()):
        self.scene = scene

    def fields(self, num: int, seed: int, recording: Region, batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.scene
        sr = s.source_region
        if not (0 <= sr.y0 < sr.y1 <= s.shape[0] and 0 <= sr.x0 < sr.x1 <= s.shape[1]):
            raise ConfigError("source_region", sr, f"must lie inside the {s.shape[0]}x{s.shape[1]} model")
        g = torch.Generator().manual_seed(seed)
        rows = torch.randint(sr.y0, sr.y1, (num,), generator=g)
        cols = torch.randint(sr.x0, sr.x1, (num,), generator=g)
        sources = torch.stack([rows, cols], dim=-1)
        v = s.velocity()
        wavelet = ricker(s.freq_hz, s.nt, s.dt_s)
        out = []
        for start in range(0, num, batch):
            loc = sources[start:start + batch].unsqueeze(1)
            amp = wavelet.reshape(1, 1, -1).expand(len(loc), 1, -1).contiguous()
            field = record_region(v, s.dx_m, s.dt_s, amp, loc, recording, pml_width=s.pml_width, freq_hz=s.freq_hz)
            out.append(field[:, s.decimate - 1::s.decimate].contiguous())
        return torch.cat(out), sources.float()


class TraceNet(nn.Module):
    """A small 1-D CNN over time: receiver data [B, K, T] (+ positions) -> 2 outputs.

    The receiver positions [K, 2] (normalised to ~[0, 1]) are appended as constant
    channels, so the network knows where each trace was recorded as the receivers move.
    """

    def __init__(self, num_receivers: int, width: int = 64, outputs: int = 2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(3 * num_receivers, width, 9, padding=4), nn.GELU(),
            nn.Conv1d(width, width, 9, padding=4, stride=2), nn.GELU(),
            nn.Conv1d(width, width, 9, padding=4, stride=2), nn.GELU(),
            nn.AdaptiveAvgPool1d(4), nn.Flatten(), nn.Linear(4 * width, width), nn.GELU(), nn.Linear(width, outputs),
        )

    def forward(self, data: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        b, k, t = data.shape
        pos = positions.reshape(1, 2 * k, 1).expand(b, -1, t)
        return self.net(torch.cat([data, pos], dim=1))
