"""The thread default under a container's CPU quota (wavefront.utils.cpu_quota / cap_threads_to_cpus).

torch starts one thread per core it sees; a container's cgroup quota is not among what it sees. The
cgroup files are faked in a temporary folder, laid out as the kernel lays them out.
"""
import argparse
import os

import pytest
import torch

from wavefront import cli
from wavefront.utils import cap_threads_to_cpus, cpu_quota, usable_cpus


def _v2(tmp_path, text):
    (tmp_path / "cpu.max").write_text(text)
    return tmp_path


def _v1(tmp_path, quota, period):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return tmp_path


@pytest.fixture
def threads():
    """Restores torch's thread count and OMP_NUM_THREADS after the test."""
    n, omp = torch.get_num_threads(), os.environ.pop("OMP_NUM_THREADS", None)
    yield n
    torch.set_num_threads(n)
    if omp is not None:
        os.environ["OMP_NUM_THREADS"] = omp


def test_quota_is_quota_over_period_in_both_cgroup_versions(tmp_path):
    (tmp_path / "a").mkdir()
    assert cpu_quota(_v2(tmp_path / "a", "150000 100000\n")) == 1.5
    assert cpu_quota(_v1(tmp_path, 50000, 100000)) == 0.5
    assert cpu_quota(tmp_path / "empty") is None


@pytest.mark.parametrize("text", ["max 100000\n", "", "garbage", "0 100000", "100000 0", "nan 1"])
def test_no_quota_or_a_damaged_file_counts_as_none(tmp_path, text):
    assert cpu_quota(_v2(tmp_path, text)) is None


def test_v1_without_a_quota_is_none(tmp_path):
    assert cpu_quota(_v1(tmp_path, -1, 100000)) is None


def test_usable_cpus_round_a_fractional_quota_up_and_never_exceed_the_affinity_mask(tmp_path):
    mask = len(os.sched_getaffinity(0))
    (tmp_path / "half").mkdir()
    assert usable_cpus(_v2(tmp_path / "half", "50000 100000")) == 1
    (tmp_path / "one-and-a-half").mkdir()
    assert usable_cpus(_v2(tmp_path / "one-and-a-half", "150000 100000")) == min(2, mask)  # 1.5 CPUs keep 2 busy
    (tmp_path / "many").mkdir()
    assert usable_cpus(_v2(tmp_path / "many", f"{100000 * (mask + 8)} 100000")) == mask
    assert usable_cpus(tmp_path / "none") == mask


def test_a_quota_below_the_thread_count_lowers_it_and_never_raises_it(tmp_path, threads):
    torch.set_num_threads(2)
    (tmp_path / "one").mkdir()
    assert cap_threads_to_cpus(_v2(tmp_path / "one", "100000 100000")) == 1
    assert torch.get_num_threads() == 1
    (tmp_path / "big").mkdir()
    assert cap_threads_to_cpus(_v2(tmp_path / "big", "6400000 100000")) is None  # 64 CPUs: left at 1
    assert torch.get_num_threads() == 1


def test_omp_num_threads_is_the_users_choice_and_wins_over_the_quota(tmp_path, threads):
    torch.set_num_threads(2)
    os.environ["OMP_NUM_THREADS"] = "2"
    try:
        assert cap_threads_to_cpus(_v2(tmp_path, "100000 100000")) is None
        assert torch.get_num_threads() == 2
    finally:
        del os.environ["OMP_NUM_THREADS"]


def test_every_command_runs_under_the_cap_and_its_threads_flag_wins(tmp_path, threads, monkeypatch):
    """``wavefront`` applies the cap before the command; a command's ``--threads`` is applied after it."""
    import wavefront.utils as utils

    monkeypatch.setattr(utils, "cpu_quota", lambda root="/sys/fs/cgroup": 1.0)
    seen = []
    monkeypatch.setattr(cli, "build_parser", lambda: _parser(seen))
    torch.set_num_threads(2)
    assert cli.main(["probe"]) == 0
    assert cli.main(["probe", "--threads", "2"]) == 0
    assert seen == [1, 2]


def _parser(seen):
    import argparse

    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    probe = sub.add_parser("probe")
    probe.add_argument("--threads", type=int)

    def run(args):
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        seen.append(torch.get_num_threads())
        return 0

    probe.set_defaults(func=run)
    return p


def test_the_smallest_quota_from_the_own_cgroup_up_to_the_root_counts(tmp_path):
    """systemd's CPUQuota or a Kubernetes limit sits on a parent of the process's own cgroup, not at the root."""
    own = tmp_path / "proc-self-cgroup"
    own.write_text("0::/user.slice/job.scope\n")
    (tmp_path / "user.slice" / "job.scope").mkdir(parents=True)
    (tmp_path / "user.slice" / "job.scope" / "cpu.max").write_text("max 100000\n")  # the leaf: no quota of its own
    (tmp_path / "user.slice" / "cpu.max").write_text("150000 100000\n")  # the slice: 1.5 CPUs
    (tmp_path / "cpu.max").write_text("400000 100000\n")
    assert cpu_quota(tmp_path, own) == 1.5
    (tmp_path / "user.slice" / "job.scope" / "cpu.max").write_text("300000 100000\n")  # a looser leaf: the slice
    assert cpu_quota(tmp_path, own) == 1.5
    (tmp_path / "user.slice" / "job.scope" / "cpu.max").write_text("50000 100000\n")  # a tighter leaf wins
    assert cpu_quota(tmp_path, own) == 0.5
    v1 = tmp_path / "v1"
    (v1 / "cpu" / "docker" / "abc").mkdir(parents=True)
    for name, value in (("cpu.cfs_quota_us", 200000), ("cpu.cfs_period_us", 100000)):
        (v1 / "cpu" / "docker" / "abc" / name).write_text(f"{value}\n")
    own.write_text("2:cpu,cpuacct:/docker/abc\n1:memory:/docker/abc\n0::/\n")
    assert cpu_quota(v1, own) == 2.0
    own.write_text("0::/../../etc\n")  # a path that climbs out of the root is not followed
    assert cpu_quota(tmp_path / "empty", own) is None


def test_every_command_that_computes_takes_threads():
    """The README's promise (a command's --threads wins over the cap) holds for each command that runs torch work."""
    from wavefront.cli import build_parser

    def commands(parser, prefix=()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from commands(sub, (*prefix, name))
                return
        yield " ".join(prefix), {s for a in parser._actions for s in a.option_strings}

    table = dict(commands(build_parser()))
    computing = ["sweep", "generate", "generate-suite", "audit", "train", "evaluate", "leaderboard",
                 "pilots optimise", "codesign layout", "codesign receivers"]
    assert set(computing) <= set(table), sorted(table)
    assert [c for c in computing if "--threads" not in table[c]] == []
