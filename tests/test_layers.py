"""The layers, read from the source: what each part of meshnode may import.

    core     the sans-I/O state machines and wire formats: no I/O library at all
    net, sandbox, storage   the edges: they never import the node, the API or the CLI
    api      the local HTTP API and its client: never the node (it talks to it through Protocols)
    node     wires core to the edges; cli drives node and api
    client   meshnode.Client, for other programs: the API's client side, never the node or its edges

Every import counts, at any depth and under ``TYPE_CHECKING`` too: an import
that only the type checker follows still ties two modules together.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "meshnode"

# What a core module may import beyond core itself and meshnode.errors: pure computation.
CORE_MAY_IMPORT = {
    "__future__", "array", "base64", "bisect", "cbor2", "collections", "dataclasses", "enum", "functools",
    "hashlib", "heapq", "itertools", "json", "math", "nacl", "operator", "re", "struct", "typing", "zlib",
    "zstandard", "threading",  # output_codec: zstd's contexts, one per thread (no I/O)
}  # fmt: skip
EDGES = ("net", "sandbox", "storage")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> Iterator[str]:
    """Every module ``name`` imports (a ``from x import y`` names x, and x.y when that is a module)."""
    path = MODULES[name]
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            yield from (f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES)


def part(name: str) -> str:
    """The part of meshnode a module belongs to: ``core``, ``net``, ..., or the module itself at the top."""
    return name.split(".")[1] if name.count(".") else name


def internal_graph() -> dict[str, set[str]]:
    return {name: {t for t in imports(name) if t in MODULES and t != name} for name in MODULES}


def test_the_parts_exist() -> None:
    """The folders the design names (a rename that loses one should fail here, not pass vacuously)."""
    parts = {part(name) for name in MODULES}
    assert {"core", "net", "sandbox", "storage", "node", "api", "cli"} <= parts
    assert all(sum(part(n) == p for n in MODULES) >= 2 for p in ("core", "net", "sandbox", "storage", "node", "api", "cli"))


@pytest.mark.parametrize("name", [n for n in MODULES if part(n) == "core"])
def test_core_imports_no_io(name: str) -> None:
    for target in imports(name):
        if target.startswith("meshnode"):
            assert part(target) in ("core", "errors") or target == "meshnode", f"{name} imports {target}"
        else:
            assert target.split(".")[0] in CORE_MAY_IMPORT, f"{name} imports {target}: core does no I/O"


@pytest.mark.parametrize("name", [n for n in MODULES if part(n) in EDGES])
def test_edges_never_import_the_node_the_api_or_the_cli(name: str) -> None:
    for target in imports(name):
        assert not target.startswith(("meshnode.node", "meshnode.api", "meshnode.cli")), f"{name} imports {target}"


@pytest.mark.parametrize("name", [n for n in MODULES if part(n) == "api"])
def test_the_api_never_imports_the_node_or_the_cli(name: str) -> None:
    for target in imports(name):
        assert not target.startswith(("meshnode.node", "meshnode.cli")), f"{name} imports {target}"


@pytest.mark.parametrize("name", [n for n in MODULES if part(n) == "client"])
def test_the_client_never_imports_the_node_or_its_edges(name: str) -> None:
    """A program that embeds a Client (a web app, a notebook) loads neither libp2p nor wasmtime nor trio."""
    for target in imports(name):
        if target.startswith("meshnode."):
            assert part(target) not in ("node", "cli", "net", "sandbox", "storage"), f"{name} imports {target}"


def test_no_import_circles() -> None:
    graph = internal_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph[name]):
            if target.startswith(name + "."):  # a package importing its own modules is not a circle
                continue
            if state.get(target) == 1:
                circle = path[path.index(target) :] + [target]
                pytest.fail("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_the_checks_see_imports() -> None:
    """The reader itself: it finds a relative import, a nested one and a TYPE_CHECKING one."""
    found = set(imports("meshnode.node.mesh_node"))
    assert {"meshnode.core.peers", "meshnode.net.host", "meshnode.api.server"} <= found
    assert "meshnode.storage.journal" in set(imports("meshnode.api.job_routes"))  # under TYPE_CHECKING


def test_every_exception_is_defined_in_errors_py() -> None:
    """One error module: a caller finds every exception meshnode raises on purpose in one place."""
    defined = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                defined[node.name] = (name, [ast.unparse(b) for b in node.bases])
    errors = {c for c, (module, _) in defined.items() if module == "meshnode.errors"}
    assert {"MeshError", "FrameError", "NodeNotRunning", "JournalError"} <= errors

    def is_exception(cls: str, seen: frozenset[str] = frozenset()) -> bool:
        if cls in ("Exception", "BaseException") or cls.endswith("Error") and cls not in defined:
            return True
        module_bases = defined.get(cls, ("", []))[1]
        return cls not in seen and any(is_exception(b.rsplit(".", 1)[-1], seen | {cls}) for b in module_bases)

    elsewhere = [f"{module}.{c}" for c, (module, _) in defined.items() if module != "meshnode.errors" and is_exception(c)]
    assert elsewhere == []
