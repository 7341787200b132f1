"""meshnode: a peer-to-peer compute mesh for Python and WebAssembly tasks.

The public surface is what this module re-exports; the sans-I/O state
machines stay importable from ``meshnode.core`` for embedding.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__

if TYPE_CHECKING:  # what the names are, for type checkers; at run time they load on first use
    from .client import AsyncClient as AsyncClient
    from .client import Client as Client
    from .client import Job as Job
    from .client import Result as Result
    from .errors import TaskFailed as TaskFailed
    from .config import DEFAULT_LIMITS as DEFAULT_LIMITS
    from .config import NodeConfig as NodeConfig
    from .core.manifest import JobManifest as JobManifest
    from .core.manifest import Replication as Replication
    from .core.manifest import Subtask as Subtask
    from .core.manifest import TaskLimits as TaskLimits
    from .core.manifest import JobOptions as JobOptions
    from .core.outcome import TaskError as TaskError
    from .core.outcome import TaskOutcome as TaskOutcome
    from .core.peer_id import PeerId as PeerId
    from .errors import BuildError as BuildError
    from .errors import ConfigError as ConfigError
    from .errors import IdentityError as IdentityError
    from .errors import InputError as InputError
    from .errors import JournalError as JournalError
    from .errors import JobRefused as JobRefused
    from .errors import MeshError as MeshError
    from .errors import NodeNotRunning as NodeNotRunning
    from .errors import PeerUnavailableError as PeerUnavailableError
    from .errors import SandboxError as SandboxError
    from .errors import WireError as WireError
    from .node.mesh_node import MeshNode as MeshNode
    from .node.mesh_node import open_node as open_node
    from .node.owning import JobResult as JobResult
    from .node.owning import RunningJob as RunningJob
    from .sandbox.local_exec import run_locally as run_locally
    from .sandbox.runtime import Sandbox as Sandbox
    from .sandbox.runtime import TaskModule as TaskModule
    from .storage.identity import Identity as Identity
    from .storage.identity import load_or_create_identity as load_or_create_identity

_EXPORTS: dict[str, str] = {  # name -> the module it lives in, imported on first use
    "AsyncClient": ".client",
    "Client": ".client",
    "Job": ".client",
    "Result": ".client",
    "TaskFailed": ".errors",
    "DEFAULT_LIMITS": ".config",
    "NodeConfig": ".config",
    "JobManifest": ".core.manifest",
    "Replication": ".core.manifest",
    "Subtask": ".core.manifest",
    "TaskLimits": ".core.manifest",
    "JobOptions": ".core.manifest",
    "TaskError": ".core.outcome",
    "TaskOutcome": ".core.outcome",
    "PeerId": ".core.peer_id",
    "BuildError": ".errors",
    "ConfigError": ".errors",
    "IdentityError": ".errors",
    "InputError": ".errors",
    "JournalError": ".errors",
    "JobRefused": ".errors",
    "MeshError": ".errors",
    "NodeNotRunning": ".errors",
    "PeerUnavailableError": ".errors",
    "SandboxError": ".errors",
    "WireError": ".errors",
    "MeshNode": ".node.mesh_node",
    "open_node": ".node.mesh_node",
    "JobResult": ".node.owning",
    "RunningJob": ".node.owning",
    "run_locally": ".sandbox.local_exec",
    "Sandbox": ".sandbox.runtime",
    "TaskModule": ".sandbox.runtime",
    "Identity": ".storage.identity",
    "load_or_create_identity": ".storage.identity",
}

__all__ = [
    "DEFAULT_LIMITS",
    "AsyncClient",
    "Client",
    "Job",
    "JobRefused",
    "NodeNotRunning",
    "Result",
    "TaskFailed",
    "BuildError",
    "ConfigError",
    "Identity",
    "IdentityError",
    "InputError",
    "JobManifest",
    "JobOptions",
    "JobResult",
    "JournalError",
    "MeshError",
    "MeshNode",
    "NodeConfig",
    "PeerId",
    "PeerUnavailableError",
    "Replication",
    "RunningJob",
    "Sandbox",
    "SandboxError",
    "Subtask",
    "TaskError",
    "TaskLimits",
    "TaskModule",
    "TaskOutcome",
    "WireError",
    "load_or_create_identity",
    "open_node",
    "run_locally",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use: ``import meshnode`` stays cheap for commands that need little
    (the node, with trio and the sandbox, is a third of a second to import)."""
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'meshnode' has no attribute {name!r}")
    obj = getattr(importlib.import_module(where, __name__), name)
    if isinstance(obj, type) or callable(obj):
        try:
            obj.__module__ = __name__  # tracebacks and reprs say meshnode.X, where users find it
        except (AttributeError, TypeError):
            pass
    globals()[name] = obj
    return obj


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
