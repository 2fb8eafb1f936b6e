"""The public surface of trainguard.scan.pickle and its runnable examples."""

from __future__ import annotations

import doctest
import types

import pytest

import trainguard.scan.pickle as pkg
from trainguard.scan.pickle import _opcodes, _policy


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(pkg).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert public == set(pkg.__all__)


@pytest.mark.parametrize("module", [pkg, _opcodes, _policy], ids=lambda m: m.__name__)
def test_docstring_examples_run(module: types.ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_summary_is_frozen() -> None:
    from trainguard.scan import ScanContext, ScanLimits

    summary = pkg.scan_pickle(b"K\x01.", ScanContext("x", ScanLimits()))
    assert (summary.end, summary.complete, summary.globals, summary.protocol) == (3, True, (), None)
    with pytest.raises(AttributeError):
        summary.end = 0  # type: ignore[misc]


def test_rules_are_registered_once_with_unique_ids() -> None:
    from trainguard.findings import RULES
    from trainguard.scan.formats import joblib, torch_legacy  # noqa: F401  (declare their rules)

    ours = [rid for rid in RULES if rid.split(".")[0] in ("pickle", "torch-legacy", "joblib")]
    assert len(ours) == len(set(ours)) >= 25
