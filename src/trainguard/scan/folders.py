"""Directory-level checks: Hugging Face model folders and the code they make loaders run.

A folder is a Hugging Face model folder when it holds one of the configs the
``transformers``/``diffusers``/``sentence-transformers`` loaders read. Each
file in it was already scanned on its own; what needs the folder is code:

* ``auto_map`` entries (``config.json``, ``tokenizer_config.json``, processor
  configs), ``custom_pipelines``, custom ``model_index.json`` components and
  ``modules.json`` entries name Python modules that ``trust_remote_code=True``
  imports. A reference into another repository (``org/repo--module.Class``)
  pulls code that is not in the folder at all; a module that is missing cannot
  be reviewed.
* Every ``.py`` file there (and its relative imports) is parsed, never
  imported, and reported with its risky imports and calls.
* ``trust_remote_code`` set in a config asks loaders to run that code.
* Pickle weights next to safetensors ones: loaders may pick either.
"""

from __future__ import annotations

import os
import re
import stat
from typing import TYPE_CHECKING, Any

from trainguard.errors import LimitExceeded
from trainguard.findings import Report, Rule, Severity
from trainguard.scan.limits import ScanLimits

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["scan_folder"]

REMOTE_CODE = Rule(
    "hf.remote-code",
    Severity.MEDIUM,
    "Model folder ships Python code",
    "Loaders import this module with trust_remote_code=True, running it with your "
    "privileges. The evidence lists what it imports and which calls run processes, execute "
    "code, use the network or deserialize pickles (HIGH when there are any). Read it first.",
)
REMOTE_CODE_EXTERNAL = Rule(
    "hf.remote-code-external",
    Severity.HIGH,
    "auto_map pulls code from another repository",
    "A reference of the form 'org/repo--module.Class' makes transformers download and run "
    "a module from another Hub repository, which this folder does not contain and nobody "
    "reviewed with it.",
)
REMOTE_CODE_MISSING = Rule(
    "hf.remote-code-missing",
    Severity.HIGH,
    "Config names code that is not in the folder",
    "A config refers to a Python module that is not in the folder (or is not a valid module "
    "path). Loaded from the Hub, it would be fetched at load time without review.",
)
TRUST_REMOTE_CODE = Rule(
    "hf.trust-remote-code",
    Severity.MEDIUM,
    "Config turns on trust_remote_code",
    "The config sets trust_remote_code, so tools that honour it import the folder's Python "
    "code without asking.",
)
CONFIG_INVALID = Rule(
    "hf.config-invalid",
    Severity.MEDIUM,
    "Model folder config is not valid JSON",
    "A config that loaders read could not be parsed, so the code it may name was not checked.",
)
SHARD_ESCAPE = Rule(
    "hf.shard-index-escape",
    Severity.HIGH,
    "Shard index points outside the model folder",
    "A *.index.json weight_map names shard files by path; loaders join it with the folder. "
    "An absolute path or '..' makes them read (and, for pickle shards, run) a file from "
    "anywhere on disk.",
)
PICKLE_WEIGHTS = Rule(
    "hf.pickle-alongside-safetensors",
    Severity.LOW,
    "Pickle weights next to safetensors weights",
    "The folder holds the same model twice, once as pickle. Loaders that prefer or fall back "
    "to the pickle file run whatever it contains; load the safetensors file explicitly "
    "(use_safetensors=True) or remove the pickle.",
)

#: Files whose presence makes a directory a model folder, and that may carry auto_map.
HF_CONFIGS = (
    "config.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "feature_extractor_config.json",
    "image_processor_config.json",
    "video_preprocessor_config.json",
    "generation_config.json",
    "model_index.json",
    "modules.json",
    "config_sentence_transformers.json",
    "adapter_config.json",
)
_SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__"})
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_PICKLE_WEIGHTS = re.compile(r"^(pytorch_model.*\.bin|.*\.(pt|pth|ckpt))$")
#: model_index.json libraries that ship with the loaders themselves.
_KNOWN_LIBRARIES = frozenset(
    {"diffusers", "transformers", "onnxruntime", "onnxruntime.training", "peft"}
)
_MAX_PY_FILES = 256  # Python files analysed per folder; past this they are listed, not parsed


def scan_folder(root: str | os.PathLike[str], report: Report, limits: ScanLimits) -> None:
    """Directory-level checks for ``root`` and its sub-folders."""
    visited = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        visited += 1 + len(filenames)
        if visited > limits.directory_files:
            return  # the engine's walk reported this limit already
        names = set(filenames)
        if names & set(HF_CONFIGS):
            from pathlib import Path  # only model folders need it (start-up cost otherwise)

            _ModelFolder(Path(dirpath), names, report, limits).check()


class _ModelFolder:
    def __init__(self, folder: Path, names: set[str], report: Report, limits: ScanLimits) -> None:
        self.folder = folder
        self.names = names
        self.report = report
        self.limits = limits
        #: Python file (relative path) -> what references it.
        self.referenced: dict[str, list[str]] = {}

    def add(
        self,
        rule: Rule,
        path: Path,
        message: str,
        *,
        severity: Severity | None = None,
        **evidence: Any,
    ) -> None:
        self.report.add(rule.finding(str(path), message, severity=severity, **evidence))

    def check(self) -> None:
        for name in HF_CONFIGS:
            if name in self.names:
                config = self._load(name)
                if config is not None:
                    self._config(name, config)
        for name in sorted(n for n in self.names if n.endswith(".index.json")):
            index = self._load(name)
            if isinstance(index, dict):
                self._shard_index(name, index)
        self._python_files()
        self._pickle_weights()

    def _read(self, path: Path) -> bytes:
        """A regular file's bytes, at most ``json_header_bytes`` (never a device or a FIFO)."""
        with open(path, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise OSError(f"{path.name} is not a regular file")  # a symlink to /dev/zero...
            data = fh.read(self.limits.json_header_bytes + 1)
        if len(data) > self.limits.json_header_bytes:
            raise LimitExceeded("json_header_bytes", len(data), self.limits.json_header_bytes)
        return data

    def _load(self, name: str) -> Any:
        import json  # only model folders get this far

        path = self.folder / name
        try:
            return json.loads(self._read(path))
        except LimitExceeded:
            self.add(CONFIG_INVALID, path, f"{name} is larger than json_header_bytes; not parsed")
            return None
        except (OSError, ValueError, RecursionError) as exc:
            self.add(
                CONFIG_INVALID,
                path,
                f"{name} could not be parsed: {type(exc).__name__}: {exc}"[:300],
            )
            return None

    # -- configs ----------------------------------------------------------------

    def _config(self, name: str, config: Any) -> None:
        path = self.folder / name
        for where in _trust_remote_code(config, self.limits.message_depth):
            self.add(TRUST_REMOTE_CODE, path, f"{name} sets trust_remote_code ({where})", key=where)
        refs = _references(name, config)
        if name == "modules.json":
            refs += _modules_json(config)
        for origin, ref in refs:
            self._reference(path, origin, ref)

    def _reference(self, config_path: Path, origin: str, ref: str) -> None:
        repo, sep, local = ref.rpartition("--")
        if sep:
            self.add(
                REMOTE_CODE_EXTERNAL,
                config_path,
                f"{origin} -> {ref!r} runs code from the repository {repo!r}",
                origin=origin,
                reference=ref,
                repository=repo,
            )
            return
        module = local.rsplit(".", 1)[0] if "." in local else local
        if not _MODULE.match(module):
            self.add(
                REMOTE_CODE_MISSING,
                config_path,
                f"{origin} -> {ref!r} is not a valid module reference",
                origin=origin,
                reference=ref,
            )
            return
        relative = module.replace(".", "/") + ".py"
        candidates = [relative]
        if origin.startswith("model_index."):  # diffusers keeps component code in its subfolder
            candidates.insert(0, f"{origin.removeprefix('model_index.')}/{relative}")
        found = next((c for c in candidates if (self.folder / c).is_file()), None)
        if found is None:
            # A diffusers component library may be a diffusers pipeline module
            # ("stable_diffusion") rather than custom code: say so, at LOW.
            diffusers = origin.startswith("model_index.")
            self.add(
                REMOTE_CODE_MISSING,
                config_path,
                f"{origin} -> {ref!r} needs {relative}, which is not in the folder"
                + (" (unless it is a diffusers pipeline module)" if diffusers else ""),
                severity=Severity.LOW if diffusers else None,
                origin=origin,
                reference=ref,
                module_file=relative,
            )
            return
        self.referenced.setdefault(found, []).append(f"{config_path.name} {origin}")

    def _shard_index(self, name: str, index: dict[str, Any]) -> None:
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict):
            return
        shards = {v for v in weight_map.values() if isinstance(v, str)}
        escapes = sorted(
            s for s in shards if s.startswith(("/", "\\")) or ".." in re.split(r"[\\/]+", s)
        )
        if escapes:
            self.add(
                SHARD_ESCAPE,
                self.folder / name,
                f"{name} maps tensors to {', '.join(repr(e) for e in escapes[:3])}",
                shards=escapes[:20],
                count=len(escapes),
            )

    # -- code -------------------------------------------------------------------

    def _python_files(self) -> None:
        queue = sorted(n for n in self.names if n.endswith(".py"))
        queue += sorted(r for r in self.referenced if r not in queue)
        done: set[str] = set()
        while queue:
            relative = queue.pop(0)
            if relative in done:
                continue
            done.add(relative)
            if len(done) > _MAX_PY_FILES:
                self.add(
                    REMOTE_CODE,
                    self.folder,
                    f"more than {_MAX_PY_FILES} Python files; the rest were not analysed",
                    severity=Severity.HIGH,
                )
                return
            for imported in self._python_file(relative):
                if imported not in done:
                    queue.append(imported)

    def _python_file(self, relative: str) -> list[str]:
        """Analyse one file; return the folder files its relative imports load."""
        path = self.folder / relative
        try:
            source = self._read(path).decode("utf-8", "replace")
        except LimitExceeded:
            self.add(REMOTE_CODE, path, "Python file too large to analyse", severity=Severity.HIGH)
            return []
        except OSError as exc:
            self.add(REMOTE_CODE, path, f"Python file unreadable: {exc}", severity=Severity.HIGH)
            return []
        from trainguard.scan import _pycode  # only folders that ship code get this far

        code = _pycode.analyse(source, str(path))
        refs = self.referenced.get(relative, [])
        severity = Severity.HIGH if code.risky_calls or code.error else Severity.MEDIUM
        if code.error:
            what = f"could not be parsed ({code.error}); its behaviour is unknown"
        elif code.risky_calls:
            what = f"{len(code.risky_calls)} risky call(s): {code.risky_calls[0]}"
        else:
            what = f"imports {', '.join(code.imports[:6]) or 'nothing'}"
        used = f"referenced by {', '.join(refs)}" if refs else "runs if imported"
        self.add(
            REMOTE_CODE,
            path,
            f"{relative} ({used}): {what}",
            severity=severity if severity != REMOTE_CODE.severity else None,
            referenced_by=refs,
            **code.evidence(),
        )
        from pathlib import Path

        base = Path(relative).parent
        out = []
        for rel in code.relative_imports:
            dots = len(rel) - len(rel.lstrip("."))
            target = base.joinpath(*[".."] * (dots - 1), *rel.lstrip(".").split("."))
            candidate = os.path.normpath(str(target) + ".py")
            if not candidate.startswith("..") and (self.folder / candidate).is_file():
                out.append(candidate)
        return out

    def _pickle_weights(self) -> None:
        if not any(n.endswith(".safetensors") for n in self.names):
            return
        pickles = sorted(n for n in self.names if _PICKLE_WEIGHTS.match(n))
        if pickles:
            self.add(
                PICKLE_WEIGHTS,
                self.folder / pickles[0],
                f"{', '.join(pickles[:5])} next to safetensors weights",
                pickle_files=pickles[:20],
            )


def _references(name: str, config: Any) -> list[tuple[str, str]]:
    """(where, 'module.Class' reference) pairs naming code the loaders import."""
    refs: list[tuple[str, str]] = []
    if not isinstance(config, dict):
        return refs
    auto_map = config.get("auto_map")
    if isinstance(auto_map, dict):
        for auto, value in auto_map.items():
            values = value if isinstance(value, list) else [value]
            refs.extend((f"auto_map.{auto}", v) for v in values if isinstance(v, str))
    pipelines = config.get("custom_pipelines")
    if isinstance(pipelines, dict):
        for task, spec in pipelines.items():
            if isinstance(spec, dict) and isinstance(spec.get("impl"), str):
                refs.append((f"custom_pipelines.{task}.impl", spec["impl"]))
    if name == "model_index.json":
        for component, spec in config.items():
            if (
                isinstance(spec, list)
                and len(spec) == 2
                and all(isinstance(s, str) for s in spec)
                and spec[0] not in _KNOWN_LIBRARIES
            ):
                refs.append((f"model_index.{component}", f"{spec[0]}.{spec[1]}"))
    return refs


def _modules_json(config: Any) -> list[tuple[str, str]]:
    """sentence-transformers modules.json entries whose type lives outside the library."""
    refs: list[tuple[str, str]] = []
    if isinstance(config, list):
        for i, entry in enumerate(config):
            kind = entry.get("type") if isinstance(entry, dict) else None
            if isinstance(kind, str) and kind.split(".")[0] != "sentence_transformers":
                refs.append((f"modules[{i}].type", kind))
    return refs


def _trust_remote_code(config: Any, max_depth: int) -> list[str]:
    """Key paths where trust_remote_code is set to true, anywhere in the config."""
    found: list[str] = []
    stack: list[tuple[Any, str, int]] = [(config, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > max_depth:
            continue
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{path}.{key}" if path else str(key)
                if key == "trust_remote_code" and value is True:
                    found.append(here)
                stack.append((value, here, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node))
    return sorted(found)
