"""libp2p is imported without the packages meshnode never uses, and they stay importable for real."""

import subprocess
import sys

PROGRAM = """
import sys
from meshnode.net.libp2p_adapter import UNUSED_BY_MESHNODE, apply_patches
apply_patches()
loaded = sorted(n for n in sys.modules if n.partition('.')[0] in UNUSED_BY_MESHNODE)
print('loaded after libp2p:', loaded)
import libp2p.transport.quic.transport as quic
print('quic transport module:', quic.__name__)
import requests, dns.resolver
print('real requests:', requests.Session.__module__, 'real dns:', dns.resolver.Resolver.__module__)
"""


def test_unused_packages_are_not_loaded_and_stay_importable() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "loaded after libp2p: []"
    assert lines[1] == "quic transport module: libp2p.transport.quic.transport"
    assert lines[2] == "real requests: requests.sessions real dns: dns.resolver"
