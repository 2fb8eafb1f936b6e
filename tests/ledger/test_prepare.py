"""The append fast paths write the very bytes of the general path (the format must not change)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ledger import _factory as f
from trainguard.ledger import _canonical, _merkle
from trainguard.ledger._index import rows_of
from trainguard.ledger._ledger import _prepare_edge, prepare
from trainguard.ledger.records import Edge

_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_chars = st.characters(min_codepoint=0, max_codepoint=0x2FF)
_keys = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=6)
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(_chars, max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=8))
def test_plain_objects_encode_exactly_as_the_json_encoder(obj: dict[str, Any]) -> None:
    fast = _canonical._encode_plain(obj)
    full = _ENCODER.encode(obj).encode("utf-8")
    assert _canonical.encode(obj) == full
    assert fast is None or fast == full


def test_plain_encoding_takes_records_and_declines_what_the_full_path_rejects() -> None:
    run = f.run("r1", hosts=("gpu-001", "gpu-002"), env=f.digest("env")).to_json()
    assert _canonical._encode_plain(run) == _ENCODER.encode(run).encode()
    for bad in ({"a": 1.5}, {1: 2}, {"a": 2**60}, {"é": 1}, {"a": b"x"}, {"a": 'q"x'}):
        assert _canonical._encode_plain(bad) is None  # type: ignore[arg-type]


_names = st.from_regex(r"[\w.:@/+=~,-]{1,20}", fullmatch=True)
_digests = st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)


@settings(max_examples=400, deadline=None)
@given(
    st.builds(
        Edge,
        _names,
        st.sampled_from(["used", "produced"]),
        _digests,
        _names,
        st.integers(0, 2**53 - 1),
        st.none() | st.integers(0, 2**53 - 1),
        st.none() | st.text(_chars, min_size=1, max_size=20),
    )
)
def test_the_edge_fast_path_writes_the_bytes_of_the_general_path(edge: Edge) -> None:
    obj = edge.to_json()
    data = _ENCODER.encode(obj).encode("utf-8")
    entry = prepare(edge)
    assert entry.data == data
    assert entry.leaf_hash == _merkle.leaf_hash(data)
    assert entry.rows == tuple(rows_of(obj))
    assert entry.kind == "edge"
    fast = _prepare_edge(edge)
    assert fast is None or fast == entry
