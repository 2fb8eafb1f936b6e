"""Environment variables that change what the interpreter or the dynamic linker loads."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping

from trainguard.env._rules import ENV_VAR, LD_SO_PRELOAD, SHADOWING
from trainguard.findings import Finding, Severity

__all__ = ["VARIABLES", "env_findings", "shadowing_in_dirs"]

#: name -> (severity, why it matters). Severities are raised for risky values
#: (relative or other-writable directories) in :func:`env_findings`.
VARIABLES: dict[str, tuple[Severity, str]] = {
    "LD_PRELOAD": (Severity.HIGH, "injects shared libraries into every process it starts"),
    "LD_AUDIT": (Severity.HIGH, "loads auditing libraries that see every symbol binding"),
    "DYLD_INSERT_LIBRARIES": (Severity.HIGH, "injects libraries into every process (macOS)"),
    "PYTHONHOME": (Severity.HIGH, "replaces the standard library location"),
    "PYTHONPYCACHEPREFIX": (
        Severity.HIGH,
        "bytecode is read from another tree, which no RECORD or baseline covers",
    ),
    "PYTHONPATH": (Severity.LOW, "directories searched before site-packages and the stdlib"),
    "PYTHONINSPECT": (Severity.MEDIUM, "drops into an interactive prompt after the script"),
    "PYTHONSTARTUP": (Severity.LOW, "a file executed when an interactive session starts"),
    "PYTHONUSERBASE": (Severity.MEDIUM, "moves the per-user site-packages"),
    "PYTHONPLATLIBDIR": (Severity.MEDIUM, "changes the library directory name"),
    "PYTHONEXECUTABLE": (Severity.LOW, "changes sys.executable (macOS)"),
    "PYTHONCASEOK": (Severity.LOW, "case-insensitive imports (Windows, macOS)"),
    "PYTHONOPTIMIZE": (
        Severity.LOW,
        "loads .opt-N.pyc bytecode and strips assert statements",
    ),
    "PYTHONBREAKPOINT": (Severity.LOW, "imports and calls this hook on breakpoint()"),
    "LD_LIBRARY_PATH": (Severity.LOW, "shared libraries are searched here first"),
    "DYLD_LIBRARY_PATH": (Severity.LOW, "shared libraries are searched here first (macOS)"),
    "TORCH_EXTENSIONS_DIR": (Severity.LOW, "JIT-built extensions are loaded from here"),
    "TORCHINDUCTOR_CACHE_DIR": (Severity.LOW, "compiled kernels are loaded from here"),
    "TRITON_CACHE_DIR": (Severity.LOW, "compiled Triton kernels are loaded from here"),
}
_PATH_LISTS = {"PYTHONPATH", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH"}
_DIRS = {
    "TORCH_EXTENSIONS_DIR",
    "TORCHINDUCTOR_CACHE_DIR",
    "TRITON_CACHE_DIR",
    "PYTHONPYCACHEPREFIX",
}
_HARMLESS = {"PYTHONBREAKPOINT": {"", "0", "pdb.set_trace"}, "PYTHONOPTIMIZE": {"", "0"}}


def _risky_dir(entry: str) -> str | None:
    """Why a directory entry is dangerous, or None."""
    if entry == "" or not os.path.isabs(entry):
        return f"relative entry {entry!r} resolves against the current directory"
    try:
        st = os.stat(entry)
    except OSError:
        return f"{entry} does not exist (whoever creates it controls what loads)"
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        return f"{entry} is world-writable"
    if st.st_mode & stat.S_IWOTH:
        return f"{entry} is world-writable (sticky)"
    return None


def env_findings(
    environ: Mapping[str, str],
    *,
    allowed: Iterable[str] = (),
    ld_so_preload: str = "/etc/ld.so.preload",
) -> list[Finding]:
    """Findings for load-changing variables in ``environ``.

    ``allowed`` holds ``NAME`` or ``NAME=VALUE`` strings a site has approved
    (``LD_PRELOAD=/usr/lib/libtcmalloc.so`` on a cluster that preloads it).
    """
    allow = set(allowed)
    findings: list[Finding] = []
    for name, (severity, why) in VARIABLES.items():
        value = environ.get(name)
        if value is None or name in allow or f"{name}={value}" in allow:
            continue
        if value in _HARMLESS.get(name, ()):
            continue
        risks: list[str] = []
        if name in _PATH_LISTS:
            risks = [r for e in value.split(os.pathsep) if (r := _risky_dir(e))]
        elif name in _DIRS:
            risks = [r for r in [_risky_dir(value)] if r]
        level = max(severity, Severity.MEDIUM) if risks else severity
        msg = f"{name} is set: {why}"
        if risks:
            msg += "; " + "; ".join(risks)
        findings.append(ENV_VAR.finding(f"${name}", msg, severity=level, value=value))
    warnings = environ.get("PYTHONWARNINGS", "")
    # A warning category with a dot is imported by the warnings machinery at start-up.
    if any("." in part.split(":")[2] for part in warnings.split(",") if part.count(":") >= 2):
        findings.append(
            ENV_VAR.finding(
                "$PYTHONWARNINGS",
                "PYTHONWARNINGS names a warning category in a module: it is imported at start-up",
                value=warnings,
            )
        )
    try:
        with open(ld_so_preload, encoding="utf-8", errors="replace") as fh:
            libs = [ln.strip() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    except OSError:
        libs = []
    if libs:
        findings.append(
            LD_SO_PRELOAD.finding(
                ld_so_preload, f"{len(libs)} libraries preloaded into every process", libraries=libs
            )
        )
    return findings


def shadowing_in_dirs(
    dirs: Iterable[str], protected: Mapping[str, str], ext_suffixes: Iterable[str]
) -> list[Finding]:
    """Modules in ``dirs`` (searched before site-packages) that shadow ``protected``
    top-level names (name -> what it belongs to)."""
    suffixes = tuple(ext_suffixes)
    findings: list[Finding] = []
    for directory in dirs:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for entry in sorted(names):
            full = os.path.join(directory, entry)
            module = None
            if entry.endswith(".py") or entry.endswith(".pyc"):
                module = entry.rsplit(".", 1)[0]
            elif entry.endswith(suffixes):
                module = entry.split(".", 1)[0]
            elif "." not in entry and os.path.isfile(os.path.join(full, "__init__.py")):
                module = entry  # a regular package; namespace portions never shadow
            if module and module in protected:
                findings.append(
                    SHADOWING.finding(
                        full,
                        f"{full} is found before {protected[module]} module {module!r}",
                        module=module,
                    )
                )
    return findings
