"""The corpus is real: each malicious sample, loaded by its real loader, runs its payload.

Each load happens in a throwaway subprocess (never in the test process) with
its own working directory; the payload's only effect is a marker file, whose
appearance proves the sample would have executed code for a user.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.corpus.generate import Corpus, build_corpus
from tests.corpus.loaders import LOADERS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def proof_corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    # A corpus of its own: test_corpus.py asserts its marker directory stays empty.
    root = tmp_path_factory.mktemp("proof")
    return build_corpus(root / "samples", root / "markers")


def _load(loader: str, path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HOME=str(cwd / "hf"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-c", LOADERS[loader], str(path)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_every_loadable_sample_runs_its_payload(proof_corpus: Corpus, tmp_path: Path) -> None:
    provable = [s for s in proof_corpus.malicious if s.marker]
    assert len(provable) >= 40
    failed = []
    for sample in provable:
        assert sample.loader is not None
        marker = proof_corpus.marker_for(sample)
        assert not marker.exists()
        cwd = tmp_path / sample.id
        cwd.mkdir()
        result = _load(sample.loader, sample.path, cwd)
        if not marker.exists():
            failed.append(f"{sample.id} via {sample.loader}: {result.stderr[-400:]}")
    assert not failed, "payloads that did not run:\n" + "\n".join(failed)
    # Harmless payloads: exactly one tiny marker per sample, nothing else.
    markers = list(proof_corpus.marker_dir.iterdir())
    assert {p.name for p in markers} == {s.id for s in provable}
    assert all(p.stat().st_size <= 8 for p in markers)
