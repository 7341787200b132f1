"""``meshnode dashboard``: open the running node's dashboard in the browser.

As Jupyter does, it prints a login URL with a one-time token the node minted for it (good once, for
two minutes) and opens it; the page trades the token for a session cookie, so later URLs carry none.
"""

from __future__ import annotations

import argparse
import webbrowser
from typing import Any
from urllib.parse import quote

from ..config import resolve_data_dir
from ..errors import MeshError

__all__ = ["cmd_dashboard"]


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Print the dashboard's login URL and open it (unless ``--no-browser``).

    Returns:
        0 (errors are raised).

    Raises:
        NodeNotRunning: no node runs with the data dir.
        MeshError: the node refused the request or answered with something unexpected.
    """
    from ..api.client import ApiClient

    client = ApiClient.for_data_dir(resolve_data_dir(args.data_dir))
    reply: Any = client.post_json("/v1/dashboard/login-token")
    token = reply.get("token") if isinstance(reply, dict) else None
    if not isinstance(token, str):
        raise MeshError(f"POST /v1/dashboard/login-token: expected {{'token': ...}} from the node, "
                        f"got {str(reply)[:200]}")
    url = f"{client.endpoint.url}/dashboard?token={quote(token)}"
    expires = round(reply.get("expires_s", 120))
    print(f"The dashboard (this link logs in once, within {expires} s):\n    {url}", flush=True)
    if not args.no_browser:
        webbrowser.open(url)
    return 0
