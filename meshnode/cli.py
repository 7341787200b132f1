"""``python -m meshnode``: the command line.

Every command prints one line to stderr and exits 2 on bad usage, an
unreadable file or a module that cannot run; ``exec`` exits 1 when some
subtasks failed (their lines are still written) and 0 when all succeeded.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import IO, Any

from ._version import __version__
from ._errors_unwrap import raise_mesh_error_plainly
from .config import DEFAULT_API, DEFAULT_LIMITS, DEFAULT_PORT, default_slots, resolve_data_dir
from .core.manifest import TaskLimits
from .core.outcome import TaskOutcome
from .errors import ConfigError, InputError, MeshError, SandboxError
from .jobio import InputSpec, read_inputs, result_record
from .units import format_size, parse_count, parse_duration, parse_size

__all__ = ["main"]

_ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_.$-]{0,63}")


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where the node keeps its key and state (default: $MESHNODE_DATA_DIR, else the user data dir)",
    )


def _add_task_flags(p: argparse.ArgumentParser) -> None:
    """The module, inputs, limits and output flags that ``exec`` and ``submit`` share."""
    p.add_argument("module", metavar="MODULE.wasm", help="the task module")
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
    p.add_argument("--log-json", action="store_const", const=True, help="log JSON lines instead of text")
    p.add_argument("--presence-interval", type=float, metavar="SECONDS", help="seconds between presence messages (default: 1.5)")
    p.set_defaults(func=cmd_run)

    from .api.commands import add_peers_parser

    add_peers_parser(sub)

    from .api.job_commands import add_job_parsers

    add_job_parsers(sub, _add_task_flags, _add_data_dir)

    p = sub.add_parser("swarm-key", help="print a new private swarm key (swarm.key format)")
    p.add_argument("-o", "--output", metavar="FILE", help="write it to FILE (mode 0600) instead of stdout")
    p.set_defaults(func=cmd_swarm_key)

    p = sub.add_parser("id", help="print this node's peer ID and public key")
    _add_data_dir(p)
    p.set_defaults(func=cmd_id)

    p = sub.add_parser(
        "exec",
        help="run a task's subtasks on this machine, in the sandbox",
        description="Run every input through the task module locally, in parallel over the slots, "
        "and write one JSON line per subtask in input order.",
    )
    _add_task_flags(p)
    p.add_argument("--slots", type=int, metavar="N", help="subtasks run at once (default: physical cores)")
    _add_data_dir(p)
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser(
        "build",
        help="compile a C task to WebAssembly (needs: pip install 'meshnode[build]')",
        description="Compile a task written in C against meshnode_task.h to a wasm module with no imports.",
    )
    p.add_argument("source", metavar="SRC.c")
    p.add_argument("-o", "--output", required=True, metavar="OUT.wasm")
    p.add_argument("-I", dest="include", action="append", default=[], metavar="DIR", help="extra include dir")
    p.set_defaults(func=cmd_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["run", *argv]  # `python -m meshnode [flags]` runs a node
    args = parser.parse_args(argv)
    try:
        with raise_mesh_error_plainly():
            code: int = args.func(args)
        return code
    except MeshError as exc:
        print(f"meshnode {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"meshnode {args.command}: interrupted", file=sys.stderr)
        return 130


# --- run ------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    import signal

    import trio

    from .config import load_node_config
    from .logs import configure_logging
    from .node import open_node

    flags = {
        "listen": args.listen, "bootstrap": args.bootstrap, "mdns": args.mdns, "slots": args.slots,
        "api": args.api, "swarm_key": args.swarm_key, "log_level": args.log_level, "log_json": args.log_json,
        "presence_interval": args.presence_interval, "trust": args.trust,
    }  # fmt: skip
    config = load_node_config(args.data_dir, flags)
    configure_logging(config.log_level, config.log_json)

    async def serve() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with open_node(config):
                async for signum in signals:
                    logging.getLogger("meshnode").info("stopping (%s)", signal.Signals(signum).name)
                    break

    trio.run(serve)
    return 0


def cmd_swarm_key(args: argparse.Namespace) -> int:
    import os

    from .net.swarm_key import format_swarm_key

    text = format_swarm_key()
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise InputError(f"cannot create {args.output}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
    print(f"wrote {args.output}; give the same file to every node with --swarm-key", file=sys.stderr)
    return 0


# --- id -------------------------------------------------------------------------------------


def cmd_id(args: argparse.Namespace) -> int:
    from .identity import KEY_FILE_NAME, load_or_create_identity

    data_dir = resolve_data_dir(args.data_dir)
    identity = load_or_create_identity(data_dir)
    print(f"peer ID     {identity.peer_id}")
    print(f"public key  ed25519:{identity.public_key.hex()}")
    print(f"key file    {data_dir / KEY_FILE_NAME}")
    return 0


# --- build ----------------------------------------------------------------------------------


def cmd_build(args: argparse.Namespace) -> int:
    from .toolchain import compile_task

    output = Path(args.output)
    compile_task(Path(args.source), output, include_dirs=[Path(d) for d in args.include])
    print(f"built {output} ({output.stat().st_size} bytes)", file=sys.stderr)
    return 0


# --- exec -----------------------------------------------------------------------------------


def input_spec(args: argparse.Namespace) -> InputSpec:
    for kind, value in (("jsonl", args.input_jsonl), ("csv", args.input_csv), ("dir", args.input_dir)):
        if value is not None:
            return InputSpec(kind, value)  # type: ignore[arg-type]
    return InputSpec("range", args.range)


def limits_from_args(args: argparse.Namespace) -> TaskLimits:
    """The per-subtask limits the flags ask for, checked against what the wire allows."""
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


def _open_output(path: str | None) -> IO[str]:
    if path is None:
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc


class _Progress:
    """A one-line progress display on stderr, shown only on a terminal."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self.done = self.failed = 0
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._live = sys.stderr.isatty()

    def add(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        now = time.monotonic()
        if self._live and (now - self._last_draw > 0.1 or self.done == self.total):
            self._last_draw = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate else 0.0
            sys.stderr.write(
                f"\r{self.label}: {self.done}/{self.total} done, {self.failed} failed, "
                f"{rate:.1f}/s, ETA {eta:.0f} s   "
            )
            sys.stderr.flush()

    def finish(self, slots: int) -> None:
        elapsed = time.monotonic() - self.start
        if self._live:
            sys.stderr.write("\r\x1b[K")
        print(
            f"{self.label}: {self.total} subtasks, {self.total - self.failed} ok, {self.failed} failed "
            f"in {elapsed:.2f} s on {slots} slot{'s' * (slots != 1)}",
            file=sys.stderr,
        )


def cmd_exec(args: argparse.Namespace) -> int:
    import trio

    from .identity import load_or_create_identity
    from .local_exec import run_locally
    from .sandbox import Sandbox

    limits = limits_from_args(args)
    slots = args.slots if args.slots is not None else default_slots()
    if slots < 1:
        raise ConfigError(f"--slots {slots}: need at least 1")
    wasm = read_module(args.module)
    inputs = list(read_inputs(input_spec(args)))
    data_dir = resolve_data_dir(args.data_dir)
    executors = [str(load_or_create_identity(data_dir).peer_id)]
    out = _open_output(args.output)
    progress = _Progress(len(inputs), Path(args.module).name)

    def emit(index: int, outcome: TaskOutcome) -> None:
        record: dict[str, Any] = result_record(index, outcome, executors)
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        progress.add(outcome.ok)

    try:
        with Sandbox(slots=slots, cache_dir=data_dir / "modules") as sandbox:
            try:
                module = sandbox.load(wasm, nan_canonical=args.nan_canonical)
            except SandboxError as exc:
                raise InputError(f"{args.module} cannot run: {exc.error.message} ({exc.error.code})") from None
            problem = module.check_entry(args.entry)
            if problem is not None:
                raise InputError(f"{args.module}: {problem.message}")
            trio.run(functools.partial(run_locally, sandbox, module, inputs, limits, emit, entry=args.entry))
    finally:
        out.flush()
        if out is not sys.stdout:
            out.close()
    progress.finish(slots)
    return 1 if progress.failed else 0
