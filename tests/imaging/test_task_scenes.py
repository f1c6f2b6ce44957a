"""The co-design tasks' scenes against their definitions: the glyph patterns and contrast, where a glyph fits, and
where the wave task's sources fall."""
import pytest
import torch

from wavefront.errors import ConfigError
from wavefront.imaging.tasks import SourceScenes, WaveScene, stripe_glyph_scenes, two_site_glyph_scenes
from wavefront.imaging.wave import Region


def _pattern(label: int, side: int, period: int) -> torch.Tensor:
    """The class pattern in [0, 1], written out: runs of period/2 pixels from the glyph's top-left corner."""
    i = torch.arange(side)
    rows, cols = ((i // (period // 2)) % 2).float()[:, None], ((i // (period // 2)) % 2).float()[None, :]
    return [rows.expand(side, side), cols.expand(side, side), (rows + cols) % 2, torch.full((side, side), 0.5)][label]


def _check_glyph(glyph: torch.Tensor, label: int, period: int) -> float:
    """Asserts glyph == 0.5 + c (pattern - 0.5) and returns the contrast c (None for the flat class)."""
    if label == 3:
        assert torch.allclose(glyph, torch.full_like(glyph, 0.5), atol=1e-6)
        return None
    c = float(glyph.max() - glyph.min())
    assert 0.5 - 1e-6 <= c <= 1 + 1e-6
    assert torch.allclose(glyph, 0.5 + c * (_pattern(label, glyph.shape[0], period) - 0.5), atol=1e-6)
    return c


def test_a_centred_glyph_is_its_class_pattern_at_a_contrast_about_grey():
    images, labels = stripe_glyph_scenes(48, torch.Generator().manual_seed(2), size=32, glyph=8, jitter=0, periods=(4,))
    assert set(labels.tolist()) == {0, 1, 2, 3}
    contrasts = [_check_glyph(images[n, 0, 12:20, 12:20], int(labels[n]), 4) for n in range(48)]
    contrasts = [c for c in contrasts if c is not None]
    assert min(contrasts) < 0.65 and max(contrasts) > 0.85  # drawn from [0.5, 1]


def test_two_site_glyphs_hold_their_class_pattern_in_their_box():
    images, labels, boxes = two_site_glyph_scenes(48, torch.Generator().manual_seed(3), size=64, periods=(4,),
                                                  return_boxes=True)
    contrasts = []
    for n in range(48):
        y0, x0, y1, x1 = boxes[n].tolist()
        contrasts.append(_check_glyph(images[n, 0, y0:y1, x0:x1], int(labels[n]), 4))
    contrasts = [c for c in contrasts if c is not None]
    assert min(contrasts) < 0.65 and max(contrasts) > 0.85


def test_a_glyph_fits_up_to_the_image_edge_and_one_pixel_more_is_refused():
    g = torch.Generator().manual_seed(0)
    # a 5 px glyph centred on c spans c - 2 .. c + 2: centres 2 and 29 of a 32 px image touch its edges
    _, _, boxes = two_site_glyph_scenes(8, g, size=32, glyphs=(5,), jitter=0, sites=((2, 2), (29, 29)), return_boxes=True)
    assert int(boxes.min()) == 0 and int(boxes.max()) == 32
    for sites in (((1, 2), (29, 29)), ((2, 2), (30, 29))):
        with pytest.raises(ConfigError, match="glyphs"):
            two_site_glyph_scenes(8, g, size=32, glyphs=(5,), jitter=0, sites=sites)


def test_wave_task_sources_fall_in_the_source_region():
    scene = WaveScene(shape=(24, 24), nt=60, source_region=Region(14, 20, 2, 6), candidate=Region(2, 3, 4, 20),
                      pml_width=10)
    field, sources = SourceScenes(scene).fields(6, seed=1, recording=Region(2, 3, 4, 20))
    assert field.shape == (6, 15, 1, 16)
    rows, cols = sources[:, 0], sources[:, 1]
    assert bool(((rows >= 14) & (rows < 20)).all()) and bool(((cols >= 2) & (cols < 6)).all()), sources.tolist()
