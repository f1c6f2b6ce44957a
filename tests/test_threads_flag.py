"""Every command that computes takes --threads, and it holds when the command runs (over the cgroup cap)."""
import pytest
import torch

from wavefront.cli import main

COMMANDS = {  # command -> (module, function it runs, the smallest argv that parses)
    "train": ("wavefront.estimators.cli", "_train", ["train", "--on-the-fly", "default"]),
    "evaluate": ("wavefront.estimators.cli", "_evaluate", ["evaluate"]),
    "leaderboard": ("wavefront.estimators.cli", "_leaderboard", ["leaderboard"]),
    "pilots optimise": ("wavefront.sim.pilot_cli", "run_optimise", ["pilots", "optimise", "--num-pilots", "24",
                                                                    "--out", "x"]),
    "sweep": ("wavefront.sim.cli", "run", ["sweep"]),
}


@pytest.mark.parametrize("name", COMMANDS)
def test_threads_is_the_count_the_command_runs_with(name, monkeypatch):
    module, func, argv = COMMANDS[name]
    seen = []
    monkeypatch.setattr(f"{module}.{func}", lambda args: seen.append(torch.get_num_threads()) or 0)
    before = torch.get_num_threads()
    want = 2 if before != 2 else 1
    try:
        assert main([*argv, "--threads", str(want)]) == 0
    finally:
        torch.set_num_threads(before)
    assert seen == [want]
