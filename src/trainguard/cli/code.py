"""Scaffolding: the `trainguard code` sub-command is registered here."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the sub-command to the parser (scaffolding: adds nothing yet)."""
