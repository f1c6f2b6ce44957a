"""`wavefront leaderboard` with --ici, the impairment and the MIMO flags: the YAML route's config, recorded, and a
rerun under another config refused."""
import json
import math

import pytest
import torch
import yaml

from wavefront.cli import build_parser, main
from wavefront.errors import ConfigError
from wavefront.estimators.cli import leaderboard_config
from wavefront.estimators.leaderboard import PRIOR_FILE, _check_same_prior, bayes_risk_frames, per_frame_mse
from wavefront.sim.config import SystemConfig
from wavefront.sim.prior_lmmse import BayesMMSE

pytestmark = pytest.mark.filterwarnings("ignore:inter-carrier interference")

# 12 x 4 grid, pilots on every 2nd subcarrier of symbols 0 and 3, a narrow prior: the paper suites stay cheap
TINY = {"ofdm": {"num_subcarriers": 12, "num_symbols": 4, "pilot_subcarrier_spacing": 2, "pilot_symbols": [0, 3]},
        "channel": {"snr_db": [0.0, 20.0], "delay_spread_s": [50e-9, 150e-9], "doppler_hz": [100.0, 300.0]}}
# what the flags below add, written as a YAML config's fields
IMPAIRED = {"ici": True, "cfo_hz": [-300.0, 300.0], "phase_noise_linewidth_hz": [0.0, 50.0], "timing_offset_samples": 1.0}
IMPAIRED_FLAGS = ["--ici", "--cfo-hz=-300:300", "--phase-noise-hz", "0:50", "--timing-offset", "1"]
MIMO = {"num_rx_antennas": 2, "num_users": 2, "rx_correlation": 0.5}
MIMO_FLAGS = ["--rx-antennas", "2", "--users", "2", "--rx-correlation", "0.5"]
BUDGET = ["--models", "linear", "--steps", "2", "--batch-size", "4", "--bayes-frames", "8", "--frames-per-point", "2",
          "--no-progress"]


def _yaml(path, channel=None, mimo=None):
    d = {"ofdm": dict(TINY["ofdm"]), "channel": {**TINY["channel"], **(channel or {})}}
    if mimo:
        d["mimo"] = mimo
    path.write_text(yaml.safe_dump(d))
    return str(path)


def _config(argv):
    return leaderboard_config(build_parser().parse_args(["leaderboard", *argv]))


@pytest.mark.parametrize("fields, flags", [({"channel": IMPAIRED}, IMPAIRED_FLAGS), ({"mimo": MIMO}, MIMO_FLAGS)],
                         ids=["ici-impairments", "mimo"])
def test_the_flags_give_the_config_the_yaml_route_gives(fields, flags, tmp_path):
    plain = _yaml(tmp_path / "plain.yaml")
    written = _yaml(tmp_path / "written.yaml", **fields)
    by_flags = _config(["--config", plain, *flags])
    assert by_flags.to_json() == SystemConfig.from_yaml(written).to_json()
    assert by_flags.to_json() != SystemConfig.from_yaml(plain).to_json()  # the flags did something
    assert _config(["--config", plain]).to_json() == SystemConfig.from_yaml(plain).to_json()  # no flag: the YAML's


def test_the_flags_apply_to_the_default_prior_too():
    from wavefront.sim.config import preset
    from wavefront.sim.experiment import prior_config

    ch = _config(["--ici", "--cfo-hz", "100"]).channel
    base = prior_config(preset("default")).channel
    assert ch.ici is True and ch.cfo_hz == 100.0
    assert (ch.snr_db, ch.delay_spread_s, ch.doppler_hz) == (base.snr_db, base.delay_spread_s, base.doppler_hz)


def test_a_folder_keeps_its_config_and_refuses_another_in_one_line(capsys, tmp_path):
    """The resume key: the first run records its config; the same config (by flags or YAML) continues, another is
    refused before any work with one line naming the first field that differs."""
    plain = _yaml(tmp_path / "plain.yaml")
    out = tmp_path / "out"
    out.mkdir()
    _check_same_prior(out, _config(["--config", plain, *IMPAIRED_FLAGS]))
    recorded = (out / PRIOR_FILE).read_text()
    _check_same_prior(out, SystemConfig.from_yaml(_yaml(tmp_path / "w.yaml", channel=IMPAIRED)))  # the same frames
    refused = "holds a leaderboard on frames drawn with"
    for flags, needle in (
            (["--ici", "--cfo-hz=-200:200", "--phase-noise-hz", "0:50", "--timing-offset", "1"],
             f"config.channel.cfo_hz=[-200.0, 200.0]: {out} {refused} channel.cfo_hz [-300.0, 300.0]; "),
            (IMPAIRED_FLAGS[1:], f"config.channel.ici=None: {out} {refused} channel.ici true; "),  # --ici left out
            ([], f"config.channel.cfo_hz=None: {out} {refused} channel.cfo_hz [-300.0, 300.0]; "),
            (IMPAIRED_FLAGS + ["--rx-antennas", "2"], "channel.ici=True: the time-domain (ICI) path")):  # the config's
        rc = main(["leaderboard", "--config", plain, *flags, *BUDGET, "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("wavefront: error: " + needle), err
        assert refused not in needle or err.endswith("use a fresh --out, or --overwrite to discard it"), err
    assert sorted(p.name for p in out.iterdir()) == [PRIOR_FILE] and (out / PRIOR_FILE).read_text() == recorded


def test_overwrite_discards_the_earlier_leaderboard_and_nothing_else(capsys, tmp_path, monkeypatch):
    import wavefront.estimators.leaderboard as lb

    plain = _yaml(tmp_path / "plain.yaml")
    out = tmp_path / "out"
    out.mkdir()
    _check_same_prior(out, _config(["--config", plain, *IMPAIRED_FLAGS]))
    (out / "runs" / "linear-s0").mkdir(parents=True)
    for name in ("classical.json", "leaderboard.md", "suite_snr.png", "runs/linear-s0/last.safetensors", "notes.txt"):
        (out / name).write_text("earlier")
    seen = []

    def run(spec, config, out_, progress=True):  # the real one's first step, then its table
        before = sorted(p.name for p in out_.iterdir())
        lb._check_same_prior(out_, config)
        seen.append(before)
        (out_ / "leaderboard.md").write_text("new")

    monkeypatch.setattr(lb, "run_leaderboard", run)
    assert main(["leaderboard", "--config", plain, *BUDGET, "--out", str(out)]) == 2  # refused without it
    assert "or --overwrite to discard it" in capsys.readouterr().err and seen == []
    assert main(["leaderboard", "--config", plain, *BUDGET, "--out", str(out), "--overwrite"]) == 0
    assert seen == [["notes.txt"]]  # the earlier run's files gone before the new one starts; the user's kept
    assert "removed 5 item(s)" in capsys.readouterr().err
    assert json.loads((out / PRIOR_FILE).read_text()) == json.loads(SystemConfig.from_yaml(plain).to_json())


def test_a_folder_from_before_the_record_is_continued_with_a_warning(tmp_path):
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    config = SystemConfig.from_yaml(_yaml(tmp_path / "plain.yaml"))
    with pytest.warns(UserWarning, match="recorded no config"):
        _check_same_prior(out, config)
    assert json.loads((out / PRIOR_FILE).read_text()) == json.loads(config.to_json())
    with pytest.raises(ConfigError, match="channel.ici"):
        _check_same_prior(out, config.updated(channel={"ici": True}))


@pytest.mark.parametrize("flags, needle", [
    (["--cfo-hz", "abc"], "--cfo-hz='abc': must be a number or a LOW:HIGH range"),
    (["--phase-noise-hz=-5"], "channel.phase_noise_linewidth_hz=-5.0: "),
    (["--timing-offset", "1e6"], "channel.timing_offset_samples=1000000.0: must be within the symbol"),
    (["--rx-correlation", "1.5"], "mimo.rx_correlation=1.5: "),
    (["--rx-antennas", "0"], "rx_antennas=0: "),
    (["--users", "2", "--mimo-pilots", "dmrs-type1"], "mimo.pilots='dmrs-type1': the MIMO leaderboard takes the "
                                                      "Kronecker pattern only"),
])
def test_bad_flag_values_are_one_line_and_exit_2(flags, needle, capsys, tmp_path):
    out = tmp_path / "out"
    try:
        rc = main(["leaderboard", *flags, *BUDGET, "--out", str(out)])
    except SystemExit as exc:  # argparse's own refusals exit from the parser, also with 2
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()  # refused before any work


def _table(out):
    """The leaderboard's rows without the wall-clock measurements (those differ run to run)."""
    rows = json.loads((out / "leaderboard.json").read_text())["rows"]
    clock = ("frames_per_s", "latency_ms", "throughput_vs_genie", "train_seconds_this_run")
    return [{k: v for k, v in r.items() if k not in clock} for r in rows]


def _risk_db(config, n, seed):
    """mmse-bayes' Bayes risk [dB] over ``n`` frames of ``config`` drawn from ``seed``, computed here."""
    frames = bayes_risk_frames(config, n, seed=seed)
    with torch.no_grad():
        return 10 * math.log10(float(per_frame_mse(BayesMMSE(config).estimate(frames.pilots_ls), frames.h).mean()))


@pytest.mark.slow
def test_a_flag_run_measures_and_records_the_flag_frames_and_resumes_by_the_yaml_route(capsys, tmp_path):
    plain = _yaml(tmp_path / "plain.yaml")
    written = SystemConfig.from_yaml(_yaml(tmp_path / "written.yaml", channel=IMPAIRED))
    out = tmp_path / "out"
    assert main(["leaderboard", "--config", plain, *IMPAIRED_FLAGS, *BUDGET, "--out", str(out)]) == 0
    table = json.loads((out / "leaderboard.json").read_text())
    want = json.loads(written.to_json())
    assert table["config"] == want and json.loads((out / PRIOR_FILE).read_text()) == want
    assert table["ici"] == written.ici_text and table["ici"].startswith("modelled")
    assert {k: v["value"] for k, v in table["impairments"].items()} == {
        "cfo_hz": [-300.0, 300.0], "phase_noise_linewidth_hz": [0.0, 50.0], "timing_offset_samples": 1.0}
    assert (out / "leaderboard.md").read_text().startswith("Frames (training and test): inter-carrier interference "
                                                           "modelled")
    rows = {r["name"]: r for r in table["rows"]}
    assert {"mmse-bayes-impaired", "lmmse-genie-impaired"} <= set(rows)  # the yardsticks of an impaired config
    assert "receiver impairments cfo_hz=[-300.0, 300.0]" in rows["linear"]["trained_on"]
    # the Bayes-risk frames are the impaired ones (seed spec.seed + 7 = 7), computed here again; the plain
    # frames of the same seed give another risk (8 dB apart: the CFO and phase noise rotate the pilots)
    risk = rows["mmse-bayes"]["bayes_risk_db"]
    assert abs(risk - _risk_db(written, 8, 7)) < 1e-9
    assert abs(risk - _risk_db(SystemConfig.from_yaml(plain), 8, 7)) > 3.0
    # the YAML route names the same frames: it continues the folder, reusing every row
    before = _table(out)
    capsys.readouterr()
    assert main(["leaderboard", "--config", str(tmp_path / "written.yaml"), *BUDGET, "--out", str(out)]) == 0
    assert "training linear" not in capsys.readouterr().out  # no model trained or resumed: its eval.json is reused
    assert _table(out) == before


def test_overwrite_keeps_the_earlier_leaderboard_when_the_new_run_is_refused(capsys, tmp_path):
    """A MIMO config the leaderboard refuses (NR DM-RS pilots) is refused before --overwrite removes anything."""
    out = tmp_path / "out"
    (out / "runs" / "linear-s0").mkdir(parents=True)
    earlier = ("classical.json", "leaderboard.md", "runs/linear-s0/last.safetensors")
    for name in earlier:
        (out / name).write_text("earlier")
    rc = main(["leaderboard", "--users", "2", "--mimo-pilots", "dmrs-type1", *BUDGET, "--out", str(out), "--overwrite"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("wavefront: error: mimo.pilots='dmrs-type1'") and "removed" not in err, err
    assert all((out / name).read_text() == "earlier" for name in earlier)


def test_overwrite_refuses_a_folder_whose_runs_are_not_a_leaderboards(capsys, tmp_path):
    """`leaderboard --out . --overwrite` in a project folder deleted `wavefront train`'s runs/<model> with the rest."""
    (tmp_path / "runs" / "gated-lmmse").mkdir(parents=True)
    (tmp_path / "runs" / "gated-lmmse" / "best.safetensors").write_text("trained")
    rc = main(["leaderboard", *BUDGET, "--out", str(tmp_path), "--overwrite"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"wavefront: error: out='{tmp_path}': holds a runs/ folder but no leaderboard"), err
    assert (tmp_path / "runs" / "gated-lmmse" / "best.safetensors").read_text() == "trained"
