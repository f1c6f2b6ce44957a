"""Under multi-user MIMO a Kronecker layout given as positions (a --pilots file or preset) is dealt to the users as
the same layout given by offset and spacing is: before, every user sent on every pilot RE and their pilots collided
(the genie landed 2.8 dB above its bound)."""
import pytest
import torch

from wavefront.sim.config import SystemConfig
from wavefront.sim.mimo import frame_generator, pilots_per_user, user_configs
from wavefront.sim.pilots import apply_pilots


def _spelled(cfg: SystemConfig) -> SystemConfig:
    return cfg.updated(ofdm={"pilot_positions": [[f, t] for f, t in cfg.ofdm.pilot_layout.positions]})


@pytest.mark.parametrize("users", [2, 3, 4])
def test_positions_are_dealt_to_the_users_as_offset_and_spacing_are(users):
    cfg = SystemConfig.from_dict({"mimo": {"num_rx_antennas": 2, "num_users": users}})
    by_fields = [c.ofdm.pilot_layout.positions for c in user_configs(cfg)]
    assert [c.ofdm.pilot_layout.positions for c in user_configs(_spelled(cfg))] == by_fields
    every = [tuple(p) for u in pilots_per_user(_spelled(cfg)) for p in u["positions"]]
    assert len(every) == len(set(every)) == cfg.ofdm.pilot_layout.num_pilots  # disjoint, and all of them used


def test_frames_with_the_layout_given_as_positions_are_the_frames_with_it_given_by_fields():
    cfg = SystemConfig.from_dict({"mimo": {"num_rx_antennas": 2, "num_users": 2}, "channel": {"snr_db": 20.0}})
    a, b = (frame_generator(c, "cpu").generate(4, seed=5) for c in (cfg, _spelled(cfg)))
    assert torch.allclose(a.pilots_ls, b.pilots_ls, atol=1e-6) and torch.allclose(a.h, b.h, atol=1e-6)


def test_a_preset_layout_is_split_between_the_users():
    cfg = apply_pilots(SystemConfig.from_dict({"mimo": {"num_rx_antennas": 2, "num_users": 2}}), "nr-dmrs-type1-pos1")
    assert cfg.ofdm.pilot_positions is not None  # the preset comes as positions (60 x 2: every other subcarrier)
    per_user = [set(map(tuple, u["positions"])) for u in pilots_per_user(cfg)]
    assert not per_user[0] & per_user[1] and len(per_user[0]) == len(per_user[1]) == 60  # 30 x 2 each
