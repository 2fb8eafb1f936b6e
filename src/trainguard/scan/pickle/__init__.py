"""Static analysis of pickle streams: what would loading these bytes do?

An opcode reader (:mod:`._opcodes`) feeds a symbolic machine (:mod:`._machine`)
that follows the unpickler's stack, marks and memo exactly, resolves every
import (GLOBAL, STACK_GLOBAL with dotted names, INST) and call site (REDUCE,
NEWOBJ, OBJ, INST, BUILD, container operations), and judges them with an
allowlist-first policy (:mod:`._policy`). Nothing is imported or executed.

Example:
    >>> from trainguard.scan import ScanContext, ScanLimits
    >>> from trainguard.scan.pickle import scan_pickle
    >>> ctx = ScanContext("demo.pkl", ScanLimits())
    >>> summary = scan_pickle(b"cos\\nsystem\\n(S'echo hi'\\ntR.", ctx)
    >>> summary.globals
    ('os.system',)
    >>> sorted((f.severity.name, f.rule) for f in ctx.findings)
    [('CRITICAL', 'pickle.dangerous-global'), ('HIGH', 'pickle.code-argument')]
"""

from __future__ import annotations

from trainguard.scan.pickle._opcodes import OPCODES, OpReader, PickleParseError
from trainguard.scan.pickle._policy import Tier, Verdict, classify
from trainguard.scan.pickle._probe import Probe, looks_like_pickle, probe
from trainguard.scan.pickle._scan import PickleSummary, scan_pickle, scan_trailing
from trainguard.scan.pickle._values import Call, Global, Persistent, SDict, literal_str

__all__ = [
    "OPCODES",
    "Call",
    "Global",
    "OpReader",
    "Persistent",
    "PickleParseError",
    "PickleSummary",
    "Probe",
    "SDict",
    "Tier",
    "Verdict",
    "classify",
    "literal_str",
    "looks_like_pickle",
    "probe",
    "scan_pickle",
    "scan_trailing",
]
