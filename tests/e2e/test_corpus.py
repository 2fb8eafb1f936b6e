"""Every malicious corpus sample is detected, every benign one passes, nothing runs.

The corpus (tests/corpus) has one sample per known technique; a miss here is a
scanner bypass, a benign failure a false positive users would hit.
"""

from __future__ import annotations

import json

import pytest

from tests.corpus import _model
from tests.corpus.generate import Corpus, Sample
from tests.corpus.loaders import LOADERS
from trainguard.findings import Report, Severity
from trainguard.scan import scan_paths

THRESHOLD = Severity.MEDIUM


@pytest.fixture(scope="module")
def reports(corpus: Corpus) -> dict[str, Report]:
    """One scan per sample, as ``trainguard scan PATH`` would run it."""
    return {sample.id: scan_paths([sample.path]) for sample in corpus}


def _describe(sample: Sample, report: Report) -> str:
    found = sorted({f"{f.rule}:{f.severity.label}" for f in report.findings})
    return f"{sample.id} ({sample.technique}; expected {sample.rule}*): found {found or 'nothing'}"


def test_every_malicious_sample_is_detected(corpus: Corpus, reports: dict[str, Report]) -> None:
    missed = []
    for sample in corpus.malicious:
        report = reports[sample.id]
        assert sample.rule is not None
        flagged = report.exit_code(THRESHOLD) == 1 and any(
            f.rule.startswith(sample.rule) and f.severity >= THRESHOLD for f in report.findings
        )
        if not flagged:
            missed.append(_describe(sample, report))
    assert not missed, (
        f"{len(missed)} of {len(corpus.malicious)} malicious samples missed:\n" + "\n".join(missed)
    )


def test_no_benign_sample_is_flagged(corpus: Corpus, reports: dict[str, Report]) -> None:
    flagged = [
        _describe(sample, reports[sample.id])
        for sample in corpus.benign
        if reports[sample.id].at_least(THRESHOLD)
    ]
    assert not flagged, (
        f"{len(flagged)} of {len(corpus.benign)} benign samples flagged:\n" + "\n".join(flagged)
    )


def test_scanning_ran_no_payload(corpus: Corpus, reports: dict[str, Report]) -> None:
    # `reports` has scanned everything by now: a marker would mean the scanner executed content.
    assert reports
    assert list(corpus.marker_dir.iterdir()) == []


def test_one_directory_scan_flags_the_malicious_tree(corpus: Corpus) -> None:
    report = scan_paths([corpus.root / "malicious"])
    flagged = {f.subject for f in report.at_least(THRESHOLD)}
    unflagged = [
        s.id
        for s in corpus.malicious
        if not any(subject.startswith(str(s.path)) for subject in flagged)
    ]
    assert not unflagged, f"not flagged in a directory scan: {unflagged}"


def test_corpus_covers_every_family(corpus: Corpus) -> None:
    prefixes = {s.rule for s in corpus.malicious}
    expected = {getattr(_model, name) for name in dir(_model) if name.startswith("RULE_")}
    assert prefixes == expected
    loaders = {s.loader for s in corpus.malicious if s.loader is not None}
    assert {"pickle", "torch", "torchscript", "numpy", "joblib"} <= loaders <= set(LOADERS)
    assert len(corpus.benign) >= 20
    for sample in corpus:
        assert sample.path.exists(), sample.id
    manifest = json.loads((corpus.root / "manifest.json").read_text())
    assert [s["id"] for s in manifest["samples"]] == [s.id for s in corpus]
