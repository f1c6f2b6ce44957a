import math
import warnings

import pytest
import torch

from wavefront.errors import ConfigError
from wavefront.imaging.wave import (
    LearnableReceivers, Region, WaveFrontEnd, add_inclusion, check_stability, interpolation_weights,
    layered_velocity, propagate, ricker, sample_field,
)

DX, DT, FREQ, NT = 10.0, 0.001, 15.0, 250
SHAPE = (32, 32)


@pytest.fixture(scope="module")
def scene():
    v = add_inclusion(layered_velocity(SHAPE, [16], [2000.0, 2600.0]), (20, 18), 4, 2300.0)
    src = ricker(FREQ, NT, DT).reshape(1, 1, -1).repeat(2, 1, 1)
    loc = torch.tensor([[[4, 8]], [[4, 24]]])
    return v, src, loc


@pytest.fixture(scope="module")
def sinc_setup(scene):
    v, src, loc = scene
    rx = LearnableReceivers(3, Region(12, 18, 9, 23), SHAPE, kernel="sinc")
    with torch.no_grad():
        rx.raw.add_(torch.tensor([[0.3, -0.2], [-0.4, 0.1], [0.2, 0.35]]))
    field = WaveFrontEnd(rx, DX, DT, FREQ, pml_width=10).record(v, src, loc)
    return rx, field


def _probe(shape, seed=3, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_sinc_receivers_reproduce_deepwave_hicks_receivers_and_their_gradients(scene, sinc_setup):
    v, src, loc = scene
    rx, field = sinc_setup
    pos = rx.positions().detach().clone().requires_grad_()
    ref = propagate(v, DX, DT, src, loc, pos.unsqueeze(0).expand(2, -1, -1), pml_width=10, freq_hz=FREQ)
    offset = torch.tensor([rx.recording.y0, rx.recording.x0], dtype=torch.float32)
    ours_pos = pos.detach().clone().requires_grad_()
    ours = sample_field(field, ours_pos - offset, "sinc")
    assert float((ours.detach() - ref.detach()).abs().max() / ref.detach().abs().max()) < 1e-5
    probe = _probe(ref.shape, dtype=torch.float32)
    (g_ref,) = torch.autograd.grad((ref * probe).sum(), pos)
    (g_ours,) = torch.autograd.grad((ours * probe).sum(), ours_pos)
    assert float((g_ours - g_ref).abs().max() / g_ref.abs().max()) < 1e-2


@pytest.mark.parametrize("kernel", ["bilinear", "sinc"])
def test_receiver_position_gradients_match_central_finite_differences(scene, kernel):
    v, src, loc = scene
    rx = LearnableReceivers(3, Region(12, 18, 9, 23), SHAPE, kernel=kernel).double()
    with torch.no_grad():  # off-node positions: bilinear derivatives jump at integer cells
        rx.raw.add_(torch.tensor([[0.3, -0.2], [-0.4, 0.1], [0.2, 0.35]], dtype=torch.float64))
    field = WaveFrontEnd(rx, DX, DT, FREQ, pml_width=10).record(v, src, loc).double()
    probe = _probe((2, 3, NT))

    def loss(raw):
        rx.raw.data.copy_(raw)
        with torch.no_grad():
            return float((rx(field) * probe).sum())

    raw0 = rx.raw.detach().clone()
    rx.raw.data.copy_(raw0)
    (grad,) = torch.autograd.grad((rx(field) * probe).sum(), rx.raw)
    fd = torch.zeros_like(raw0)
    eps = 1e-5
    for idx in [(k, a) for k in range(3) for a in range(2)]:
        up, down = raw0.clone(), raw0.clone()
        up[idx] += eps
        down[idx] -= eps
        fd[idx] = (loss(up) - loss(down)) / (2 * eps)
    assert float(fd.abs().min()) > 0  # every position moves the loss
    torch.testing.assert_close(grad, fd, rtol=1e-2, atol=0)


def test_bilinear_sampling_is_exact_on_a_field_linear_in_space():
    yy, xx = torch.meshgrid(torch.arange(5.0), torch.arange(7.0), indexing="ij")
    field = (2.0 * yy - 0.5 * xx + 1.0)[None, None].double()  # [S=1, nt=1, 5, 7]
    pos = torch.tensor([[0.25, 0.5], [3.7, 5.99], [4.0, 0.0]], dtype=torch.float64)
    expected = 2.0 * pos[:, 0] - 0.5 * pos[:, 1] + 1.0
    torch.testing.assert_close(sample_field(field, pos, "bilinear")[0, :, 0], expected)


@pytest.mark.parametrize("kernel", ["bilinear", "sinc"])
def test_interpolation_weights_are_unit_spikes_on_grid_nodes(kernel):
    w = interpolation_weights(torch.tensor([2.0, 5.0], dtype=torch.float64), 9, kernel)
    torch.testing.assert_close(w, torch.eye(9, dtype=torch.float64)[[2, 5]], atol=1e-12, rtol=0)


def test_regular_array_starts_evenly_spaced_on_a_line():
    rx = LearnableReceivers(4, Region(2, 3, 4, 66), (70, 70), learnable=False)
    pos = rx.positions().detach()
    assert not rx.raw.requires_grad
    torch.testing.assert_close(pos[:, 0], torch.full((4,), 2.0))
    torch.testing.assert_close(pos[:, 1], 4 + 61 * (torch.arange(4.0) + 0.5) / 4, atol=1e-3, rtol=0)


def test_receivers_stay_in_the_candidate_region_for_any_parameters():
    rx = LearnableReceivers(5, Region(10, 20, 5, 30), (40, 40))
    with torch.no_grad():
        rx.raw.copy_(torch.randn(5, 2) * 1e3)
    pos = rx.positions()
    assert bool((pos[:, 0] >= 10).all() and (pos[:, 0] <= 19).all())
    assert bool((pos[:, 1] >= 5).all() and (pos[:, 1] <= 29).all())


def test_more_receivers_than_candidate_cells_is_a_config_error():
    with pytest.raises(ConfigError, match="receivers=7: must be between 1 and the 6 cells"):
        LearnableReceivers(7, Region(3, 4, 10, 16), (32, 32))


def test_candidate_region_whose_sinc_support_leaves_the_model_is_a_config_error():
    with pytest.raises(ConfigError, match="outside the 32x32 model"):
        LearnableReceivers(2, Region(1, 5, 4, 20), (32, 32), kernel="sinc")


def test_cfl_violation_names_dt_dx_vmax_and_the_limit():
    limit = math.sqrt(3) / 2 * 10.0 / (4000.0 * math.sqrt(2))  # 1.5309 ms
    check_stability(limit * 0.999, 10.0, 4000.0)
    with pytest.raises(ConfigError) as err:
        check_stability(0.002, 10.0, 4000.0)
    msg = str(err.value)
    assert "dt=0.002" in msg and "dx=10.0" in msg and "v_max=4000.0" in msg and f"{limit:.6g}" in msg


def test_grid_dispersion_rule_rejects_a_too_coarse_grid():
    check_stability(0.001, 10.0, 4500.0, v_min=1500.0, freq_hz=15.0)  # OpenFWI: exactly 4 points
    with pytest.raises(ConfigError, match=r"dx=20.0: too coarse .* dx must be <= 10 m"):
        check_stability(0.001, 20.0, 3000.0, v_min=1500.0, freq_hz=15.0)


def test_ricker_peaks_at_t0_and_crosses_zero_at_the_closed_form_times():
    f, dt = 15.0, 1e-4
    w = ricker(f, 3000, dt, dtype=torch.float64)
    t0 = 1.5 / f
    assert int(w.argmax()) == round(t0 / dt) and float(w.max()) == pytest.approx(1.0)
    t_zero = t0 + 1 / (math.pi * f * math.sqrt(2))
    i = int(t_zero / dt)
    assert float(w[i]) * float(w[i + 1]) <= 0
    # Its amplitude spectrum peaks at the stated frequency.
    spec = torch.fft.rfft(w, n=200000).abs()
    freqs = torch.fft.rfftfreq(200000, dt)
    assert float(freqs[spec.argmax()]) == pytest.approx(f, rel=1e-3)


def test_wrongly_shaped_scene_is_a_config_error(scene):
    _, src, loc = scene
    with pytest.raises(ConfigError, match="velocity"):
        propagate(torch.ones(3, 3, 3, 3), DX, DT, src, loc, loc)
    rx = LearnableReceivers(2, Region(12, 13, 9, 23), SHAPE)
    with pytest.raises(ConfigError, match="field"):
        rx(torch.zeros(2, 10, 3, 3))


def test_flush_denormals_flushes_inside_the_block_and_restores_the_default_after():
    from wavefront.imaging.wave import flush_denormals

    tiny = torch.tensor([1e-40], dtype=torch.float32)  # subnormal in float32
    with flush_denormals():
        assert float(tiny * 1.0) == 0.0
    assert float(tiny * 1.0) > 0.0


def test_recorded_data_hold_no_subnormal_values(scene):
    v, src, loc = scene
    rx = LearnableReceivers(3, Region(12, 18, 9, 23), SHAPE)
    field = WaveFrontEnd(rx, DX, DT, FREQ, pml_width=10).record(v, src, loc)
    tiny = torch.finfo(field.dtype).tiny
    assert not bool(((field != 0) & (field.abs() < tiny)).any())
    assert bool((field != 0).any())


def test_nested_flush_denormals_blocks_keep_flushing_until_the_outermost_ends():
    from wavefront.imaging.wave import flush_denormals

    tiny = torch.tensor([1e-40], dtype=torch.float32)
    with flush_denormals():
        with flush_denormals():
            pass
        assert float(tiny * 1.0) == 0.0
    assert float(tiny * 1.0) > 0.0
