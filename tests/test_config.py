"""Node settings: flag over environment over meshnode.toml over default, with errors naming their source."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshnode.config import DEFAULT_API, NodeConfig, load_node_config
from meshnode.errors import ConfigError

NO_FLAGS: dict[str, object] = {"listen": None, "bootstrap": None, "mdns": None, "slots": None, "api": None}


def test_defaults(tmp_path: Path) -> None:
    c = load_node_config(str(tmp_path), NO_FLAGS, env={})
    assert c == NodeConfig(data_dir=tmp_path.resolve(), slots=c.slots)
    assert c.mdns and c.api == DEFAULT_API and c.listen == ("/ip4/0.0.0.0/tcp/7350",)


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    (tmp_path / "meshnode.toml").write_text(
        'slots = 3\nmdns = false\napi = "127.0.0.1:9000"\nlisten = ["/ip4/127.0.0.1/tcp/1"]\nswarm_key = "k"\n'
    )
    env = {"MESHNODE_SLOTS": "5", "MESHNODE_API": "127.0.0.1:9001", "MESHNODE_BOOTSTRAP": "/a/b, /c/d"}
    c = load_node_config(str(tmp_path), {**NO_FLAGS, "slots": 7}, env=env)
    assert c.slots == 7  # flag
    assert c.api == "127.0.0.1:9001"  # env over file
    assert c.bootstrap == ("/a/b", "/c/d")  # env, split on commas and spaces
    assert c.mdns is False and c.listen == ("/ip4/127.0.0.1/tcp/1",)  # file
    assert c.swarm_key == tmp_path.resolve() / "k"  # relative to the data dir
    assert c.presence_interval == 30.0  # default


def test_api_off(tmp_path: Path) -> None:
    assert load_node_config(str(tmp_path), {**NO_FLAGS, "api": "off"}, env={}).api is None


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("slots = 0\n", {}, "meshnode.toml: slots: 0 is not a positive whole number"),
        ("colour = 'blue'\n", {}, "unknown setting 'colour'"),
        ("slots = [\n", {}, "cannot read"),
        ("", {"MESHNODE_MDNS": "maybe"}, "MESHNODE_MDNS: 'maybe' is not true or false"),
        ("", {"MESHNODE_API": "7351"}, "MESHNODE_API: '7351' is not HOST:PORT"),
        ("", {"MESHNODE_PRESENCE_INTERVAL": "0"}, "MESHNODE_PRESENCE_INTERVAL"),
        ("", {"MESHNODE_LOG_LEVEL": "loud"}, "MESHNODE_LOG_LEVEL: 'loud' is not one of"),
    ],
)
def test_bad_values_name_their_source(tmp_path: Path, toml: str, env: dict[str, str], message: str) -> None:
    (tmp_path / "meshnode.toml").write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_node_config(str(tmp_path), NO_FLAGS, env=env)
