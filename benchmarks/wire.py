"""Wire-format figures: what checking a subtask costs, against a signature per subtask.

    python benchmarks/wire.py

Prints a Markdown table; docs/benchmarks.md holds the latest one.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nacl.signing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meshnode.config import DEFAULT_LIMITS  # noqa: E402
from meshnode.core import wire  # noqa: E402
from meshnode.core.manifest import InputCommitment, JobManifest, Replication, Subtask, verify_subtask  # noqa: E402
from meshnode.core.peer_id import PeerId  # noqa: E402


def per_call(fn: Callable[[], object], n: int) -> float:
    best = 1e9
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def main() -> None:
    key = nacl.signing.SigningKey(os.urandom(32))
    owner = PeerId.from_public_key(bytes(key.verify_key))
    rows = ["| operation | µs |", "|---|---|"]
    for count in (256, 65536):
        inputs = [os.urandom(100) for _ in range(count)]
        t0 = time.perf_counter()
        commitment = InputCommitment.of(inputs)
        build = (time.perf_counter() - t0) * 1e6 / count
        manifest = JobManifest(
            job_id=os.urandom(16), owner=owner, label="bench", module_sha256=os.urandom(32), module_size=6000,
            entry="run", limits=DEFAULT_LIMITS, nan_canonical=False, replication=Replication(2, 2, 5),
            subtask_count=count, inputs_root=commitment.root, created_ms=0, expires_ms=1,
        )  # fmt: skip
        subtask = commitment.subtask(manifest.job_id, count // 3, 0, inputs[count // 3])
        encoded = wire.encode(subtask)
        rows.append(f"| commit to {count} inputs of 100 B (Merkle tree), per input | {build:.1f} |")
        rows.append(f"| verify one subtask's proof, {count}-input job | {per_call(lambda: verify_subtask(manifest, subtask), 20000):.1f} |")
        rows.append(f"| decode + verify one subtask from bytes, {count}-input job | "
                    f"{per_call(lambda: verify_subtask(manifest, wire.decode(encoded, Subtask)), 5000):.1f} |")  # fmt: skip
    signed = wire.sign(manifest, key)
    signature = key.sign(encoded).signature
    verify_key = key.verify_key
    rows.append(f"| alternative: Ed25519-verify one subtask signature | {per_call(lambda: verify_key.verify(encoded, signature), 5000):.1f} |")
    rows.append(f"| alternative: Ed25519-sign one subtask | {per_call(lambda: key.sign(encoded), 5000):.1f} |")
    rows.append(f"| sign a manifest (once per job) | {per_call(lambda: wire.sign(manifest, key), 2000):.1f} |")
    rows.append(f"| open and verify a signed manifest (once per job per node) | "
                f"{per_call(lambda: wire.open_self_signed(signed, JobManifest, 'owner'), 2000):.1f} |")  # fmt: skip
    rows.append(f"| encoded sizes: manifest {len(wire.encode(manifest))} B, signed {len(signed)} B, "
                f"subtask with 100 B input and 16-hash proof {len(encoded)} B | |")  # fmt: skip
    print("\n".join(rows))


if __name__ == "__main__":
    main()
