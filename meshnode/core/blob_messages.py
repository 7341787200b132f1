"""The messages of the blob protocol: ask a peer for a blob by hash, and its answer.

The blob's content does not travel in these messages: it follows a
``BlobResponse`` on the same stream, in chunks (see ``meshnode.net.blob_protocol``).
"""

from __future__ import annotations

from typing import Final

from .wire import Bool, Bytes, Int, message, wire

__all__ = ["REQUEST_MAX_SIZE", "RESPONSE_MAX_SIZE", "BlobRequest", "BlobResponse"]

# Both encode to well under 100 bytes; the caps leave room and nothing more.
REQUEST_MAX_SIZE: Final = 128
RESPONSE_MAX_SIZE: Final = 160


@message("blob_request", version=1, max_size=REQUEST_MAX_SIZE)
class BlobRequest:
    """Send me the blob with this SHA-256."""

    sha256: bytes = wire(Bytes(32, 32))


@message("blob_response", version=1, max_size=RESPONSE_MAX_SIZE)
class BlobResponse:
    """Whether the peer has the blob, and how many content bytes follow if it does."""

    sha256: bytes = wire(Bytes(32, 32))  # the hash asked for, echoed
    size: int = wire(Int(0, 2**62))
    found: bool = wire(Bool())

    def check(self) -> str | None:
        if not self.found and self.size != 0:
            return f"a blob that was not found cannot have {self.size} bytes"
        return None
