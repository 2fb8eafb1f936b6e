"""The CLI's sub-commands and flags are frozen: a change must update the snapshot and the README.

Regenerate the snapshot after an intended change with
``TRAINGUARD_UPDATE_CLI_SURFACE=1 python -m pytest tests/cli/test_cli_surface.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

from trainguard.cli.main import build_parser

SNAPSHOT = Path(__file__).with_name("cli_surface.json")
README = Path(__file__).resolve().parents[2] / "README.md"


def _surface(parser: argparse.ArgumentParser) -> dict[str, Any]:
    options: list[str] = []
    positionals: list[str] = []
    commands: dict[str, Any] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in sorted(action.choices.items()):
                commands[name] = _surface(child)
        elif action.option_strings:
            options.extend(action.option_strings)
        else:
            positionals.append(str(action.metavar or action.dest))
    node: dict[str, Any] = {"options": sorted(options), "positionals": positionals}
    if commands:
        node["commands"] = commands
    return node


def test_cli_surface_is_frozen() -> None:
    current = _surface(build_parser())
    if os.environ.get("TRAINGUARD_UPDATE_CLI_SURFACE"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert current == json.loads(SNAPSHOT.read_text(encoding="utf-8"))


def test_readme_documents_every_command() -> None:
    readme = README.read_text(encoding="utf-8")
    for name in build_parser()._subparsers._group_actions[0].choices:  # type: ignore[union-attr]
        assert re.search(rf"trainguard {name}\b", readme), (
            f"README does not mention `trainguard {name}`"
        )
