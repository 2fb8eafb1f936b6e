"""Tamper-evident provenance of runs and checkpoints: what touched what, provably.

The ledger is an append-only log of records (:class:`Run`, :class:`Edge`
"run used / produced content", :class:`Artifact`, :class:`Alert`,
:class:`StepFingerprint`, :class:`PreflightResult`) whose entries are the
leaves of an RFC 6962 / RFC 9162 Merkle tree. Signed tree heads (Ed25519)
commit to it; inclusion and consistency proofs show what it contains;
:func:`verify_ledger` recomputes everything from the entries and catches any
edited, deleted, reordered or inserted entry, truncation, forged signature or
tampered index. :func:`blast_radius` answers "what did this indicator affect,
how many GPU-hours, and what is provably clean", with evidence an auditor
re-checks offline; :func:`lineage` draws where a checkpoint came from.

Where it lives is a URL: ``--ledger`` / ``TRAINGUARD_LEDGER`` /
``sqlite:///...`` under the user data directory by default, or
``postgresql://...`` for a cluster (see :mod:`trainguard.ledger.storage`).

Example:
    >>> import tempfile
    >>> from trainguard.ledger import Edge, Indicator, Ledger, Run, SigningKey
    >>> from trainguard.ledger import blast_radius, verify_ledger
    >>> ledger = Ledger.open(f"sqlite:///{tempfile.mkdtemp()}/ledger.db", create=True)
    >>> bad = "sha256:" + "ab" * 32
    >>> _ = ledger.append([
    ...     Run("ft-1", user="ana", hosts=("gpu-001",), world_size=8, accelerator_type="H100",
    ...         accelerator_count=8, started_at=1714000000, ended_at=1714007200),
    ...     Edge("ft-1", "used", bad, "checkpoint", 1714000000),
    ... ])
    >>> key = SigningKey.generate()
    >>> _ = ledger.sign(key)
    >>> verify_ledger(ledger, trusted_keys=[key.public_key], jobs=1).size
    2
    >>> result = blast_radius(ledger, Indicator(artifacts=(bad,)))
    >>> [(r.facts.run_id, r.facts.gpu_hours) for r in result.affected_runs]
    [('ft-1', 16.0)]
"""

from __future__ import annotations

from trainguard.ledger._evidence import verify_evidence
from trainguard.ledger._ledger import BatchWriter, Entry, InclusionProof, Ledger, TreeHead, prepare
from trainguard.ledger.blast import BlastRadius, Indicator, PriceTable, blast_radius
from trainguard.ledger.capture import RunRecorder, digest_file, hooks, load, save
from trainguard.ledger.lineage import LineageGraph, lineage
from trainguard.ledger.records import (
    Alert,
    Artifact,
    Edge,
    PreflightResult,
    Record,
    Run,
    RunEnd,
    StepFingerprint,
    StepMetrics,
)
from trainguard.ledger.signing import PublicKey, SignedTreeHead, SigningKey
from trainguard.ledger.verify import VerifyResult, verify_ledger

__all__ = [
    "Alert",
    "Artifact",
    "BatchWriter",
    "BlastRadius",
    "Edge",
    "Entry",
    "InclusionProof",
    "Indicator",
    "Ledger",
    "LineageGraph",
    "PreflightResult",
    "PriceTable",
    "PublicKey",
    "Record",
    "Run",
    "RunEnd",
    "RunRecorder",
    "SignedTreeHead",
    "SigningKey",
    "StepFingerprint",
    "StepMetrics",
    "TreeHead",
    "VerifyResult",
    "blast_radius",
    "digest_file",
    "hooks",
    "lineage",
    "load",
    "prepare",
    "save",
    "verify_evidence",
    "verify_ledger",
]
