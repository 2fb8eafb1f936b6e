"""Fuzz the GGUF parser against the reference reader (gguf-py's GGUFReader).

Properties: ``scan_buffer`` never raises out and never hangs on mutated headers, and whenever
GGUFReader refuses a buffer, the scan reports a finding at or above MEDIUM (no silent pass).
"""

from __future__ import annotations

import os
import resource
import signal
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainguard.findings import Severity
from trainguard.scan import scan_buffer

gguf = pytest.importorskip("gguf")


def _base() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "base.gguf"
        writer = gguf.GGUFWriter(path, "llama")
        writer.add_block_count(1)
        writer.add_token_list(["<s>", "</s>", "a"])
        writer.add_array("test.nested", [[1, 2], ["x"]])
        writer.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
        writer.add_tensor("a.weight", np.ones((2, 32), dtype=np.float32))
        writer.add_tensor("b.weight", np.ones((32,), dtype=np.float16))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes()


BASE = _base()
# Tensor data is the last 32*2*4 + 64 bytes; everything before it is header and tables.
HEADER_END = len(BASE) - (2 * 32 * 4 + 64)
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
_TMP = Path(tempfile.mkdtemp(prefix="trainguard-gguf-fuzz-"))


class _GaveUp(Exception):
    """The reference reader spent its CPU budget (it loops on some absurd counts)."""


def _give_up(signum: int, frame: object) -> None:
    raise _GaveUp


def _reader_accepts(data: bytes) -> bool:
    """GGUFReader's verdict, taken in a forked child with a memory and CPU budget.

    The reference reader allocates without bound on absurd counts (it reached 15 GB
    here), so it runs in a child limited to 1 GiB more address space than it starts
    with and half a second of CPU; running out of either counts as a refusal.
    """
    path = _TMP / "case.gguf"
    path.write_bytes(data)
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 1
        try:
            with open("/proc/self/statm") as statm:
                pages = int(statm.read().split()[0])
            limit = pages * os.sysconf("SC_PAGE_SIZE") + 2**30
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            signal.signal(signal.SIGVTALRM, _give_up)
            signal.setitimer(signal.ITIMER_VIRTUAL, 0.5)
            reader = gguf.GGUFReader(path)
            for tensor in reader.tensors:  # GGUFReader maps tensors lazily; touch their shapes
                _ = tensor.data.shape
            code = 0
        except BaseException:  # any refusal by the reference reader, _GaveUp included
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _check(data: bytes) -> None:
    report = scan_buffer(data, "fuzz.gguf", filename="fuzz.gguf")  # never raises
    if not _reader_accepts(data):
        assert report.max_severity is not None and report.max_severity >= Severity.MEDIUM, (
            data[:HEADER_END],
            [(f.rule, f.message) for f in report.findings],
        )


def test_base_is_clean() -> None:
    assert _reader_accepts(BASE)
    assert scan_buffer(BASE, "base.gguf").findings == []


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, HEADER_END - 1), st.integers(0, 255)), min_size=1, max_size=6)
)
def test_byte_mutations_in_the_header(edits: list[tuple[int, int]]) -> None:
    data = bytearray(BASE)
    for pos, value in edits:
        data[pos] = value
    _check(bytes(data))


@pytest.mark.slow  # the reference reader loops on absurd counts until its CPU budget ends
@settings(SETTINGS, max_examples=60)
@given(st.integers(0, HEADER_END - 1), st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1]))
def test_counts_and_lengths_set_to_extremes(pos: int, value: int) -> None:
    data = bytearray(BASE)
    data[pos : pos + 8] = struct.pack("<Q", value)
    _check(bytes(data))


@SETTINGS
@given(st.integers(4, len(BASE)), st.binary(max_size=48))
def test_truncation_and_appended_bytes(cut: int, tail: bytes) -> None:
    _check(BASE[:cut] + tail)
