"""merge-results refuses files of different or unknown commands; '+' checkpoint lists are checked before loading."""
import json

import pytest

from wavefront.cli import main
from wavefront.errors import ConfigError
from wavefront.resolve import learned_estimator
from wavefront.sim.config import SystemConfig
from wavefront.sim.experiment import PARTIAL_FORMAT


def _write(folder, rank, command):
    rec = {"format": PARTIAL_FORMAT, "command": command, "rank": rank, "world": 2, "min_bit_errors": None,
           "estimators": [], "points": [], "spec": {}, "seconds": 0.0}
    path = folder / f"partial-{rank}-of-2.json"
    path.write_text(json.dumps(rec))
    return str(path)


@pytest.mark.parametrize("commands,rule", [(("sweep", "evaluate"), "mixes files of different commands"),
                                           (("train", "train"), "unknown command in a partial file")])
def test_merge_refuses_mixed_or_unknown_commands_in_one_line(tmp_path, capsys, commands, rule):
    files = [_write(tmp_path, r, c) for r, c in enumerate(commands)]
    capsys.readouterr()
    assert main(["merge-results", str(tmp_path / "merged"), *files]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and rule in err and "Traceback" not in err, err
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("name,count", [("a.safetensors+b.safetensors", 2), ("a+b+c+d", 4), ("a+b+", 3)])
def test_a_plus_list_needs_one_nonempty_checkpoint_per_user(name, count):
    cfg = SystemConfig.from_dict({"mimo": {"num_users": 3}})
    with pytest.raises(ConfigError, match=rf"estimators=.*the config has 3 users, this names {count}"):
        learned_estimator(name, cfg)


def test_a_plus_list_on_one_antenna_and_user_is_refused_as_such():
    with pytest.raises(ConfigError, match=r"needs several antennas or users"):
        learned_estimator("a.safetensors+b.safetensors", SystemConfig())


def test_a_missing_checkpoint_under_mimo_is_named_without_the_per_user_hint():
    # only a pilot-layout mismatch earns the '+' (one checkpoint per user) advice
    cfg = SystemConfig.from_dict({"mimo": {"num_users": 2}})
    with pytest.raises(ConfigError) as exc:
        learned_estimator("missing.safetensors", cfg)
    assert exc.value.field == "checkpoint" and "file not found" in str(exc.value) and "+" not in str(exc.value)
