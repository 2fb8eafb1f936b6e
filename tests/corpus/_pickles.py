"""Malicious pickles: one per technique a pickle scanner must see through.

Every payload only creates ``marker_dir/<id>`` (``touch`` or ``open(...).close()``),
except ``pip.main(['--version'])``, whose call site is what matters.
"""

from __future__ import annotations

import pickle
import struct

from tests.corpus._asm import Asm, call, os_system
from tests.corpus._model import RULE_PICKLE, Writer


def npy_object(payload: bytes) -> bytes:
    """A version 1.0 ``.npy`` of dtype object whose data is the pickle ``payload``."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    # The header is padded with spaces so that magic + lengths + header is 64-aligned.
    pad = 64 - (10 + len(header) + 1) % 64
    header_bytes = (header + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header_bytes)) + header_bytes + payload


def _exec(w: Writer, sid: str) -> bytes:
    return call(Asm(2), "builtins", "exec", w.python(sid)).stop().bytes()


def build(w: Writer) -> None:
    """Add the raw-pickle samples (loaded with ``pickle.load``)."""

    def add(sid: str, data: bytes, technique: str, loader: str = "pickle", **kw: bool) -> None:
        w.malicious(sid, f"{sid}.pkl", data, technique, rule=RULE_PICKLE, loader=loader, **kw)

    sid = "pkl-os-system"
    add(sid, os_system(w.shell(sid)), "os.system via GLOBAL")
    sid = "pkl-posix-system"
    add(
        sid,
        call(Asm(4), "posix", "system", w.shell(sid)).stop().bytes(),
        "posix.system (what pickle.dumps(os.system) writes on Linux)",
    )
    sid = "pkl-subprocess"
    add(
        sid,
        Asm(2)
        .global_("subprocess", "check_call")
        .str_list(["touch", w.marker(sid)])
        .tuple1()
        .reduce()
        .stop()
        .bytes(),
        "subprocess.check_call with an argv list",
    )
    sid = "pkl-builtins-exec"
    add(sid, _exec(w, sid), "builtins.exec of source text")
    sid = "pkl-builtins-eval"
    add(
        sid,
        call(Asm(2), "builtins", "eval", w.python(sid)).stop().bytes(),
        "builtins.eval of an expression",
    )
    add(
        "pkl-pip-main",
        Asm(2).global_("pip", "main").str_list(["--version"]).tuple1().reduce().stop().bytes(),
        "pip.main (would install packages; innocuous --version here)",
        marker=False,
    )
    sid = "pkl-cprofile-run"
    add(
        sid,
        call(Asm(2), "cProfile", "run", w.python(sid)).stop().bytes(),
        "cProfile.run executes a statement",
    )
    sid = "pkl-pkgutil-resolve"
    # resolve_name('os:system') returns os.system; the second REDUCE calls it.
    add(
        sid,
        call(Asm(2), "pkgutil", "resolve_name", "os:system")
        .str_(w.shell(sid))
        .tuple1()
        .reduce()
        .stop()
        .bytes(),
        "pkgutil.resolve_name computes the callable",
    )
    sid = "pkl-importlib"
    add(
        sid,
        Asm(2)
        .global_("builtins", "getattr")
        .raw(call(Asm(None), "importlib", "import_module", "os").bytes())
        .str_("system")
        .tuple2()
        .reduce()
        .str_(w.shell(sid))
        .tuple1()
        .reduce()
        .stop()
        .bytes(),
        "importlib.import_module + getattr",
    )
    sid = "pkl-runpy"
    add(
        sid,
        Asm(2)
        .global_("runpy", "_run_code")
        .str_(w.python(sid))
        .empty_dict()
        .tuple2()
        .reduce()
        .stop()
        .bytes(),
        "runpy._run_code executes source text",
    )
    sid = "pkl-attrgetter"
    # logging imports os, so logging.os is the os module without naming os.system.
    add(
        sid,
        call(Asm(2), "operator", "attrgetter", "system")
        .global_("logging", "os")
        .tuple1()
        .reduce()
        .str_(w.shell(sid))
        .tuple1()
        .reduce()
        .stop()
        .bytes(),
        "operator.attrgetter gadget reaching os.system",
    )
    sid = "pkl-methodcaller"
    add(
        sid,
        call(Asm(2), "operator", "methodcaller", "system", w.shell(sid))
        .global_("logging", "os")
        .tuple1()
        .reduce()
        .stop()
        .bytes(),
        "operator.methodcaller gadget calling os.system",
    )
    sid = "pkl-functools-partial"
    add(
        sid,
        Asm(2)
        .global_("functools", "partial")
        .global_("os", "system")
        .str_(w.shell(sid))
        .tuple2()
        .reduce()
        .empty_tuple()
        .reduce()
        .stop()
        .bytes(),
        "functools.partial binds the command, an empty call runs it",
    )
    sid = "pkl-dotted-global"
    add(
        sid,
        Asm(4)
        .stack_global("logging", "os.system")
        .str_(w.shell(sid))
        .tuple1()
        .reduce()
        .stop()
        .bytes(),
        "dotted STACK_GLOBAL name reaching os through another module",
    )
    sid = "pkl-memo-overwrite"
    # Slots 1 and 2 first hold a harmless module/name, then are overwritten with
    # os/system: a scanner keeping the first write resolves collections.OrderedDict.
    add(
        sid,
        Asm(4)
        .str_("collections")
        .put(1)
        .str_("OrderedDict")
        .put(2)
        .pop()
        .pop()
        .str_("os")
        .put(1)
        .pop()
        .str_("system")
        .put(2)
        .pop()
        .get(1)
        .get(2)
        .raw(b"\x93")
        .str_(w.shell(sid))
        .tuple1()
        .reduce()
        .stop()
        .bytes(),
        "memo slots overwritten before STACK_GLOBAL reads them",
    )
    sid = "pkl-dup"
    # DUP copies the callable: one copy is called, the other is left as the result.
    add(
        sid,
        Asm(2)
        .global_("os", "system")
        .dup()
        .str_(w.shell(sid))
        .tuple1()
        .reduce()
        .pop()
        .stop()
        .bytes(),
        "DUP of a callable before the call",
    )
    sid = "pkl-computed-global"
    # Module and attribute names are produced by calls (rot13), never literals.
    add(
        sid,
        call(Asm(4), "codecs", "decode", "bf", "rot13")
        .raw(call(Asm(None), "codecs", "decode", "flfgrz", "rot13").bytes())
        .raw(b"\x93")
        .str_(w.shell(sid))
        .tuple1()
        .reduce()
        .stop()
        .bytes(),
        "STACK_GLOBAL whose names are computed by calls",
    )
    sid = "pkl-broken-opcode"
    body = call(Asm(2), "os", "system", w.shell(sid)).pop().bytes()
    add(sid, body + b"\xff", "payload runs, then an invalid opcode fails the parse")
    sid = "pkl-truncated"
    add(
        sid,
        call(Asm(2), "os", "system", w.shell(sid)).bytes(),
        "payload runs, then the stream ends without STOP",
    )
    sid = "pkl-multi-stream"
    add(
        sid,
        pickle.dumps({"epoch": 3, "step": 1200}, protocol=2) + _exec(w, sid),
        "benign first pickle, payload in the second stream after STOP",
        loader="pickle-stream",
    )
    sid = "pkl-protocol0"
    text = f"cos\nsystem\n({Asm(None).text_str(w.shell(sid)).bytes().decode()}tR."
    add(sid, text.encode(), "protocol 0 text pickle (no magic bytes)")
    sid = "pkl-protocol1"
    add(
        sid,
        Asm(1)
        .global_("os", "system")
        .put(0)
        .mark()
        .str_(w.shell(sid))
        .tuple()
        .reduce()
        .stop()
        .bytes(),
        "protocol 1 binary pickle without a PROTO header",
    )
    sid = "pkl-nested-pickle"
    add(
        sid,
        Asm(3).global_("pickle", "loads").bin(_exec(w, sid)).tuple1().reduce().stop().bytes(),
        "pickle.loads of a bytes literal holding the payload",
    )
    sid = "pkl-nested-numpy"
    inner = npy_object(_exec(w, sid))
    add(
        sid,
        Asm(3)
        .global_("numpy", "load")
        .global_("io", "BytesIO")
        .bin(inner)
        .tuple1()
        .reduce()
        .none()
        .raw(b"\x88")  # NEWTRUE: allow_pickle=True, numpy.load's third positional argument
        .tuple3()
        .reduce()
        .stop()
        .bytes(),
        "numpy.load(allow_pickle=True) of an object .npy in a bytes literal",
    )
    sid = "pkl-nested-torch"
    # partial(torch.load) gets weights_only=False through BUILD (partial.__setstate__),
    # then loads a bytes literal whose first pickle is the payload.
    add(
        sid,
        Asm(3)
        .global_("functools", "partial")
        .global_("torch", "load")
        .tuple1()
        .reduce()
        .mark()
        .global_("torch", "load")
        .empty_tuple()
        .empty_dict()
        .str_("weights_only")
        .false()
        .setitem()
        .none()
        .tuple()
        .build()
        .global_("io", "BytesIO")
        .bin(_exec(w, sid))
        .tuple1()
        .reduce()
        .tuple1()
        .reduce()
        .stop()
        .bytes(),
        "torch.load(weights_only=False) of a bytes literal, via partial + BUILD",
    )
    sid = "pkl-ext-opcode"
    add(
        sid,
        Asm(2)
        .global_("copyreg", "add_extension")
        .str_("os")
        .str_("system")
        .int_(0xF1)
        .tuple3()
        .reduce()
        .pop()
        .ext1(0xF1)
        .str_(w.shell(sid))
        .tuple1()
        .reduce()
        .stop()
        .bytes(),
        "copyreg.add_extension then EXT1 resolves os.system",
    )
    sid = "pkl-inst"
    text = f"({Asm(None).text_str(w.shell(sid)).bytes().decode()}ios\nsystem\n."
    add(sid, text.encode(), "INST opcode calls os.system (protocol 0)")
    sid = "pkl-obj"
    add(
        sid,
        Asm(2).mark().global_("os", "system").str_(w.shell(sid)).obj().stop().bytes(),
        "OBJ opcode calls os.system",
    )
    sid = "pkl-newobj"
    # NEWOBJ builds a function from compiled source; REDUCE calls it.
    add(
        sid,
        Asm(2)
        .global_("types", "FunctionType")
        .raw(call(Asm(None), "builtins", "compile", w.python(sid), "<corpus>", "exec").bytes())
        .empty_dict()
        .tuple2()
        .newobj()
        .empty_tuple()
        .reduce()
        .stop()
        .bytes(),
        "NEWOBJ of types.FunctionType over compiled code",
    )
    sid = "pkl-newobj-ex"
    add(
        sid,
        Asm(4)
        .global_("functools", "partial")
        .global_("subprocess", "check_call")
        .str_list(["touch", w.marker(sid)])
        .tuple2()
        .empty_dict()
        .newobj_ex()
        .empty_tuple()
        .reduce()
        .stop()
        .bytes(),
        "NEWOBJ_EX of functools.partial over subprocess.check_call",
    )
    sid = "pkl-build-setstate"
    # BUILD #1 stores os.system as the instance's __setstate__; BUILD #2 calls it.
    add(
        sid,
        Asm(2)
        .global_("types", "SimpleNamespace")
        .empty_tuple()
        .newobj()
        .empty_dict()
        .str_("__setstate__")
        .global_("os", "system")
        .setitem()
        .build()
        .str_(w.shell(sid))
        .build()
        .stop()
        .bytes(),
        "BUILD installs then calls a __setstate__",
    )
