"""The edge fast path (verify, blast cross-check) reads exactly what the full JSON parser reads, or declines."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from trainguard.ledger._index import EDGE_FAST as _EDGE
from trainguard.ledger._index import rows_of

_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=12)
_int = st.integers(-(2**53), 2**53)


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "artifact_kind": _text,
            "at": _int,
            "digest": _text,
            "direction": _text,
            "kind": st.sampled_from(["edge", "artifact"]),
            "run_id": _text,
            "v": _int,
        },
        optional={"name": _text, "size": _int, "extra": _text},
    ),
    st.booleans(),
)
def test_fast_path_agrees_with_the_parser(entry: dict[str, object], ascii_only: bool) -> None:
    text = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only)
    match = _EDGE(text)
    if match is None:
        return  # declined: the full path handles it
    parsed = json.loads(text)
    assert parsed["kind"] == "edge" and "extra" not in parsed
    ((table, values),) = rows_of(parsed)
    artifact_kind, digest, direction, name, run_id = match.groups()
    assert (table, values) == ("edges", (run_id, direction, digest, artifact_kind))
    assert name == parsed.get("name")


def test_fast_path_takes_plain_edges_and_declines_odd_ones() -> None:
    plain = (
        '{"artifact_kind":"checkpoint","at":5,"digest":"sha256:00","direction":"used",'
        '"kind":"edge","name":"a.pt","run_id":"r1","size":3,"v":1}'
    )
    assert _EDGE(plain) is not None
    for odd in (
        plain.replace('"r1"', '"r\\u0031"'),  # an escape: same value, other text
        plain.replace('"v":1}', '"v":1,"x":2}'),  # an unknown key
        plain.replace('"at":5', '"at":05'),  # not JSON
        plain + " ",
        plain.replace('"run_id":"r1"', '"run_id":"r1","run_id":"r2"'),  # duplicate key
    ):
        assert _EDGE(odd) is None
