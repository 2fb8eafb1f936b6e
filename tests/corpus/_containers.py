"""Malicious pickles inside the containers that real loaders open.

PyTorch zip (and the zip tricks miniz accepts but Python's zipfile refuses),
the legacy and tar torch formats, TorchScript, object ``.npy``/``.npz`` and
joblib (plain and compressed).
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zipfile
import zlib
from pathlib import Path

import torch

from tests.corpus._asm import Asm, call, os_system
from tests.corpus._model import MALICIOUS, RULE_PICKLE, RULE_TORCHSCRIPT, RULE_ZIP, Writer
from tests.corpus._pickles import npy_object
from tests.corpus._torchscript import save_marker_module
from tests.corpus._zipw import Entry, build_zip

#: What torch.save writes before the main pickle of a legacy (non-zip) file.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


def _small_state_dict(seed: int = 0, *, extra_mb: int = 0) -> dict[str, torch.Tensor]:
    """A few real tensors; ``extra_mb`` adds a large one (the payload hides beside it)."""
    gen = torch.Generator().manual_seed(seed)
    state = {
        "embed.weight": torch.randn(64, 32, generator=gen),
        "proj.weight": torch.randn(32, 32, generator=gen),
        "proj.bias": torch.zeros(32),
    }
    if extra_mb:
        state["lm_head.weight"] = torch.randn(extra_mb * 256, 1024, generator=gen)
    return state


def torch_zip_members(obj: object, archive: str = "archive") -> list[tuple[str, bytes]]:
    """The members ``torch.save(obj)`` writes, in order, under ``archive/``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(buf) as zf:
        members = [(info.filename, zf.read(info)) for info in zf.infolist()]
    prefix = members[0][0].split("/", 1)[0]
    return [(archive + name[len(prefix) :], data) for name, data in members]


def torch_zip_with(data_pkl: bytes, *, extra_mb: int = 0, **overrides: object) -> bytes:
    """A real torch zip checkpoint whose ``data.pkl`` is replaced by ``data_pkl``.

    ``overrides`` are :class:`Entry` fields applied to the data.pkl entry.
    """
    entries = []
    for name, data in torch_zip_members(_small_state_dict(extra_mb=extra_mb)):
        if name.endswith("/data.pkl"):
            entries.append(Entry(name, data_pkl, **overrides))  # type: ignore[arg-type]
        else:
            entries.append(Entry(name, data))
    return build_zip(entries)


def _state_after(payload: Asm) -> bytes:
    """Run ``payload`` (which leaves one value), drop its result, return an empty dict."""
    return payload.pop().empty_dict().stop().bytes()


def legacy_torch(main_pickle: bytes) -> bytes:
    """A legacy (``_use_new_zipfile_serialization=False``) file around ``main_pickle``."""
    sys_info = {
        "protocol_version": LEGACY_PROTOCOL,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    return b"".join(
        [
            pickle.dumps(LEGACY_MAGIC, protocol=2),
            pickle.dumps(LEGACY_PROTOCOL, protocol=2),
            pickle.dumps(sys_info, protocol=2),
            main_pickle,
            pickle.dumps([], protocol=2),  # storage keys: none
        ]
    )


def tar_torch(main_pickle: bytes) -> bytes:
    """The pre-1.0 tar format: ``storages``, ``tensors`` and ``pickle`` members."""
    members = {
        "sys_info": pickle.dumps({"protocol_version": LEGACY_PROTOCOL}, protocol=2),
        "storages": pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2),
        "tensors": pickle.dumps(0, protocol=2),
        "pickle": main_pickle,
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _Reduce:
    """Pickles as ``func(*args)``: how joblib files are given a payload here.

    ``pickle.dumps`` only records the call; nothing runs until a load.
    """

    def __init__(self, func: object, *args: object) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (self.func, self.args)


def _joblib(w: Writer, sid: str, compress: object, technique: str) -> None:
    import joblib
    import numpy as np

    path = w.path(MALICIOUS, sid, f"{sid}.joblib")
    payload = {"coef": np.arange(32, dtype=np.float64), "hook": _Reduce(os.system, w.shell(sid))}
    joblib.dump(payload, path, compress=compress)
    w.add(MALICIOUS, sid, path, technique, rule=RULE_PICKLE, loader="joblib")


def build(w: Writer) -> None:
    """Add the container samples."""
    extra_mb = 64 if w.large else 0

    sid = "torch-zip-os-system"
    w.malicious(
        sid,
        f"{sid}.bin",
        torch_zip_with(_state_after(call(Asm(2), "os", "system", w.shell(sid))), extra_mb=extra_mb),
        "torch zip (pytorch_model.bin layout) with a malicious data.pkl",
        rule=RULE_PICKLE,
        loader="torch",
    )
    sid = "torch-zip-dotted-global"
    # torch.serialization imports os: 'serialization.os.system' reaches os through torch.
    w.malicious(
        sid,
        f"{sid}.pt",
        torch_zip_with(
            _state_after(
                Asm(4)
                .stack_global("torch", "serialization.os.system")
                .str_(w.shell(sid))
                .tuple1()
                .reduce()
            )
        ),
        "dotted STACK_GLOBAL through an allowlisted module (torch.serialization.os.system)",
        rule=RULE_PICKLE,
        loader="torch",
    )
    sid = "torch-zip-crc-mismatch"
    w.malicious(
        sid,
        f"{sid}.pt",
        torch_zip_with(os_system(w.shell(sid)), crc=0xDEADBEEF),
        "torch zip whose data.pkl CRC is wrong (miniz loads it, zipfile refuses)",
        rule=RULE_PICKLE,
        loader="torch",
    )
    sid = "torch-zip-name-mismatch"
    w.malicious(
        sid,
        f"{sid}.pt",
        torch_zip_with(os_system(w.shell(sid)), local_name="archive/data.pkx"),
        "local header name differs from the central directory's (miniz loads it)",
        rule=RULE_PICKLE,
        loader="torch",
    )
    sid = "zip-hidden-local-entry"
    entries = [Entry(name, data) for name, data in torch_zip_members(_small_state_dict())]
    # A second data.pkl after the real one, in no central directory: streaming
    # extractors see it (and keep it, last wins); central-directory readers do not.
    entries.insert(1, Entry("archive/data.pkl", os_system(w.shell(sid)), in_central=False))
    w.malicious(
        sid,
        f"{sid}.pt",
        build_zip(entries),
        "payload in a local zip entry the central directory hides",
        rule=RULE_ZIP,
        loader=None,
    )
    sid = "torch-legacy"
    w.malicious(
        sid,
        f"{sid}.pt",
        legacy_torch(_state_after(call(Asm(2), "os", "system", w.shell(sid)))),
        "legacy torch format (_use_new_zipfile_serialization=False), payload in the main pickle",
        rule=RULE_PICKLE,
        loader="torch",
    )
    sid = "torch-tar"
    w.malicious(
        sid,
        f"{sid}.tar",
        tar_torch(_state_after(call(Asm(2), "os", "system", w.shell(sid)))),
        "pre-1.0 tar torch format with a malicious 'pickle' member",
        rule=RULE_PICKLE,
        loader="torch",
    )
    sid = "torchscript-setstate"
    path = w.path(MALICIOUS, sid, f"{sid}.pt")
    save_marker_module(w.marker(sid), Path(path))
    w.add(
        MALICIOUS,
        sid,
        path,
        "TorchScript archive whose __setstate__ touches the file system at load",
        rule=RULE_TORCHSCRIPT,
        loader="torchscript",
    )
    sid = "npy-object"
    w.malicious(
        sid,
        f"{sid}.npy",
        npy_object(os_system(w.shell(sid))),
        "object-dtype .npy whose data is a malicious pickle",
        rule=RULE_PICKLE,
        loader="numpy",
    )
    sid = "npz-object"
    benign_npy = io.BytesIO()
    import numpy as np

    np.save(benign_npy, np.arange(8, dtype=np.float32))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("weights.npy", benign_npy.getvalue())
        zf.writestr("meta.npy", npy_object(os_system(w.shell(sid))))
    w.malicious(
        sid,
        f"{sid}.npz",
        buf.getvalue(),
        ".npz with an object member holding a malicious pickle",
        rule=RULE_PICKLE,
        loader="numpy",
    )
    _joblib(w, "joblib-plain", 0, "joblib file with a payload beside numpy arrays")
    _joblib(w, "joblib-zlib", 3, "zlib-compressed joblib file with a payload")
    _joblib(w, "joblib-xz", ("xz", 3), "xz-compressed joblib file with a payload")
    sid = "gzip-pickle"
    # Loaders that sniff compression (joblib does) open a gzip stream of a pickle.
    import gzip

    w.malicious(
        sid,
        f"{sid}.pkl.gz",
        gzip.compress(os_system(w.shell(sid)), mtime=0),
        "gzip-compressed raw pickle",
        rule=RULE_PICKLE,
        loader="joblib",
    )
    sid = "zlib-raw-pickle"
    w.malicious(
        sid,
        f"{sid}.pkl.z",
        zlib.compress(os_system(w.shell(sid))),
        "zlib-compressed raw pickle",
        rule=RULE_PICKLE,
        loader="joblib",
    )
