"""The grammar and the dispatch agree: every command the parser knows runs, and nothing else does."""

from __future__ import annotations

import argparse

from meshnode.cli.main import COMMANDS, command
from meshnode.cli.parser import build_parser


def test_every_command_has_a_runner_and_every_runner_a_command() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)
    for name in COMMANDS:
        assert callable(command(name)), name
