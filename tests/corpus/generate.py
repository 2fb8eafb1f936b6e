"""Build the scanner's test corpus: malicious samples (harmless payloads) and benign artifacts.

Every malicious payload only creates ``<marker_dir>/<sample id>`` (or, for
``pip.main``, runs ``--version``): never a deletion, never the network.
Building the corpus runs no payload; ``tests/e2e/test_corpus_proof.py`` proves
them by loading each one with its real loader in a throwaway subprocess.

Usage::

    python -m tests.corpus.generate OUT [--markers DIR] [--large]

writes the samples under ``OUT/malicious`` and ``OUT/benign`` and the manifest
to ``OUT/manifest.json``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.corpus import _benign, _containers, _formats, _pickles
from tests.corpus._model import BENIGN, MALICIOUS, Corpus, Sample, Writer

__all__ = ["BENIGN", "MALICIOUS", "Corpus", "Sample", "build_corpus", "main"]

#: Family modules, each with ``build(writer)``.
FAMILIES = (_pickles, _containers, _formats, _benign)


def build_corpus(out_dir: Path, marker_dir: Path, *, large: bool = False) -> Corpus:
    """Write every sample under ``out_dir`` and return the manifest.

    ``marker_dir`` is where payloads would create their marker files (made
    absolute, since payloads run from elsewhere). ``large`` adds samples with
    tens of MB of tensor data around the payload.
    """
    out_dir = Path(out_dir).resolve()
    marker_dir = Path(marker_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    marker_dir.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(out_dir, marker_dir)
    writer = Writer(corpus, large=large)
    for family in FAMILIES:
        family.build(writer)
    (out_dir / "manifest.json").write_text(corpus.to_json(), encoding="utf-8")
    return corpus


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.corpus.generate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("out", type=Path, help="directory to write the corpus to")
    parser.add_argument("--markers", type=Path, help="marker directory (default: OUT/markers)")
    parser.add_argument(
        "--large", action="store_true", help="add samples with tens of MB of tensors"
    )
    args = parser.parse_args(argv)
    corpus = build_corpus(args.out, args.markers or args.out / "markers", large=args.large)
    print(
        f"{len(corpus.malicious)} malicious, {len(corpus.benign)} benign samples in {corpus.root}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
