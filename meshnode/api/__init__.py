"""The node's local control API: the server, how commands find it, and the client they use.

The server (hypercorn, starlette) and the client (http.client) are imported on first
use of their names: the CLI imports this package on every run, and
a command like ``id`` should not pay a quarter of a second for an HTTP stack it
never uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .discovery import API_FILE_NAME as API_FILE_NAME
from .discovery import ApiEndpoint as ApiEndpoint
from .discovery import NodeNotRunning as NodeNotRunning
from .discovery import read_api_file as read_api_file
from .discovery import remove_api_file as remove_api_file
from .discovery import write_api_file as write_api_file

if TYPE_CHECKING:
    from .client import ApiClient as ApiClient
    from .server import NodeView as NodeView
    from .server import make_app as make_app
    from .server import new_token as new_token
    from .server import serve_api as serve_api

__all__ = [
    "API_FILE_NAME",
    "ApiClient",
    "ApiEndpoint",
    "NodeNotRunning",
    "NodeView",
    "make_app",
    "new_token",
    "read_api_file",
    "remove_api_file",
    "serve_api",
    "write_api_file",
]

_LAZY = {
    "ApiClient": ".client",
    "NodeView": ".server",
    "make_app": ".server",
    "new_token": ".server",
    "serve_api": ".server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
