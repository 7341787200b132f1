"""What every example shares: the flags that pick the node and the verification, and the client.

    python examples/<example>.py ... [--data-dir DIR] [--replicas N]

Each example hands its subtasks to the node running on this machine (start one with
``python -m meshnode``; on a LAN, start one on every machine). By default a subtask is
verified by adaptive replication when the node hears any peer (two distinct peers must
agree, until a peer has earned the node's trust and runs subtasks alone, spot-checked),
and runs on this node alone (unverified) when it hears none.
"""

from __future__ import annotations

import argparse
from typing import Any

from meshnode import Client


def add_mesh_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="the data dir of the node to use (default: as `python -m meshnode` finds it)")
    parser.add_argument(
        "--replicas", type=int,
        help="distinct peers per subtask, all of which must agree (default: adaptive replication on a mesh, "
             "1 on a node alone)",
    )  # fmt: skip


def connect(args: argparse.Namespace) -> tuple[Client, dict[str, Any]]:
    """The client of the chosen node, and the ``submit`` keywords of the verification policy."""
    client = Client(args.data_dir)
    replicas = args.replicas
    if replicas is None and any(peer["state"] == "alive" for peer in client.peers()):
        return client, {}  # adaptive replication, the default
    replicas = 1 if replicas is None else replicas
    return client, {"replicas": replicas, "quorum": replicas}
