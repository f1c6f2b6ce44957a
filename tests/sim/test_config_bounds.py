"""Config values a tired researcher types: each is one ConfigError naming the field, the value and the rule.

Every case here was a traceback from deep inside torch or Python (or a hang) before its check
existed; the edges just inside each bound still build, so presets and documented uses stay valid.
"""
import re

import pytest

from wavefront.errors import ConfigError
from wavefront.sim.conditions import MAX_AXIS_POINTS, ConditionPrior
from wavefront.sim.config import MAX_GRID_RES, MAX_SINUSOIDS, MAX_SUBCARRIERS, PRESETS, SystemConfig
from wavefront.sim.experiment import prior_config


def _refused(d: dict) -> str:
    with pytest.raises(ConfigError) as info:
        SystemConfig.from_dict(d)
    return str(info.value)


@pytest.mark.parametrize("d,says", [
    # a hang: a Python list of 1e8 pilot positions
    ({"ofdm": {"num_subcarriers": 10 ** 9}}, "ofdm.num_subcarriers=1000000000: num_subcarriers must be <= 8192"),
    # out of memory after minutes in the bound's [F, F] lags
    ({"ofdm": {"num_subcarriers": 70000}}, "ofdm.num_subcarriers=70000: num_subcarriers must be <= 8192"),
    # killed for memory building the LS interpolator
    ({"ofdm": {"num_symbols": 10 ** 9}}, "ofdm.num_symbols=1000000000: num_symbols must be <= 1048576"),
    ({"ofdm": {"num_subcarriers": 3300, "num_symbols": 400}},
     "ofdm.num_subcarriers x num_symbols='3300x400': a frame holds at most 1048576 resource elements"),
    # a 184 GB allocation drawing the sinusoids
    ({"channel": {"num_sinusoids": 10 ** 9}}, "channel.num_sinusoids=1000000000: num_sinusoids must be <= 1024"),
    ({"channel": {"num_sinusoids": MAX_SINUSOIDS + 1}}, "channel.num_sinusoids=1025: num_sinusoids must be <= 1024"),
])
def test_absurd_sizes_are_refused_naming_field_and_value(d, says):
    assert _refused(d).startswith(says)


def test_sizes_up_to_each_bound_still_build():
    SystemConfig.from_dict({"ofdm": {"num_subcarriers": MAX_SUBCARRIERS}})
    SystemConfig.from_dict({"ofdm": {"num_subcarriers": 3300}})  # NR's widest carrier, 275 PRBs
    SystemConfig.from_dict({"ofdm": {"num_symbols": MAX_GRID_RES // 120}})  # 120 x 8738 = 1048560 REs
    SystemConfig.from_dict({"channel": {"num_sinusoids": MAX_SINUSOIDS}})
    for name in PRESETS:  # every preset stays valid
        SystemConfig.from_dict(PRESETS[name])


@pytest.mark.parametrize("field,value,says", [
    ("delay_spread_s", "300ns", "channel.delay_spread_s='300ns': delay_spread_s must be a number in seconds or a "
                                "[low, high] range (the value alone, without a unit)"),
    ("delay_spread_s", [1e-9, 2e-9, 3e-9], "channel.delay_spread_s=[1e-09, 2e-09, 3e-09]: delay_spread_s must be a "
                                           "number in seconds or a [low, high] range, not a list of 3"),
    ("doppler_hz", [], "channel.doppler_hz=[]: doppler_hz must be a number in Hz or a [low, high] range, not a list of 0"),
    ("doppler_hz", ["a", 1], "channel.doppler_hz=['a', 1]: doppler_hz must be a number in Hz or a [low, high] range; "
                             "[low, high] must both be numbers"),
    ("snr_db", True, "channel.snr_db=True: snr_db must be a number in dB or a [low, high] range"),  # YAML's yes/on: was read as 1 dB
    ("doppler_hz", None, "channel.doppler_hz=None: doppler_hz must be a number in Hz or a [low, high] range"),
    ("cfo_hz", [1, 2, 3], "channel.cfo_hz=[1, 2, 3]: cfo_hz must be a number in Hz or a [low, high] range"),
    # the wrong unit: 300 meant as ns; the rule says the unit
    ("delay_spread_s", 300, "channel.delay_spread_s=300: delay_spread_s must be <= 1e-05 (seconds: 300 ns is 300e-9)"),
])
def test_a_channel_value_of_the_wrong_shape_or_unit_is_one_rule(field, value, says):
    assert _refused({"channel": {field: value}}).startswith(says)


def test_numbers_written_as_text_still_parse_and_ranges_stay_tuples():
    # YAML 1.1 reads 3e-7 (no dot) as text: it was accepted before and must stay so, to the bit
    ch = SystemConfig.from_dict({"channel": {"delay_spread_s": "3e-7", "doppler_hz": [0, 1000],
                                             "cfo_hz": "-50"}}).channel
    assert ch.delay_spread_s == 3e-7 and ch.doppler_hz == (0.0, 1000.0) and ch.cfo_hz == -50.0


def test_mimo_correlation_of_the_wrong_shape_is_one_rule():
    assert _refused({"mimo": {"rx_correlation": [0.1, 0.2, 0.3]}}) == (
        "mimo.rx_correlation=[0.1, 0.2, 0.3]: rx_correlation must be a number in [0, 1) or a [low, high] range, "
        "not a list of 3")


def test_field_names_carry_no_pydantic_type_tags():
    # pydantic locates a union's failure by member, "value.float" and "value.tuple[float, float]" (the config
    # error read "channel.delay_spread_s.float='300ns'"): the user's field is the rest of the location
    from pydantic import BaseModel, ValidationError

    from wavefront.errors import from_pydantic

    class Section(BaseModel):
        value: float | tuple[float, float]
        steps: tuple[int, ...] | None = None

    for kwargs, field in (({"value": "abc"}, "sec.value"), ({"value": 1.0, "steps": ["a"]}, "sec.steps.0")):
        with pytest.raises(ValidationError) as info:
            Section(**kwargs)
        assert from_pydantic(info.value, "sec").field == field
    assert _refused({"channel": {"snr_step_db": "x"}}).startswith("channel.snr_step_db='x': ")


def test_a_prior_axis_of_more_than_1000_points_is_refused():
    # 0:1e9 Hz at 50 Hz steps asked for 37 GB in the bank's covariance blocks
    with pytest.raises(ConfigError, match=re.escape("prior.doppler_hz=[0.0, 1000000000.0]: spans 20000001 grid points "
                                                    "at the 50 step; at most 1000 per axis")):
        ConditionPrior.from_ranges((25e-9, 300e-9), (0.0, 1e9), (0.0, 25.0))
    edge = ConditionPrior.from_ranges(300e-9, (0.0, 50.0 * (MAX_AXIS_POINTS - 1)), 10.0)
    assert edge.shape == (1, MAX_AXIS_POINTS, 1)
    with pytest.raises(ConfigError, match=r"^prior\.snr_db=\[0\.0, 1000\.0\]: spans 2001 grid points"):
        ConditionPrior.from_ranges(300e-9, 500.0, (0.0, 1000.0))


def test_a_bad_prior_range_is_named_as_the_prior_not_the_channel():
    with pytest.raises(ConfigError, match=re.escape("prior.delay_spread_s=[0.0, 1.0]: delay_spread_s must be <= 1e-05")):
        prior_config(SystemConfig(), ranges={"delay_spread_s": (0.0, 1.0)})
    ici = SystemConfig.from_dict({"channel": {"ici": True}})
    with pytest.raises(ConfigError, match=r"^prior\.doppler_hz=\[0\.0, 1000000000\.0\]: with channel\.ici"):
        prior_config(ici, ranges={"doppler_hz": (0.0, 1e9)})
    assert prior_config(ici, ranges={"doppler_hz": (0.0, 15e3)}).channel.doppler_hz == (0.0, 15e3)
