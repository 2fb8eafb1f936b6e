"""The ``trainguard`` command line: ``trainguard <engine> <verb>``.

Human output goes to stderr, machine output (``--json``, ``--sarif``,
``--output``) to stdout or a file. Exit codes: 0 clean, 1 findings at or above
the threshold (or a failed verification), 2 error.
"""

from trainguard.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
