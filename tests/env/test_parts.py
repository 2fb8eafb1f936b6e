"""Unit tests of the parsers and classifiers behind env verify."""

from __future__ import annotations

import hashlib
import importlib.util
import py_compile
import re
import sys
import zipfile
from pathlib import Path

import pytest

from tests.env._envcraft import make_wheel
from trainguard.env._envvars import env_findings, shadowing_in_dirs
from trainguard.env._pth import classify_pth, read_pth
from trainguard.env._pyc import classify_pyc
from trainguard.env._record import parse_record
from trainguard.env._target import describe_interpreter
from trainguard.env._wheels import parse_lock, read_wheel
from trainguard.env._zipread import read_members
from trainguard.errors import UsageError
from trainguard.findings import Severity

MAGIC = importlib.util.MAGIC_NUMBER
TAG = sys.implementation.cache_tag


def test_record_parsing_keeps_problems() -> None:
    text = (
        'pkg/a.py,sha256=AAAA,10\n"pkg/with,comma.py",sha256=BBBB,3\n'
        "pkg/__pycache__/a.cpython-311.pyc,,\nbroken line\npkg/b.py,sha256=!!!,1\n"
        "pkg/c.py,sha256=CCCC,ten\n"
    )
    entries, problems = parse_record(text, "/site")
    assert [e.path for e in entries] == [
        "/site/pkg/a.py",
        "/site/pkg/with,comma.py",
        "/site/pkg/__pycache__/a.cpython-311.pyc",
    ]
    assert entries[2].hash_optional and not entries[0].hash_optional
    assert len(problems) == 3  # the broken line, the bad base64, the bad size


def test_record_paths_outside_site_are_normalized() -> None:
    entries, _ = parse_record(
        "../../../bin/tool,sha256=AAAA,1\n", "/v/lib/python3.11/site-packages"
    )
    assert entries[0].path == "/v/bin/tool"


def test_pth_split_like_site(tmp_path: Path) -> None:
    pth = tmp_path / "x.pth"
    pth.write_text("# comment\nimport os; os.getcwd()\nimport\tsys\n  import os\nsub\n\n")
    (tmp_path / "sub").mkdir()
    parsed = read_pth(str(pth))
    assert [n for n, _ in parsed.exec_lines] == [2, 3]
    assert [t for _, t in parsed.path_lines] == ["  import os", "sub"]  # leading space: a path
    where = dict(classify_pth(parsed, str(tmp_path)))
    assert where[str(tmp_path / "sub")] == "inside"


def test_editable_finder_pattern(tmp_path: Path) -> None:
    pth = tmp_path / "__editable__.demo-1.0.pth"
    pth.write_text(
        "import __editable___demo_1_0_finder; __editable___demo_1_0_finder.install('/src/demo')\n"
    )
    assert read_pth(str(pth)).editable_finder
    pth.write_text("import __editable___demo_1_0_finder; __import__('os').system('id')\n")
    assert not read_pth(str(pth)).editable_finder


def _pyc_for(tmp_path: Path, source_text: str, **kw: object) -> tuple[Path, Path]:
    source = tmp_path / "mod.py"
    source.write_text(source_text)
    pyc = tmp_path / "__pycache__" / f"mod.{TAG}.pyc"
    py_compile.compile(str(source), cfile=str(pyc), doraise=True, **kw)  # type: ignore[arg-type]
    return source, pyc


def classify(pyc: Path) -> str:
    return classify_pyc(
        str(pyc), pyc.read_bytes()[:16], magic=MAGIC, cache_tag=TAG, same_interpreter=True
    ).state


def test_pyc_states(tmp_path: Path) -> None:
    source, pyc = _pyc_for(tmp_path, "x = 1\n")
    assert classify(pyc) == "live"
    source.write_text("x = 22\n")  # size changes: header no longer matches
    assert classify(pyc) == "stale"
    source.unlink()
    assert classify(pyc) == "orphan"
    bare = tmp_path / "bare.pyc"
    bare.write_bytes(pyc.read_bytes())
    assert classify(bare) == "sourceless"


def test_unchecked_hash_pyc_is_checked_here(tmp_path: Path) -> None:
    source, pyc = _pyc_for(
        tmp_path, "x = 1\n", invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
    )
    assert classify(pyc) == "live"
    source.write_text("x = 2\n")  # the interpreter would still load the old bytecode
    assert classify(pyc) == "unchecked-mismatch"


def test_fast_zip_reader_agrees_with_zipfile(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "demo", "1.0", {"demo/__init__.py": b"x = 1\n" * 100})
    members = read_members(str(wheel), (b".dist-info/RECORD",))
    with zipfile.ZipFile(wheel) as zf:
        assert members == {"demo-1.0.dist-info/RECORD": zf.read("demo-1.0.dist-info/RECORD")}
    big = tmp_path / "z64.zip"
    with (
        zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("a.dist-info/RECORD", "w", force_zip64=True) as fh,
    ):
        fh.write(b"a,sha256=AAAA,1\n")
    assert read_members(str(big), (b".dist-info/RECORD",)) == {
        "a.dist-info/RECORD": b"a,sha256=AAAA,1\n"
    }


def test_fast_zip_reader_rejects_a_bad_crc(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "demo", "1.0", {"demo/__init__.py": b"x = 1\n"})
    data = bytearray(wheel.read_bytes())
    record_at = data.find(b"demo-1.0.dist-info/RECORD") + len("demo-1.0.dist-info/RECORD")
    data[record_at + 5] ^= 0xFF  # corrupt the compressed RECORD body
    wheel.write_bytes(bytes(data))
    with pytest.raises(ValueError):
        read_members(str(wheel), (b".dist-info/RECORD",))


def test_read_wheel_maps_data_folders(tmp_path: Path) -> None:
    wheel = make_wheel(
        tmp_path,
        "demo",
        "1.0",
        {"demo-1.0.data/purelib/demo/x.py": b"1\n", "demo-1.0.data/scripts/tool": b"#!python\n"},
        console_scripts={"demo-cli": "demo:main"},
    )
    record = read_wheel(str(wheel))
    assert "demo/x.py" in record.files
    assert record.scripts == {"tool", "demo-cli"}


def test_lock_parsing() -> None:
    digest = "a" * 64
    text = f"torch==2.13.0 \\\n    --hash=sha256:{digest} \\\n    --hash=sha256:{'B' * 64}\nnumpy[extra]==2.4.6  # comment\n"
    lock = parse_lock(text)
    assert lock["torch"].version == "2.13.0"
    assert lock["torch"].sha256 == {digest, "b" * 64}
    assert lock["numpy"].version == "2.4.6" and not lock["numpy"].sha256


def test_environment_variables(tmp_path: Path) -> None:
    found = env_findings(
        {"LD_PRELOAD": "/x.so", "PYTHONPATH": f":{tmp_path}"}, ld_so_preload="/nonexistent"
    )
    by_name = {f.subject: f for f in found}
    assert by_name["$LD_PRELOAD"].severity is Severity.HIGH
    assert by_name["$PYTHONPATH"].severity is Severity.MEDIUM  # empty entry = current folder
    assert "relative entry" in by_name["$PYTHONPATH"].message
    assert (
        env_findings({"LD_LIBRARY_PATH": str(tmp_path)}, ld_so_preload="/nonexistent")[0].severity
        is Severity.LOW
    )
    assert env_findings({"PYTHONBREAKPOINT": "0"}, ld_so_preload="/nonexistent") == []
    warn = env_findings({"PYTHONWARNINGS": "ignore::evil.Category"}, ld_so_preload="/nonexistent")
    assert warn and "imported at start-up" in warn[0].message
    preload = tmp_path / "ld.so.preload"
    preload.write_text("/lib/x.so\n")
    assert [f.rule for f in env_findings({}, ld_so_preload=str(preload))] == ["env.ld-so-preload"]


def test_shadowing_needs_a_real_package(tmp_path: Path) -> None:
    (tmp_path / "json").mkdir()  # a namespace folder never shadows
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("")
    found = shadowing_in_dirs([str(tmp_path)], {"json": "stdlib", "torch": "torch's"}, [".so"])
    assert [f.subject for f in found] == [str(tmp_path / "torch")]


def test_known_pth_hash_is_setuptools_text() -> None:
    from trainguard.env._pth import ALLOWED_PTH_SHA256

    text = (
        "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, 'local') == 'local'; "
        "enabled and __import__('_distutils_hack').add_shim(); \n"
    )
    assert ALLOWED_PTH_SHA256[hashlib.sha256(text.encode()).hexdigest()].startswith("setuptools")
    assert re.fullmatch(r"[0-9a-f]{64}", next(iter(ALLOWED_PTH_SHA256)))


def test_interpreter_description_is_read_as_a_literal_never_run(tmp_path: Path) -> None:
    """The target interpreter prints its description; the verifier only reads literals,
    so an interpreter that prints code gets an error, not its code run."""
    marker = tmp_path / "ran"
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\necho \"__import__('os').system('touch {marker}')\"\n")
    fake.chmod(0o755)
    with pytest.raises(UsageError, match="other than its description"):
        describe_interpreter(str(fake))
    assert not marker.exists()
    real = describe_interpreter(sys.executable)
    assert real.magic == MAGIC and real.cache_tag == sys.implementation.cache_tag
