"""Evidence for forensic claims: cited entries, inclusion proofs, and a re-check for auditors.

A claim in a blast-radius report names ledger entries by index. The report
carries, for each cited entry, its canonical bytes; one batch inclusion proof
(:mod:`._multiproof`) of all of them in the current tree head, every shared
hash listed once; and the latest signed tree head with a consistency proof from
it to the current head. :func:`verify_evidence` re-checks all of that offline,
from the report alone and a trusted public key.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, cast

from trainguard.errors import LedgerIntegrityError
from trainguard.ledger import _merkle
from trainguard.ledger._ledger import Ledger, TreeHead
from trainguard.ledger._multiproof import verify_batch, verify_sorted
from trainguard.ledger._query import read_checked
from trainguard.ledger.signing import PublicKey, SignedTreeHead

__all__ = ["Evidence", "collect_evidence", "verify_evidence"]

_first, _second = itemgetter(0), itemgetter(1)


@dataclass(frozen=True)
class Evidence:
    """Cited entries with their batch proof, anchored to a tree head and (if any) a signed head.

    ``batch_proof`` proves every entry of ``entries`` in ``head`` at once
    (:func:`~trainguard.ledger._multiproof.verify_batch`).
    """

    head: TreeHead
    signed_head: SignedTreeHead | None
    consistency: tuple[bytes, ...]
    entries: Mapping[int, bytes]
    batch_proof: tuple[bytes, ...]

    def verify(self) -> None:
        """Check the batch proof of every cited entry against the tree head's root.

        Raises:
            LedgerIntegrityError: an entry or a proof hash does not fit the root.
        """
        leaves = {i: _merkle.leaf_hash(data) for i, data in self.entries.items()}
        verify_batch(self.head.size, leaves, self.batch_proof, self.head.root)

    @property
    def unsigned(self) -> list[int]:
        """Cited entries appended after the signed head (no signature commits to them yet)."""
        signed = self.signed_head.size if self.signed_head else 0
        return sorted(i for i in self.entries if i >= signed)

    def to_json(self) -> dict[str, Any]:
        return {
            "tree_head": self.head.to_json(),
            "signed_tree_head": self.signed_head.to_json() if self.signed_head else None,
            "consistency_proof": [h.hex() for h in self.consistency],
            "entries": {
                str(i): {"data": self.entries[i].decode("utf-8")} for i in sorted(self.entries)
            },
            "batch_proof": [h.hex() for h in self.batch_proof],
        }


def collect_evidence(
    ledger: Ledger,
    leaves: Collection[int],
    head: TreeHead,
    fetched: Mapping[int, tuple[bytes, bytes | None]] | None = None,
) -> Evidence:
    """Read the cited entries and prove them in ``head``; check the whole proof before use.

    ``fetched`` (see :func:`~trainguard.ledger._query.read_checked`) may hold
    entries already read, with their leaf hashes recomputed.

    Raises:
        LedgerIntegrityError: an entry is missing or altered, a proof does not
            reach the root, or the log does not extend its latest signed head.
    """
    wanted = sorted(leaves if isinstance(leaves, set | frozenset) else set(leaves))
    known: Mapping[int, tuple[bytes, bytes | None]] = fetched or {}
    unread = [leaf for leaf in wanted if leaf not in known]
    if unread:
        known = {**known, **read_checked(ledger.storage, unread)}
    got = list(map(known.get, wanted))  # (10^5 cited entries: no Python loop per entry)
    if None in got:
        missing = [leaf for leaf, g in zip(wanted, got, strict=True) if g is None]
        raise LedgerIntegrityError(
            "cited entries are missing from the log", subject=f"entries {missing[:5]}"
        )
    intact = cast(list[tuple[bytes, bytes | None]], got)
    if None in map(_second, intact):
        edited = [leaf for leaf, g in zip(wanted, intact, strict=True) if g[1] is None]
        raise LedgerIntegrityError(
            "a cited entry does not match the tree", subject=f"entries {edited[:5]}"
        )
    entries: dict[int, bytes] = dict(zip(wanted, map(_first, intact), strict=True))
    # The proof comes from stored nodes; checking all of it (a few hashes per
    # entry) catches a damaged tree before a report is handed out.
    batch = ledger.batch_proof(wanted, head.size)
    verify_sorted(head.size, wanted, list(map(_second, intact)), batch, head.root)
    signed = [h for h in ledger.signed_heads() if 0 < h.size <= head.size]
    latest = max(signed, key=lambda h: (h.size, h.timestamp)) if signed else None
    consistency: tuple[bytes, ...] = ()
    if latest is not None:
        consistency = ledger.consistency_proof(latest.size, head.size)
        _merkle.verify_consistency(latest.size, head.size, latest.root, head.root, consistency)
    return Evidence(head, latest, consistency, entries, batch)


def verify_evidence(
    report: Mapping[str, Any], trusted: Sequence[PublicKey] = (), *, require_signed: bool = False
) -> int:
    """Re-check the evidence section of a report (JSON) offline; returns entries checked.

    Checks the signed head's signature (with ``trusted`` keys), the
    consistency proof from it to the report's tree head, the batch inclusion
    proof of every cited entry, and that every entry a claim cites is in the
    evidence.

    Raises:
        LedgerIntegrityError: any of those fails.
    """
    try:
        ev = report["evidence"]
        head = TreeHead(int(ev["tree_head"]["size"]), bytes.fromhex(ev["tree_head"]["root"]))
        items = {int(k): str(v["data"]).encode("utf-8") for k, v in ev["entries"].items()}
        consistency = [bytes.fromhex(h) for h in ev["consistency_proof"]]
        batch = [bytes.fromhex(h) for h in ev["batch_proof"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LedgerIntegrityError(f"malformed report evidence: {exc}") from exc
    sth = ev.get("signed_tree_head")
    if sth is not None:
        signed = SignedTreeHead.from_json(sth)
        if trusted:
            signed.verify(trusted)
        _merkle.verify_consistency(signed.size, head.size, signed.root, head.root, consistency)
    signed_size = signed.size if sth is not None else 0
    if require_signed and (sth is None or not trusted):
        raise LedgerIntegrityError(
            "the report's evidence is not anchored in a signature checked with a trusted key"
        )
    cited = _cited(report)
    absent = sorted(cited - set(items))
    if absent:
        raise LedgerIntegrityError(
            "claims cite entries the evidence does not contain", subject=f"entries {absent[:5]}"
        )
    # An entry's text edited in the report changes its leaf hash, so the root.
    verify_batch(
        head.size, {i: _merkle.leaf_hash(data) for i, data in items.items()}, batch, head.root
    )
    if require_signed and items and max(items) >= signed_size:
        raise LedgerIntegrityError(
            "a cited entry is not covered by the signed tree head", subject=f"entry {max(items)}"
        )
    return len(items)


def _cited(value: Any) -> set[int]:
    """Every integer under an ``entries`` key of a claim (outside the evidence section)."""
    out: set[int] = set()
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "evidence":
                continue
            if key == "entries" and isinstance(item, list):
                out.update(i for i in item if isinstance(i, int))
            else:
                out |= _cited(item)
    elif isinstance(value, list):
        for item in value:
            out |= _cited(item)
    return out
