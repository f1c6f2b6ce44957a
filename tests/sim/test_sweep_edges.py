"""Rough edges of ``wavefront sweep`` a user trips over: what "given" means, early stops over drawn conditions,
and how the table, the plot and the warnings name what was run."""
import json

import pytest

from wavefront.cli import build_parser, main
from wavefront.errors import ConfigError
from wavefront.sim.cli import SNR_DEFAULT, build_spec

SMALL = "ofdm:\n  num_subcarriers: 24\n  pilot_subcarrier_spacing: 4\n"


def _spec(tmp_path, yaml_text, *flags):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    return build_spec(build_parser().parse_args(["sweep", "--config", str(cfg), "--out", str(tmp_path), *flags]))


@pytest.mark.parametrize("spelling", [SNR_DEFAULT, "0,5,10,15,20,25,30"])
def test_an_snr_range_typed_out_is_given_even_when_it_is_the_default(tmp_path, spelling):
    """``--snr-db 0:30:5`` typed by the user was read as "not given": the config's SNR was held instead."""
    text = SMALL + "channel:\n  snr_db: [0, 25]\n"
    spec = _spec(tmp_path, text, "--doppler-hz", "100,500")  # not given: the config's SNR range is held
    assert spec.axis == "doppler_hz" and spec.config.channel.snr_db == (0.0, 25.0)
    with pytest.raises(ConfigError) as exc:  # given (either spelling): two axes, refused, without "defaults to"
        _spec(tmp_path, text, "--doppler-hz", "100,500", "--snr-db", spelling)
    assert exc.value.field == "axes" and "defaults to" not in str(exc.value)
    with pytest.raises(ConfigError, match=r"--snr-db defaults to 0:30:5"):  # not given, no config SNR: the hint
        _spec(tmp_path, SMALL, "--doppler-hz", "100,500")
    # given alone, it is the axis, the same seven points as when left out
    assert _spec(tmp_path, SMALL, "--snr-db", spelling).values == _spec(tmp_path, SMALL).values == [0, 5, 10, 15, 20, 25, 30]
