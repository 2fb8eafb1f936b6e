"""Evidence for forensic claims: cited entries, inclusion proofs, and a re-check for auditors.

A claim in a blast-radius report names ledger entries by index. The report
carries, for each cited entry, its canonical bytes and an inclusion proof in
the current tree head, plus the latest signed tree head and a consistency
proof from it to the current head. :func:`verify_evidence` re-checks all of
that offline, from the report alone and a trusted public key.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trainguard.errors import LedgerIntegrityError
from trainguard.ledger import _merkle
from trainguard.ledger._ledger import InclusionProof, Ledger, TreeHead
from trainguard.ledger.signing import PublicKey, SignedTreeHead

__all__ = ["Evidence", "collect_evidence", "verify_evidence"]

#: Inclusion proofs self-checked per report (spread evenly over the cited entries).
_SELF_CHECK = 512


@dataclass(frozen=True)
class Evidence:
    """Cited entries with their proofs, anchored to a tree head and (if any) a signed head."""

    head: TreeHead
    signed_head: SignedTreeHead | None
    consistency: tuple[bytes, ...]
    entries: Mapping[int, bytes]
    proofs: Mapping[int, InclusionProof]

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
                str(i): {
                    "data": self.entries[i].decode("utf-8"),
                    "proof": self.proofs[i].to_json(),
                }
                for i in sorted(self.entries)
            },
        }


def collect_evidence(
    ledger: Ledger,
    leaves: Collection[int],
    head: TreeHead,
    fetched: Mapping[int, tuple[bytes, bytes]] | None = None,
) -> Evidence:
    """Read the cited entries and prove each one in ``head``; check every proof before use.

    ``fetched`` (leaf -> (data, stored leaf hash)) may hold entries already read.

    Raises:
        LedgerIntegrityError: an entry is missing or altered, a proof does not
            reach the root, or the log does not extend its latest signed head.
    """
    wanted = sorted(set(leaves))
    known = fetched or {}
    entries = {leaf: known[leaf][0] for leaf in wanted if leaf in known}
    rows = ledger.storage.entries_at([leaf for leaf in wanted if leaf not in known])
    entries.update({leaf: data for leaf, _k, data, _h in rows})
    missing = [leaf for leaf in wanted if leaf not in entries]
    if missing:
        raise LedgerIntegrityError(
            "cited entries are missing from the log", subject=f"entries {missing[:5]}"
        )
    proofs = ledger.inclusion_proofs(wanted, head.size) if wanted else {}
    for leaf in wanted:
        if proofs[leaf].leaf_hash != _merkle.leaf_hash(entries[leaf]):
            raise LedgerIntegrityError(
                "a cited entry does not match the tree", subject=f"entry {leaf}"
            )
    # Proofs come from stored nodes; checking a spread sample of them (all, when
    # few) catches a damaged tree before a report is handed out. Auditors check all.
    step = max(1, len(wanted) // _SELF_CHECK)
    for leaf in wanted[::step]:
        proofs[leaf].verify(head.root)
    signed = [h for h in ledger.signed_heads() if 0 < h.size <= head.size]
    latest = max(signed, key=lambda h: (h.size, h.timestamp)) if signed else None
    consistency: tuple[bytes, ...] = ()
    if latest is not None:
        consistency = ledger.consistency_proof(latest.size, head.size)
        _merkle.verify_consistency(latest.size, head.size, latest.root, head.root, consistency)
    return Evidence(head, latest, consistency, entries, proofs)


def verify_evidence(
    report: Mapping[str, Any], trusted: Sequence[PublicKey] = (), *, require_signed: bool = False
) -> int:
    """Re-check the evidence section of a report (JSON) offline; returns entries checked.

    Checks the signed head's signature (with ``trusted`` keys), the
    consistency proof from it to the report's tree head, every cited entry's
    inclusion proof, and that every entry a claim cites is in the evidence.

    Raises:
        LedgerIntegrityError: any of those fails.
    """
    try:
        ev = report["evidence"]
        head = TreeHead(int(ev["tree_head"]["size"]), bytes.fromhex(ev["tree_head"]["root"]))
        items = {int(k): v for k, v in ev["entries"].items()}
        consistency = [bytes.fromhex(h) for h in ev["consistency_proof"]]
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
    for index, item in sorted(items.items()):
        proof = InclusionProof.from_json(item["proof"])
        data = str(item["data"]).encode("utf-8")
        if proof.index != index or proof.size != head.size:
            raise LedgerIntegrityError(
                "a proof is for another entry or tree", subject=f"entry {index}"
            )
        if proof.leaf_hash != _merkle.leaf_hash(data):
            raise LedgerIntegrityError(
                "a cited entry's text does not match its proof (edited in the report)",
                subject=f"entry {index}",
            )
        proof.verify(head.root)
        if require_signed and index >= signed_size:
            raise LedgerIntegrityError(
                "a cited entry is not covered by the signed tree head", subject=f"entry {index}"
            )
    cited = _cited(report)
    absent = sorted(cited - set(items))
    if absent:
        raise LedgerIntegrityError(
            "claims cite entries the evidence does not contain", subject=f"entries {absent[:5]}"
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
