"""Judge a global (``module.name``) and the arguments a pickle passes to it.

Allowlist first: a global is SAFE only if a weights-only load accepts it;
KNOWN if it is a data-only class of a popular library; DANGEROUS if it (or
any component of a dotted name) reaches something that runs code, touches
files or the network, or changes process-wide state; UNKNOWN otherwise.
"""

from __future__ import annotations

import _compat_pickle
import enum
import functools
import re
from typing import NamedTuple

from trainguard.findings import Severity
from trainguard.scan.pickle import _allowlist as allow
from trainguard.scan.pickle import _denylist as deny

__all__ = [
    "BYTES_PRODUCERS",
    "INVOKERS",
    "NESTED_LOADERS",
    "RESOLVERS",
    "Tier",
    "Verdict",
    "classify",
    "fix_import",
    "looks_like_code",
    "name_danger",
]


class Tier(enum.Enum):
    SAFE = "safe"
    KNOWN = "known"
    UNKNOWN = "unknown"
    DANGEROUS = "dangerous"


class Verdict(NamedTuple):
    """How bad importing ``module.name`` is, and why."""

    tier: Tier
    severity: Severity | None
    reason: str
    dotted: bool = False


_SAFE = Verdict(Tier.SAFE, None, "accepted by torch.load(weights_only=True)")
_NEEDS_FULL = "a data-only class, but weights-only loaders reject it (needs a full unpickler)"

#: Hooks registered through these name prefixes affect every later model or step.
_NAME_PREFIX_RULES: tuple[tuple[str, Severity, str], ...] = (
    (
        "torch.nn.modules.module.register_module_",
        Severity.CRITICAL,
        "installs a global hook on every module (silent training manipulation)",
    ),
    (
        "torch.optim.optimizer.register_optimizer_",
        Severity.CRITICAL,
        "installs a global optimizer hook (silently changes every update)",
    ),
    ("torch.set_", Severity.HIGH, "changes process-wide torch state"),
)

#: Library namespaces whose capitalized names are data-only classes.
_KNOWN_CLASS_PREFIXES: tuple[str, ...] = (
    "torch.nn.modules.",
    "torch.optim.",
    "torch.distributions.",
    "sklearn.",
    "transformers.models.",
    "accelerate.utils.dataclasses.",
    "peft.tuners.",
    "trl.trainer.",
)
_KNOWN_CLASS_DENY: tuple[str, ...] = (
    "sklearn.utils._testing",
    "sklearn.externals",
    "sklearn.datasets",
)


def fix_import(module: str, name: str, proto: int) -> tuple[str, str]:
    """Apply the Python 2 name mapping the unpickler uses for protocols < 3."""
    if proto < 3:
        mapped = _compat_pickle.NAME_MAPPING.get((module, name))
        if mapped is not None:
            return mapped
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return module, name


def _dangerous_prefix(parts: list[str]) -> tuple[Severity, str, str] | None:
    """The longest ``DANGEROUS`` key that is a component prefix of ``parts``."""
    for i in range(len(parts), 0, -1):
        key = ".".join(parts[:i])
        hit = deny.DANGEROUS.get(key)
        if hit is not None:
            return hit[0], hit[1], key
    return None


def _components(parts: list[str], dotted: bool) -> tuple[Severity, str] | None:
    """Danger reached by attribute traversal: ``torch.serialization.os.system``."""
    worst: tuple[Severity, str] | None = None
    for part in parts[1:]:
        found: tuple[Severity, str] | None = None
        if part in deny.DANGEROUS_MODULE_NAMES:
            found = (Severity.CRITICAL, f"reaches the {part!r} module by attribute traversal")
        elif part in deny.DANGEROUS_DUNDERS:
            found = (Severity.CRITICAL, f"reaches {part} (globals, code or class internals)")
        elif part in deny.DANGEROUS_CALLABLE_NAMES:
            sev = Severity.CRITICAL if dotted else Severity.HIGH
            found = (sev, f"the name {part!r} is a code-execution or loading primitive")
        elif dotted and part.startswith("__") and part.endswith("__"):
            found = (Severity.HIGH, f"traverses the special attribute {part}")
        if found is not None and (worst is None or found[0] > worst[0]):
            worst = found
    return worst


def _builtin(name: str) -> Verdict:
    if name in deny.BUILTINS_CRITICAL:
        return Verdict(
            Tier.DANGEROUS, Severity.CRITICAL, f"builtins.{name} {deny.BUILTINS_CRITICAL[name]}"
        )
    if name in allow.BUILTINS_DATA or name.endswith(("Error", "Exception", "Warning")):
        return Verdict(Tier.KNOWN, Severity.LOW, "a builtin data constructor " + "or exception")
    if name in deny.BUILTINS_GADGET:
        return Verdict(
            Tier.DANGEROUS,
            Severity.HIGH,
            f"builtins.{name} calls, builds or inspects its arguments",
        )
    return Verdict(Tier.DANGEROUS, Severity.HIGH, f"builtins.{name} is not a data constructor")


@functools.lru_cache(maxsize=8192)
def classify(module: str, name: str) -> Verdict:
    """The verdict for a global as ``find_class(module, name)`` would resolve it.

    ``name`` may be dotted (protocol 4 ``STACK_GLOBAL`` walks attributes).

    Example:
        >>> classify("torch._utils", "_rebuild_tensor_v2").tier.value
        'safe'
        >>> classify("torch", "serialization.os.system").severity.name
        'CRITICAL'
    """
    full = f"{module}.{name}"
    dotted = "." in name
    if not dotted and full in allow.SAFE_GLOBALS:
        return _SAFE
    parts = module.split(".") + name.split(".")
    if not all(p.isidentifier() for p in parts):
        return Verdict(
            Tier.UNKNOWN,
            Severity.MEDIUM,
            "not an importable name (the load fails here, after the opcodes before it ran)",
            dotted,
        )
    if module in ("builtins", "__builtin__") and not dotted:
        return _builtin(name)
    if not dotted and (full in allow.KNOWN_EXACT or full in deny.DANGEROUS_EXCEPTIONS):
        return Verdict(Tier.KNOWN, Severity.LOW, _NEEDS_FULL)

    severity: Severity | None = None
    reason = ""
    hit = _dangerous_prefix(parts)
    if hit is not None:
        severity, reason = hit[0], f"{hit[1]} (denylisted: {hit[2]})"
    for prefix, sev, why in _NAME_PREFIX_RULES:
        if full.startswith(prefix) and (severity is None or sev > severity):
            severity, reason = sev, f"{full}: {why}"
    comp = _components(parts, dotted)
    if comp is not None and (severity is None or comp[0] > severity):
        severity, reason = comp
    if severity is None and parts[0].startswith("_") and parts[0] != "__main__":
        severity, reason = Severity.HIGH, f"{parts[0]} is a private or C-accelerator module"
    if severity is not None:
        return Verdict(Tier.DANGEROUS, severity, reason, dotted)
    if dotted:
        return Verdict(
            Tier.UNKNOWN,
            Severity.HIGH,
            "a dotted name: the unpickler walks attributes, reaching objects no import names",
            True,
        )
    if (
        name[:1].isupper()
        and full.startswith(_KNOWN_CLASS_PREFIXES)
        and not full.startswith(_KNOWN_CLASS_DENY)
    ):
        return Verdict(Tier.KNOWN, Severity.LOW, _NEEDS_FULL)
    return Verdict(Tier.UNKNOWN, Severity.MEDIUM, "not on any allowlist")


def name_danger(text: str) -> str | None:
    """Why a string handed to a name resolver (getattr, attrgetter...) is dangerous."""
    parts = [p for p in re.split(r"[.:]", text) if p]
    if not parts:
        return None
    hit = _dangerous_prefix(parts)
    if hit is not None and hit[0] == Severity.CRITICAL:
        return f"names {hit[2]}: {hit[1]}"
    for part in parts:
        if part in deny.DANGEROUS_MODULE_NAMES:
            return f"names the {part!r} module"
        if part in deny.DANGEROUS_DUNDERS or part in deny.DANGEROUS_CALLABLE_NAMES:
            return f"names {part!r}"
        if part in deny.BUILTINS_CRITICAL:
            return f"names the builtin {part!r}"
    return None


#: Compiled on first use (re caches it): only call arguments that are strings reach it.
_CODE_RE = (
    r"__import__|\bimport\s+[A-Za-z_]|\bos\.(system|popen|exec|spawn)|\bsubprocess\b"
    r"|\b(eval|exec|compile|getattr|open)\s*\(|/bin/(ba|z|da)?sh\b|\b(curl|wget|nc|ncat|bash|sh"
    r"|powershell|cmd\.exe|chmod|rm)\s+-|\$\(|`[^`]+`|\b(curl|wget)\s+\S|;\s*(rm|curl|wget|sh|bash"
    r"|python3?|nc|touch|echo)\b|&&|\|\|?\s*(sh|bash|python3?)\b|\btouch\s+\S|\becho\s+\S"
)


def looks_like_code(text: str) -> bool:
    """Whether ``text`` reads like Python source or a shell command line."""
    return bool(re.search(_CODE_RE, text[:4096]))


#: Loaders that deserialize their argument: key -> (argument index, format hint).
NESTED_LOADERS: dict[str, tuple[int, str | None]] = {
    "pickle.loads": (0, "pickle"),
    "pickle._loads": (0, "pickle"),
    "pickle.load": (0, "pickle"),
    "pickle._load": (0, "pickle"),
    "pickle.Unpickler": (0, "pickle"),
    "pickle._Unpickler": (0, "pickle"),
    "_pickle.loads": (0, "pickle"),
    "_pickle.load": (0, "pickle"),
    "_pickle.Unpickler": (0, "pickle"),
    "cloudpickle.loads": (0, "pickle"),
    "cloudpickle.load": (0, "pickle"),
    "dill.loads": (0, "pickle"),
    "dill.load": (0, "pickle"),
    "dill._dill.loads": (0, "pickle"),
    "joblib.externals.cloudpickle.loads": (0, "pickle"),
    "pandas.read_pickle": (0, "pickle"),
    "numpy.loads": (0, "pickle"),
    "torch.utils._config_module.ConfigModule.load_config": (1, "pickle"),
    "torch.utils.data.datapipes.utils.decoder.basichandlers": (1, "pickle"),
    "torch.load": (0, None),
    "torch.serialization.load": (0, None),
    "torch.storage._load_from_bytes": (0, None),
    "numpy.load": (0, None),
    "numpy.lib.npyio.load": (0, None),
    "numpy.lib._npyio_impl.load": (0, None),
    "joblib.load": (0, None),
    "joblib.numpy_pickle.load": (0, None),
}

#: Safe or known callables that call one of their arguments: key -> argument index.
INVOKERS: dict[str, int] = {
    "torch._tensor._rebuild_from_type_v2": 0,
    "torch._tensor._rebuild_from_type": 0,
    "copyreg._reconstructor": 1,
    "copyreg.__newobj__": 0,
    "copyreg.__newobj_ex__": 0,
}

#: Callables whose string arguments name what they fetch or import.
RESOLVERS: frozenset[str] = frozenset(
    {
        "builtins.getattr",
        "builtins.__import__",
        "builtins.eval",
        "builtins.exec",
        "operator.attrgetter",
        "_operator.attrgetter",
        "operator.methodcaller",
        "_operator.methodcaller",
        "importlib.import_module",
        "importlib.__import__",
        "pkgutil.resolve_name",
        "pydoc.locate",
        "torch._utils._import_dotted_name",
    }
)

#: Callables that turn a literal into bytes the machine can follow.
BYTES_PRODUCERS: frozenset[str] = frozenset(
    {
        "_codecs.encode",
        "codecs.encode",
        "io.BytesIO",
        "_io.BytesIO",
        "builtins.bytes",
        "builtins.bytearray",
        "base64.b64decode",
        "base64.standard_b64decode",
        "base64.urlsafe_b64decode",
        "binascii.a2b_base64",
        "binascii.a2b_hex",
        "binascii.unhexlify",
        "codecs.decode",
        "_codecs.decode",
        "zlib.decompress",
        "bz2.decompress",
        "lzma.decompress",
        "gzip.decompress",
    }
)
