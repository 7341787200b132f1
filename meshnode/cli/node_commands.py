"""The commands about the node itself: ``run``, ``id``, ``swarm-key`` and ``peers``.

This module imports nothing heavy at the top, so wiring it in costs other
commands no start-up time; the node, trio and the HTTP client are imported
when a command runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from ..config import resolve_data_dir
from ..errors import InputError, MeshError

__all__ = ["cmd_id", "cmd_peers", "cmd_run", "cmd_swarm_key"]


def cmd_peers(args: argparse.Namespace) -> int:
    """Print the running node's peers (as text, followed by the messages it dropped, if any).

    Returns:
        0 (errors are raised).

    Raises:
        NodeNotRunning: no node runs with the data dir.
        MeshError: the node refused the request or answered with something unexpected.
    """
    from ..api.client import ApiClient
    from .peers_view import format_dropped, format_peer_table

    client = ApiClient.for_data_dir(resolve_data_dir(args.data_dir))
    reply: Any = client.get("/v1/peers")
    peers = reply.get("peers") if isinstance(reply, dict) else None
    if not isinstance(peers, list) or not all(isinstance(p, dict) for p in peers):
        raise MeshError(f"GET /v1/peers: expected {{'peers': [...]}} from the node, got {str(reply)[:200]}")
    if args.json:
        print(json.dumps(peers))
        return 0
    print(format_peer_table(peers))
    node: Any = client.get("/v1/node")
    dropped = format_dropped(node.get("dropped_messages") if isinstance(node, dict) else None)
    if dropped is not None:
        print(dropped)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import signal

    import trio

    from ..config import load_node_config
    from ..node.memory import freeze_start_up, limit_malloc_arenas
    from ..node.mesh_node import open_node
    from .logs import configure_logging

    flags = {
        "listen": args.listen, "bootstrap": args.bootstrap, "mdns": args.mdns, "slots": args.slots,
        "api": args.api, "swarm_key": args.swarm_key, "log_level": args.log_level, "log_json": args.log_json,
        "presence_interval": args.presence_interval, "trust": args.trust, "metrics_public": args.metrics_public,
    }  # fmt: skip
    config = load_node_config(args.data_dir, flags)
    configure_logging(config.log_level, config.log_json)
    limit_malloc_arenas()  # before any thread starts: see node/memory.py

    async def serve() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with open_node(config):
                freeze_start_up()  # see node/memory.py
                async for signum in signals:
                    logging.getLogger("meshnode").info("stopping (%s)", signal.Signals(signum).name)
                    break

    trio.run(serve)
    return 0


def cmd_swarm_key(args: argparse.Namespace) -> int:
    import os

    from ..net.swarm_key import format_swarm_key

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


def cmd_id(args: argparse.Namespace) -> int:
    from ..storage.identity import KEY_FILE_NAME, load_or_create_identity

    data_dir = resolve_data_dir(args.data_dir)
    identity = load_or_create_identity(data_dir)
    print(f"peer ID     {identity.peer_id}")
    print(f"public key  ed25519:{identity.public_key.hex()}")
    print(f"key file    {data_dir / KEY_FILE_NAME}")
    return 0
