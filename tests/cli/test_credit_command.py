"""``meshnode credit`` checks every receipt the node lists: a listing the signature does not back is invalid."""

from __future__ import annotations

import nacl.signing

from meshnode.cli.credit_command import check_report
from meshnode.core import wire
from meshnode.core.credit import CreditReceipt, indices_hash
from meshnode.core.peer_id import PeerId

OWNER_KEY = nacl.signing.SigningKey(b"o" * 32)
OWNER = PeerId.from_public_key(bytes(OWNER_KEY.verify_key))
ME = PeerId.from_public_key(bytes(nacl.signing.SigningKey(b"e" * 32).verify_key))


def listed(seq: int, fuel: int, *, claimed_fuel: int | None = None, signer: nacl.signing.SigningKey = OWNER_KEY) -> dict[str, object]:
    r = CreditReceipt(owner=OWNER, executor=ME, job_id=b"J" * 16, seq=seq, results=1, fuel=fuel,
                      indices_sha256=indices_hash([seq]), issued_ms=0)  # fmt: skip
    shown = fuel if claimed_fuel is None else claimed_fuel
    return {"seq": seq, "job_id": (b"J" * 16).hex(), "results": 1, "fuel": shown, "receipt": wire.sign(r, signer).hex()}


def test_only_receipts_the_owner_signed_as_listed_are_counted() -> None:
    other = nacl.signing.SigningKey(b"x" * 32)
    receipts = [listed(1, 10), listed(2, 20, claimed_fuel=2000), listed(3, 30, signer=other), listed(4, 40)]
    report = {"peer_id": str(ME), "fuel_per_credit": 10**9, "granted": [],
              "received": {"owners": [{"owner": str(OWNER), "fuel": 2080, "results": 4, "receipts": receipts}]}}  # fmt: skip
    checked = check_report(report)["received"]
    assert checked["invalid"] == 2 and checked["fuel"] == 50
    (owner,) = checked["owners"]
    assert [r["valid"] for r in owner["receipts"]] == [True, False, False, True]
    assert "does not match" in owner["receipts"][1]["problem"] and "bad signature" in owner["receipts"][2]["problem"]
