"""Where a node keeps its state, and its settings.

Precedence for every node setting: command-line flag, then ``MESHNODE_*``
environment variable, then ``meshnode.toml`` in the data dir, then the built-in
default. The data dir itself comes from ``--data-dir``, else ``MESHNODE_DATA_DIR``,
else the platform's user data dir.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

from .core.manifest import TaskLimits
from .core.peer_id import PeerId
from .errors import ConfigError, WireError

__all__ = [
    "CONFIG_FILE_NAME",
    "DEFAULT_API",
    "DEFAULT_LIMITS",
    "DEFAULT_PORT",
    "NodeConfig",
    "TrustPolicy",
    "default_data_dir",
    "default_slots",
    "load_node_config",
    "resolve_data_dir",
]

APP_NAME: Final = "meshnode"

# One subtask by default may use 1e12 fuel (minutes of compute), 256 MiB of
# memory and 10 minutes of wall time, and return 64 MiB.
DEFAULT_LIMITS: Final = TaskLimits(
    fuel=1_000_000_000_000,
    memory=256 << 20,
    timeout_ms=600_000,
    max_output=64 << 20,
)


def default_data_dir() -> Path:
    """The platform's per-user data directory for meshnode."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / APP_NAME


def resolve_data_dir(flag: str | os.PathLike[str] | None) -> Path:
    """``--data-dir``, else ``MESHNODE_DATA_DIR``, else the platform's user data dir."""
    chosen = flag or os.environ.get("MESHNODE_DATA_DIR") or default_data_dir()
    return Path(chosen).expanduser().resolve()


def default_slots() -> int:
    """One slot per physical core (wasm is CPU-bound; hyperthreads add little)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


DEFAULT_PORT: Final = 7350  # libp2p TCP, on every interface
DEFAULT_API: Final = "127.0.0.1:7351"
CONFIG_FILE_NAME: Final = "meshnode.toml"
LOG_LEVELS: Final = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """``owners`` is None for "any owner"; otherwise the owners whose subtasks this node runs."""

    owners: frozenset[PeerId] | None = None

    @classmethod
    def from_flag(cls, value: str) -> TrustPolicy:
        """``any``, or a file of owner peer IDs (blank lines and ``#`` comments allowed).

        Raises:
            ConfigError: the file cannot be read, or a line is not a peer ID (the message names it).
        """
        if value == "any":
            return cls(None)
        path = Path(value)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--trust {value}: cannot read it ({exc})") from exc
        owners = set()
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                owners.add(PeerId.from_base58(text))
            except WireError:
                raise ConfigError(f"--trust {value}, line {number}: {text[:60]!r} is not a peer ID") from None
        return cls(frozenset(owners))

    def trusts(self, owner: PeerId) -> bool:
        return self.owners is None or owner in self.owners


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a node needs to start. Every field has a working default but the data dir."""

    data_dir: Path
    listen: tuple[str, ...] = (f"/ip4/0.0.0.0/tcp/{DEFAULT_PORT}",)
    bootstrap: tuple[str, ...] = ()
    mdns: bool = True
    slots: int = field(default_factory=default_slots)
    api: str | None = DEFAULT_API  # None: no local API
    swarm_key: Path | None = None
    presence_interval: float = 30.0  # seconds between presence heartbeats (jittered by +-1/6; longer past 5 peers)
    log_level: str = "info"
    log_json: bool = False
    trust: TrustPolicy = TrustPolicy()  # whose jobs this node runs: any owner by default
    metrics_public: bool = False  # /metrics answers without the API token (every other path still needs it)


def _words(value: str) -> tuple[str, ...]:
    return tuple(w for w in value.replace(",", " ").split() if w)


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: {value!r} is not true or false")


def _positive_int(name: str, value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or n < 1:
        raise ConfigError(f"{name}: {value!r} is not a positive whole number")
    return n


def _interval(name: str, value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = -1.0
    if not 0.1 <= x <= 60:
        raise ConfigError(f"{name}: {value!r} is not a number of seconds in 0.1..60")
    return x


def _level(name: str, value: Any) -> str:
    text = str(value).lower()
    if text not in LOG_LEVELS:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(LOG_LEVELS)}")
    return text


def _addr_list(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return _words(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{name}: expected a list of multiaddrs")


def _api(name: str, value: Any) -> str | None:
    text = str(value).strip()
    if text.lower() in ("", "off", "none"):
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{name}: {value!r} is not HOST:PORT (e.g. 127.0.0.1:7351, or off)")
    return text


# setting -> how to parse it from the environment or the file
_PARSERS: Final[dict[str, Callable[[str, Any], Any]]] = {
    "listen": _addr_list,
    "bootstrap": _addr_list,
    "mdns": _bool,
    "slots": _positive_int,
    "api": _api,
    "swarm_key": lambda name, v: Path(str(v)).expanduser(),
    "presence_interval": _interval,
    "log_level": _level,
    "log_json": _bool,
    "trust": lambda name, v: TrustPolicy.from_flag(str(v)),
    "metrics_public": _bool,
}


def _read_file(data_dir: Path) -> dict[str, Any]:
    path = data_dir / CONFIG_FILE_NAME
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    unknown = sorted(set(raw) - set(_PARSERS))
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(_PARSERS))})")
    out = {key: _PARSERS[key](f"{path}: {key}", value) for key, value in raw.items()}
    if isinstance(out.get("swarm_key"), Path) and not out["swarm_key"].is_absolute():
        out["swarm_key"] = data_dir / out["swarm_key"]  # relative to the data dir it sits in
    return out


def _read_env(env: Mapping[str, str]) -> dict[str, Any]:
    out = {}
    for key, parse in _PARSERS.items():
        name = f"MESHNODE_{key.upper()}"
        if name in env:
            out[key] = parse(name, env[name])
    return out


def load_node_config(
    data_dir_flag: str | None, flags: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> NodeConfig:
    """Merge the settings: flags (those not None) over environment over file over defaults.

    Raises:
        ConfigError: a value anywhere is invalid; the message names where it came from.
    """
    env = os.environ if env is None else env
    data_dir = resolve_data_dir(data_dir_flag)
    merged: dict[str, Any] = {**_read_file(data_dir), **_read_env(env)}
    for key, value in flags.items():
        if value is None:
            continue
        if key not in _PARSERS:
            raise KeyError(key)
        merged[key] = _PARSERS[key](f"--{key.replace('_', '-')}", list(value) if isinstance(value, tuple) else value)
    config = NodeConfig(data_dir=data_dir)
    known = {f.name for f in fields(NodeConfig)}
    return replace(config, **{k: v for k, v in merged.items() if k in known})
