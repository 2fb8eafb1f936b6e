"""Rules raised by ``trainguard env verify`` and ``env snapshot``."""

from __future__ import annotations

from trainguard.findings import Rule, Severity

# -- RECORD ------------------------------------------------------------------
RECORD_MISMATCH = Rule(
    "env.record-mismatch",
    Severity.CRITICAL,
    "Installed file differs from its RECORD hash",
    "The file's content is not what its distribution installed. pip never re-checks "
    "installed files, so an edit to a library (the 2024 incident's edited PyTorch) runs in "
    "every job that imports it. Compare the shown diff with the package's source and "
    "reinstall the distribution from a trusted wheel.",
)
FILE_MISSING = Rule(
    "env.file-missing",
    Severity.MEDIUM,
    "A file listed in RECORD is missing",
    "A file the distribution installed is gone. Removing a module can make imports fall "
    "through to another copy elsewhere on sys.path; reinstall the distribution.",
)
UNREADABLE = Rule(
    "env.unreadable",
    Severity.HIGH,
    "Environment file could not be read",
    "The file exists but could not be opened or read, so it was not verified.",
)
RECORD_PROBLEM = Rule(
    "env.record-invalid",
    Severity.HIGH,
    "RECORD is missing, unreadable or malformed",
    "Without a well-formed RECORD the distribution's files cannot be checked, so they are "
    "not known to be what was installed. Legacy egg-info installs have no RECORD; reinstall "
    "from a wheel.",
)
UNHASHED_ENTRY = Rule(
    "env.record-unhashed",
    Severity.HIGH,
    "RECORD lists a file without a hash",
    "Only RECORD itself, its signatures and .pyc files may go without a hash. A hash removed "
    "from a RECORD line hides an edit to that file.",
)
WEAK_HASH = Rule(
    "env.record-weak-hash",
    Severity.MEDIUM,
    "RECORD uses a weak or unknown hash algorithm",
    "md5, sha1 or an unknown algorithm cannot anchor a file's content.",
)
UNOWNED_FILE = Rule(
    "env.unowned-file",
    Severity.HIGH,
    "File in site-packages belongs to no distribution",
    "No RECORD lists this file, so nothing says what it should contain. A module dropped "
    "into site-packages (or an extension module beside a .py, which takes precedence) "
    "shadows the real one for every job.",
)
SHADOWING = Rule(
    "env.shadowing-module",
    Severity.CRITICAL,
    "A module shadows an installed or standard-library module",
    "This file is importable under the same name as a module of another distribution or "
    "of the standard library and is found first (an extension module beats a .py in the "
    "same folder; PYTHONPATH beats site-packages). Whatever it contains runs instead.",
)
WRITABLE = Rule(
    "env.writable-by-others",
    Severity.MEDIUM,
    "Environment files are writable by other users",
    "Files or folders of the environment are group- or world-writable, so users other than "
    "its owner can edit the code every job runs. Remove the write bits.",
)
SYMLINK_OUT = Rule(
    "env.symlink-outside",
    Severity.MEDIUM,
    "A symbolic link in site-packages points outside it",
    "The file's content lives elsewhere and can be changed there without touching the environment.",
)
# -- bytecode ----------------------------------------------------------------
PYC_MISMATCH = Rule(
    "env.pyc-mismatch",
    Severity.CRITICAL,
    "Compiled bytecode does not match its source",
    "The interpreter loads this .pyc instead of the source, and its code is not the "
    "source's code: the source looks pristine while the bytecode runs something else. "
    "Delete the __pycache__ folder and recompile.",
)
PYC_SOURCELESS = Rule(
    "env.pyc-sourceless",
    Severity.HIGH,
    "Importable bytecode with no source",
    "A bare .pyc outside __pycache__ is imported when no .py of that name exists. It can "
    "only be read by disassembly.",
)
PYC_UNVERIFIED = Rule(
    "env.pyc-unverified",
    Severity.LOW,
    "Live bytecode not written by the installer",
    "This .pyc is loaded instead of its source but is not listed in any RECORD, or was "
    "rewritten after the distribution was installed. Its content cannot be checked "
    "without --deep-pyc or a baseline.",
)
PYC_STALE = Rule(
    "env.pyc-stale",
    Severity.LOW,
    "Stale or orphaned bytecode",
    "The interpreter ignores this .pyc (its header does not match the source, or the source "
    "is gone). Harmless to imports, but a leftover of an edit or removal.",
)
# -- start-up hooks ----------------------------------------------------------
PTH_EXEC = Rule(
    "env.pth-exec",
    Severity.HIGH,
    ".pth file executes code at interpreter start",
    "site executes lines starting with 'import' in every .pth file of site-packages, in "
    "every Python process, before any user code. Malicious .pth files are a known "
    "supply-chain technique. Read the shown lines; remove the file unless you know it.",
)
PTH_KNOWN = Rule(
    "env.pth-known",
    Severity.INFO,
    ".pth file with a known executable hook",
    "An allowlisted .pth (setuptools' distutils-precedence.pth, a setuptools editable "
    "finder owned by a verified distribution, virtualenv's hook).",
)
PTH_PATH = Rule(
    "env.pth-path",
    Severity.INFO,
    ".pth file adds a directory to sys.path",
    "Code in that directory is importable but not covered by any RECORD; verify it with "
    "`trainguard code verify` or a baseline. Paths that do not exist yet are added the "
    "moment someone creates them.",
)
STARTUP_HOOK = Rule(
    "env.startup-hook",
    Severity.HIGH,
    "sitecustomize/usercustomize present",
    "site imports sitecustomize (and usercustomize) at every interpreter start, from "
    "anywhere on sys.path. Such a module runs before the training script in every job.",
)
USER_SITE = Rule(
    "env.user-site",
    Severity.MEDIUM,
    "Per-user site-packages is active",
    "The interpreter also loads packages from the user's ~/.local site-packages, which no "
    "environment RECORD covers. Set PYTHONNOUSERSITE=1 or use a venv.",
)
ENV_VAR = Rule(
    "env.variable",
    Severity.MEDIUM,
    "An environment variable changes what gets loaded",
    "Variables such as PYTHONPATH, PYTHONHOME, LD_PRELOAD or PYTHONPYCACHEPREFIX make the "
    "interpreter or the dynamic linker load code from somewhere the verification did not "
    "look.",
)
LD_SO_PRELOAD = Rule(
    "env.ld-so-preload",
    Severity.HIGH,
    "/etc/ld.so.preload injects libraries into every process",
    "Every dynamically linked program on the machine loads these libraries first.",
)
# -- baseline and anchoring --------------------------------------------------
BASELINE_MODIFIED = Rule(
    "env.baseline-modified",
    Severity.CRITICAL,
    "File content differs from the baseline",
    "The file changed since the baseline was taken. RECORD files can be rewritten by "
    "whoever edits the library; the baseline cannot (keep it signed or in the ledger).",
)
BASELINE_NEW = Rule(
    "env.baseline-new-file",
    Severity.HIGH,
    "File not in the baseline",
    "A file appeared in the environment after the baseline was taken.",
)
BASELINE_MISSING = Rule(
    "env.baseline-missing",
    Severity.MEDIUM,
    "File in the baseline is gone",
    "A file that was present when the baseline was taken no longer exists.",
)
BASELINE_TOUCHED = Rule(
    "env.baseline-touched",
    Severity.INFO,
    "File metadata changed, content identical",
    "The file was touched, copied or re-permissioned but its content still matches.",
)
BASELINE_MISMATCH = Rule(
    "env.baseline-foreign",
    Severity.HIGH,
    "The baseline describes another environment",
    "The baseline was taken for another interpreter or other site-packages folders, so it "
    "cannot vouch for this one.",
)
WHEEL_MISMATCH = Rule(
    "env.wheel-mismatch",
    Severity.CRITICAL,
    "Installed file differs from the wheel it came from",
    "The wheel's own RECORD (inside the wheel) gives another hash. When the installed "
    "RECORD agrees with the file, the RECORD itself was rewritten to hide the edit.",
)
WHEEL_EXTRA = Rule(
    "env.wheel-extra",
    Severity.HIGH,
    "Installed RECORD lists a file the wheel does not contain",
    "Someone added the file and a RECORD line for it after installation.",
)
WHEEL_UNLOCKED = Rule(
    "env.wheel-not-locked",
    Severity.CRITICAL,
    "Wheel file does not match the lock file's hashes",
    "The wheel found for this distribution is not one the lock file allows; it cannot "
    "anchor the installation.",
)
LOCK_MISMATCH = Rule(
    "env.lock-mismatch",
    Severity.HIGH,
    "Installed distribution disagrees with the lock file",
    "The installed version is not the locked one, or the distribution is not in the lock.",
)
ANCHOR_MISSING = Rule(
    "env.unanchored",
    Severity.INFO,
    "No wheel found to anchor this distribution",
    "Its files were checked against the installed RECORD only, which an insider can rewrite "
    "along with the file. Provide the wheels (--wheels) or take a baseline.",
)
