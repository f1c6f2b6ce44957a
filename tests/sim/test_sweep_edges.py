"""Rough edges of ``wavefront sweep`` a user trips over: what "given" means, early stops over drawn conditions,
and how the table, the plot and the warnings name what was run."""
import json
from pathlib import Path

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


# --min-frames: a point whose frames draw a condition per frame is a Bayes risk with a wide per-frame spread; with
# --min-bit-errors 1 at 0 dB (bit error rate about 0.25) it used to stop after its first batch
DRAWN = SMALL + "channel:\n  doppler_hz: [50, 1000]\n"
EDGE = ["sweep", "--estimators", "ls-linear,lmmse-genie", "--snr-db", "0", "--frames", "320", "--batch-size", "32",
        "--min-bit-errors", "1", "--no-progress", "--device", "cpu"]
KEYS = ("estimator", "frames", "mse_db", "mse_se_db", "bound_db", "bit_errors", "bits")


def _edge(tmp_path, name, yaml_text, *flags):
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml_text)
    out = tmp_path / name
    assert main([*EDGE, "--config", str(cfg), "--out", str(out), *flags]) == 0
    res = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None
    return res, out


def _rows(res):
    return [{k: r[k] for k in KEYS} for r in res["rows"]]


def test_a_point_drawing_its_conditions_per_frame_runs_the_floor_before_min_bit_errors_stops_it(tmp_path, capsys):
    from wavefront.sim.sweep import DRAWN_MIN_FRAMES

    drawn, _ = _edge(tmp_path, "drawn", DRAWN)
    assert DRAWN_MIN_FRAMES == 256 and {r["frames"] for r in drawn["rows"]} == {256}  # 8 batches: the floor, not 32
    assert drawn["spec"]["min_frames"] == 256 and "floor" in drawn["spec"]["min_frames_floor"]
    assert "early stop: at 1 bit errors per estimator, never before 256 frames (the floor" in capsys.readouterr().out
    # fixed conditions: one batch, as before (the config's SNR range is the swept axis's, replaced by --snr-db 0)
    fixed, _ = _edge(tmp_path, "fixed", SMALL + "channel:\n  snr_db: [0, 25]\n  doppler_hz: 500\n")
    assert {r["frames"] for r in fixed["rows"]} == {32} and {r["snr_db"] for r in fixed["rows"]} == {0.0}
    assert "min_frames" not in fixed["spec"] and "early stop" not in capsys.readouterr().out  # spec and table as before
    given, _ = _edge(tmp_path, "given", DRAWN, "--min-frames", "70")  # its own floor: the batch that passes 70
    assert {r["frames"] for r in given["rows"]} == {96} and "min_frames_floor" not in given["spec"]
    given, _ = _edge(tmp_path, "given0", DRAWN, "--min-frames", "0")  # 0 given: no floor, one batch
    assert {r["frames"] for r in given["rows"]} == {32} and "min_frames" not in given["spec"]
    small, _ = _edge(tmp_path, "small", DRAWN, "--frames", "100")  # the floor never asks for more than --frames
    assert {r["frames"] for r in small["rows"]} == {100} and small["spec"]["min_frames"] == 100


@pytest.mark.parametrize("flags,says", [(["--min-frames", "400"], "min_frames=400: must be at most frames=320"),
                                        (["--min-frames", "-1"], "min_frames=-1"),
                                        (["--min-frames", "2.5"], "min_frames=2.5")])
def test_a_bad_min_frames_is_one_line_and_exit_2(tmp_path, capsys, flags, says):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(DRAWN)
    assert main([*EDGE, "--config", str(cfg), "--out", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err and "Traceback" not in err
    argv = [a for a in EDGE if a not in ("--min-bit-errors", "1")]  # without --min-bit-errors it would do nothing
    assert main([*argv, "--config", str(cfg), "--out", str(tmp_path / "o"), "--min-frames", "64"]) == 2
    assert "give --min-bit-errors too" in capsys.readouterr().err


def test_the_floor_holds_through_a_kill_and_resume_and_through_array_jobs_and_their_merge(tmp_path, monkeypatch):
    import wavefront.sim.experiment as experiment

    whole, _ = _edge(tmp_path, "whole", DRAWN)
    real, calls = experiment._batch_counts, []

    def killed_after_three(*a, **k):
        if len(calls) >= 3:
            raise KeyboardInterrupt  # a kill from inside: the 4th batch never finishes
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(experiment, "_batch_counts", killed_after_three)
    cfg = tmp_path / "cut.yaml"
    cfg.write_text(DRAWN)
    assert main([*EDGE, "--config", str(cfg), "--out", str(tmp_path / "cut")]) == 130
    calls.clear()
    monkeypatch.setattr(experiment, "_batch_counts", lambda *a, **k: calls.append(1) or real(*a, **k))
    resumed, _ = _edge(tmp_path, "cut", DRAWN)  # 3 batches replayed, 5 computed, stopped at the floor again
    assert len(calls) == 5 and _rows(resumed) == _rows(whole) and {r["frames"] for r in whole["rows"]} == {256}
    monkeypatch.setattr(experiment, "_batch_counts", real)
    # the same folder with another --min-frames is another run: refused, naming the field
    assert main([*EDGE, "--config", str(cfg), "--out", str(tmp_path / "cut"), "--min-frames", "64"]) == 2
    for rank in (0, 1):  # array jobs: each runs its batches to --frames, the merge stops where one process would
        _edge(tmp_path, "jobs", DRAWN, "--rank", str(rank), "--world", "2")
    parts = [json.loads((tmp_path / "jobs" / f"partial-{r}-of-2.json").read_text()) for r in (0, 1)]
    assert [q["min_frames"] for q in parts] == [256, 256]
    assert main(["merge-results", str(tmp_path / "merged"), str(tmp_path / "jobs")]) == 0
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert _rows(merged) == _rows(whole)


def test_partial_files_without_min_frames_merge_as_0_and_a_different_one_is_refused():
    from wavefront.sim.experiment import PARTIAL_FORMAT, merge_partials

    est = [{"estimator": "a", "given": "pilots only", "trained_on": None}]
    meta = {"sweep": "snr", "axis": "snr_db", "axis_value": 0.0, "snr_db": 0.0, "delay_spread_ns": 300.0,
            "doppler_hz": 500.0, "pilots": "p", "realization": "r"}
    batches = [[i, [1.0, 2.0, 4.0, 8.0], [10, 100, 5, 50, 0, 0, 0]] for i in range(4)]  # 5 bit errors a batch

    def part(rank, **extra):
        return {"format": PARTIAL_FORMAT, "rank": rank, "world": 2, "min_bit_errors": 5, "estimators": est,
                "points": [{"meta": meta, "want": 40, "batches": batches[rank::2]}], **extra}

    assert [r.frames for r in merge_partials([part(0), part(1)])] == [10]  # older files: no floor, the first batch
    assert [r.frames for r in merge_partials([part(0, min_frames=25), part(1, min_frames=25)])] == [30]
    assert [r.frames for r in merge_partials([part(0, min_frames=0), part(1)])] == [10]  # 0 is what absent means
    with pytest.raises(ConfigError, match="min_frames=25: differs between partial files"):
        merge_partials([part(0), part(1, min_frames=25)])


GRID = SMALL + ("channel:\n  doppler_hz: [0, 1000]\n  doppler_step_hz: 100\n  delay_spread_s: [25.0e-9, 300.0e-9]\n"
                "  delay_spread_step_s: 25.0e-9\n")


def test_the_held_line_and_the_plot_title_name_a_step_grid(tmp_path, capsys, sweep_titles):
    """A config drawing its conditions on a grid (``doppler_step_hz``) was described as a continuous range."""
    from wavefront.sim.sweep import _held

    spans, titles = sweep_titles
    cfg = tmp_path / "g.yaml"
    cfg.write_text(GRID)
    assert main(["sweep", "--config", str(cfg), "--estimators", "ls-linear", "--snr-db", "10,20", "--frames", "8",
                 "--out", str(tmp_path / "o"), "--no-progress", "--device", "cpu"]) == 0
    held = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("held at each point")]
    assert held == ["held at each point: Doppler 0-1000 Hz on a 100 Hz grid (drawn per frame), delay spread 25-300 ns "
                    "on a 25 ns grid (drawn per frame); MSE and bound are their averages over the frames (the Bayes "
                    "risk over those ranges)"]
    # the title, narrower, writes the grid by its first values, and still fits its figure
    assert titles == ["TDL-A, Doppler 0,100,…,1000 Hz per frame,\ndelay spread 25,50,…,300 ns per frame, 24x14 grid, "
                      "8 frames/point"] * 2, titles
    assert len(spans) == 2 and all(0 <= x0 and x1 <= width for x0, x1, width in spans), spans
    # a range without a step, and a fixed value, read as before
    ch = {"doppler_hz": [50.0, 1000.0], "delay_spread_s": 3e-7, "delay_spread_step_s": 2.5e-8, "snr_db": 10.0}
    assert _held(ch, "snr_db") == [("Doppler 50-1000 Hz", True), ("delay spread 300 ns", False)]


def _mse_axes(tmp_path, monkeypatch, snr):
    """Runs a small sweep over ``snr`` and returns (the MSE plot's bound line, its legend labels and markers, ylim)."""
    import wavefront.sim.sweep as sweep_module
    from wavefront.utils import finish_figure

    seen = []

    def kept(fig, path, dpi=120):
        if "mse_" in str(path):
            ax = fig.axes[0]
            (bound,) = [ln for ln in ax.get_lines() if ln.get_label() == "MMSE bound"]
            legend = {t.get_text(): h.get_marker() for t, h in zip(ax.get_legend().get_texts(),
                                                                   ax.get_legend().legend_handles)}
            seen.append((bound.get_marker(), list(bound.get_ydata()), legend, ax.get_ylim()))
        return finish_figure(fig, path, dpi)

    monkeypatch.setattr(sweep_module, "finish_figure", kept)
    out = tmp_path / f"o{len(snr)}"
    assert main(["sweep", "--estimators", "ls-linear,lmmse-genie", "--snr-db", snr, "--frames", "8", "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    return seen[0], rows


def test_a_one_point_sweep_plots_its_bound_as_a_marker_in_the_legend(tmp_path, monkeypatch):
    """A dashed line through one point draws nothing: a sweep over one SNR showed the estimators but not the bound."""
    (marker, ys, legend, (lo, hi)), rows = _mse_axes(tmp_path, monkeypatch, "10")
    assert marker not in ("None", "", " ", None) and legend["MMSE bound"] == marker  # drawn, and so in the legend
    assert ys == [rows[0]["bound_db"]] and lo <= ys[0] <= hi  # at the bound, inside the axes
    assert legend["ls-linear"] == "o"  # as the estimator rows are
    (marker, ys, legend, _), rows = _mse_axes(tmp_path, monkeypatch, "10,20")  # several points: the dashed line alone
    assert marker == "None" and ys == [r["bound_db"] for r in rows if r["estimator"] == "ls-linear"]


def test_the_shipped_model_warning_names_the_mismatch_in_one_short_line(tmp_path):
    """On --preset adafortitran-paper the warning listed all 40 pilot subcarriers (a 300-character line)."""
    with pytest.warns(UserWarning) as caught:
        assert main(["sweep", "--preset", "adafortitran-paper", "--snr-db", "10", "--frames", "8", "--batch-size", "8",
                     "--out", str(tmp_path), "--no-progress", "--device", "cpu"]) == 0
    (text,) = [str(w.message) for w in caught if "does not fit" in str(w.message)]
    assert ("does not fit this system (is for ofdm.pilot_subcarriers=[0, 10, ..., 110] (12 values), but the config "
            "has [0, 3, ..., 117] (40 values)); sweeping the classical ones") in text
    assert "\n" not in text and len(text) < 280  # with the 52 numbers written out: 421 characters


def test_short_lists_keeps_short_lists_and_every_number_it_needs():
    from wavefront.sim.cli import short_lists

    # 6 or fewer, tuples: as written
    assert short_lists("x=[1, 2, 3, 4, 5, 6] and (120, 14)") == "x=[1, 2, 3, 4, 5, 6] and (120, 14)"
    assert short_lists(f"{list(range(5, 45, 5))}") == "[5, 10, ..., 40] (8 values)"  # evenly spaced: ends and step
    assert short_lists("[0, 1, 5, 7, 8, 9, 11]") == "[0, 1, 5, 7, ...] (7 values)"  # otherwise the first four
    assert short_lists("[-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]") == "[-1.5, -1.0, ..., 1.5] (7 values)"


def test_the_table_names_impairment_ranges_as_the_command_line_gives_them_and_results_json_keeps_its_words(
        tmp_path, capsys):
    """The ICI line printed ``cfo_hz=(-200.0, 200.0)``, a Python tuple, for ``--cfo-hz=-200:200``."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(SMALL)
    out = tmp_path / "o"
    assert main(["sweep", "--config", str(cfg), "--estimators", "ls-linear", "--snr-db", "20", "--frames", "8", "--ici",
                 "--cfo-hz=-200:200", "--phase-noise-hz", "100", "--timing-offset", "0.5:1.5", "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("ICI: ")]
    assert line.endswith("; receiver impairments CFO -200…200 Hz (drawn per frame), phase-noise linewidth 100 Hz, "
                         "timing offset 0.5…1.5 samples (drawn per frame) (label without them; the genie LMMSE and the "
                         "bound ignore them)")
    assert "(" not in line.split("impairments ")[1].split(" (label")[0].replace("(drawn per frame)", "")
    stored = json.loads((out / "results.json").read_text())["spec"]["ici"]  # what results.json keeps: as before
    assert ("receiver impairments cfo_hz=(-200.0, 200.0), phase_noise_linewidth_hz=100.0, timing_offset_samples=(0.5, "
            "1.5) (label") in stored
    assert line.split("; receiver")[0] == "ICI: " + stored.split("; receiver")[0]  # the rest of the line as stored


@pytest.mark.parametrize("channel,floored", [("  cfo_hz: [-200, 200]\n", True), ("  cfo_hz: 100\n", False),
                                             ("  timing_offset_samples: [0.5, 1.5]\n", True),
                                             ("  phase_noise_linewidth_hz: [10, 100]\n", True)])
def test_a_range_on_a_receiver_impairment_is_drawn_per_frame_and_gets_the_floor(tmp_path, channel, floored):
    """An impairment range is drawn per frame like a condition range: its point is a Bayes risk and gets the floor."""
    spec = _spec(tmp_path, SMALL + "channel:\n  doppler_hz: 100\n  delay_spread_s: 1.0e-7\n" + channel,
                 "--snr-db", "10", "--frames", "320", "--min-bit-errors", "1")
    assert spec.min_frames == (256 if floored else 0)


def test_a_range_on_the_antennas_correlation_gets_the_floor(tmp_path):
    flags = ("--snr-db", "10", "--frames", "300", "--min-bit-errors", "1", "--rx-antennas", "2")
    assert _spec(tmp_path, SMALL, *flags, "--rx-correlation", "0.2:0.8").min_frames == 256
    assert _spec(tmp_path, SMALL, *flags, "--rx-correlation", "0.5").min_frames == 0


def test_the_siso_equaliser_is_refused_under_mimo_where_it_would_do_nothing(tmp_path):
    with pytest.raises(ConfigError, match="equalizer='mmse': is the SISO one-tap equaliser"):
        _spec(tmp_path, SMALL, "--snr-db", "10", "--rx-antennas", "2", "--equalizer", "mmse")
    assert _spec(tmp_path, SMALL, "--snr-db", "10", "--rx-antennas", "2").equalizer == "zf"  # the default runs
    assert _spec(tmp_path, SMALL, "--snr-db", "10", "--equalizer", "mmse").equalizer == "mmse"  # SISO keeps it


def test_the_mse_plot_draws_each_points_95_percent_student_interval_from_its_standard_error(tmp_path, monkeypatch):
    # 8 frames a point: a genie a little below the bound is Monte-Carlo noise, and the plot must show how much
    import wavefront.sim.sweep as sweep_module
    from wavefront.utils import finish_figure

    bars = {}

    def kept(fig, path, dpi=120):
        if Path(path).name.startswith("mse_"):
            ax = fig.axes[0]
            ys = {ln.get_label(): list(ln.get_ydata()) for ln in ax.get_lines()}
            for c in ax.containers:  # labelled "_<estimator> interval", out of the legend
                name = c.get_label().removeprefix("_").removesuffix(" interval")
                bars[name] = (ys[name], [v for seg in c.lines[2][0].get_segments() for v in (seg[0][1], seg[1][1])])
            bars["legend"] = [t.get_text() for t in ax.get_legend().get_texts()]
        return finish_figure(fig, path, dpi)

    monkeypatch.setattr(sweep_module, "finish_figure", kept)
    out = tmp_path / "o"
    assert main(["sweep", "--estimators", "ls-linear,lmmse-genie", "--snr-db", "0,20", "--frames", "8", "--out",
                 str(out), "--no-progress", "--device", "cpu"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert bars.pop("legend") == ["ls-linear", "lmmse-genie", "MMSE bound"]
    for name in ("ls-linear", "lmmse-genie"):
        mine = [r for r in rows if r["estimator"] == name]
        ys, lo_hi = bars[name]
        assert ys == pytest.approx([r["mse_db"] for r in mine])
        t = 2.3646  # Student's t_{0.975} at 8 - 1 degrees of freedom
        assert lo_hi == pytest.approx([r["mse_db"] + sign * t * r["mse_se_db"] for r in mine for sign in (-1, 1)],
                                      rel=1e-4)
        assert all(r["mse_se_db"] > 0.05 for r in mine)  # 8 frames: bars that show
