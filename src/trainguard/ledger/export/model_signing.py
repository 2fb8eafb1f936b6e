"""OpenSSF model-signing (v1.0) manifests for checkpoints, without its dependency tree.

:func:`model_signing_statement` writes the in-toto Statement that
``model_signing`` (https://github.com/sigstore/model-transparency) signs: a
subject named after the model with a SHA-256 over all resource digests, and a
``https://model_signing/signature/v1.0`` predicate listing every file (method
``files``) or every file shard (method ``shards``, ``path:start:end``), sorted
as model_signing sorts them. Sign it with model_signing, cosign or any DSSE
signer; ``model_signing verify`` re-hashes the model with the recorded
serialization and accepts it.

model-signing itself is not a dependency: it pulls sigstore and a dozen more
packages, and its certificate signer imports pyOpenSSL without declaring it.

Shards use the ledger's shard size by default, so the ledger digest of a big
file (``sha256-shards``) follows from the statement's shard digests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from trainguard.errors import UsageError
from trainguard.ledger._canonical import SHARD_SIZE
from trainguard.ledger.capture import _hash_shard, digest_file

__all__ = ["GIT_PATHS", "PREDICATE_TYPE", "model_signing_statement"]

PREDICATE_TYPE = "https://model_signing/signature/v1.0"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
#: Paths model_signing ignores by default.
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")


def _files(root: Path, ignore: Iterable[str]) -> list[Path]:
    if root.is_file():
        return [root]
    ignored = [root / p for p in ignore]
    out = []
    for p in root.rglob("*"):
        if p.is_symlink():
            raise UsageError(
                f"{p} is a symbolic link; model_signing refuses them by default", subject=str(p)
            )
        if p.is_file() and not any(p.is_relative_to(i) for i in ignored):
            out.append(p)
    return out


def model_signing_statement(
    path: str | Path,
    *,
    name: str | None = None,
    method: str = "shards",
    shard_size: int = SHARD_SIZE,
    ignore_paths: Iterable[str] = (),
) -> dict[str, Any]:
    """The in-toto statement for the model file or folder at ``path``.

    Args:
        name: the model name in the subject (default: the folder or file name).
        method: ``"shards"`` (parallel hashing of big files) or ``"files"``.
        shard_size: bytes per shard for ``method="shards"``.
        ignore_paths: paths relative to ``path`` left out (git paths always are).
    """
    root = Path(path)
    if not root.exists():
        raise UsageError(f"no such model file or folder: {root}", subject=str(root))
    if method not in ("files", "shards") or shard_size <= 0:
        raise UsageError("method is 'files' or 'shards', with a positive shard size")
    ignore = sorted({*GIT_PATHS, *ignore_paths})
    base = root.parent if root.is_file() else root
    # model_signing names a shard digest's algorithm after the shard size.
    algorithm = "sha256" if method == "files" else f"sha256-sharded-{shard_size}"
    items: list[tuple[tuple[Any, ...], str, str]] = []
    for f in _files(root, ignore):
        rel = PurePosixPath(f.relative_to(base).as_posix())
        if method == "files":
            digest = digest_file(f, threads=1)[0] if f.stat().st_size <= SHARD_SIZE else None
            hex_digest = digest.split(":", 1)[1] if digest else _whole_sha256(f)
            items.append(((rel.parts,), str(rel), hex_digest))
            continue
        size = f.stat().st_size
        for start in range(0, size, shard_size):  # an empty file has no shards, as in model_signing
            end = min(start + shard_size, size)
            items.append(
                (
                    (rel.parts, start, end),
                    f"{rel}:{start}:{end}",
                    _hash_shard(f, start, end - start).hex(),
                )
            )
    items.sort(key=lambda item: item[0])
    root_hash = hashlib.sha256()
    resources = []
    for _key, identifier, hex_digest in items:
        root_hash.update(bytes.fromhex(hex_digest))
        resources.append({"name": identifier, "algorithm": algorithm, "digest": hex_digest})
    serialization: dict[str, Any] = {"method": method, "hash_type": "sha256"}
    if method == "shards":
        serialization["shard_size"] = shard_size
    serialization["allow_symlinks"] = False
    serialization["ignore_paths"] = ignore
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name or root.name, "digest": {"sha256": root_hash.hexdigest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {"serialization": serialization, "resources": resources},
    }


def _whole_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * 1024 * 1024):
            h.update(block)
    return h.hexdigest()
