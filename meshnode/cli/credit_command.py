"""``meshnode credit``: the credit this node earned (per owner, every receipt's signature checked) and granted.

The node lists the receipts it holds; this command checks each one itself against the
owner it names, so what it prints as verified is the owners' word, not the node's.
A receipt that does not verify is listed as invalid, its credit is left out of the
totals, and the command exits 1.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..config import resolve_data_dir
from ..core.credit import credit_of, open_receipt
from ..core.peer_id import PeerId
from ..errors import WireError

__all__ = ["check_report", "cmd_credit"]


def cmd_credit(args: argparse.Namespace) -> int:
    from ..api.client import ApiClient

    report = ApiClient.for_data_dir(resolve_data_dir(args.data_dir), timeout=10.0).get("/v1/credit")
    checked = check_report(report)
    if args.json:
        print(json.dumps(checked))
    else:
        _print(checked)
    return 1 if checked["received"]["invalid"] else 0


def check_report(report: dict[str, Any]) -> dict[str, Any]:
    """The node's report with every receipt checked: ``valid`` on each, invalid ones left out of the sums."""
    me = PeerId.from_base58(report["peer_id"])
    owners, invalid, total = [], 0, 0
    for o in report["received"]["owners"]:
        fuel = results = 0
        receipts = []
        for r in o["receipts"]:
            problem = _problem(r, o["owner"], me)
            receipts.append({**r, "valid": problem is None, **({"problem": problem} if problem else {})})
            if problem is None:
                fuel, results = fuel + r["fuel"], results + r["results"]
            else:
                invalid += 1
        owners.append({**o, "fuel": fuel, "results": results, "credit": credit_of(fuel), "receipts": receipts})
        total += fuel
    received = {"fuel": total, "credit": credit_of(total), "invalid": invalid, "owners": owners}
    return {**report, "received": received}


def _problem(r: dict[str, Any], owner: str, me: PeerId) -> str | None:
    """Why a listed receipt is not proof of what it is listed as, or None."""
    try:
        receipt = open_receipt(bytes.fromhex(r["receipt"]), PeerId.from_base58(owner), me)
    except (WireError, ValueError) as exc:
        return str(exc)[:200]
    listed = (r["seq"], r["job_id"], r["results"], r["fuel"])
    if (receipt.seq, receipt.job_id.hex(), receipt.results, receipt.fuel) != listed:
        return "the listing does not match the signed receipt"
    return None


def _print(checked: dict[str, Any]) -> None:
    received = checked["received"]
    print(f"credit received: {received['credit']:.6g}  ({received['fuel']:,} fuel; 1 credit = "
          f"{checked['fuel_per_credit']:,} fuel)")  # fmt: skip
    if not received["owners"]:
        print("  none yet")
    for o in received["owners"]:
        n = len(o["receipts"])
        print(f"  from {o['owner']}: {o['credit']:.6g} credit for {o['results']} results, {n} receipt{'s' * (n != 1)}")
        for r in o["receipts"]:
            if not r["valid"]:
                print(f"    INVALID receipt {r['seq']} (job {r['job_id']}): {r['problem']}")
    if received["invalid"]:
        print(f"{received['invalid']} receipt(s) do not verify: their credit is not counted")
    granted = checked["granted"]
    if granted:
        print(f"credit granted: {sum(g['credit'] for g in granted):.6g}")
        for g in granted:
            print(f"  to {g['executor']}: {g['credit']:.6g} credit for {g['results']} results")
