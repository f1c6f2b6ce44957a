"""A sweep (and an evaluation) across ranks counts exactly the frames of one process.

Two gloo ranks on localhost (the path torchrun takes), and array jobs (--rank/--world) merged,
against one process: the same frames, bit errors and bits, MSE to 1e-6 relative, and
--min-bit-errors stopping each point at the same frame count.
"""
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from wavefront.cli import main
from wavefront.errors import ConfigError
from wavefront.sim.config import preset
from wavefront.sim.experiment import Point, run_experiment, simulated_points
from wavefront.sim.sweep import SweepSpec, run_sweep

# 2 points, 5 batches of 10 frames: an odd count, so rank 0 owns batches 0, 2, 4 and rank 1 owns 1, 3.
SWEEP = ["sweep", "--estimators", "ls-linear,lmmse-genie", "--snr-db", "0,10", "--doppler-hz", "600", "--frames", "50",
         "--batch-size", "10", "--device", "cpu", "--no-progress"]


def _rows(folder):
    return json.loads((folder / "results.json").read_text())["rows"]


def assert_same_counts(one: list[dict], many: list[dict]) -> None:
    """Frames, bit errors and bits exactly; MSE, NMSE and the bound to 1e-6 relative (linear scale)."""
    assert len(one) == len(many) > 0
    for a, b in zip(one, many):
        for k in ("estimator", "axis_value", "frames", "bit_errors", "bits", "in_prior"):
            assert a[k] == b[k], (k, a, b)
        for k in ("mse_db", "nmse_db", "bound_db"):
            assert 10 ** (b[k] / 10) == pytest.approx(10 ** (a[k] / 10), rel=1e-6), (k, a, b)


def _one_process(argv: list[str]) -> list[dict]:
    """Returns the rows of the sweep ``argv`` run in this process (as the command line builds it, without its plots)."""
    from dataclasses import asdict

    from wavefront.cli import build_parser
    from wavefront.sim.cli import build_spec

    return [asdict(r) for r in run_sweep(build_spec(build_parser().parse_args(argv)), progress=False).rows]


def _stop_threshold() -> int:
    """Returns a --min-bit-errors that one process reaches at 10 dB after exactly 3 batches (30 of 50 frames).

    3 batches end mid-round for 2 ranks (rounds {0, 1}, {2, 3}): a per-round check would stop at 40.
    """
    errs = {frames: min(r["bit_errors"] for r in _one_process([*SWEEP[:4], "10", *SWEEP[5:], "--frames", str(frames)]))
            for frames in (20, 30)}
    assert errs[20] < errs[30]
    return errs[30]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank, world, tmp, port, argv):
    # What torchrun gives each process; the command line starts (and ends) the gloo group itself.
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    assert main([*argv, "--out", f"{tmp}/rank{rank}"]) == 0


def test_two_gloo_ranks_count_the_frames_of_one_process(tmp_path):
    argv = [*SWEEP, "--min-bit-errors", str(_stop_threshold())]
    mp.start_processes(_rank_worker, args=(2, tmp_path, _free_port(), argv), nprocs=2, join=True, start_method="fork")

    one = _one_process(argv)
    assert_same_counts(one, _rows(tmp_path / "rank0"))
    assert {r["axis_value"]: r["frames"] for r in one}[10.0] == 30  # stopped inside round {2, 3}
    assert json.loads((tmp_path / "rank0" / "results.json").read_text())["spec"]["world_size"] == 2
    assert not (tmp_path / "rank1").exists()  # rank 0 alone writes


def test_array_jobs_merged_count_the_frames_of_one_process(tmp_path):
    for stop in ([], ["--min-bit-errors", str(_stop_threshold())]):
        tag = "stop" if stop else "all"
        for rank in (0, 1):
            assert main([*SWEEP, *stop, "--rank", str(rank), "--world", "2", "--out", str(tmp_path / f"{tag}_job{rank}")]) == 0
        assert main(["merge-results", str(tmp_path / f"{tag}_merged"), str(tmp_path / f"{tag}_job0"),
                     str(tmp_path / f"{tag}_job1" / "partial-1-of-2.json")]) == 0
        one = _one_process([*SWEEP, *stop])
        assert_same_counts(one, _rows(tmp_path / f"{tag}_merged"))
        assert json.loads((tmp_path / f"{tag}_merged" / "results.json").read_text())["spec"]["world_size"] == 2
        assert (tmp_path / f"{tag}_merged" / "ber_vs_snr.png").stat().st_size > 0
    assert {r["axis_value"]: r["frames"] for r in one}[10.0] == 30


@pytest.mark.parametrize("prior, expected", [([], [True, False]), (["--prior-snr-db", "0:40"], [True, True]),
                                             (["--prior-doppler-hz", "50:500"], [False, False])],
                         ids=["paper-prior", "wider-snr", "narrower-doppler"])
def test_merged_array_jobs_mark_the_points_outside_the_prior_as_one_process(prior, expected, tmp_path):
    # 30 dB lies above the paper's SNR prior (0-25 dB, not widened for in_prior); 600 Hz above a 50-500 Hz one
    argv = [*SWEEP[:4], "10,30", *SWEEP[5:8], "20", *SWEEP[9:], *prior]
    for rank in (0, 1):
        assert main([*argv, "--rank", str(rank), "--world", "2", "--out", str(tmp_path / f"job{rank}")]) == 0
    assert main(["merge-results", str(tmp_path / "merged"), str(tmp_path / "job0"), str(tmp_path / "job1")]) == 0
    merged = _rows(tmp_path / "merged")
    assert [r["in_prior"] for r in merged if r["estimator"] == "ls-linear"] == expected
    assert_same_counts(_one_process(argv), merged)


def test_evaluation_array_jobs_merged_count_the_frames_of_one_process():
    from dataclasses import asdict

    from wavefront.estimators.evaluate import evaluate, evaluate_partial, merge_evaluation_partials
    from wavefront.sim.estimators import classical_estimators

    model = classical_estimators(["ls-nearest"], preset("default"))[0]
    kw = dict(frames_per_point=7, chunk=3, baselines=("ls-linear",), device="cpu")
    long_rows = []
    evaluate(model, preset("default"), long_rows=long_rows, **kw)
    parts = [evaluate_partial(model, preset("default"), rank=r, world=3, **kw) for r in (2, 0, 1)]
    merged = [asdict(r) for r in merge_evaluation_partials(parts)]
    assert_same_counts(long_rows, merged)
    # evaluate hands its ranks to the engine, which wants the process group they name
    with pytest.raises(ConfigError, match="needs a running torch.distributed process group"):
        evaluate(model, preset("default"), rank=1, world=2, **kw)


def _seeds(points, rank, world):
    from wavefront.sim.experiment import _owned_batches

    return [(i, fr.seed, len(fr)) for i, fr in _owned_batches(points[0], 45, rank, world)]


@pytest.mark.parametrize("walk", [False, True], ids=["drawn-alone", "walked"])
def test_rank_r_owns_batches_r_mod_world_with_the_one_process_seeds(walk):
    def points():
        pts = simulated_points(preset("default"), [{"snr_db": 5.0, "delay_spread_s": 1e-7, "doppler_hz": 100.0}],
                               frames=50, batch_size=10, seed=7, with_data=False)
        if walk:  # a source that cannot draw a batch alone (a folder): ranks walk every batch
            p = pts[0]
            pts = [Point(p.sweep, p.axis, p.snr_db, p.delay_spread_s, p.doppler_hz, p.config, p.batches)]
        return pts

    one = _seeds(points(), 0, 1)
    assert [n for _, _, n in one] == [10, 10, 10, 10, 5]  # cut at 45 frames
    for world in (2, 3):
        per_rank = [_seeds(points(), r, world) for r in range(world)]
        for r, mine in enumerate(per_rank):
            assert [i for i, _, _ in mine] == list(range(r, 5, world))
        assert sorted(x for mine in per_rank for x in mine) == one


def test_partial_record_keeps_one_process_counts_exactly():
    from wavefront.sim.experiment import merge_partials, run_partial
    from wavefront.sim.estimators import classical_estimators

    spec = SweepSpec(config=preset("default").updated(channel={"doppler_hz": 300.0, "delay_spread_s": 1e-7}),
                     axis="snr_db", values=[5.0], estimators=["ls-linear"], frames=30, batch_size=10, device="cpu")
    rows = run_sweep(spec, progress=False).rows
    pts = simulated_points(spec.config, spec.conditions_list(), 30, 10, 0, "cpu", sweep="snr", axis="snr_db")
    ests = classical_estimators(["ls-linear"], spec.prior)
    kw = dict(frames=30, condition_prior=spec.prior, progress=False)
    again = run_experiment(pts, ests, **kw)
    merged = merge_partials([json.loads(json.dumps(run_partial(pts, ests, rank=r, world=2, **kw))) for r in (1, 0)])
    assert rows == again == merged  # float64 sums added in batch order survive JSON bit for bit


BAD = [
    (["--rank", "2", "--world", "2"], "rank=2", "0 <= rank < world=2"),
    (["--rank", "0"], "world=None", "--rank needs --world"),
    (["--world", "2"], "rank=None", "--world needs --rank"),
    (["--rank", "0", "--world", "0"], "world=0", "positive integer"),
]


@pytest.mark.parametrize("argv,field,rule", BAD)
def test_bad_rank_flags_are_one_line_and_exit_2(argv, field, rule, tmp_path, capsys):
    rc = main([*SWEEP, "--out", str(tmp_path / "res"), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and field in err and rule in err
    assert not (tmp_path / "res").exists()


def test_rank_flags_under_torchrun_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main([*SWEEP, "--rank", "0", "--world", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "world=2" in err and "under torchrun" in err


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """Partial files of two 2-job sweeps that differ only in their seed."""
    tmp = tmp_path_factory.mktemp("jobs")
    small = [*SWEEP[:4], "0", *SWEEP[5:], "--frames", "20"]
    for seed in (0, 1):
        for rank in (0, 1):
            assert main([*small, "--seed", str(seed), "--rank", str(rank), "--world", "2",
                         "--out", str(tmp / f"s{seed}")]) == 0
    (tmp / "junk.json").write_text('{"rows": []}')
    return tmp


MERGE_BAD = [
    (["s0/partial-0-of-2.json"], "rank=[0]", "missing [1]"),
    (["s0/partial-0-of-2.json", "s0/partial-0-of-2.json", "s0/partial-1-of-2.json"], "rank=[0, 0, 1]", "repeated [0]"),
    (["s0/partial-0-of-2.json", "s1/partial-1-of-2.json"], "spec.seed=1", "different sweeps"),
    (["junk.json"], "junk.json", "is not a partial results file"),
    (["nowhere"], "nowhere", "no such file or folder"),
]


@pytest.mark.parametrize("files,field,rule", MERGE_BAD)
def test_bad_merge_input_is_one_line_and_exit_2(files, field, rule, jobs, capsys):
    capsys.readouterr()
    rc = main(["merge-results", str(jobs / "merged"), *[str(jobs / f) for f in files]])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and field in err and rule in err, err
    assert not (jobs / "merged").exists()
