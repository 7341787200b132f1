"""The credit endpoint of the local API.

    GET /v1/credit    {"peer_id", "fuel_per_credit", "received": {"fuel", "credit", "owners": [...]},
                       "granted": [{"executor", "results", "fuel", "credit"}, ...]}

Each owner in ``received`` lists the receipts it signed for this node, each with its signed
envelope in hex (``receipt``), so a client checks every signature itself (``meshnode credit``):
the node's word is not the proof, the owner's signature is.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["CreditBook", "credit_routes"]


class CreditBook(Protocol):
    """What the credit endpoint needs from the node: its ledger, as a JSON-ready report."""

    async def credit_report(self) -> dict[str, Any]:
        """Credit received (per owner, with the signed receipts) and granted (per executor)."""


def credit_routes(book: CreditBook) -> list[Route]:
    """The credit endpoint of ``book``, for ``serve_api(..., extra_routes=...)``."""

    async def credit(request: Request) -> JSONResponse:
        return JSONResponse(await book.credit_report())

    return [Route("/v1/credit", credit)]
