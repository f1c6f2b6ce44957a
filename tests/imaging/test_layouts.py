import math

import pytest
import torch
import torch.nn.functional as F

from wavefront.errors import ConfigError
from wavefront.imaging.layouts import (
    CurvilinearLayout, RectangularLayout, SensorSimulator, curvilinear_warp, rectangular_cell_means, rectangular_edges,
    regular_corners, warped_cell_means, widths_to_logits,
)


def _images(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=dtype)


@pytest.mark.parametrize("layout_cls", [RectangularLayout, CurvilinearLayout])
def test_identity_layout_reproduces_avg_pool2d(layout_cls):
    images = _images((3, 2, 32, 24))
    sensor = SensorSimulator(layout_cls((8, 6), (32, 24)))
    out = sensor(images)
    assert out.shape == (3, 2, 8, 6)
    torch.testing.assert_close(out, F.avg_pool2d(images, 4), rtol=0, atol=2e-6)


def test_rectangular_cell_mean_with_fractional_edges_matches_hand_integral():
    image = torch.arange(12, dtype=torch.float64).reshape(1, 1, 3, 4)
    # One cell covering rows [0.5, 2.0] and columns [1.25, 3.0]:
    # row weights 0.5, 1, 0 ; column weights 0, 0.75, 1, 0 ; area 1.5 * 1.75.
    wy = torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64)
    wx = torch.tensor([0.0, 0.75, 1.0, 0.0], dtype=torch.float64)
    expected = (wy[:, None] * wx[None, :] * image[0, 0]).sum() / (1.5 * 1.75)
    out = rectangular_cell_means(image, torch.tensor([0.5, 2.0], dtype=torch.float64),
                                 torch.tensor([1.25, 3.0], dtype=torch.float64))
    assert out.shape == (1, 1, 1, 1)
    assert out.item() == pytest.approx(expected.item(), rel=1e-12)


def test_float32_cell_means_of_a_large_image_stay_at_float32_rounding():
    # The summed-area table of a 512 x 512 image reaches ~1.3e5: in float32 its corner differences for a
    # one-pixel cell at the far corner would lose ~1e-2; accumulated in float64 the means keep float32 rounding.
    images = _images((1, 1, 512, 512), seed=3)
    edges = torch.arange(0, 513, dtype=torch.float32)  # one cell per pixel: the means are the pixels
    out = rectangular_cell_means(images, edges, edges)
    assert (out - images).abs().max() < 1e-6


def test_rectangular_layout_preserves_the_image_mean_for_any_parameters():
    # Cell means weighted by cell areas integrate the whole image, whatever the edges.
    images = _images((2, 1, 20, 16), dtype=torch.float64)
    layout = RectangularLayout((5, 4), (20, 16)).double()
    with torch.no_grad():
        layout.logits_y.copy_(torch.randn(5) * 3)
        layout.logits_x.copy_(torch.randn(4) * 3)
    ey, ex = layout.edges()
    area = (ey[1:] - ey[:-1])[:, None] * (ex[1:] - ex[:-1])[None, :]
    total = (layout.sense(images) * area).sum((-2, -1))
    torch.testing.assert_close(total, images.sum((-2, -1)), rtol=1e-12, atol=1e-10)


def test_rectangular_layout_gradcheck_in_double():
    images = _images((1, 1, 12, 10), dtype=torch.float64).requires_grad_()
    g = torch.Generator().manual_seed(1)
    ly = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    lx = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)

    def sense(ly, lx, img):  # the functional core behind RectangularLayout.sense
        return rectangular_cell_means(img, rectangular_edges(ly, 12), rectangular_edges(lx, 10))

    assert torch.autograd.gradcheck(sense, (ly, lx, images))


def test_curvilinear_layout_gradcheck_in_double():
    images = _images((1, 1, 12, 12), dtype=torch.float64)
    params = (0.5 * torch.randn(2, 2, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: warped_cell_means(images, p, (4, 4), (3, 3)), (params,))
    # The sensor is linear in the image; its image gradient is checked on a smaller image.
    small = _images((1, 1, 6, 6), dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda img: warped_cell_means(img, params.detach(), (2, 2), (3, 3)), (small,))


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_rectangular_layout_stays_a_valid_grid_for_any_logits(scale):
    layout = RectangularLayout((16, 12), (64, 48))
    g = torch.Generator().manual_seed(int(scale))
    with torch.no_grad():
        layout.logits_y.copy_(torch.randn(16, generator=g) * scale)
        layout.logits_x.copy_(torch.randn(12, generator=g) * scale)
    for edges, length in zip(layout.edges(), (64, 48)):
        assert edges[0] == 0 and edges[-1] == length
        widths = edges[1:] - edges[:-1]
        # Every cell keeps at least a tenth of the regular width, however extreme the logits, up to the
        # float32 rounding of two edges near `length` (a width is their difference): 4 length * eps here.
        # (Unseeded, with a relative 1e-5, 75 of 2000 draws at scale 30 fell 1.7 length * eps short.)
        assert bool((widths >= 0.1 * length / len(widths) - 4 * length * torch.finfo(torch.float32).eps).all())
    assert bool(torch.isfinite(layout.sense(torch.rand(1, 1, 64, 48))).all())


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_curvilinear_warp_is_a_bijection_of_the_square_for_any_parameters(scale):
    params = torch.randn(2, 2, 3, dtype=torch.float64) * scale
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    u, v = torch.meshgrid(t, t, indexing="ij")
    y, x, det = curvilinear_warp(u, v, params)
    assert bool((det >= (1 - 0.9) ** 2 - 1e-12).all())
    assert y.min() >= 0 and y.max() <= 1 and x.min() >= 0 and x.max() <= 1
    # The edges of the square stay on the edges, so the grid covers the whole image.
    torch.testing.assert_close(x[:, 0], torch.zeros(101, dtype=torch.float64))
    torch.testing.assert_close(x[:, -1], torch.ones(101, dtype=torch.float64))
    torch.testing.assert_close(y[0, :], torch.zeros(101, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(y[-1, :], torch.ones(101, dtype=torch.float64))
    # Along each grid row the column coordinate strictly increases.
    assert bool((x[:, 1:] > x[:, :-1]).all())


def _warped_cell_centroid_x(params, cell, pixels, image_size, n=400):
    """Returns the x centroid (pixel units) of a warped cell from its boundary (shoelace), no Jacobian used."""
    (i, j), (h, w), (big_h, big_w) = cell, pixels, image_size
    t = torch.linspace(0, 1, n + 1, dtype=torch.float64)[:-1]
    u0, u1, v0, v1 = i / h, (i + 1) / h, j / w, (j + 1) / w
    us = torch.cat([torch.full_like(t, u0), u0 + (u1 - u0) * t, torch.full_like(t, u1), u1 - (u1 - u0) * t])
    vs = torch.cat([v0 + (v1 - v0) * t, torch.full_like(t, v1), v1 - (v1 - v0) * t, torch.full_like(t, v0)])
    y, x, _ = curvilinear_warp(us, vs, params)
    y, x = y * big_h, x * big_w
    cross = x * y.roll(-1) - x.roll(-1) * y
    return float(((x + x.roll(-1)) * cross).sum() / (3 * cross.sum()))


def test_curvilinear_cell_mean_of_a_ramp_is_the_warped_cell_centroid():
    # The mean of f = x over a cell is the cell's x centroid, which its boundary alone fixes
    # (Green's theorem). The sensor gets it from the Jacobian-weighted quadrature: a wrong or
    # missing Jacobian moves it by 0.02-0.14 px here. Interior cells: no border clamping.
    params = torch.randn(2, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    pixels, size = (8, 8), (32, 32)
    ramp = torch.arange(32, dtype=torch.float64).expand(1, 1, 32, 32)  # pixel j (centre at j + 0.5) holds j
    means = warped_cell_means(ramp, params, pixels, (16, 16))[0, 0]
    for i in range(1, 7):
        for j in range(1, 7):
            expected = _warped_cell_centroid_x(params, (i, j), pixels, size) - 0.5
            assert abs(float(means[i, j]) - expected) < 3e-3


def test_curvilinear_det_is_the_jacobian_determinant_of_the_warp():
    params = torch.randn(2, 2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    for u, v in [(0.1, 0.7), (0.5, 0.5), (0.93, 0.02)]:
        point = torch.tensor([u, v], dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(lambda p: torch.stack(curvilinear_warp(p[0], p[1], params)[:2]), point)
        det = curvilinear_warp(point[0], point[1], params)[2]
        assert float(det) == pytest.approx(float(torch.linalg.det(jac)), rel=1e-10)


def _central_differences(loss, params, eps=1e-6):
    fd = torch.zeros_like(params)
    flat = fd.view(-1)
    for i in range(params.numel()):
        up, down = params.detach().clone(), params.detach().clone()
        up.view(-1)[i] += eps
        down.view(-1)[i] -= eps
        flat[i] = (loss(up) - loss(down)) / (2 * eps)
    return fd


def test_rectangular_layout_gradient_at_the_regular_grid_start_matches_central_differences():
    # Zero logits put every edge on a pixel boundary, a kink of the cell means: the gradient
    # there must be the central difference, not one one-sided slope.
    images = _images((1, 1, 16, 16), seed=5, dtype=torch.float64)
    probe = _images((1, 1, 4, 4), seed=6, dtype=torch.float64) - 0.5
    zeros = torch.zeros(4, dtype=torch.float64)

    def loss(ly, lx=zeros):
        return (rectangular_cell_means(images, rectangular_edges(ly, 16), rectangular_edges(lx, 16)) * probe).sum()

    ly = zeros.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(ly), ly)
    torch.testing.assert_close(grad, _central_differences(lambda p: float(loss(p)), zeros), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("size,pixels", [(16, 4), (21, 3)])
def test_curvilinear_layout_gradient_at_the_regular_grid_start_matches_central_differences(size, pixels):
    # Zero warp puts every quadrature point on a pixel centre, a kink of the bilinear interpolant.
    # At 16 px the centres are dyadic and land exactly; at 21 px two of them ((i + 0.5) / 21 * 21 - 0.5)
    # land ~1e-15 off, which only the knot tolerance puts back on the knot (else one-sided slopes there).
    samples = size // pixels
    images = _images((1, 1, size, size), seed=5, dtype=torch.float64)
    probe = _images((1, 1, pixels, pixels), seed=6, dtype=torch.float64) - 0.5

    def loss(p):
        return (warped_cell_means(images, p, (pixels, pixels), (samples, samples)) * probe).sum()

    params = torch.zeros(2, 2, 2, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(loss(params), params)
    # Either side of the kink has its own curvature, so the difference itself is only O(eps) accurate.
    torch.testing.assert_close(grad, _central_differences(lambda p: float(loss(p)), params), rtol=1e-5, atol=1e-7)


def test_layout_larger_than_the_image_is_a_config_error():
    with pytest.raises(ConfigError, match="more pixels than the 16x16 image"):
        RectangularLayout((32, 8), (16, 16))
    with pytest.raises(ConfigError, match="pixels"):
        CurvilinearLayout((8, 17), (16, 16))


def test_images_of_the_wrong_shape_are_a_config_error():
    sensor = SensorSimulator(RectangularLayout((4, 4), (16, 16)))
    with pytest.raises(ConfigError, match=r"images=\(2, 16, 16\)"):
        sensor(torch.zeros(2, 16, 16))
    with pytest.raises(ConfigError, match=r"must be \[B, C, 16, 16\]"):
        sensor(torch.zeros(1, 1, 16, 15))


def test_any_layout_of_a_constant_image_reads_the_constant_in_every_cell():
    """A cell mean of a constant is the constant, whatever the cell: also the border cells, whose
    warped quadrature points reach past the outer pixel centres (the border pixel extends there)."""
    images = torch.full((1, 1, 20, 15), 0.7, dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    curvy = CurvilinearLayout((5, 3), (20, 15)).double()
    rect = RectangularLayout((5, 3), (20, 15)).double()
    with torch.no_grad():
        curvy.params.copy_(2 * torch.randn(2, 2, 2, generator=g, dtype=torch.float64))
        rect.logits_y.copy_(3 * torch.randn(5, generator=g, dtype=torch.float64))
        rect.logits_x.copy_(3 * torch.randn(3, generator=g, dtype=torch.float64))
        for layout in (curvy, rect):
            torch.testing.assert_close(layout.sense(images), torch.full((1, 1, 5, 3), 0.7, dtype=torch.float64),
                                       rtol=0, atol=1e-12)


def test_layout_corners_are_y_x_in_pixels_and_start_at_the_regular_grid_of_a_non_square_image():
    expect = regular_corners((4, 6), (20, 30))
    assert expect[-1, -1].tolist() == [20.0, 30.0] and expect[1, 1].tolist() == [5.0, 5.0]
    for layout in (RectangularLayout((4, 6), (20, 30)), CurvilinearLayout((4, 6), (20, 30))):
        with torch.no_grad():
            torch.testing.assert_close(layout.corners(), expect, rtol=0, atol=1e-5)
    warped = CurvilinearLayout((4, 6), (20, 30))
    with torch.no_grad():
        warped.params.copy_(torch.randn(2, 2, 2, generator=torch.Generator().manual_seed(1)))
        c = warped.corners()
    # the outer corners stay on the image's outer edges: rows 0 and 20, columns 0 and 30
    assert torch.allclose(c[0, :, 0], torch.zeros(7), atol=1e-5) and torch.allclose(c[-1, :, 0], torch.full((7,), 20.0))
    assert torch.allclose(c[:, 0, 1], torch.zeros(5), atol=1e-5) and torch.allclose(c[:, -1, 1], torch.full((5,), 30.0))


def test_layout_refusals_are_config_errors():
    # integer images would come back truncated to integers; zero pixels or zero modes divide by zero later
    with pytest.raises(ConfigError, match="images='torch.int64': must be a floating-point tensor"):
        SensorSimulator(RectangularLayout((2, 2), (4, 4)))(torch.ones(1, 1, 4, 4, dtype=torch.int64))
    with pytest.raises(ConfigError, match="pixels='0x4': needs at least 1x1 sensor pixels"):
        RectangularLayout((0, 4), (8, 8))
    with pytest.raises(ConfigError, match="modes=0: needs at least one sine mode"):
        CurvilinearLayout((2, 2), (8, 8), modes=0)
    # a cell at or below a tenth of the regular width has no logits (it would be log of a negative share)
    with pytest.raises(ConfigError, match="every cell must be wider than 0.1 x the regular width"):
        widths_to_logits(torch.tensor([0.2, 9.8, 10.0], dtype=torch.float64))
    logits = widths_to_logits(torch.tensor([2.0, 8.0, 10.0], dtype=torch.float64))
    edges = rectangular_edges(logits, 20)
    assert torch.allclose(edges, torch.tensor([0.0, 2.0, 10.0, 20.0], dtype=torch.float64))


def _overlap_weights(edges: torch.Tensor, n: int) -> torch.Tensor:
    """[cells, n]: the length of pixel [i, i+1] inside each cell [e_a, e_a+1] (a direct, table-free integral)."""
    i = torch.arange(n, dtype=torch.float64)
    return (torch.minimum(i[None] + 1, edges[1:, None]) - torch.maximum(i[None], edges[:-1, None])).clamp(min=0)


def test_a_non_finite_pixel_stays_in_the_cells_that_overlap_it():
    # A dead pixel (NaN) or a saturated one (+-inf) is the business of the cells that hold it, as in a direct
    # mean: every other cell keeps its exact mean and a finite gradient (the summed-area table once carried
    # one NaN near the top-left corner into all 20 cells). Random logits give fractional edges, so some of
    # these pixels straddle two or four cells.
    g = torch.Generator().manual_seed(5)
    images = torch.rand(1, 2, 20, 16, generator=g, dtype=torch.float64)
    images[0, 0, 1, 2] = math.nan
    images[0, 1, 7, 9] = math.inf
    images[0, 1, 15, 3] = -math.inf
    images[0, 1, 15, 4] = math.inf
    images[0, 0, 18, 14] = -math.inf
    ly = (2 * torch.randn(5, generator=g, dtype=torch.float64)).requires_grad_()
    lx = (2 * torch.randn(4, generator=g, dtype=torch.float64)).requires_grad_()
    ey, ex = rectangular_edges(ly, 20), rectangular_edges(lx, 16)
    out = rectangular_cell_means(images, ey, ex)

    wy, wx = _overlap_weights(ey.detach(), 20), _overlap_weights(ex.detach(), 16)
    cells = lambda pixels: torch.einsum("ay,bcyx,dx->bcad", (wy > 0).double(), pixels.double(), (wx > 0).double()) > 0  # noqa: E731
    nan, pos, neg = cells(images.isnan()), cells(images == math.inf), cells(images == -math.inf)
    clean = torch.where(torch.isfinite(images), images, torch.zeros((), dtype=torch.float64))
    expected = torch.einsum("ay,bcyx,dx->bcad", wy, clean, wx) / (wy.sum(1)[:, None] * wx.sum(1)[None, :])
    expected[neg], expected[pos] = -math.inf, math.inf
    expected[nan | (pos & neg)] = math.nan
    bad = nan | pos | neg
    assert 4 <= int(bad.sum()) <= 16 and bool(nan[0, 0].any() and pos[0, 1].any() and neg[0, 1].any())
    assert not bool(bad[0, 0].all())  # the NaN channel keeps finite cells
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    out[~bad].sum().backward()
    assert bool(torch.isfinite(ly.grad).all() and torch.isfinite(lx.grad).all())
    # on the regular grid a pixel only touches the next cells' edges: one cell of 4 x 4 px holds it
    regular = torch.arange(0, 17, 4, dtype=torch.float64)
    dead = torch.rand(1, 1, 16, 16, generator=g, dtype=torch.float64)
    dead[0, 0, 3, 3] = math.nan  # pixel [3, 4] x [3, 4]: in cell (0, 0), touching cells (0, 1), (1, 0), (1, 1)
    dead[0, 0, 8, 12] = math.nan  # pixel [8, 9] x [12, 13]: in cell (2, 3), touching (1, 2), (1, 3), (2, 2)
    out = rectangular_cell_means(dead, regular, regular)
    assert torch.isnan(out[0, 0]).nonzero().tolist() == [[0, 0], [2, 3]]
