"""The parallel hasher: right digests for every size and mode, errors as facts."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from trainguard.env._hashing import HASH, HEAD, STAT, hash_files


def test_digests_heads_and_stat_facts(tmp_path: Path) -> None:
    sizes = [0, 1, 15, 16, 4096, (1 << 20) - 1, 1 << 20, (3 << 20) + 7]
    paths = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"f{i}"
        path.write_bytes(os.urandom(size))
        paths.append(str(path))
    big_first = sum(1 for s in sizes if s >= 1 << 20)
    order = sorted(range(len(paths)), key=lambda i: -sizes[i])
    ordered = [paths[i] for i in order]
    facts = hash_files(ordered, big_first=big_first, workers=3)
    for path, fact in zip(ordered, facts, strict=True):
        data = Path(path).read_bytes()
        assert fact.error is None
        assert fact.sha256 == hashlib.sha256(data).digest()
        assert fact.b64 == base64.urlsafe_b64encode(fact.sha256).rstrip(b"=").decode()
        assert fact.size == len(data) and fact.head == data[:16]
        st = os.stat(path)
        assert (fact.mtime_ns, fact.ctime_ns, fact.ino, fact.mode) == (
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_ino,
            st.st_mode,
        )


def test_modes_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.pyc"
    path.write_bytes(b"0123456789abcdefXYZ")
    stat_only, head, missing, folder = hash_files(
        [str(path), str(path), str(tmp_path / "nope"), str(tmp_path)],
        modes=[STAT, HEAD, HASH, HASH],
    )
    assert stat_only.sha256 is None and stat_only.head == b"" and stat_only.size == 19
    assert head.sha256 is None and head.head == b"0123456789abcdef"
    assert missing.error is not None and missing.sha256 is None
    assert folder.error is not None  # a folder is never "hashed"
