"""``python -m meshnode``: the command line.

Every command prints one line to stderr and exits 2 on bad usage, an
unreadable file or a module that cannot run; ``exec`` exits 1 when some
subtasks failed (their lines are still written) and 0 when all succeeded.
The grammar is in ``parser.py``; the commands in ``node_commands.py`` (the
node), ``task_commands.py`` (tasks on this machine) and ``job_commands.py``
(jobs on the mesh).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Final

from ..errors import MeshError
from ..node.plain_errors import raise_mesh_error_plainly
from .parser import build_parser

__all__ = ["COMMANDS", "command", "main"]

# Each command's module is imported when it runs: `meshnode peers`, run once a second by scripts that
# watch a node, started in 0.44 s with every module imported up front (0.36 CPU-s), trio among them.
COMMANDS: Final[dict[str, str]] = {
    "run": "node_commands:cmd_run",
    "id": "node_commands:cmd_id",
    "swarm-key": "node_commands:cmd_swarm_key",
    "peers": "node_commands:cmd_peers",
    "build": "task_commands:cmd_build",
    "exec": "task_commands:cmd_exec",
    "python-setup": "task_commands:cmd_python_setup",
    "submit": "job_commands:cmd_submit",
    "status": "job_commands:cmd_status",
    "results": "job_commands:cmd_results",
    "jobs": "job_commands:cmd_jobs",
    "cancel": "job_commands:cmd_cancel",
    "credit": "credit_command:cmd_credit",
    "dashboard": "dashboard_command:cmd_dashboard",
}


def command(name: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs command ``name`` (its module imported now)."""
    module, function = COMMANDS[name].split(":")
    runner: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(f".{module}", __package__), function)
    return runner


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["run", *argv]  # `python -m meshnode [flags]` runs a node
    args = parser.parse_args(argv)
    try:
        with raise_mesh_error_plainly():
            code = command(args.command)(args)
        return code
    except MeshError as exc:
        print(f"meshnode {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"meshnode {args.command}: interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:
        if not _broken_pipe(exc):
            raise
        # the reader went away (`meshnode exec ... | head`): stop quietly, as a pipeline expects;
        # stdout goes to /dev/null so that the interpreter's last flush cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _broken_pipe(exc: BaseException) -> bool:
    """A BrokenPipeError, also as the only kind in an exception group (trio wraps what a task raised)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_broken_pipe(e) for e in exc.exceptions)
    return isinstance(exc, BrokenPipeError)
