"""joblib's inline numpy arrays: skip their raw bytes, scan object arrays.

``joblib.dump`` pickles a ``NumpyArrayWrapper`` (subclass, shape, order,
dtype, allow_mmap, alignment) for every array and writes the array bytes right
after the wrapper's ``BUILD``: a padding-length byte and padding when aligned,
then ``prod(shape) * itemsize`` raw bytes. Object arrays are written as a
nested pickle stream instead (read with a fresh unpickler). See
``joblib/numpy_pickle.py`` (``NumpyArrayWrapper.read_array``).

The raw bytes are skipped without being read (speed on big arrays), except a
short probe of their start: ``pickle.load`` of the same file would parse those
bytes as opcodes, so bytes that look like a malicious pickle are reported.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from trainguard.findings import Rule, Severity
from trainguard.scan.pickle._opcodes import PickleParseError
from trainguard.scan.pickle._probe import probe
from trainguard.scan.pickle._values import Call, Global, SDict, literal_str, render

if TYPE_CHECKING:
    from trainguard.scan.pickle._machine import Machine

__all__ = ["ARRAY_DATA", "ARRAY_POLYGLOT", "dtype_info", "joblib_array_hook"]

ARRAY_DATA = Rule(
    "joblib.array-data",
    Severity.HIGH,
    "joblib array data cannot be delimited",
    "A NumpyArrayWrapper's shape, dtype or padding could not be evaluated, or its data "
    "runs past the end of the file, so trainguard cannot tell where the pickle resumes.",
)
ARRAY_POLYGLOT = Rule(
    "joblib.array-polyglot",
    Severity.HIGH,
    "joblib array bytes parse as pickle opcodes that import code",
    "joblib.load skips these bytes as array data, but pickle.load of the same file reads "
    "them as opcodes: a polyglot that is harmless for one loader and not for the other.",
)

_TYPESTR = r"[<>|=]?([a-zA-Z?])(\d*)"  # compiled on first use (re caches it)
#: NPY_ITEM_REFCOUNT: the dtype holds Python objects.
_HASOBJECT = 0x01
#: How many bytes of array data are probed for opcodes.
_PROBE_BYTES = 4096


def dtype_info(value: Any) -> tuple[int, bool] | None:
    """(itemsize, holds objects) of a pickled ``numpy.dtype``, or ``None``."""
    if not (isinstance(value, Call) and isinstance(value.func, Global)):
        return None
    if value.func.key not in ("numpy.dtype", "numpy.core.multiarray.dtype"):
        return None
    args = value.args
    typestr = literal_str(args[0]) if isinstance(args, tuple) and args else None
    if typestr is None:
        return None
    state = value.state if isinstance(value.state, tuple) else ()
    elsize = state[5] if len(state) > 5 and type(state[5]) is int else -1
    flags = state[7] if len(state) > 7 and type(state[7]) is int else 0
    match = re.fullmatch(_TYPESTR, typestr)
    if match is None:
        return None
    letter, digits = match.groups()
    if letter == "O" or flags & _HASOBJECT:
        return 8, True
    if elsize > 0:
        return elsize, False
    if not digits:
        return (1, False) if letter in "?b" else None
    size = int(digits)
    return (size * 4 if letter == "U" else size), False


def _count(shape: Any) -> int | None:
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape):
        return None
    count = 1
    for dim in shape:
        count *= dim
    return count


def joblib_array_hook(m: Machine, wrapper: Call, pos: int) -> None:
    """Move the machine's reader past the array data that follows ``wrapper``."""
    state = wrapper.state
    start = m.pos
    if not isinstance(state, SDict):
        m.problem(ARRAY_DATA, pos, f"NumpyArrayWrapper state is {render(state, 60)}")
        raise PickleParseError("malformed", start, "joblib array data cannot be delimited")
    count = _count(state.get("shape"))
    info = dtype_info(state.get("dtype"))
    if count is None or info is None:
        m.problem(
            ARRAY_DATA,
            pos,
            f"NumpyArrayWrapper shape {render(state.get('shape'), 60)} / dtype "
            f"{render(state.get('dtype'), 60)} cannot be evaluated",
        )
        raise PickleParseError("malformed", start, "joblib array data cannot be delimited")
    itemsize, hasobject = info
    if hasobject:
        _object_array(m, start)
        return
    end = m.limit
    cursor = start
    if type(state.get("numpy_array_alignment_bytes")) is int:
        if cursor >= end:
            raise PickleParseError("truncated", start, "joblib array padding runs past the end")
        cursor += 1 + m.data[cursor]
    body = cursor
    cursor += count * itemsize
    if cursor > end:
        m.problem(ARRAY_DATA, pos, f"array of {count * itemsize} bytes runs past the end")
        raise PickleParseError("truncated", start, "joblib array data runs past the end")
    # pickle.load of the same file would parse from the padding byte; a reader that
    # resynchronizes could parse from the data itself.
    for at in dict.fromkeys((start, body)):
        found = probe(m.data, at, max_bytes=min(cursor - at, _PROBE_BYTES), max_ops=64)
        if found.imports and found.ops >= 3 and (found.error is None or found.reached_stop):
            m.ctx.add(
                ARRAY_POLYGLOT,
                f"array bytes at offset {at} parse as {found.ops} pickle opcodes that import or call",
                offset=at,
            )
            break
    m.pos = cursor


def _object_array(m: Machine, start: int) -> None:
    """An object array is a whole pickle stream of its own: scan it in place."""
    from trainguard.scan.pickle._machine import Machine

    sub = Machine(m.data, m.ctx, start)
    sub.run()
    m.substreams.append(sub)
    if not sub.complete:
        raise PickleParseError("malformed", start, "joblib object array stream is broken")
    m.pos = sub.end
