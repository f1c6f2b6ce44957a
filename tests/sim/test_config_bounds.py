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


INF, NAN = float("inf"), float("nan")


# One row per validation rule of sim/config.py: the value just past the rule, the message's "field=value" head and
# a fragment of its rule. Each row went red with its own check dropped or loosened (the mutation hunt's table).
@pytest.mark.parametrize("d,head,rule", [
    ({'channel': {'doppler_hz': [0.0, INF]}},
     'channel.doppler_hz=[0.0, inf]', 'doppler_hz must be finite'),
    ({'channel': {'doppler_hz': [100.0, 50.0]}},
     'channel.doppler_hz=[100.0, 50.0]', 'doppler_hz range must have low <= high'),
    ({'channel': {'snr_db': NAN}},
     'channel.snr_db=nan', 'snr_db must be finite'),
    ({'channel': {'doppler_hz': -0.5}},
     'channel.doppler_hz=-0.5', 'doppler_hz must be >= 0'),
    ({'channel': {'delay_spread_s': 1.5e-05}},
     'channel.delay_spread_s=1.5e-05', 'delay_spread_s must be <= 1e-05 (seconds: 300 ns is 300e-9)'),
    ({'channel': {'delay_spread_s': -1e-09}},
     'channel.delay_spread_s=-1e-09', 'delay_spread_s must be >= 0'),
    ({'channel': {'snr_db': -60.0}},
     'channel.snr_db=-60.0', 'snr_db must be >= -50'),
    ({'channel': {'snr_db': 101.0}},
     'channel.snr_db=101.0', 'snr_db must be <= 100'),
    ({'channel': {'phase_noise_linewidth_hz': -1.0}},
     'channel.phase_noise_linewidth_hz=-1.0', 'phase_noise_linewidth_hz must be >= 0'),
    ({'channel': {'travel_azimuth_deg': INF}},
     'channel.travel_azimuth_deg=inf', 'travel_azimuth_deg must be a finite angle in degrees'),
    ({'channel': {'num_sinusoids': 3}},
     'channel.num_sinusoids=3', 'num_sinusoids must be >= 4'),
    ({'channel': {'profile': 'sparse', 'sparse_num_paths': 0}},
     'channel.sparse_num_paths=0', 'sparse_num_paths must be an integer in 1..64 (paths per'),
    ({'channel': {'profile': 'sparse', 'sparse_num_paths': 65}},
     'channel.sparse_num_paths=65', 'sparse_num_paths must be an integer in 1..64 (paths per'),
    ({'channel': {'sparse_num_paths': 8}},
     'channel.sparse_num_paths=8', 'applies to profile sparse only'),
    ({'channel': {'travel_azimuth_deg': 30.0}},  # TDL taps draw their angles per frame: it did nothing
     'channel.travel_azimuth_deg=30.0', 'applies to the CDL profiles only'),
    ({'channel': {'profile': 'sparse', 'travel_azimuth_deg': -45.0}},
     'channel.travel_azimuth_deg=-45.0', 'applies to the CDL profiles only'),
    ({'channel': {'profile': 'sparse', 'cfo_hz': 10.0}},
     'channel.cfo_hz=10.0', 'the time-domain (ICI) path does not draw sparse paths yet;'),
    ({'channel': {'profile': 'sparse', 'timing_offset_samples': [0.5, 1.5]}},  # the field set, with its range
     'channel.timing_offset_samples=[0.5, 1.5]', 'the time-domain (ICI) path does not draw sparse paths yet;'),
    ({'channel': {'profile': 'sparse', 'ici': True, 'cfo_hz': 10.0}},  # --ici first: it takes the path by itself
     'channel.ici=True', 'the time-domain (ICI) path does not draw sparse paths yet;'),
    ({'channel': {'profile': 'sparse', 'realization': 'per-condition'}},
     "channel.realization='per-condition'", 'profile sparse draws its paths per frame'),
    ({'channel': {'snr_db': [0.0, 25.0], 'snr_step_db': 0.0}},
     'channel.snr_step_db=0.0', 'must be a positive number (or null for uniform draws)'),
    ({'channel': {'snr_db': [0.0, 25.0], 'snr_step_db': INF}},
     'channel.snr_step_db=inf', 'must be a positive number (or null for uniform draws)'),
    ({'channel': {'snr_db': [0.0, 25.0], 'snr_step_db': 7.0}},
     'channel.snr_step_db=7.0', 'must divide the snr_db range [0, 25] into whole steps'),
    ({'channel': {'dopler_hz': 5.0}},
     'channel.dopler_hz=5.0', 'Extra inputs are not permitted'),
    ({'ofdm': {'num_subcarriers': 0}},
     'ofdm.num_subcarriers=0', 'num_subcarriers must be >= 1'),
    ({'ofdm': {'subcarrier_spacing_hz': 0.0}},
     'ofdm.subcarrier_spacing_hz=0.0', 'subcarrier_spacing_hz must be a positive frequency in Hz'),
    ({'ofdm': {'carrier_frequency_hz': INF}},
     'ofdm.carrier_frequency_hz=inf', 'carrier_frequency_hz must be a positive frequency in Hz'),
    ({'ofdm': {'cyclic_prefix_ratio': 1.0}},
     'ofdm.cyclic_prefix_ratio=1.0', 'cyclic_prefix_ratio must be in [0, 1) (CP duration / useful'),
    ({'ofdm': {'cyclic_prefix_ratio': -0.1}},
     'ofdm.cyclic_prefix_ratio=-0.1', 'cyclic_prefix_ratio must be in [0, 1) (CP duration / useful'),
    ({'ofdm': {'pilot_subcarrier_spacing': 0}},
     'ofdm.pilot_subcarrier_spacing=0', 'pilot_subcarrier_spacing must be >= 1'),
    ({'ofdm': {'pilot_subcarrier_offset': 120}},
     'ofdm.pilot_subcarrier_offset=120', 'must lie in the grid, 0..119'),
    ({'ofdm': {'pilot_subcarrier_offset': -1}},
     'ofdm.pilot_subcarrier_offset=-1', 'must lie in the grid, 0..119'),
    ({'ofdm': {'pilot_symbols': []}},
     'ofdm.pilot_symbols=[]', 'needs at least one OFDM symbol'),
    ({'ofdm': {'pilot_symbols': [2, 14]}},
     'ofdm.pilot_symbols=[2, 14]', 'index 14 is outside the grid, 0..13 (0-based)'),
    ({'ofdm': {'pilot_symbols': [-1, 2]}},
     'ofdm.pilot_symbols=[-1, 2]', 'index -1 is outside the grid, 0..13 (0-based)'),
    ({'ofdm': {'pilot_symbols': [11, 2]}},
     'ofdm.pilot_symbols=[11, 2]', 'must be strictly increasing'),
    ({'ofdm': {'pilot_symbols': [2, 2]}},
     'ofdm.pilot_symbols=[2, 2]', 'must be strictly increasing'),
    ({'ofdm': {'pilot_positions': [[0, 0], [120, 3]]}},
     'ofdm.pilot_positions[1]=[120, 3]', 'outside the 120x14 grid (subcarrier 0..119, symbol 0..13,'),
    ({'mimo': {'num_users': 65}},
     'mimo.num_users=65', 'num_users must be an integer in 1..64'),
    ({'mimo': {'rx_correlation': 1.0}},
     'mimo.rx_correlation=1.0', 'rx_correlation must be in [0, 1) (or a [low, high] range'),
    ({'mimo': {'num_rx_antennas': 2, 'num_users': 2, 'antenna_spacing_wavelengths': 0.0, 'spatial': 'rays'}, 'channel': {'profile': 'CDL-A'}},
     'mimo.antenna_spacing_wavelengths=0.0', 'antenna_spacing_wavelengths must be in (0, 100] wavelengths'),
    ({'mimo': {'pilots': 'dmrs-type1'}},
     "mimo.pilots='dmrs-type1'", 'DM-RS ports need several users or antennas'),
    ({'mimo': {'num_rx_antennas': 2, 'num_users': 2, 'antenna_spacing_wavelengths': 1.0}},
     'mimo.antenna_spacing_wavelengths=1.0', "is read by mimo.spatial rays only; the Kronecker model's"),
    ({'mimo': {'num_rx_antennas': 2, 'num_users': 2, 'spatial': 'rays'}},
     "mimo.spatial='rays'", 'rays need a CDL profile (CDL-A..CDL-E), not A'),
    ({'mimo': {'num_rx_antennas': 2, 'num_users': 2, 'spatial': 'rays', 'rx_correlation': 0.5}, 'channel': {'profile': 'CDL-A'}},
     'mimo.rx_correlation=0.5', "must be 0 with mimo.spatial rays: the rays' angles set the"),
    ({'mimo': {'num_rx_antennas': 2, 'num_users': 2, 'spatial': 'rays', 'pilots': 'dmrs-type1'}, 'channel': {'profile': 'CDL-A'}},
     "mimo.pilots='dmrs-type1'", 'mimo.spatial rays supports the Kronecker pilot pattern only'),
    ({'mimo': {'num_rx_antennas': 2, 'num_users': 2}, 'channel': {'cfo_hz': 10.0}},
     'channel.cfo_hz=10.0', 'the time-domain (ICI) path, and with it the impairments, is'),
    ({'mimo': {'num_rx_antennas': 2, 'num_users': 2}, 'channel': {'realization': 'per-condition'}},
     "channel.realization='per-condition'", 'the reference protocol (per-condition) is SISO only'),
    ({'mimo': {'num_rx_antennas': 2, 'num_users': 2}, 'channel': {'profile': 'sparse'}},
     "channel.profile='sparse'", 'is SISO only so far'),
    ({'mimo': {'num_rx_antennas': 2, 'num_users': 2}, 'ofdm': {'pilot_positions': [[0, 2], [5, 11], [60, 2]]}},
     "ofdm.pilot_positions='3 scattered pilots on 2 symbols'", 'MIMO pilots (Kronecker pattern) need a Kronecker layout:'),
    ({'mimo': {'num_rx_antennas': 2, 'num_users': 5}},
     'mimo.num_users=5', 'must divide the 12 pilot subcarriers, which are dealt to'),
    ({'mimo': {'num_rx_antennas': 2, 'num_users': 2, 'rx_correlation': 0.5}, 'channel': {'profile': 'UMi'}},
     'mimo.rx_correlation=0.5', "must be 0 with profile UMi: the scenario's angles set the"),
    ({'mimo': {'num_rx_antennas': 2, 'num_users': 2, 'pilots': 'dmrs-type1'}, 'channel': {'profile': 'UMi'}},
     "mimo.pilots='dmrs-type1'", 'profile UMi runs with the Kronecker pattern only so far'),
    ({'mimo': {'num_rx_antennas': 2, 'num_users': 5, 'pilots': 'dmrs-type1'}},
     'mimo.num_users=5', 'dmrs-type1 has 4 DM-RS ports, one per user'),
    ({'mimo': {'num_rx_antennas': 2, 'num_users': 2, 'pilots': 'dmrs-type1'}, 'ofdm': {'pilot_positions': [[0, 2], [5, 11]]}},
     "ofdm.pilot_positions='2 scattered pilots on 2 symbols'", 'dmrs-type1 places its own pilots on ofdm.pilot_symbols'),
    ({'mimo': {'num_rx_antennas': 2, 'num_users': 2, 'pilots': 'dmrs-type2'}, 'ofdm': {'num_subcarriers': 123}},
     'ofdm.num_subcarriers=123', 'must be a multiple of 6 for dmrs-type2'),
    ({'mimo': {'num_rx_antennas': 2, 'num_users': 2, 'pilots': 'dmrs-type1-double'}, 'ofdm': {'pilot_symbols': [2, 3]}},
     'ofdm.pilot_symbols=[2, 3]', "double-symbol DM-RS needs each pilot symbol's next symbol"),
    ({'mimo': {'num_rx_antennas': 2, 'num_users': 2, 'pilots': 'dmrs-type1-double'}, 'ofdm': {'pilot_symbols': [2, 13]}},
     'ofdm.pilot_symbols=[2, 13]', "double-symbol DM-RS needs each pilot symbol's next symbol"),
    ({'channel': {'ici': True, 'realization': 'per-condition'}},
     "channel.realization='per-condition'", 'the reference protocol (per-condition) is not available'),
    ({'channel': {'timing_offset_samples': 137.5}},
     'channel.timing_offset_samples=137.5', 'must be within the symbol: |offset| <= 137 samples (FFT'),
    ({'channel': {'timing_offset_samples': [-137.5, 0.0]}},
     'channel.timing_offset_samples=[-137.5, 0.0]', 'must be within the symbol: |offset| <= 137 samples (FFT'),
    ({'channel': {'ici': True, 'doppler_hz': [0.0, 20000.0]}},
     'channel.doppler_hz=[0.0, 20000.0]', 'with channel.ici (the time-domain path) the Doppler must be'),
    ({'channnel': {}},
     "config='channnel'", 'unknown section; allowed: ofdm, channel, mimo'),
    ({'ofdm': 5},
     'ofdm=5', 'must be a mapping of field: value'),
    ([1, 2],
     "config='list'", "must be a mapping with 'ofdm' and 'channel'"),])
def test_every_config_rule_refuses_in_one_line_naming_field_value_and_rule(d, head, rule):
    msg = _refused(d)
    assert msg.startswith(head + ": ") and rule in msg and "\n" not in msg, msg


@pytest.mark.parametrize("d", [
    {"channel": {"doppler_hz": 0.0, "snr_db": [-50.0, 100.0], "delay_spread_s": [0.0, 1e-5], "num_sinusoids": 4,
                 "phase_noise_linewidth_hz": 0.0}},
    {"ofdm": {"pilot_subcarrier_offset": 119, "cyclic_prefix_ratio": 0.0, "pilot_symbols": [0, 13]}},
    {"channel": {"timing_offset_samples": [-137.0, 137.0]}},
    {"channel": {"ici": True, "doppler_hz": [0.0, 15e3]}},
    {"channel": {"profile": "sparse", "sparse_num_paths": 1}},
    {"channel": {"profile": "sparse", "sparse_num_paths": 64}},
    {"channel": {"snr_db": [0.0, 25.0], "snr_step_db": 5.0}},
    {"mimo": {"num_rx_antennas": 64, "num_users": 4, "rx_correlation": 0.99}},
    {"mimo": {"num_rx_antennas": 2, "num_users": 4, "pilots": "dmrs-type1"}},
    {"mimo": {"num_rx_antennas": 2, "num_users": 2, "pilots": "dmrs-type1-double"}, "ofdm": {"pilot_symbols": [2, 11]}},
    {"mimo": {"num_rx_antennas": 2, "num_users": 2, "spatial": "rays", "antenna_spacing_wavelengths": 100.0},
     "channel": {"profile": "CDL-A"}},
])
def test_values_at_each_rules_edge_still_build(d):
    SystemConfig.from_dict(d)


def test_a_range_of_one_point_is_that_fixed_value():
    # [500, 500] draws 500 in every frame: the same config (and JSON, so the same dataset identity) as 500
    a = SystemConfig.from_dict({"channel": {"doppler_hz": [500.0, 500.0]}})
    assert a.channel.doppler_hz == 500.0 and a.to_json() == SystemConfig.from_dict({"channel": {"doppler_hz": 500}}).to_json()


def test_an_empty_config_file_is_refused(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n")
    with pytest.raises(ConfigError, match=r"^config='.*empty\.yaml': is empty"):
        SystemConfig.from_yaml(str(path))
