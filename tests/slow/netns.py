"""A simulated LAN of Linux network namespaces, for tests and benchmarks that need real multi-host networking.

    with simulated_lan(3) as lan:            # or the ``lan_factory`` fixture in a test
        p = lan.run(lan.hosts[0], [sys.executable, "-m", "meshnode", ...])
        lan.call(lan.hosts[1], ["ip", "addr"]).stdout
        lan.link_down(lan.hosts[2])          # host 3 vanishes: no FIN, no RST
        print(p.stderr_tail())

Layout: one bridge namespace holding ``br0``, and one namespace per host joined
to the bridge by a veth pair. Host *i* has ``eth0`` at 10.231.X.i/24 (X is the
LAN's serial number in this process), multicast on, and ``lo`` up. Each veth
pair is created directly inside its two namespaces, so nothing ever appears in
the root namespace and runs in parallel cannot collide. Namespace names carry
the pid (``mn-<pid>-<serial>-br``, ``-h1``, ...).

The kernel keeps one neighbour (ARP) table for every namespace together, and
by default drops new entries beyond 1,024 (``gc_thresh3``): a LAN of 50 hosts
needs 2,450, and with the default some of its hosts could not reach some of
their peers at all (the kernel logged "neighbor table overflow" ten times every
5 s; connects timed out, or failed with "No route to host"). ``simulated_lan``
raises the thresholds to fit the LAN while it exists (``neighbour_room``), and
lowers them again after.

Everything is torn down on exit, whatever happened: every process started with
``run`` is killed (its whole process group) and reaped, then the namespaces are
deleted; deleting a namespace deletes its veth ends and the bridge with it.

Needs root and ``ip`` (iproute2); ``NetnsUnavailable`` says why not, and the
fixture turns it into a skip.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = [
    "NEIGHBOUR_SYSCTLS", "Lan", "NetnsUnavailable", "NsProcess", "inside", "isolated_namespace", "lan_factory",
    "neighbour_room", "simulated_lan",
]  # fmt: skip

SUBNET = "10.231"  # 10.231.X.0/24: private, and unlikely to be used by the machine running the tests
NEIGHBOUR_SYSCTLS = Path("/proc/sys/net/ipv4/neigh/default")
_serials = itertools.count(1)
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the block with the calling thread (only it) in network namespace ``ns``.

    A socket made inside stays in that namespace after the block: this is how one process
    talks to each node's local API (127.0.0.1 in the node's namespace) without a process per
    namespace.
    """
    with open("/proc/thread-self/ns/net", "rb") as home, open(f"/run/netns/{ns}", "rb") as there:
        _setns(there.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no iproute2, or no permission)."""


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip() or f'exit {result.returncode}'}")


def _namespaces() -> list[str]:
    result = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _delete_namespaces(prefix: str) -> None:
    for ns in _namespaces():
        if ns.startswith(prefix):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _check_usable() -> None:
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root")
    if shutil.which("ip") is None:
        raise NetnsUnavailable("the ip command (iproute2) is not installed")


@dataclass
class NsProcess:
    """A process running inside a namespace; its stdout and stderr go to files (a pipe could fill and block it)."""

    ns: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def send_signal(self, sig: int) -> None:
        self.popen.send_signal(sig)  # a no-op once the process has been reaped

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr_tail(self, lines: int = 25) -> str:
        text = self.stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps."""
        _stop_all([self], grace)

    def _signal_group(self, sig: int) -> None:
        # Only while the leader is unreaped: its pid, the group's id, cannot have been reused yet.
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)  # the process leads its own group (start_new_session)
            except ProcessLookupError:
                pass


@dataclass
class Lan:
    """A running simulated LAN. Get one from ``simulated_lan`` or the ``lan_factory`` fixture."""

    prefix: str
    bridge: str
    hosts: list[str]
    ips: dict[str, str]
    log_dir: Path
    processes: list[NsProcess] = field(default_factory=list)
    _ports: dict[str, str] = field(default_factory=dict)  # host ns -> its veth end in the bridge ns

    def run(self, ns: str, argv: Sequence[str], *, env: dict[str, str] | None = None, name: str = "") -> NsProcess:
        """Start ``argv`` inside namespace ``ns``; it is killed when the LAN is torn down."""
        return _spawn(ns, argv, env, self.log_dir, name or ns, self.processes)

    def call(self, ns: str, argv: Sequence[str], *, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a short command inside ``ns`` and wait for it (killed if it outlives ``timeout``)."""
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)

    def link_down(self, ns: str) -> None:
        """Cut the host off the bridge: its packets go nowhere, and no FIN or RST is ever sent."""
        _ip("-n", self.bridge, "link", "set", self._ports[ns], "down")

    def link_up(self, ns: str) -> None:
        _ip("-n", self.bridge, "link", "set", self._ports[ns], "up")


def _spawn(
    ns: str, argv: Sequence[str], env: dict[str, str] | None, log_dir: Path, name: str, registry: list[NsProcess]
) -> NsProcess:
    n = len(registry)
    out, err = log_dir / f"{n:02d}-{name}.out", log_dir / f"{n:02d}-{name}.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        # `ip netns exec` execs the command in place, so the pid is the command's own
        popen = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, env=env, start_new_session=True,
        )  # fmt: skip
    proc = NsProcess(ns, list(argv), popen, out, err)
    registry.append(proc)
    return proc


def _stop_all(processes: list[NsProcess], grace: float = 3.0) -> None:
    """Stop them all together (their shutdowns overlap), killing whatever outlives ``grace``; reap every one."""
    for p in processes:
        p._signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in processes:
        try:
            p.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p._signal_group(signal.SIGKILL)
            p.popen.wait()


@contextmanager
def simulated_lan(hosts: int = 3) -> Iterator[Lan]:
    """Build a LAN of ``hosts`` namespaces on one bridge; tear all of it down on exit.

    Raises:
        NetnsUnavailable: not root, no ``ip``, or the kernel refuses to make a namespace.
    """
    _check_usable()
    serial = next(_serials)
    prefix = f"mn-{os.getpid()}-{serial}-"
    subnet = f"{SUBNET}.{serial % 256}"
    _delete_namespaces(prefix)  # leftovers of an earlier process that had our pid
    bridge = prefix + "br"
    try:
        _ip("netns", "add", bridge)
    except RuntimeError as exc:
        raise NetnsUnavailable(f"cannot create a network namespace: {exc}") from None
    lan = Lan(prefix, bridge, [], {}, Path(tempfile.mkdtemp(prefix=prefix)))
    with neighbour_room(hosts * hosts):
        try:
            _ip("-n", bridge, "link", "set", "lo", "up")
            _ip("-n", bridge, "link", "add", "br0", "type", "bridge")
            _ip("-n", bridge, "link", "set", "br0", "up")
            for i in range(1, hosts + 1):
                ns, port = f"{prefix}h{i}", f"h{i}"
                _ip("netns", "add", ns)
                lan.hosts.append(ns)
                _ip("-n", bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("-n", bridge, "link", "set", port, "master", "br0")
                _ip("-n", bridge, "link", "set", port, "up")
                _ip("-n", ns, "addr", "add", f"{subnet}.{i}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "multicast", "on")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                lan.ips[ns] = f"{subnet}.{i}"
                lan._ports[ns] = port
            yield lan
        finally:
            _stop_all(lan.processes)
            _delete_namespaces(prefix)
            shutil.rmtree(lan.log_dir, ignore_errors=True)


@contextmanager
def neighbour_room(entries: int) -> Iterator[None]:
    """Make room for ``entries`` more in the kernel's neighbour table, shared by every namespace (see above):
    its thresholds rise by that much (the hard limit by four times as much) while the block runs."""
    raised: dict[Path, int] = {}
    for name, extra in (("gc_thresh1", entries), ("gc_thresh2", 2 * entries), ("gc_thresh3", 4 * entries)):
        path = NEIGHBOUR_SYSCTLS / name
        try:
            path.write_text(str(int(path.read_text()) + extra))
        except (OSError, ValueError):
            continue  # not allowed, or not Linux: the LAN gets what the table has room for
        raised[path] = extra
    try:
        yield
    finally:
        for path, extra in raised.items():
            with contextlib.suppress(OSError, ValueError):
                path.write_text(str(int(path.read_text()) - extra))


@dataclass
class LoopbackNamespace:
    """A namespace with only ``lo``: whatever crosses its loopback is this namespace's own traffic."""

    name: str
    log_dir: Path
    processes: list[NsProcess] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, env: dict[str, str] | None = None, name: str = "") -> NsProcess:
        return _spawn(self.name, argv, env, self.log_dir, name or "proc", self.processes)


@contextmanager
def isolated_namespace() -> Iterator[LoopbackNamespace]:
    """One namespace with only ``lo`` up; its processes are killed and it is deleted on exit.

    Raises:
        NetnsUnavailable: as ``simulated_lan``.
    """
    _check_usable()
    prefix = f"mn-{os.getpid()}-{next(_serials)}-"
    _delete_namespaces(prefix)
    name = prefix + "lo"
    try:
        _ip("netns", "add", name)
    except RuntimeError as exc:
        raise NetnsUnavailable(f"cannot create a network namespace: {exc}") from None
    ns = LoopbackNamespace(name, Path(tempfile.mkdtemp(prefix=prefix)))
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        yield ns
    finally:
        _stop_all(ns.processes)
        _delete_namespaces(prefix)
        shutil.rmtree(ns.log_dir, ignore_errors=True)


@pytest.fixture
def lan_factory() -> Iterator[Callable[[int], Lan]]:
    """``make(n)`` builds a LAN of n hosts, torn down after the test; skips the test where namespaces are unavailable."""
    with ExitStack() as stack:

        def make(hosts: int = 3) -> Lan:
            try:
                return stack.enter_context(simulated_lan(hosts))
            except NetnsUnavailable as exc:
                pytest.skip(str(exc))

        yield make
