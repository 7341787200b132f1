"""The command line's grammar, in one place: every command and flag, and the checks that turn flags into values.

``build_parser`` knows every command; ``main`` runs the one parsed
(``args.command``). Nothing heavy is imported here: ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .._version import __version__
from ..api.job_files import InputSpec
from ..config import DEFAULT_API, DEFAULT_LIMITS, DEFAULT_PORT
from ..core.manifest import TaskLimits
from ..errors import ConfigError, InputError
from ..units import format_size, parse_count, parse_duration, parse_size

__all__ = ["build_parser", "input_spec", "limits_from_args", "read_module"]

_ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_.$-]{0,63}")


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where the node keeps its key and state (default: $MESHNODE_DATA_DIR, else the user data dir)",
    )


def _add_task_flags(p: argparse.ArgumentParser) -> None:
    """The module, inputs, limits and output flags that ``exec`` and ``submit`` share."""
    p.add_argument("module", metavar="TASK", help="the task: a script.py defining main(row), or a module.wasm")
    inputs = p.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--input-jsonl", metavar="FILE", help="one subtask per non-blank line")
    inputs.add_argument("--input-csv", metavar="FILE", help="one subtask per data row, as a JSON object")
    inputs.add_argument("--input-dir", metavar="DIR", help="one subtask per regular file, sorted by name")
    inputs.add_argument("--range", metavar="N", help="N subtasks whose inputs are 0, 1, ..., N-1")
    lim = DEFAULT_LIMITS
    p.add_argument("--entry", default="run", help="the entry function (default: run)")
    p.add_argument("--fuel", default=str(lim.fuel), help=f"fuel per subtask, e.g. 5G (default: {lim.fuel:.0e})")
    p.add_argument(
        "--memory", default=format_size(lim.memory), metavar="SIZE",
        help=f"linear memory per subtask (default: {format_size(lim.memory)})",
    )  # fmt: skip
    p.add_argument(
        "--timeout", default=f"{lim.timeout_ms // 1000}", metavar="SECONDS",
        help=f"wall-clock limit per subtask (default: {lim.timeout_ms // 1000} s)",
    )  # fmt: skip
    p.add_argument(
        "--max-output", default=format_size(lim.max_output), metavar="SIZE",
        help=f"largest output per subtask (default: {format_size(lim.max_output)})",
    )  # fmt: skip
    p.add_argument(
        "--nan-canonical", action="store_true",
        help="canonicalize NaN bit patterns (about 3x slower on float-heavy code; for mixed-architecture meshes)",
    )  # fmt: skip
    p.add_argument("--output", metavar="FILE", help="write the JSON Lines results here (default: stdout)")
    p.add_argument(
        "--csv-strings", action="store_true",
        help="keep CSV values as text (default: numbers become numbers where a whole column parses)",
    )  # fmt: skip
    p.add_argument(
        "--rows-per-subtask", type=_positive, metavar="N",
        help="script.py: rows per subtask (default: the rows split into about 32 subtasks, at most 10,000 each)",
    )  # fmt: skip


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m meshnode",
        description="A peer-to-peer compute mesh for WebAssembly tasks.",
    )
    parser.add_argument("--version", action="version", version=f"meshnode {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="run a mesh node (the default command)",
        description="Run a node: find peers on the LAN by mDNS (and at --bootstrap addresses), "
        "keep a live view of them, and serve the local API. Stop with Ctrl-C or SIGTERM. "
        "Every flag can also be set as MESHNODE_<FLAG> in the environment or in meshnode.toml in the data dir.",
    )
    _add_data_dir(p)
    p.add_argument(
        "--listen", action="append", metavar="MULTIADDR",
        help=f"TCP address to listen on, repeatable (default: /ip4/0.0.0.0/tcp/{DEFAULT_PORT}: every interface)",
    )  # fmt: skip
    p.add_argument(
        "--bootstrap", action="append", metavar="MULTIADDR",
        help="a peer to connect to, /ip4/ADDR/tcp/PORT/p2p/PEER_ID, repeatable (for peers beyond the LAN segment)",
    )  # fmt: skip
    p.add_argument("--no-mdns", dest="mdns", action="store_const", const=False, help="do not use multicast DNS")
    p.add_argument("--slots", type=int, metavar="N", help="subtasks run at once (default: physical cores)")
    p.add_argument("--api", metavar="HOST:PORT", help=f"the local API address, or off (default: {DEFAULT_API})")
    p.add_argument(
        "--swarm-key", metavar="FILE",
        help="private swarm: only nodes with this key can connect (make one with: python -m meshnode swarm-key)",
    )  # fmt: skip
    p.add_argument(
        "--trust", metavar="any|FILE",
        help="whose jobs this node runs: any owner (the default), or the owner peer IDs in FILE, one a line",
    )  # fmt: skip
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="default: info")
    p.add_argument(
        "--log-json", action="store_const", const=True,
        help="log JSON lines (with an event name and fields: job, peer, subtask, reason, ...) instead of text",
    )  # fmt: skip
    p.add_argument(
        "--metrics-public", action="store_const", const=True,
        help="serve /metrics (Prometheus) on the local API without the API token; every other path still needs it",
    )  # fmt: skip
    p.add_argument("--presence-interval", type=float, metavar="SECONDS", help="seconds between presence heartbeats when nothing changes (default: 30; longer past 5 peers)")

    p = sub.add_parser(
        "peers",
        help="list the peers the running node knows",
        description="Ask the node running with the data dir for the peers it has found on the LAN, "
        "and print them as a table (or as JSON).",
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the data dir of the node to ask (default: $MESHNODE_DATA_DIR, else the user data dir)",
    )
    p.add_argument("--json", action="store_true", help="print the peers as one JSON list, as the node reports them")



    p = sub.add_parser(
        "submit",
        help="run a job across the mesh, each subtask verified by distinct peers",
        description="Hand a job to the running node, which owns it: its subtasks spread over the mesh, "
        "each runs on one peer that has earned this node's trust, checked at random by a second, and on --quorum "
        "agreeing peers otherwise (adaptive replication); with --replicas or --quorum, on --replicas distinct peers, "
        "an output accepted when --quorum of them agree. "
        "Results are JSON Lines as for exec.",
    )
    _add_task_flags(p)
    p.add_argument("--replicas", type=int, help="distinct executors per subtask: fixed replication (2 when only --quorum is given)")
    p.add_argument("--quorum", type=int, help="executors that must agree (default 2)")
    p.add_argument("--max-replicas", type=int, default=5, help="executors to try on disagreement (default 5)")
    p.add_argument("--verify", choices=("fixed", "adaptive"),
                   help="adaptive (the default): one executor that has earned this node's trust, spot-checked at "
                        "random, and a --quorum of executors otherwise; fixed (the default with --replicas or "
                        "--quorum): every subtask on --replicas executors")  # fmt: skip
    p.add_argument("--label", default="", help="a name for the job, shown by jobs")
    p.add_argument("--detach", action="store_true", help="print the job ID and return at once")
    _add_data_dir(p)

    p = sub.add_parser("status", help="a job's progress (or every job's)")
    p.add_argument("job", nargs="?", metavar="JOB")
    p.add_argument("--json", action="store_true")
    _add_data_dir(p)

    p = sub.add_parser("results", help="a job's results, as JSON Lines")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--output", metavar="FILE", help="write them here (default: stdout)")
    p.add_argument("--recheck", action="store_true",
                   help="first run again, on others, the results that rest on the word of an executor since caught "
                        "lying (meshnode status lists them), and wait for their new verdicts")  # fmt: skip
    _add_data_dir(p)

    p = sub.add_parser("jobs", help="list the jobs this node owns")
    p.add_argument("--json", action="store_true")
    _add_data_dir(p)

    p = sub.add_parser(
        "cancel", help="stop a job across the mesh (its results so far stay readable)",
        description="Stop a job this node owns: nothing more is handed out, and every node running its "
        "subtasks is told to stop and not to send their results. The results decided so far stay readable.",
    )  # fmt: skip
    p.add_argument("job", metavar="JOB")
    _add_data_dir(p)

    p = sub.add_parser("dashboard", help="open the running node's dashboard in the browser (a one-time login link)")
    p.add_argument("--no-browser", action="store_true", help="only print the login link")
    _add_data_dir(p)

    p = sub.add_parser("credit", help="credit earned from each owner (receipts checked) and granted to each executor")
    p.add_argument("--json", action="store_true")
    _add_data_dir(p)

    p = sub.add_parser("swarm-key", help="print a new private swarm key (swarm.key format)")
    p.add_argument("-o", "--output", metavar="FILE", help="write it to FILE (mode 0600) instead of stdout")

    p = sub.add_parser("id", help="print this node's peer ID and public key")
    _add_data_dir(p)

    p = sub.add_parser(
        "exec",
        help="run a task's subtasks on this machine, in the sandbox",
        description="Run every input through the task module locally, in parallel over the slots, "
        "and write one JSON line per subtask in input order.",
    )
    _add_task_flags(p)
    p.add_argument("--slots", type=int, metavar="N", help="subtasks run at once (default: physical cores)")
    _add_data_dir(p)

    sub.add_parser(
        "python-setup",
        help="prepare the Python runtime on this machine ahead of time (compiled once, about a minute)",
        description="Compile the sandbox's Python interpreter for this machine and cache it "
        "($MESHNODE_CACHE_DIR, else ~/.cache/meshnode). Nodes run and steal Python tasks only once it is ready; "
        "the first exec or submit of a script does this too.",
    )

    p = sub.add_parser(
        "build",
        help="compile a C task to WebAssembly (needs: pip install 'meshnode[build]')",
        description="Compile a task written in C against meshnode_task.h to a wasm module with no imports.",
    )
    p.add_argument("source", metavar="SRC.c")
    p.add_argument("-o", "--output", required=True, metavar="OUT.wasm")
    p.add_argument("-I", dest="include", action="append", default=[], metavar="DIR", help="extra include dir")
    return parser


def input_spec(args: argparse.Namespace) -> InputSpec:
    for kind, value in (("jsonl", args.input_jsonl), ("csv", args.input_csv), ("dir", args.input_dir)):
        if value is not None:
            return InputSpec(kind, value)  # type: ignore[arg-type]
    return InputSpec("range", args.range)


def limits_from_args(args: argparse.Namespace) -> TaskLimits:
    """The per-subtask limits the flags ask for, checked against what the wire allows (and the flags
    that only one kind of task takes)."""
    python = args.module.endswith(".py")
    if not python and args.rows_per_subtask:
        raise ConfigError("--rows-per-subtask is for a script.py's main(row), not a module")
    if python and (args.entry != "run" or args.nan_canonical):
        raise ConfigError("--entry and --nan-canonical are for a WebAssembly module; a script runs main(row)")
    fuel = parse_count(args.fuel)
    memory = parse_size(args.memory)
    timeout = parse_duration(args.timeout)
    max_output = parse_size(args.max_output)
    if fuel > 2**62:
        raise ConfigError(f"--fuel {args.fuel} is more than the largest budget, {2**62}")
    if not 64 << 10 <= memory <= 4 << 30:
        raise ConfigError(f"--memory {args.memory} is outside 64KiB..4GiB (wasm32 linear memory)")
    if not 0.001 <= timeout <= 7 * 24 * 3600:
        raise ConfigError(f"--timeout {args.timeout} is outside 1ms..7 days")
    if max_output > 1 << 30:
        raise ConfigError(f"--max-output {args.max_output} is over 1GiB")
    if not _ENTRY.fullmatch(args.entry):
        raise ConfigError(f"--entry {args.entry!r} is not a function name")
    return TaskLimits(fuel=fuel, memory=memory, timeout_ms=max(1, round(timeout * 1000)), max_output=max_output)


def read_module(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the module {path}: {exc.strerror or exc}") from exc
