"""Every import in the README's Python examples works: a module moved must not break them silently."""

from __future__ import annotations

import ast
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_import_in_the_readme_examples_resolves() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    imports = [node for block in blocks for node in ast.parse(block).body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert any(isinstance(node, ast.ImportFrom) and node.module == "meshnode" for node in imports)
    for node in imports:
        exec(compile(ast.Module([node], []), str(README), "exec"), {})  # raises ImportError if it moved
