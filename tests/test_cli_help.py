"""Every option of every command says what it does and, where it has one, its default (never ``(default: None)``)."""
import argparse

import pytest

from wavefront.cli import build_parser

def _leaves(parser, path=()):
    """Yields (path, parser) of every command that has no subcommands: sweep, pilots optimise, codesign layout, ..."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _leaves(sub, (*path, name))


COMMANDS = dict(_leaves(build_parser()))


def test_the_walk_finds_every_command():
    assert {"sweep", "generate", "import-mat", "audit", "train", "leaderboard", "pilots optimise", "codesign receivers",
            "merge-results"} <= {" ".join(p) for p in COMMANDS}


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_every_option_has_help_and_shows_its_default(path):
    parser = COMMANDS[path]
    formatter = parser._get_formatter()
    problems = []
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        text = formatter._expand_help(action) if action.help else ""
        if not text:
            problems.append(f"{action.option_strings[-1]}: no help")
        elif action.default is not None and action.default is not False and not action.required and "default" not in text.lower():
            problems.append(f"{action.option_strings[-1]}: default {action.default!r} not shown")
        if "(default: None)" in text or "(default: False)" in text:
            problems.append(f"{action.option_strings[-1]}: shows a default that is not one: {text!r}")
    assert not problems, problems


def test_sweep_batch_size_help_says_what_a_run_shows(tmp_path):
    """--batch-size once said 'no effect on the results'; frames are seeded per (seed, point, batch), so it has one."""
    import json

    from wavefront.cli import main

    mse = {}
    for b in ("2", "4"):
        assert main(["sweep", "--estimators", "ls-linear", "--snr-db", "10", "--frames", "4", "--batch-size", b,
                     "--device", "cpu", "--threads", "1", "--no-progress", "--out", str(tmp_path / b)]) == 0
        mse[b] = json.loads((tmp_path / b / "results.json").read_text())["rows"][0]["mse_db"]
    assert mse["2"] != mse["4"]  # other frames: 4 frames are too few for the two to agree to float precision
    text = " ".join(a.help for a in COMMANDS[("sweep",)]._actions if "--batch-size" in a.option_strings)
    assert "no effect" not in text and "other frames" in text
