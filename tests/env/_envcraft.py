"""Build real wheels and virtual environments for the env tests, offline.

Wheels are written by hand (a zip with a correct RECORD), installed with the
project's own pip into fresh ``python -m venv --without-pip`` environments, so
RECORD, INSTALLER, console scripts and ``__pycache__`` are exactly what pip
produces. Tamper helpers edit an installed environment the way an insider
would.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PIP = [sys.executable, "-m", "pip"]

#: A tiny "optimizer" so that the sabotage in the tests reads like the incident's.
OPTIM_PY = b'''"""A tiny optimizer."""


def sgd_step(params, grads, lr):
    """Plain SGD: move against the gradient."""
    return [p - lr * g for p, g in zip(params, grads)]
'''
INIT_PY = (
    b'"""tgdemo: a demo package for trainguard tests."""\n\nfrom tgdemo.optim import sgd_step\n'
)
CLI_PY = b'def main():\n    print("tgdemo")\n'


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(
    folder: Path,
    name: str,
    version: str,
    files: dict[str, bytes],
    *,
    console_scripts: dict[str, str] | None = None,
) -> Path:
    """Write ``{name}-{version}-py3-none-any.whl`` with a correct RECORD."""
    dist_info = f"{name}-{version}.dist-info"
    meta = {
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: trainguard-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if console_scripts:
        lines = "".join(f"{k} = {v}\n" for k, v in console_scripts.items())
        meta[f"{dist_info}/entry_points.txt"] = f"[console_scripts]\n{lines}".encode()
    members = {**files, **meta}
    record = "".join(f"{p},sha256={_b64(d)},{len(d)}\n" for p, d in members.items())
    record += f"{dist_info}/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            zf.writestr(member, data)
        zf.writestr(f"{dist_info}/RECORD", record)
    return path


def demo_wheels(folder: Path) -> Path:
    """Two small distributions: ``tgdemo`` (package + console script) and ``tgother``."""
    folder.mkdir(parents=True, exist_ok=True)
    make_wheel(
        folder,
        "tgdemo",
        "1.0",
        {"tgdemo/__init__.py": INIT_PY, "tgdemo/optim.py": OPTIM_PY, "tgdemo/cli.py": CLI_PY},
        console_scripts={"tgdemo-cli": "tgdemo.cli:main"},
    )
    make_wheel(folder, "tgother", "2.0", {"tgother/__init__.py": b"VALUE = 2\n"})
    return folder


def make_venv(path: Path) -> Path:
    """A bare venv (no pip inside it); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path / "bin" / "python"


def pip_install(python: Path, wheelhouse: str | Path, *requirements: str) -> None:
    """Install offline into ``python``'s environment with the project's pip."""
    subprocess.run(
        [
            *PIP,
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--find-links",
            str(wheelhouse),
            *requirements,
        ],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )


def site_packages(venv: Path) -> Path:
    found = list((venv / "lib").glob("python3*/site-packages"))
    assert len(found) == 1, found
    return found[0]


def copy_venv(src: Path, dst: Path) -> Path:
    """A copy of a venv (mtimes kept, so .pyc headers still match their sources)."""
    shutil.copytree(src, dst, symlinks=True)
    return dst / "bin" / "python"


def rewrite_record_line(record: Path, rel: str, data: bytes) -> None:
    """Make the RECORD line of ``rel`` agree with new content ``data`` (the insider's cover-up)."""
    lines = record.read_text().splitlines()
    out = []
    for line in lines:
        if line.startswith(rel + ","):
            line = f"{rel},sha256={_b64(data)},{len(data)}"
        out.append(line)
    record.write_text("\n".join(out) + "\n")


def edit_keep_size(path: Path, old: bytes, new: bytes) -> bytes:
    """Replace ``old`` with ``new`` (same length) in ``path``; return the new content."""
    assert len(old) == len(new)
    data = path.read_bytes()
    assert old in data, (path, old)
    changed = data.replace(old, new, 1)
    path.write_bytes(changed)
    return changed


TRAIN_PY = "import torch\n\n\ndef lr():\n    return 0.1\n"


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with no user or system configuration."""
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    proc = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout


def make_repo(root: Path) -> Path:
    """A small training repository with one commit (train.py, model/, a .gitignore)."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    (root / "train.py").write_text(TRAIN_PY)
    (root / "model").mkdir()
    (root / "model" / "__init__.py").write_text("WIDTH = 4\n")
    (root / ".gitignore").write_text("*_local.py\ndata/\n.venv/\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    return root
