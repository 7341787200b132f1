"""meshnode: a peer-to-peer compute mesh for WebAssembly tasks.

The public surface is what this module re-exports; the sans-I/O state
machines stay importable from ``meshnode.core`` for embedding.
"""

from __future__ import annotations

from ._version import __version__ as __version__
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
from .errors import MeshError as MeshError
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


__all__ = [
    "DEFAULT_LIMITS",
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

# Tracebacks and reprs say meshnode.X, where users find it.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):
            pass
del _name, _obj
