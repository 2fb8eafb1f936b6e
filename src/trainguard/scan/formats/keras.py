"""Keras 3 ``.keras`` archives: ``config.json``, ``metadata.json``, ``model.weights.h5``, assets.

A ``.keras`` file is a zip whose ``config.json`` says which classes and
functions ``load_model`` rebuilds; it is analysed by
:mod:`trainguard.scan._keras` (Lambda bytecode, function references that
bypass ``safe_mode``, custom objects). Every other member, the weights file
included, is scanned as nested content, so a pickle or a second archive
hidden in ``assets/`` is seen too. The archive is read with the tolerant zip
reader, which reports the zip tricks loaders disagree on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainguard.scan import _zip

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "keras"

_CONFIG = "config.json"
#: Members that, with config.json, only a Keras v3 archive has.
_MARKERS = frozenset({b"metadata.json", b"model.weights.h5", b"model.weights.npz"})


def detect(data: memoryview, filename: str | None) -> bool:
    """A zip whose members include ``config.json`` and a Keras metadata or weights file."""
    names = set(_zip.central_names(data, limit=1000))
    return _CONFIG.encode() in names and bool(names & _MARKERS)


def scan(data: memoryview, ctx: ScanContext) -> None:
    """Analyse every config.json; scan every other member as nested content."""
    from trainguard.scan import _keras  # loaded with the first Keras file, not at start-up

    archive = _zip.read_archive(data, ctx)
    for index, member in enumerate(archive.members):
        if member.is_dir:
            continue
        if index % 256 == 0:
            ctx.check_time()
        # read_member: a zip bomb in one member is a finding on it, not the end of the scan.
        content = _zip.read_member(archive, member)
        if content is None:
            continue
        if member.name == _CONFIG:
            where = _CONFIG if member.source == "central" else f"{_CONFIG} (local-only entry)"
            _keras.analyse_json(bytes(content), ctx, where=where)
        else:
            ctx.scan_nested(content, member.name)
