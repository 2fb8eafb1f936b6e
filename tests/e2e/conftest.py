"""The corpus, built once per test session."""

from __future__ import annotations

import pytest

from tests.corpus.generate import Corpus, build_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """Every malicious and benign sample; payloads would touch files in ``corpus.marker_dir``."""
    root = tmp_path_factory.mktemp("corpus")
    return build_corpus(root / "samples", root / "markers")
