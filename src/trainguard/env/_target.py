"""Which interpreter is being verified, and where its code comes from.

For the running interpreter the facts are read in-process. For another one
(``--python PATH``) the same function runs in that interpreter started with
``-I -S``: isolated mode and no ``site`` import, so none of its ``.pth`` files,
``sitecustomize`` or environment variables get a chance to run code before it
is inspected. Everything after that is read from this process.
"""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainguard.errors import UsageError

__all__ = ["Interpreter", "describe_interpreter"]


def _describe() -> dict[str, Any]:  # pragma: no cover - also runs in the target interpreter
    # Runs with -I -S in the target interpreter: standard library only, and
    # importing ``site`` here does not run site.main() (no .pth processing).
    import importlib.machinery
    import importlib.util
    import site
    import sys
    import sysconfig

    # site.venv() is what points sys.prefix at a venv, and it also processes
    # .pth files, so under -S the venv is found here the way site.venv() finds it.
    exe_dir = os.path.dirname(os.path.abspath(sys.executable))
    prefix = sys.prefix
    venv = sys.prefix != sys.base_prefix
    system_site = True
    for cfg in (
        os.path.join(exe_dir, "pyvenv.cfg"),
        os.path.join(os.path.dirname(exe_dir), "pyvenv.cfg"),
    ):
        if not os.path.isfile(cfg):
            continue
        venv = True
        prefix = os.path.dirname(exe_dir)
        try:
            with open(cfg, encoding="utf-8") as fh:
                for line in fh:
                    key, _, value = line.partition("=")
                    if key.strip().lower() == "include-system-site-packages":
                        system_site = value.strip().lower() == "true"
        except OSError:
            pass
        break
    sites = list(site.getsitepackages([prefix]))
    if venv and system_site:
        sites += site.getsitepackages([sys.base_prefix])
    paths = sysconfig.get_paths(vars={"base": prefix, "platbase": prefix})
    return {
        "executable": sys.executable,
        "version": list(sys.version_info[:3]),
        "implementation": sys.implementation.name,
        "cache_tag": sys.implementation.cache_tag,
        "magic": importlib.util.MAGIC_NUMBER.hex(),
        "prefix": prefix,
        "base_prefix": sys.base_prefix,
        "venv": venv,
        "system_site_packages": system_site,
        "site_packages": sites,
        "purelib": paths.get("purelib"),
        "platlib": paths.get("platlib"),
        "stdlib": paths.get("stdlib"),
        "scripts": paths.get("scripts"),
        "user_site": site.getusersitepackages(),
        "user_base": site.getuserbase(),
        "extension_suffixes": list(importlib.machinery.EXTENSION_SUFFIXES),
        "stdlib_module_names": sorted(getattr(sys, "stdlib_module_names", ())),
    }


@dataclass(frozen=True)
class Interpreter:
    """Facts about one Python interpreter, enough to verify what it would load.

    Attributes:
        executable: the interpreter binary.
        version: ``(major, minor, micro)``.
        cache_tag: the ``__pycache__`` tag, e.g. ``cpython-311``.
        magic: the bytecode magic number (4 bytes) its ``.pyc`` files must carry.
        site_packages: the directories ``site`` would add, deduplicated, existing ones only.
        scripts: where console scripts are installed (``bin/``).
        stdlib: the standard library directory.
        user_site: the per-user site-packages, when the interpreter would load it.
    """

    executable: str
    version: tuple[int, int, int]
    cache_tag: str
    magic: bytes
    prefix: str
    base_prefix: str
    venv: bool
    site_packages: tuple[str, ...]
    scripts: str
    stdlib: str
    user_site: str | None
    extension_suffixes: tuple[str, ...]
    stdlib_module_names: frozenset[str]

    @classmethod
    def from_json(cls, data: dict[str, Any], *, no_user_site: bool) -> Interpreter:
        """Build from :func:`_describe` output, validating types (it may come from a subprocess)."""
        try:
            version = tuple(int(v) for v in data["version"])
            sites: list[str] = []
            seen: set[str] = set()
            for raw in [*data["site_packages"], data.get("purelib"), data.get("platlib")]:
                if not isinstance(raw, str) or not os.path.isdir(raw):
                    continue
                real = os.path.realpath(raw)
                if real not in seen:
                    seen.add(real)
                    sites.append(os.path.normpath(raw))
            # The user site is loaded only outside venvs (or with system site
            # packages), when not disabled, and when the process is not setuid.
            user_site: str | None = str(data["user_site"])
            if (data["venv"] and not data["system_site_packages"]) or no_user_site:
                user_site = None
            return cls(
                executable=str(data["executable"]),
                version=(version[0], version[1], version[2]),
                cache_tag=str(data["cache_tag"]),
                magic=bytes.fromhex(str(data["magic"])),
                prefix=str(data["prefix"]),
                base_prefix=str(data["base_prefix"]),
                venv=bool(data["venv"]),
                site_packages=tuple(sites),
                scripts=str(data["scripts"]),
                stdlib=str(data["stdlib"]),
                user_site=user_site,
                extension_suffixes=tuple(str(s) for s in data["extension_suffixes"]),
                stdlib_module_names=frozenset(str(s) for s in data["stdlib_module_names"]),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise UsageError(
                "could not understand the interpreter description",
                subject=str(data.get("executable", "?")),
                expected="the JSON printed by trainguard's interpreter query",
                found=repr(exc),
                hint="is this a CPython 3.8+ interpreter?",
            ) from exc


def _no_user_site() -> bool:
    if os.environ.get("PYTHONNOUSERSITE"):
        return True
    return hasattr(os, "geteuid") and os.geteuid() != os.getuid()


def describe_interpreter(python: str | os.PathLike[str] | None = None) -> Interpreter:
    """Describe ``python`` (a path to an interpreter) or the running interpreter.

    Another interpreter is started with ``-I -S`` so that nothing in its
    environment runs before it is verified.
    """
    if python is None:
        return Interpreter.from_json(_describe(), no_user_site=_no_user_site())
    exe = Path(python)
    if not exe.exists():
        raise UsageError(
            f"no such interpreter: {exe}",
            subject=str(exe),
            hint="pass the python binary of the environment, e.g. /opt/envs/train/bin/python",
        )
    # repr(), not json: importing json (and with it re and enum) would double the
    # cost of a child that runs at every job start; the parent reads the literal
    # with ast.literal_eval, which evaluates literals only.
    script = (
        "from __future__ import annotations\nimport os\n"
        + inspect.getsource(_describe)
        + "\nprint(repr(_describe()))\n"
    )
    try:
        proc = subprocess.run(
            [str(exe), "-I", "-S", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(
            f"could not run {exe}", subject=str(exe), found=repr(exc), hint="is it executable?"
        ) from exc
    if proc.returncode != 0:
        raise UsageError(
            f"{exe} failed to describe itself",
            subject=str(exe),
            found=proc.stderr.strip()[-500:],
            hint="pass a CPython interpreter (3.8 or newer)",
        )
    try:
        data = ast.literal_eval(proc.stdout.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise UsageError(
            f"{exe} printed something other than its description",
            subject=str(exe),
            found=proc.stdout[:200],
        ) from exc
    if not isinstance(data, dict):
        raise UsageError(
            f"{exe} printed something other than its description",
            subject=str(exe),
            found=proc.stdout[:200],
        )
    return Interpreter.from_json(data, no_user_site=_no_user_site())


def running_interpreter_is(interp: Interpreter) -> bool:
    """True when ``interp`` describes this very process (so in-memory checks apply)."""
    return os.path.realpath(sys.prefix) == os.path.realpath(interp.prefix)
