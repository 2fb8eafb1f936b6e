"""The corpus manifest: what each sample is, what should flag it, what would run it."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MALICIOUS = "malicious"
BENIGN = "benign"

# Expected rule-id prefixes: one place, so a renamed rule family is one edit.
RULE_PICKLE = "pickle."
RULE_ZIP = "zip."
RULE_TORCHSCRIPT = "torch.torchscript"
RULE_SAFETENSORS = "safetensors."
RULE_GGUF = "gguf."
RULE_KERAS = "keras."
RULE_ONNX = "onnx."
RULE_HF = "hf."


@dataclass(frozen=True)
class Sample:
    """One file (or folder) of the corpus.

    Attributes:
        id: unique, also the name of the marker file the payload creates.
        path: the file or folder to scan.
        kind: ``malicious`` or ``benign``.
        technique: what the sample exercises, in a few words.
        rule: for malicious samples, the prefix a finding's rule id must start with.
        loader: the key of :data:`tests.corpus.loaders.LOADERS` for the real
            loader that would execute it, or ``None`` when no loader in the
            environment runs it (the finding is about structure, not execution).
        marker: loading it with ``loader`` creates ``marker_dir/id`` (False for
            payloads that cannot be harmless and run an innocuous call instead).
    """

    id: str
    path: Path
    kind: str
    technique: str
    rule: str | None = None
    loader: str | None = None
    marker: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": str(self.path),
            "kind": self.kind,
            "technique": self.technique,
            "rule": self.rule,
            "loader": self.loader,
            "marker": self.marker,
        }


@dataclass
class Corpus:
    """Every sample built into ``root``; payloads would touch files in ``marker_dir``."""

    root: Path
    marker_dir: Path
    samples: list[Sample] = field(default_factory=list)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    @property
    def malicious(self) -> list[Sample]:
        return [s for s in self.samples if s.kind == MALICIOUS]

    @property
    def benign(self) -> list[Sample]:
        return [s for s in self.samples if s.kind == BENIGN]

    def marker_for(self, sample: Sample) -> Path:
        return self.marker_dir / sample.id

    def to_json(self) -> str:
        return json.dumps(
            {
                "root": str(self.root),
                "marker_dir": str(self.marker_dir),
                "samples": [s.to_dict() for s in self.samples],
            },
            indent=2,
        )


class Writer:
    """What a family module uses to add samples under ``corpus.root``."""

    def __init__(self, corpus: Corpus, *, large: bool = False) -> None:
        self.corpus = corpus
        self.large = large
        self._ids: set[str] = set()

    # -- payloads ------------------------------------------------------------
    def marker(self, sample_id: str) -> str:
        """Absolute path of the marker file the sample's payload creates."""
        return str(self.corpus.marker_dir / sample_id)

    def shell(self, sample_id: str) -> str:
        """A shell command that only creates the marker file."""
        return "touch " + shlex.quote(self.marker(sample_id))

    def python(self, sample_id: str) -> str:
        """Python source that only creates the marker file."""
        return f"open({self.marker(sample_id)!r}, 'w').close()"

    # -- samples -------------------------------------------------------------
    def path(self, kind: str, sample_id: str, filename: str) -> Path:
        """Reserve ``sample_id`` and return where its file goes (parents created)."""
        if sample_id in self._ids:
            raise ValueError(f"duplicate sample id {sample_id!r}")
        self._ids.add(sample_id)
        folder = self.corpus.root / kind
        folder.mkdir(parents=True, exist_ok=True)
        return folder / filename

    def add(
        self,
        kind: str,
        sample_id: str,
        path: Path,
        technique: str,
        *,
        rule: str | None = None,
        loader: str | None = None,
        marker: bool = True,
    ) -> Sample:
        if kind == MALICIOUS and rule is None:
            raise ValueError(f"malicious sample {sample_id!r} needs an expected rule prefix")
        sample = Sample(
            sample_id,
            path,
            kind,
            technique,
            rule if kind == MALICIOUS else None,
            loader,
            marker and kind == MALICIOUS and loader is not None,
        )
        self.corpus.samples.append(sample)
        return sample

    def malicious(
        self,
        sample_id: str,
        filename: str,
        data: bytes,
        technique: str,
        *,
        rule: str,
        loader: str | None,
        marker: bool = True,
    ) -> Sample:
        """Write ``data`` as a malicious sample."""
        path = self.path(MALICIOUS, sample_id, filename)
        path.write_bytes(data)
        return self.add(
            MALICIOUS, sample_id, path, technique, rule=rule, loader=loader, marker=marker
        )

    def benign(self, sample_id: str, filename: str, data: bytes, technique: str) -> Sample:
        """Write ``data`` as a benign sample."""
        path = self.path(BENIGN, sample_id, filename)
        path.write_bytes(data)
        return self.add(BENIGN, sample_id, path, technique)
