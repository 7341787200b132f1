"""CLI commands that talk to a running node: ``python -m meshnode peers``.

``cli.build_parser`` calls ``add_peers_parser``. This module imports nothing
heavy at the top, so wiring it in costs other commands no start-up time; the
HTTP client is imported when the command runs.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..config import resolve_data_dir
from ..errors import MeshError

__all__ = ["add_peers_parser", "cmd_peers"]


def add_peers_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``peers`` command to the CLI's subcommands (``parser.add_subparsers(...)``)."""
    p = subparsers.add_parser(
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
    p.set_defaults(func=cmd_peers)


def cmd_peers(args: argparse.Namespace) -> int:
    """Print the running node's peers (as text, followed by the messages it dropped, if any).

    Returns:
        0 (errors are raised).

    Raises:
        NodeNotRunning: no node runs with the data dir.
        MeshError: the node refused the request or answered with something unexpected.
    """
    from .client import ApiClient
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
