"""The public surface: everything in __all__ exists, says it lives in meshnode, and imports cheaply."""

from __future__ import annotations

import subprocess
import sys

import meshnode


def test_all_names_exist_and_say_meshnode() -> None:
    for name in meshnode.__all__:
        obj = getattr(meshnode, name)
        if isinstance(obj, type):
            assert obj.__module__ == "meshnode", name


def test_importing_meshnode_does_not_import_libp2p() -> None:
    """libp2p takes about 1.5 s to import; commands that do not network must not pay it."""
    code = "import sys, meshnode, meshnode.cli.main; print('libp2p' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
