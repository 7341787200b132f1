"""The README's examples as written: every import in its Python blocks resolves, every ``meshnode``
command in its shell blocks parses with the command line's own grammar, and its Prometheus scrape
configuration is one Prometheus accepts."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from meshnode.cli.parser import build_parser

from .cli.promtool import promtool  # noqa: F401  (a fixture)

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def meshnode_commands() -> list[list[str]]:
    """The arguments of every ``meshnode`` (or ``python -m meshnode``) command in the shell blocks."""
    commands = []
    for block in blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            command: list[str] = []
            redirected = False
            for word in [*words, "&&"]:
                if redirected or re.fullmatch(r"[0-9]?>>?|<", word):  # a redirection and its file
                    redirected = not redirected
                elif word in ("&&", "||", "|", "&", ";"):
                    if command[:1] == ["meshnode"]:
                        commands.append(command[1:])
                    elif "-m" in command and command[command.index("-m") + 1 :][:1] == ["meshnode"]:
                        commands.append(command[command.index("-m") + 2 :])
                    command = []
                else:
                    command.append(word.rstrip(";&"))
    return commands


def test_every_import_in_the_readme_examples_resolves() -> None:
    imports = [node for block in blocks("python") for node in ast.parse(block).body
               if isinstance(node, ast.Import | ast.ImportFrom)]  # fmt: skip
    assert any(isinstance(node, ast.ImportFrom) and node.module == "meshnode" for node in imports)
    for node in imports:
        exec(compile(ast.Module([node], []), str(README), "exec"), {})  # raises ImportError if it moved


@pytest.mark.parametrize("args", meshnode_commands(), ids=" ".join)
def test_every_meshnode_command_in_the_readme_parses(args: list[str]) -> None:
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help", "--version")):
        args = ["run", *args]  # as meshnode.cli.main does: `meshnode [flags]` runs a node
    build_parser().parse_args(args)  # exits with status 2, naming the flag, when one is wrong


def test_the_readme_scrape_config_passes_promtool(tmp_path: Path, promtool: Path) -> None:  # noqa: F811
    (config,) = [block for block in blocks("yaml") if "scrape_configs" in block]
    (tmp_path / "prometheus.yml").write_text(config)
    checked = subprocess.run([str(promtool), "check", "config", str(tmp_path / "prometheus.yml")],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
