"""Exports to where users already are: OpenLineage run events and OpenSSF model-signing manifests.

Example:
    >>> from trainguard.ledger.export import model_signing_statement
    >>> statement = model_signing_statement("checkpoints/step-1000")  # doctest: +SKIP
    >>> statement["predicateType"]  # doctest: +SKIP
    'https://model_signing/signature/v1.0'
"""

from __future__ import annotations

from trainguard.ledger.export.model_signing import model_signing_statement
from trainguard.ledger.export.openlineage import openlineage_events

__all__ = ["model_signing_statement", "openlineage_events"]
