"""The reference protocol (one realization per delay spread x Doppler) on request, and independent draws by default."""
import json

import numpy as np
import pytest
import torch

from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.fading import ofdm_channel
from wavefront.sim.frames import FrameGenerator
from wavefront.utils import make_generator

GRID = {"snr_db": [0.0, 20.0], "snr_step_db": 10.0, "delay_spread_s": [50e-9, 150e-9], "delay_spread_step_s": 50e-9,
        "doppler_hz": [100.0, 400.0], "doppler_step_hz": 100.0}


def _config(realization: str, **channel) -> SystemConfig:
    return SystemConfig.from_dict({"channel": {**GRID, "realization": realization, **channel}})


def _conditions(fr) -> list[tuple[float, float]]:
    return list(zip(fr.delay_spread_s.tolist(), fr.doppler_hz.tolist()))


def test_grid_steps_draw_only_the_grid_points():
    fr = FrameGenerator(_config("independent")).generate(400, seed=3, with_data=False)
    assert sorted(set(fr.snr_db.tolist())) == [0.0, 10.0, 20.0]
    assert sorted(set(np.round(fr.delay_spread_s.numpy() * 1e9, 3).tolist())) == [50.0, 100.0, 150.0]
    assert sorted(set(fr.doppler_hz.tolist())) == [100.0, 200.0, 300.0, 400.0]


def test_per_condition_frames_with_equal_conditions_share_one_channel_but_not_the_noise():
    gen = FrameGenerator(_config("per-condition"))
    a = gen.generate(200, seed=1, with_data=False)
    b = gen.generate(150, seed=2, with_data=False)  # another batch, seed and size: another run or split
    h = torch.cat([a.h, b.h])
    ls = torch.cat([a.pilots_ls, b.pilots_ls])
    cond = _conditions(a) + _conditions(b)
    by_cond = {}
    for i, c in enumerate(cond):
        by_cond.setdefault(c, []).append(i)
    assert len(by_cond) == 12  # 3 delay spreads x 4 Dopplers, all drawn
    for members in by_cond.values():
        assert len(members) > 5
        for i in members[1:]:
            assert torch.equal(h[i], h[members[0]])  # bit-identical channel
            assert not torch.equal(ls[i], ls[members[0]])  # fresh noise
    firsts = torch.stack([h[m[0]] for m in by_cond.values()])
    firsts = firsts / firsts.abs().square().sum((1, 2), keepdim=True).sqrt()
    corr = torch.einsum("aft,bft->ab", firsts, firsts.conj()).abs()
    corr.fill_diagonal_(0)
    assert corr.max() < 0.9999  # distinct conditions: distinct realizations (2 - 2|corr| > -37 dB)


def test_per_condition_channel_is_the_same_for_a_fixed_condition_config():
    # a test point written alone (fixed delay spread and Doppler) replays the training grid's channel
    grid = FrameGenerator(_config("per-condition")).generate(300, seed=4, with_data=False)
    i = next(k for k, c in enumerate(_conditions(grid)) if abs(c[0] - 100e-9) < 1e-12 and c[1] == 300.0)
    fixed = SystemConfig.from_dict({"channel": {"snr_db": 30.0, "delay_spread_s": 100e-9, "doppler_hz": 300.0,
                                                "realization": "per-condition"}})
    point = FrameGenerator(fixed).generate(3, seed=99, with_data=False)
    for k in range(3):
        assert torch.equal(point.h[k], grid.h[i])


def test_independent_default_is_the_plain_per_frame_draw_bit_for_bit():
    # The draw order of the generator before the realization option existed: conditions, then
    # the channel and the noise from the same generator. Default frames must not change a bit.
    cfg = SystemConfig.from_dict({"channel": {"snr_db": [0.0, 25.0], "delay_spread_s": [25e-9, 300e-9],
                                              "doppler_hz": [50.0, 1000.0]}})
    fr = FrameGenerator(cfg).generate(64, seed=17, with_data=False)
    g = make_generator(17)
    draws = [torch.rand(64, generator=g, dtype=torch.float64).mul_(hi - lo).add_(lo).float()
             for lo, hi in (cfg.channel.snr_db, cfg.channel.delay_spread_s, cfg.channel.doppler_hz)]
    gen = FrameGenerator(cfg)
    h = ofdm_channel(cfg.ofdm, gen.profile, draws[1], draws[2], cfg.channel.num_sinusoids, g)
    noise = torch.view_as_complex(torch.randn(64, 120, 14, 2, generator=g))
    noise = noise * torch.sqrt(cfg.noise_variance(draws[0]) / 2).reshape(-1, 1, 1)
    assert torch.equal(fr.snr_db, draws[0]) and torch.equal(fr.doppler_hz, draws[2])
    assert torch.equal(fr.h, h)
    pf, pt = gen.pilot_f, gen.pilot_t
    expected_rx = h[:, pf[:, None], pt[None, :]] * gen.pilot_symbols + noise[:, pf[:, None], pt[None, :]]
    assert torch.equal(fr.pilots_rx, expected_rx)
    # and the config's identity (stored in every shard and manifest) is the one it had before
    assert set(json.loads(cfg.to_json())["channel"]) == {"delay_spread_s", "doppler_hz", "num_sinusoids", "profile",
                                                         "snr_convention", "snr_db", "travel_azimuth_deg"}
    assert "per-condition" in _config("per-condition").to_json()


def test_per_condition_is_labelled_and_independent_too():
    assert _config("per-condition").realization_text.startswith("per-condition")
    assert SystemConfig().realization_text.startswith("independent")


@pytest.mark.parametrize("channel, field", [
    ({"delay_spread_step_s": 40e-9}, "channel.delay_spread_step_s"),  # 50..150 ns is not whole steps of 40
    ({"doppler_step_hz": -100.0}, "channel.doppler_step_hz"),
    ({"realization": "per-frame"}, "channel.realization"),
])
def test_bad_grid_or_realization_names_the_field(channel, field):
    with pytest.raises(ConfigError) as exc:
        SystemConfig.from_dict({"channel": {**GRID, **channel}})
    assert exc.value.field == field
