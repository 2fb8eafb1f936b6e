"""The files the dashboard ships: vendored libraries as recorded, templates and scripts that
cannot inject markup."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

import pytest

PACKAGE = Path(str(resources.files("trainguard.dashboard")))
VENDOR = PACKAGE / "static" / "vendor"


def test_vendored_libraries_match_their_recorded_hashes() -> None:
    notes = (VENDOR / "VENDOR.md").read_text(encoding="utf-8")
    recorded = dict(re.findall(r"\| `([\w.]+\.js)` \|.*\| `([0-9a-f]{64})` \|", notes))
    assert (
        set(recorded)
        == {p.name for p in VENDOR.glob("*.js")}
        == {
            "chart.umd.min.js",
            "cytoscape.min.js",
        }
    )
    for name, sha in recorded.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == sha, name
    # each with its license beside it
    assert "MIT License" in (VENDOR / "chart.js.LICENSE.md").read_text(encoding="utf-8")
    assert "Permission is hereby granted" in (VENDOR / "cytoscape.LICENSE").read_text(
        encoding="utf-8"
    )


@pytest.mark.parametrize("template", sorted((PACKAGE / "templates").glob("*.html")), ids=str)
def test_templates_never_switch_escaping_off(template: Path) -> None:
    text = template.read_text(encoding="utf-8")
    assert "|safe" not in text.replace(" ", "")
    assert "autoescape" not in text
    assert "Markup(" not in text
    # scripts only by src, never inline; no inline styles or handlers
    for tag in re.findall(r"<script[^>]*>", text):
        assert 'src="/static/' in tag, tag
    assert not re.search(r"<script[^>]*>\s*[^<\s]", text)
    assert " style=" not in text and "<style" not in text
    assert not re.search(r"\son[a-z]+=", text)


@pytest.mark.parametrize("script", sorted((PACKAGE / "static").glob("*.js")), ids=str)
def test_page_scripts_write_text_not_markup(script: Path) -> None:
    text = script.read_text(encoding="utf-8")
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "Function(",
    ):
        assert sink not in text, (script.name, sink)
    assert text.lstrip().startswith("//") and '"use strict";' in text
