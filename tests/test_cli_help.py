"""Every option of train, evaluate, leaderboard, pilots and codesign says what it does and, where it has one, its default."""
import argparse

import pytest

from wavefront.cli import build_parser

COMMANDS = [("train",), ("evaluate",), ("leaderboard",), ("pilots", "optimise"), ("codesign", "layout"),
            ("codesign", "receivers")]


def _subparser(path):
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_option_has_help_and_shows_its_default(path):
    parser = _subparser(path)
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
