"""Capture at the source: record what a run reads and writes, by content digest.

:func:`save` and :func:`load` wrap ``torch.save`` and the scanned loader of
:mod:`trainguard.scan.load`; :func:`hooks` patches ``torch.save`` /
``torch.load``, ``safetensors.torch.save_file`` / ``load_file`` and Hugging
Face ``save_pretrained`` / ``from_pretrained`` so existing training code is
recorded without edits. Each read or write appends an :class:`Edge` to the
ledger of the current :class:`RunRecorder`.

On load, content that no run produced and nobody registered is of *unknown
provenance*: a warning, an ``Alert`` in the ledger, and with ``strict=True``
an :class:`UnknownProvenanceError`.

Digests of large files are computed in parallel shards
(:data:`~trainguard.ledger._canonical.SHARD_SIZE`), one thread per shard,
since ``hashlib`` releases the GIL while hashing.

Example:
    >>> import os, tempfile, torch
    >>> from trainguard.ledger import Ledger
    >>> from trainguard.ledger.capture import RunRecorder, load, save
    >>> tmp = tempfile.mkdtemp()
    >>> ledger = Ledger.open(f"sqlite:///{tmp}/ledger.db", create=True)
    >>> with RunRecorder.start(ledger, run_id="demo-run", hosts=("node-1",)) as rec:
    ...     digest = save({"w": torch.ones(2)}, os.path.join(tmp, "w.pt"))
    ...     load(os.path.join(tmp, "w.pt"))["w"].tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import contextvars
import getpass
import hashlib
import os
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from trainguard.errors import LedgerIntegrityError, UsageError
from trainguard.findings import Checked, Report, Rule, Severity
from trainguard.ledger._canonical import SHARD_SIZE, digest_of_shards
from trainguard.ledger._ledger import Ledger
from trainguard.ledger.records import Alert, Artifact, Edge, Run, RunEnd

__all__ = [
    "RunRecorder",
    "UnknownProvenanceError",
    "UnknownProvenanceWarning",
    "current",
    "digest_bytes",
    "digest_file",
    "hooks",
    "load",
    "producers",
    "provenance_report",
    "save",
]

UNKNOWN_PROVENANCE = Rule(
    "ledger.unknown-provenance",
    Severity.MEDIUM,
    "Content of unknown provenance",
    "No run recorded in the ledger produced this content and nobody registered it. A checkpoint "
    "that appears from nowhere is how a swapped or edited file gets into training: find out "
    "where it came from before loading it, and register it if its source is trusted.",
)

_READ_BLOCK = 8 * 1024 * 1024
_current: contextvars.ContextVar[RunRecorder | None] = contextvars.ContextVar(
    "trainguard_run_recorder", default=None
)


class UnknownProvenanceWarning(UserWarning):
    """A run loaded content that no recorded run produced."""


class UnknownProvenanceError(LedgerIntegrityError):
    """A strict run refused content that no recorded run produced."""


def _threads(shards: int, threads: int | None) -> int:
    return max(1, min(shards, threads or os.cpu_count() or 1, 32))


def _hash_shard(path: Path, offset: int, length: int) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        remaining = length
        buf = bytearray(min(_READ_BLOCK, max(length, 1)))
        view = memoryview(buf)
        while remaining:
            n = f.readinto(view[: min(remaining, len(buf))])
            if not n:
                raise UsageError(f"{path} shrank while it was hashed", subject=str(path))
            h.update(view[:n])
            remaining -= n
    return h.digest()


def digest_file(path: str | os.PathLike[str], *, threads: int | None = None) -> tuple[str, int]:
    """``(digest, size)`` of a file; shards of large files are hashed in parallel threads."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise UsageError(f"cannot read {p}: {exc.strerror or exc}", subject=str(p)) from exc
    offsets = range(0, max(size, 1), SHARD_SIZE)
    n = _threads(len(offsets), threads)
    lengths = [min(SHARD_SIZE, size - o) for o in offsets]
    if n == 1:
        shards = [_hash_shard(p, o, ln) for o, ln in zip(offsets, lengths, strict=True)]
    else:
        with ThreadPoolExecutor(n) as pool:
            shards = list(
                pool.map(lambda a: _hash_shard(p, *a), zip(offsets, lengths, strict=True))
            )
    return digest_of_shards(size, shards), size


def digest_bytes(data: bytes | memoryview, *, threads: int | None = None) -> str:
    """The content digest of an in-memory buffer (same value as :func:`digest_file`)."""
    view = memoryview(data)
    size = len(view)
    offsets = range(0, max(size, 1), SHARD_SIZE)
    n = _threads(len(offsets), threads)

    def one(o: int) -> bytes:
        return hashlib.sha256(view[o : o + SHARD_SIZE]).digest()

    if n == 1:
        return digest_of_shards(size, [one(o) for o in offsets])
    with ThreadPoolExecutor(n) as pool:
        return digest_of_shards(size, list(pool.map(one, offsets)))


def producers(ledger: Ledger, digest: str) -> list[tuple[Any, ...]]:
    """Index rows that vouch for ``digest``: runs' ``produced`` edges and registered artifacts."""
    rows = [r for r in ledger.storage.select("edges", "digest", [digest]) if r[2] == "produced"]
    return rows + ledger.storage.select("artifacts", "digest", [digest])


def _env_int(*names: str, default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return default


class RunRecorder:
    """The current run: appends its record, its edges and its end to a ledger.

    Only rank 0 writes the :class:`Run` and :class:`RunEnd` records; every
    rank writes the edges of what it reads and writes, under the same run id
    (``TRAINGUARD_RUN_ID`` or ``TORCHELASTIC_RUN_ID`` when set).
    """

    def __init__(self, ledger: Ledger, run: Run, *, rank: int = 0, strict: bool = False) -> None:
        self.ledger = ledger
        self.run = run
        self.rank = rank
        self.strict = strict
        self._token: contextvars.Token[RunRecorder | None] | None = None

    @classmethod
    def start(
        cls,
        ledger: Ledger | str | None = None,
        *,
        run_id: str | None = None,
        strict: bool = False,
        **fields: Any,
    ) -> RunRecorder:
        """Describe this process's run from its environment (overridable by ``fields``) and record it."""
        if not isinstance(ledger, Ledger):
            ledger = Ledger.open(ledger, create=True)
        world = _env_int("WORLD_SIZE", default=1)
        rank = _env_int("RANK", default=0)
        run_id = (
            run_id
            or os.environ.get("TRAINGUARD_RUN_ID")
            or os.environ.get("TORCHELASTIC_RUN_ID")
            or f"run-{uuid.uuid4().hex[:16]}"
        )
        defaults: dict[str, Any] = {
            "user": getpass.getuser(),
            "hosts": (socket.gethostname(),),
            "world_size": world,
            "accelerator_type": os.environ.get("TRAINGUARD_ACCELERATOR", "unknown"),
            "accelerator_count": world,
            "started_at": int(time.time()),
            "command": " ".join(sys.argv)[:4096],
        }
        defaults.update(fields)
        run = Run(run_id, **defaults)
        recorder = cls(ledger, run, rank=rank, strict=strict)
        if rank == 0:
            ledger.append([run])
        return recorder

    def __enter__(self) -> RunRecorder:
        self._token = _current.set(self)
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        status = "completed" if et is None else ("killed" if et is KeyboardInterrupt else "failed")
        self.end(status)

    def end(self, status: str = "completed", exit_code: int | None = None) -> None:
        if self.rank == 0:
            self.ledger.append([RunEnd(self.run.run_id, int(time.time()), status, exit_code)])

    def produced(self, path: str | os.PathLike[str], *, kind: str = "checkpoint") -> str:
        """Record that this run wrote the file at ``path``; returns its digest."""
        digest, size = digest_file(path)
        self.ledger.append(
            [Edge(self.run.run_id, "produced", digest, kind, int(time.time()), size, str(path))]
        )
        return digest

    def used(
        self,
        digest: str,
        *,
        name: str | None = None,
        size: int | None = None,
        kind: str = "checkpoint",
    ) -> bool:
        """Record that this run read content ``digest``; returns whether its provenance is known."""
        now = int(time.time())
        records: list[Any] = [Edge(self.run.run_id, "used", digest, kind, now, size, name)]
        known = bool(producers(self.ledger, digest))
        if not known:
            records.append(
                Alert(
                    self.run.run_id,
                    UNKNOWN_PROVENANCE.id,
                    UNKNOWN_PROVENANCE.severity.label,
                    f"loaded {name or digest}, which no recorded run produced",
                    now,
                    evidence={"digest": digest},
                )
            )
        self.ledger.append(records)
        if not known:
            message = f"{name or digest} ({digest}) was produced by no run in the ledger"
            if self.strict:
                raise UnknownProvenanceError(
                    "refused content of unknown provenance",
                    subject=name or digest,
                    expected="content some recorded run produced, or a registered artifact",
                    found=message,
                    hint="register it with `trainguard ledger register FILE` if you trust its source",
                )
            warnings.warn(message, UnknownProvenanceWarning, stacklevel=3)
        return known

    def register(self, path: str | os.PathLike[str], *, kind: str = "model") -> str:
        """Vouch for an external file (a downloaded base model, a dataset manifest)."""
        digest, size = digest_file(path)
        self.ledger.append([Artifact(digest, kind, int(time.time()), size, Path(path).name)])
        return digest


def current() -> RunRecorder | None:
    """The recorder of the enclosing ``with RunRecorder...`` block, if any."""
    return _current.get()


def _recorder(recorder: RunRecorder | None) -> RunRecorder | None:
    return recorder if recorder is not None else _current.get()


def save(
    obj: Any,
    path: str | os.PathLike[str],
    *,
    recorder: RunRecorder | None = None,
    kind: str = "checkpoint",
    **torch_kwargs: Any,
) -> str:
    """``torch.save(obj, path)``, then record the file as produced by the current run.

    Returns the file's content digest (recorded or not).
    """
    import torch

    # Under hooks(), torch.save is patched: call the original so the file is recorded once.
    torch_save: Callable[..., Any] = _ORIGINALS.get("torch.save", torch.save)
    torch_save(obj, path, **torch_kwargs)
    rec = _recorder(recorder)
    return rec.produced(path, kind=kind) if rec is not None else digest_file(path)[0]


def load(
    path: str | os.PathLike[str],
    *,
    recorder: RunRecorder | None = None,
    map_location: Any = None,
    threshold: Severity = Severity.MEDIUM,
    weights_only: bool = True,
    kind: str = "checkpoint",
) -> Any:
    """Scan, record and load a checkpoint from the same bytes (see :func:`~trainguard.scan.load.safe_load`).

    Raises:
        UnsafeArtifactError: the scan found something at ``threshold``.
        UnknownProvenanceError: the recorder is strict and no run produced the content.
    """
    from trainguard.scan.load import read_verified, safe_load

    artifact = read_verified(path, threshold=threshold)
    rec = _recorder(recorder)
    if rec is not None:
        rec.used(digest_bytes(artifact.data), name=str(path), size=artifact.size, kind=kind)
    return safe_load(artifact, map_location=map_location, weights_only=weights_only)


# -- hooks -------------------------------------------------------------------------

_ORIGINALS: dict[str, Callable[..., Any]] = {}


def _is_path(f: Any) -> bool:
    return isinstance(f, str | os.PathLike)


def _model_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


@contextmanager
def hooks(recorder: RunRecorder | None = None) -> Iterator[None]:
    """Patch torch, safetensors and transformers save/load functions while the block runs.

    Paths are recorded; file objects pass through unrecorded (there is no
    file to hash). ``torch.load`` of a path goes through the scanned loader.
    Hugging Face folders are recorded file by file; their loading is left to
    ``from_pretrained`` (scan the folder with ``trainguard scan`` first).
    """
    import torch

    patches: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, key: str, make: Callable[[Any], Any]) -> None:
        # The raw attribute (a classmethod object, not a bound method) is what
        # must be put back; None marks an inherited attribute to delete again.
        raw = vars(owner).get(name)
        original = raw if raw is not None else getattr(owner, name)
        _ORIGINALS[key] = getattr(owner, name)
        patches.append((owner, name, raw))
        setattr(owner, name, make(original))

    def rec() -> RunRecorder | None:
        return _recorder(recorder)

    def torch_save(original: Any) -> Any:
        def wrapped(obj: Any, f: Any, *args: Any, **kwargs: Any) -> Any:
            out = original(obj, f, *args, **kwargs)
            r = rec()
            if r is not None and _is_path(f):
                r.produced(f)
            return out

        return wrapped

    def torch_load(original: Any) -> Any:
        def wrapped(f: Any, map_location: Any = None, *args: Any, **kwargs: Any) -> Any:
            if not _is_path(f) or args:
                return original(f, map_location, *args, **kwargs)
            return load(
                f,
                recorder=rec(),
                map_location=map_location,
                weights_only=kwargs.get("weights_only", True) is not False,
            )

        return wrapped

    patch(torch, "save", "torch.save", torch_save)
    patch(torch, "load", "torch.load", torch_load)
    st: Any
    try:
        import safetensors.torch as st
    except ImportError:
        st = None
    if st is not None:

        def st_save(original: Any) -> Any:
            def wrapped(tensors: Any, filename: Any, *args: Any, **kwargs: Any) -> Any:
                out = original(tensors, filename, *args, **kwargs)
                r = rec()
                if r is not None:
                    r.produced(filename)
                return out

            return wrapped

        def st_load(original: Any) -> Any:
            def wrapped(filename: Any, device: Any = "cpu") -> Any:
                return load(filename, recorder=rec(), map_location=device)

            return wrapped

        patch(st, "save_file", "safetensors.save_file", st_save)
        patch(st, "load_file", "safetensors.load_file", st_load)
    hf = sys.modules.get("transformers")
    if hf is not None:
        model_cls = hf.PreTrainedModel

        def hf_save(original: Any) -> Any:
            def wrapped(self: Any, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
                out = original(self, save_directory, *args, **kwargs)
                r = rec()
                if r is not None:
                    for p in _model_files(Path(save_directory)):
                        r.produced(p, kind="model")
                return out

            return wrapped

        def hf_load(original: Any) -> Any:
            def wrapped(cls: Any, name: Any, *args: Any, **kwargs: Any) -> Any:
                r = rec()
                if r is not None and _is_path(name) and Path(name).is_dir():
                    for p in _model_files(Path(name)):
                        digest, size = digest_file(p)
                        r.used(digest, name=str(p), size=size, kind="model")
                return original.__get__(None, cls)(name, *args, **kwargs)

            return classmethod(wrapped)

        patch(model_cls, "save_pretrained", "hf.save_pretrained", hf_save)
        patch(model_cls, "from_pretrained", "hf.from_pretrained", hf_load)
    try:
        yield
    finally:
        for owner, name, raw in reversed(patches):
            if raw is None:
                delattr(owner, name)
            else:
                setattr(owner, name, raw)
        _ORIGINALS.clear()


def provenance_report(ledger: Ledger, paths: Iterable[str | os.PathLike[str]]) -> Report:
    """Which recorded run produced each file (folders: each file in them); unknown ones are findings."""
    report = Report(engine="ledger.provenance")
    report.caveats.append(
        "known provenance means a recorded run wrote these exact bytes (or someone registered "
        "them); it does not mean that run was clean: ask `trainguard ledger blast-radius`"
    )
    for path in paths:
        root = Path(path)
        if not root.exists():
            raise UsageError(f"no such file or folder: {root}", subject=str(root))
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            digest, size = digest_file(f)
            rows = producers(ledger, digest)
            if not rows:
                report.add(
                    UNKNOWN_PROVENANCE.finding(
                        str(f), f"no recorded run produced {digest}", digest=digest, size=size
                    )
                )
                continue
            report.checked.append(
                Checked(
                    str(f),
                    "known-provenance",
                    {
                        "digest": digest,
                        "produced_by": sorted({r[1] for r in rows if len(r) == 5}),
                        "registered": any(len(r) == 3 for r in rows),
                        "entries": sorted(r[0] for r in rows),
                    },
                )
            )
    return report
