"""One test per published pickle-scanner bypass: trainguard must flag each sample.

Every sample is assembled in code with a harmless payload (touching a marker
file). Advisory ids were confirmed in the advisories, pull requests and test
generators of picklescan, modelscan and fickling (picklescan's
``tests/init_data_files.py`` names each GHSA next to its payload); where no id
exists, the comment names the public issue or writeup. A few key samples are
also loaded with ``pickle.load`` in a throwaway subprocess to prove they really
execute while the scanner flags them.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.scan.pickle._samples import (
    P,
    Raw,
    call_pickle,
    load_in_subprocess,
    nested_call,
    touch,
    touch_code,
)
from trainguard.findings import Finding, Severity
from trainguard.scan import scan_buffer

C, H = Severity.CRITICAL, Severity.HIGH


def scan(data: bytes) -> list[Finding]:
    return scan_buffer(data, "sample.pkl").findings


def worst(findings: list[Finding]) -> Severity:
    return max((f.severity for f in findings), default=Severity.INFO)


def rules(findings: list[Finding]) -> set[str]:
    return {f.rule for f in findings}


Builder = Callable[[Path], bytes]


def reduce_case(module: str, name: str, *args: object) -> Builder:
    """A ``__reduce__``-style sample as pickle protocol 4 writes it (dotted names stay dotted)."""

    def resolve(value: object, marker: Path) -> object:
        if callable(value):
            return value(marker)
        if isinstance(value, (list, tuple)):
            return type(value)(resolve(v, marker) for v in value)
        if isinstance(value, dict):
            return {k: resolve(v, marker) for k, v in value.items()}
        return value

    def build(marker: Path) -> bytes:
        resolved = [resolve(a, marker) for a in args]
        return call_pickle(module, name, resolved, proto=4)  # type: ignore[arg-type]

    return build


CODE = touch_code
SHELL = touch

#: (advisory, module, name, args): callables that run code and were missing from blocklists.
REDUCE_BYPASSES = [
    # CVE-2025-1716: picklescan did not treat pip as unsafe (pip.main installs packages).
    ("CVE-2025-1716", "pip", "main", (["install", "--no-index", "nothing-here"],)),
    # GHSA-49gj-c84q-6qm9: cProfile.run(code).
    ("GHSA-49gj-c84q-6qm9", "cProfile", "run", (CODE,)),
    # GHSA-9w88-8rmg-7g2p: cProfile.runctx(code, globals, locals).
    ("GHSA-9w88-8rmg-7g2p", "cProfile", "runctx", (CODE, None, None)),
    # GHSA-x696-vm39-cp64: profile.Profile.run (a dotted method name).
    ("GHSA-x696-vm39-cp64", "profile", "Profile.run", ({}, CODE)),
    # GHSA-6vqj-c2q5-j97w: profile.Profile.runctx.
    ("GHSA-6vqj-c2q5-j97w", "profile", "Profile.runctx", ({}, CODE, {}, {})),
    # GHSA-7wx9-6375-f5wh: the profile module (fixed in picklescan 1.0.4).
    ("GHSA-7wx9-6375-f5wh", "profile", "run", (CODE,)),
    # GHSA-5qwp-399c-mjwf: trace.Trace.run.
    ("GHSA-5qwp-399c-mjwf", "trace", "Trace.run", ({}, CODE)),
    # GHSA-g344-hcph-8vgg: trace.Trace.runctx.
    ("GHSA-g344-hcph-8vgg", "trace", "Trace.runctx", ({}, CODE, {}, {})),
    # GHSA-v7x6-rv5q-mhwc: timeit.timeit(setup, stmt) runs a statement.
    ("GHSA-v7x6-rv5q-mhwc", "timeit", "timeit", ("", CODE)),
    # GHSA-xp4f-hrf8-rxw7: ensurepip._run_pip.
    ("GHSA-xp4f-hrf8-rxw7", "ensurepip", "_run_pip", (CODE,)),
    # GHSA-cj3c-v495-4xqh: code.InteractiveInterpreter.runcode.
    ("GHSA-cj3c-v495-4xqh", "code", "InteractiveInterpreter.runcode", ({}, CODE)),
    # GHSA-fqq6-7vqf-w3fg: doctest.debug_script.
    ("GHSA-fqq6-7vqf-w3fg", "doctest", "debug_script", (CODE, True)),
    # GHSA-f54q-57x4-jg88: lib2to3 Grammar.loads.
    ("GHSA-f54q-57x4-jg88", "lib2to3.pgen2.grammar", "Grammar.loads", ({}, b"")),
    # GHSA-p9w7-82w4-7q8m: lib2to3 ParserGenerator.make_label evaluates a string.
    ("GHSA-p9w7-82w4-7q8m", "lib2to3.pgen2.pgen", "ParserGenerator.make_label", (None, {}, CODE)),
    # GHSA-3vg9-h568-4w9m: idlelib ObjectTreeItem.SetText.
    ("GHSA-3vg9-h568-4w9m", "idlelib.debugobj", "ObjectTreeItem.SetText", ({}, CODE)),
    # GHSA-6w4w-5w54-rjvr: idlelib AutoComplete.get_entity.
    ("GHSA-6w4w-5w54-rjvr", "idlelib.autocomplete", "AutoComplete.get_entity", ({}, CODE)),
    # GHSA-7cq8-mj8x-j263: idlelib AutoComplete.fetch_completions.
    (
        "GHSA-7cq8-mj8x-j263",
        "idlelib.autocomplete",
        "AutoComplete.fetch_completions",
        ({}, CODE, 1),
    ),
    # GHSA-8r4j-24qv-fmq9: idlelib Calltip.fetch_tip.
    ("GHSA-8r4j-24qv-fmq9", "idlelib.calltip", "Calltip.fetch_tip", ({}, CODE)),
    # GHSA-9xph-j2h6-g47v: idlelib.calltip.get_entity.
    ("GHSA-9xph-j2h6-g47v", "idlelib.calltip", "get_entity", (CODE,)),
    # GHSA-m869-42cg-3xwr: idlelib.run Executive.runcode.
    ("GHSA-m869-42cg-3xwr", "idlelib.run", "Executive.runcode", ({}, CODE)),
    # GHSA-j343-8v2j-ff7w: idlelib.pyshell ModifiedInterpreter.runcommand.
    ("GHSA-j343-8v2j-ff7w", "idlelib.pyshell", "ModifiedInterpreter.runcommand", ({}, CODE)),
    # GHSA-3gf5-cxq9-w223: idlelib.pyshell ModifiedInterpreter.runcode.
    ("GHSA-3gf5-cxq9-w223", "idlelib.pyshell", "ModifiedInterpreter.runcode", ({}, CODE)),
    # GHSA-4r9r-ch6f-vxmx: torch.utils.bottleneck.__main__.run_cprofile.
    ("GHSA-4r9r-ch6f-vxmx", "torch.utils.bottleneck.__main__", "run_cprofile", (CODE, {})),
    # GHSA-4whj-rm5r-c2v8: torch.utils.bottleneck.__main__.run_autograd_prof.
    ("GHSA-4whj-rm5r-c2v8", "torch.utils.bottleneck.__main__", "run_autograd_prof", (CODE, {})),
    # GHSA-86cj-95qr-2p4f: torch._dynamo.guards.GuardBuilder.get evaluates a string.
    ("GHSA-86cj-95qr-2p4f", "torch._dynamo.guards", "GuardBuilder.get", ({}, CODE)),
    # GHSA-f4x7-rfwp-v3xw: torch.fx symbolic shapes ShapeEnv.evaluate_guards_expression.
    (
        "GHSA-f4x7-rfwp-v3xw",
        "torch.fx.experimental.symbolic_shapes",
        "ShapeEnv.evaluate_guards_expression",
        ({}, CODE, []),
    ),
    # GHSA-f745-w6jp-hpxx: torch.utils.collect_env.run runs a shell command.
    ("GHSA-f745-w6jp-hpxx", "torch.utils.collect_env", "run", (SHELL,)),
    # GHSA-vr7h-p6mm-wpmh: torch.jit.unsupported_tensor_ops.execWrapper.
    ("GHSA-vr7h-p6mm-wpmh", "torch.jit.unsupported_tensor_ops", "execWrapper", (CODE, {}, {})),
    # GHSA-q77w-mwjj-7mqx and CVE-2025-10157: asyncio's private subprocess transport.
    (
        "GHSA-q77w-mwjj-7mqx",
        "asyncio.unix_events",
        "_UnixSubprocessTransport._start",
        ({}, SHELL, True, None, None, None, 0),
    ),
    # GHSA-m273-6v24-x4m4: distutils.file_util.write_file writes arbitrary files.
    ("GHSA-m273-6v24-x4m4", "distutils.file_util", "write_file", ("pwned.env", ["x"])),
    # GHSA-4675-36f9-wf6r: ctypes.CDLL loads native code.
    ("GHSA-4675-36f9-wf6r", "ctypes", "CDLL", (None,)),
    # GHSA-vqmv-47xg-9wpr: pty.spawn.
    ("GHSA-vqmv-47xg-9wpr", "pty", "spawn", (["/bin/sh", "-c", "true"],)),
    # GHSA-r8g5-cgf2-4m4m: numpy.f2py.crackfortran.getlincoef evaluates a string.
    ("GHSA-r8g5-cgf2-4m4m", "numpy.f2py.crackfortran", "getlincoef", (CODE, [])),
    # CVE-2026-56315: stdlib helpers that run commands (uuid, _osx_support, _aix_support...).
    ("CVE-2026-56315", "uuid", "_get_command_stdout", (SHELL,)),
    ("CVE-2026-56315", "_osx_support", "_read_output", (SHELL,)),
    ("CVE-2026-56315", "_aix_support", "_read_cmd_output", (SHELL,)),
    ("CVE-2026-56315", "imaplib", "IMAP4_stream", (SHELL,)),
    ("CVE-2026-56315", "_pyrepl.pager", "pipe_pager", ("x", SHELL)),
    # picklescan tests/init_data_files.py Malicious14: runpy._run_code.
    ("picklescan-malicious14", "runpy", "_run_code", (CODE,)),
    # picklescan Malicious18: pydoc.pipepager runs a shell command.
    ("picklescan-malicious18", "pydoc", "pipepager", ("", SHELL)),
    # picklescan Malicious20: venv.create with a pip prompt.
    ("picklescan-malicious20", "venv", "create", ("venv", False, False, True, False, SHELL)),
    # picklescan Malicious22: numpy.testing._private.utils.runstring.
    ("picklescan-malicious22", "numpy.testing._private.utils", "runstring", (CODE, {})),
    # picklescan Malicious17: torch._inductor.codecache.compile_file.
    (
        "picklescan-malicious17",
        "torch._inductor.codecache",
        "compile_file",
        ("", "", ["sh", "-c", SHELL]),
    ),
    # picklescan Malicious15: bdb.Bdb.run.
    ("picklescan-malicious15", "bdb", "Bdb.run", ({}, CODE)),
    # modelscan issue #338: multiprocessing.util.spawnv_passfds.
    (
        "modelscan-338-spawnv",
        "multiprocessing.util",
        "spawnv_passfds",
        (b"/bin/sh", ("/bin/sh", "-c", SHELL), ()),
    ),
    # modelscan issue #338: mlflow project entry points run shell commands.
    (
        "modelscan-338-mlflow",
        "mlflow.projects.backend.local",
        "_run_entry_point",
        (SHELL, ".", "", ""),
    ),
    # modelscan pull request #346: mailcap.findmatch runs mailcap test commands.
    (
        "modelscan-346-mailcap",
        "mailcap",
        "findmatch",
        ({"text/plain": [{"test": SHELL}]}, "text/plain"),
    ),
    # picklescan pull request #74: importlib.import_module / marshal.loads.
    ("picklescan-74-importlib", "importlib", "import_module", ("os",)),
    ("picklescan-74-marshal", "marshal", "loads", (b"\xe3",)),
    # fickling GHSA-6ggj-6f2q-f7mx: sub-interpreters run Python source.
    ("GHSA-6ggj-6f2q-f7mx", "_interpreters", "run_string", (1, CODE)),
    ("GHSA-6ggj-6f2q-f7mx", "_xxsubinterpreters", "run_string", (1, CODE)),
]


@pytest.mark.parametrize(
    ("advisory", "module", "name", "args"),
    REDUCE_BYPASSES,
    ids=[f"{a}:{m}.{n}" for a, m, n, _ in REDUCE_BYPASSES],
)
def test_reduce_bypass_is_critical(
    marker_dir: Path, advisory: str, module: str, name: str, args: tuple[object, ...]
) -> None:
    findings = scan(reduce_case(module, name, *args)(marker_dir / "m"))
    assert worst(findings) == C, [(f.rule, f.severity.name, f.message) for f in findings]
    flagged = [f for f in findings if f.evidence.get("module") == module]
    assert flagged and flagged[0].evidence["uses"][0]["op"] == "REDUCE"


def test_dict_argument_strings_are_inspected(marker_dir: Path) -> None:
    # Payload strings inside dict arguments (SETITEM) are found as well.
    data = bytes(
        P(2)
        .global_("os", "system")
        .mark()
        .empty_dict()
        .uni("k")
        .uni("v")
        .setitem()
        .tuple()
        .reduce()
        .stop()
    )
    assert worst(scan(data)) == C
    nested = bytes(
        P(2)
        .global_("mylib", "run")
        .mark()
        .empty_dict()
        .uni("cmd")
        .uni(touch(marker_dir / "m"))
        .setitem()
        .tuple()
        .reduce()
        .stop()
    )
    assert "pickle.code-argument" in rules(scan(nested))


# -- import-name tricks ---------------------------------------------------------------


def test_string_opcodes_feed_stack_global(marker_dir: Path) -> None:
    # GHSA-9gvj-pp9x-gcfr: protocol-0 STRING operands for STACK_GLOBAL hid the import.
    data = bytes(
        P()
        .string("os")
        .string("system")
        .raw(b"\x93")
        .string(touch(marker_dir / "m"))
        .tuple1()
        .reduce()
        .stop()
    )
    findings = scan(data)
    assert worst(findings) == C and "pickle.dangerous-global" in rules(findings)


def memo_confusion(marker: Path) -> bytes:
    # picklescan issue #22 (imaginaryctf "Safe Pickle"): memo slots written out of order
    # so a scanner that pairs STACK_GLOBAL with the last strings sees torch.LongStorage.
    p = P()
    for text, slot in (("os", 2), ("system", 3), ("torch", 0), ("LongStorage", 1)):
        p.text_uni(text).raw(b"p%d\n0" % slot)
    p.raw(b"g2\ng3\n\x93").mark().text_uni(touch(marker)).tuple().reduce().stop()
    return bytes(p)


def test_memo_confusion_stack_global(marker_dir: Path) -> None:
    findings = scan(memo_confusion(marker_dir / "m"))
    assert worst(findings) == C
    assert any(f.evidence.get("name") == "system" for f in findings)


def test_memo_slot_overwritten_after_decoy(marker_dir: Path) -> None:
    # modelscan issue #85 / agent-bom pull request #3326: a decoy string in a memo slot is
    # overwritten before STACK_GLOBAL reads it back.
    p = P(4).uni("torch").put(0).pop().uni("Size").put(1).pop()
    p.uni("os").put(0).pop().uni("system").put(1).pop()
    p.get(0).get(1).raw(b"\x93").uni(touch(marker_dir / "m")).tuple1().reduce().stop()
    findings = scan(bytes(p))
    assert worst(findings) == C and any(f.evidence.get("module") == "os" for f in findings)


def test_dotted_name_through_allowlisted_module(marker_dir: Path) -> None:
    # Attribute traversal (STACK_GLOBAL walks dotted names): torch is allowlisted, and
    # torch.serialization imports os. Technique family of modelscan issue #85.
    findings = scan(call_pickle("torch", "serialization.os.system", [touch(marker_dir / "m")]))
    dotted = [f for f in findings if f.rule == "pickle.dotted-global"]
    assert dotted and dotted[0].severity == C


def test_build_setattr_on_module_then_dotted_lookup(marker_dir: Path) -> None:
    # modelscan issue #85: BUILD's slot state setattr()s numpy.prod.a = "os" and .b = "system",
    # then STACK_GLOBAL("numpy", "prod.a") feeds a second STACK_GLOBAL: a computed import.
    p = P(5).global_("numpy", "prod")
    p.none().mark().text_uni("a").text_uni("os").raw(b"d").tuple2().build()
    p.none().mark().text_uni("b").text_uni("system").raw(b"d").tuple2().build().pop()
    p.global_("numpy", "prod.a").raw(b"p0\n").global_("numpy", "prod.b").raw(b"p1\n00")
    p.raw(b"g0\ng1\n\x93").text_uni(touch(marker_dir / "m")).tuple1().reduce().stop()
    findings = scan(bytes(p))
    got = rules(findings)
    assert {"pickle.global-mutation", "pickle.computed-global", "pickle.dotted-global"} <= got
    assert worst(findings) == C


def test_numpy_builtins_through_build_and_computed_call(marker_dir: Path) -> None:
    # modelscan issue #330: numpy.__builtins__ stored on numpy.size.shape by BUILD, then
    # numpy.size(numpy.size, "eval") returns eval, which the last REDUCE calls.
    p = P(4).stack_global("numpy", "size").memoize().stack_global("numpy", "__builtins__").memoize()
    p.get(0).empty_dict().empty_dict().uni("shape").get(1).setitem().tuple2().build()
    p.get(0).get(0).uni("eval").tuple2().reduce()
    p.uni(touch_code(marker_dir / "m")).tuple1().reduce().stop()
    findings = scan(bytes(p))
    assert {"pickle.global-mutation", "pickle.computed-call"} <= rules(findings)
    assert worst(findings) == C


def test_operator_gadgets_reach_os(marker_dir: Path) -> None:
    # GHSA-955r-x9j8-7rhh / GHSA-46h3-79wf-xr6c: the C module _operator (attrgetter,
    # methodcaller) slipped past "operator" entries; a gadget chain reaches os.system.
    mod = nested_call("builtins", "__import__", ["os"])
    getter = nested_call("_operator", "attrgetter", ["system"])
    system = Raw(getter.data + b"(" + mod.data + b"tR")
    data = bytes(P(4).raw(system.data).mark().uni(touch(marker_dir / "m")).tuple().reduce().stop())
    findings = scan(data)
    assert worst(findings) == C
    assert "pickle.computed-call" in rules(findings)


def test_pydoc_locate_and_methodcaller(marker_dir: Path) -> None:
    # GHSA-84r2-jw7c-4r5q: methodcaller("system", cmd)(pydoc.locate("os")).
    caller = nested_call("operator", "methodcaller", ["system", touch(marker_dir / "m")])
    located = nested_call("pydoc", "locate", ["os"])
    data = bytes(P(4).raw(caller.data).mark().raw(located.data).tuple().reduce().stop())
    findings = scan(data)
    assert worst(findings) == C and "pickle.computed-call" in rules(findings)


def test_pkgutil_resolve_name_reaches_any_function(marker_dir: Path) -> None:
    # GHSA-vvpj-8cmc-gx39: one unblocked resolver, pkgutil.resolve_name("os:system").
    resolved = nested_call("pkgutil", "resolve_name", ["os:system"])
    data = bytes(
        P(4).raw(resolved.data).mark().uni(touch(marker_dir / "m")).tuple().reduce().stop()
    )
    findings = scan(data)
    assert worst(findings) == C
    flagged = next(f for f in findings if f.evidence.get("module") == "pkgutil")
    assert "os:system" in flagged.message


def test_importlib_attribute_chain(marker_dir: Path) -> None:
    # picklescan issue #66: importlib.import_module("os") then getattr(.., "system").
    module = nested_call("importlib", "import_module", ["os"])
    system = nested_call("builtins", "getattr", [module, "system"])
    data = bytes(P(4).raw(system.data).mark().uni(touch(marker_dir / "m")).tuple().reduce().stop())
    assert worst(scan(data)) == C


def test_functools_partial_of_torch_load(marker_dir: Path) -> None:
    # picklescan Malicious19: partial(torch.load, path, weights_only=False)() hides the call.
    p = P(4).stack_global("functools", "partial").stack_global("torch", "load").tuple1().reduce()
    p.mark().stack_global("torch", "load").uni("other.bin").tuple1().empty_dict().uni(
        "weights_only"
    )
    p.raw(b"\x89").setitem().none().tuple().build().raw(b")R").stop()
    findings = scan(bytes(p))
    assert worst(findings) == C and "pickle.computed-call" in rules(findings)


# -- opcode forms -----------------------------------------------------------------------


def test_inst_opcode(marker_dir: Path) -> None:
    # picklescan Malicious10: INST (protocol 0) calls builtins.exec without REDUCE.
    data = (
        b"(S'"
        + touch_code(marker_dir / "m").encode().replace(b"'", b"\\'")
        + b"'\ni__builtin__\nexec\n."
    )
    findings = scan(data)
    assert worst(findings) == C
    assert (
        next(f for f in findings if f.evidence.get("name") == "exec").evidence["uses"][0]["op"]
        == "INST"
    )


def test_obj_opcode_pty(marker_dir: Path) -> None:
    # fickling pull request #108: (cpty\nspawn\nS"id"\no. escaped an unused-variable check.
    findings = scan(b'(cpty\nspawn\nS"true"\no.')
    assert worst(findings) == C


def test_sour_pickles_payload() -> None:
    # Slaviero, "Sour Pickles" (Black Hat USA 2011): globals/compile/eval/getattr/apply chain.
    data = (
        b"c__builtin__\nglobals\n(tRp100\n0c__builtin__\ncompile\n(S'x=1'\nS''\nS'exec'\ntRp101\n0"
        b"c__builtin__\neval\n(g101\ng100\ntRp102\n0c__builtin__\ngetattr\n(c__builtin__\ndict\n"
        b"S'get'\ntRp103\n0c__builtin__\napply\n(g103\n(g100\nS'x'\nltRp104\n0g104\n."
    )
    findings = scan(data)
    names = {f.evidence.get("name") for f in findings if f.severity == C}
    assert {"globals", "compile", "eval", "getattr", "apply"} <= names


def test_extension_registry_opcodes() -> None:
    # copyreg's extension registry (EXT1/2/4) imports whatever the loading process registered.
    for op in (b"\x82\x01", b"\x83\x01\x00", b"\x84\x01\x00\x00\x00"):
        findings = scan(b"\x80\x02" + op + b"(S'x'\ntR.")
        assert "pickle.extension-code" in rules(findings) and worst(findings) >= H


def test_newobj_ex_and_build_setstate() -> None:
    # BUILD on an object of an unknown class may run its __setstate__; fickling
    # GHSA-6ggj-6f2q-f7mx routed its payload through BUILD to look unused.
    p = P(4).stack_global("evil_mod", "Thing").raw(b")}\x92")
    data = bytes(p.uni("payload").build().stop())
    findings = scan(data)
    flagged = next(f for f in findings if f.evidence.get("module") == "evil_mod")
    assert [u["op"] for u in flagged.evidence["uses"]] == ["NEWOBJ_EX", "BUILD"]


# -- broken and multi-stream files -------------------------------------------------------


def test_broken_pickle_still_flags_its_payload(marker_dir: Path) -> None:
    # picklescan tests broken_model.pkl: exec runs, then the stream breaks before STOP.
    data = b"cbuiltins\nexec\n(X" + len(touch_code(marker_dir / "m")).to_bytes(4, "little")
    data += touch_code(marker_dir / "m").encode() + b"tRX"
    findings = scan(data)
    assert worst(findings) == C and "pickle.truncated" in rules(findings)


def keyerror_exploit(marker: Path) -> bytes:
    # picklescan tests keyerror-exploit.pkl / modelscan pull request #348 (GET of a memo slot
    # never written, after the payload ran, crashed scanners into reporting nothing).
    p = P(4).global_("os", "system").text_uni(touch(marker)).tuple1().reduce().pop()
    return bytes(p.uni("os").memoize().get(3).get(0).raw(b"\x93").int_(0x42).stop())


def test_missing_memo_key_after_payload(marker_dir: Path) -> None:
    findings = scan(keyerror_exploit(marker_dir / "m"))
    assert {"pickle.memo-error", "pickle.computed-global", "pickle.dangerous-global"} <= rules(
        findings
    )


def test_type_confused_stack_global_operands(marker_dir: Path) -> None:
    # picklescan tests type-confusion-exploit.pkl: an int where STACK_GLOBAL needs a str.
    p = P(4).global_("os", "system").text_uni(touch(marker_dir / "m")).tuple1().reduce().pop()
    p.raw(b"J\x2a\x00\x00\x00").memoize().uni("os").memoize().get(0).get(1).raw(b"\x93").int_(
        1
    ).stop()
    findings = scan(bytes(p))
    assert {"pickle.invalid-operation", "pickle.dangerous-global"} <= rules(findings)


def test_concatenated_streams(marker_dir: Path) -> None:
    # picklescan tests malicious6.pkl: a benign pickle followed by a malicious one.
    data = pickle.dumps(["a", "b"]) + call_pickle("os", "system", [touch(marker_dir / "m")])
    findings = scan(data)
    assert {"pickle.multiple-streams", "pickle.dangerous-global"} <= rules(findings)


def test_nested_pickle_loads(marker_dir: Path) -> None:
    # modelscan issue #267: pickle.loads(b"<another pickle>") was not followed.
    inner = call_pickle("os", "system", [touch(marker_dir / "m")], proto=2)
    report = scan_buffer(call_pickle("pickle", "loads", [inner]), "outer.pkl")
    nested = [f for f in report.findings if "::nested@" in f.subject]
    assert any(f.rule == "pickle.dangerous-global" and f.severity == C for f in nested)


@pytest.mark.parametrize(
    ("advisory", "module", "name", "index"),
    [
        # GHSA-h3qp-7fh3-f8h4: torch datapipes decoder unpickles its data argument.
        ("GHSA-h3qp-7fh3-f8h4", "torch.utils.data.datapipes.utils.decoder", "basichandlers", 1),
        # GHSA-vv6j-3g6g-2pvj: torch ConfigModule.load_config unpickles its argument.
        ("GHSA-vv6j-3g6g-2pvj", "torch.utils._config_module", "ConfigModule.load_config", 1),
    ],
)
def test_torch_helpers_that_unpickle(
    marker_dir: Path, advisory: str, module: str, name: str, index: int
) -> None:
    inner = call_pickle("os", "system", [touch(marker_dir / "m")], proto=2)
    args: list[object] = ["pickle", inner] if index == 1 and "decoder" in module else [{}, inner]
    report = scan_buffer(call_pickle(module, name, args), "outer.pkl")  # type: ignore[arg-type]
    assert worst(report.findings) == C
    assert any("::nested@" in f.subject and f.severity == C for f in report.findings)


# -- proofs: the samples really execute under pickle.load -------------------------------

PROOFS: list[tuple[str, Builder, int]] = [
    ("classic-os-system-protocol-0", lambda m: call_pickle("os", "system", [touch(m)], proto=0), 1),
    (
        "GHSA-9gvj-pp9x-gcfr-string-stack-global",
        lambda m: bytes(
            P().string("os").string("system").raw(b"\x93").string(touch(m)).tuple1().reduce().stop()
        ),
        1,
    ),
    ("picklescan-22-memo-confusion", memo_confusion, 1),
    ("keyerror-after-payload", keyerror_exploit, 1),
    ("broken-pickle-truncated", lambda m: call_pickle("os", "system", [touch(m)], proto=2)[:-1], 1),
    (
        "concatenated-second-stream",
        lambda m: pickle.dumps([1]) + call_pickle("os", "system", [touch(m)]),
        2,
    ),
    (
        "GHSA-49gj-c84q-6qm9-cprofile-run",
        lambda m: call_pickle("cProfile", "run", [touch_code(m)]),
        1,
    ),
    (
        "GHSA-vvpj-8cmc-gx39-pkgutil",
        lambda m: bytes(
            P(4)
            .raw(nested_call("pkgutil", "resolve_name", ["os:system"]).data)
            .mark()
            .uni(touch(m))
            .tuple()
            .reduce()
            .stop()
        ),
        1,
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "build", "loops"), PROOFS, ids=[p[0] for p in PROOFS])
def test_sample_executes_under_pickle_load_and_is_flagged(
    tmp_path: Path, marker_dir: Path, name: str, build: Builder, loops: int
) -> None:
    marker = marker_dir / "executed"
    data = build(marker)
    assert worst(scan(data)) == C
    load_in_subprocess(data, tmp_path, loops=loops)
    assert marker.exists(), f"{name}: the payload did not run, so the sample proves nothing"


@pytest.mark.slow
def test_dotted_torch_name_executes_and_is_flagged(tmp_path: Path, marker_dir: Path) -> None:
    pytest.importorskip("torch")
    marker = marker_dir / "executed"
    data = call_pickle("torch", "serialization.os.system", [touch(marker)])
    assert worst(scan(data)) == C
    load_in_subprocess(data, tmp_path)
    assert marker.exists()
