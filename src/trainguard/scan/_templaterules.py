"""The rules a chat-template check reports, declared by each caller under its own prefix.

Kept apart from :mod:`trainguard.scan._jinja` so that a format declares its
template rules at import time without loading the template analysis, which
loads with the first template met.
"""

from __future__ import annotations

from trainguard.findings import Rule, Severity

__all__ = [
    "HEURISTIC",
    "SANDBOX_ESCAPE",
    "SUSPICIOUS",
    "UNPARSABLE",
    "TemplateRules",
    "template_rules",
]

#: Kinds of issue; each caller turns them into rules under its own prefix (template_rules).
SANDBOX_ESCAPE = "sandbox-escape"
SUSPICIOUS = "suspicious"
UNPARSABLE = "unparsable"
HEURISTIC = "heuristic"

_RULE_TEXT: dict[str, tuple[Severity, str, str]] = {
    SANDBOX_ESCAPE: (
        Severity.CRITICAL,
        "reaches Python internals",
        "The template accesses dunder attributes or names of Python modules and functions "
        "(__class__, __globals__, __subclasses__, os, popen...). Rendered without a sandbox, as "
        "llama-cpp-python did before 0.2.72 (CVE-2024-34359), this runs arbitrary code when "
        "the model is loaded or chatted with. No chat template needs these constructs.",
    ),
    SUSPICIOUS: (
        Severity.HIGH,
        "uses constructs chat templates do not need",
        "Private attributes, the attr filter, attribute names built at render time, loading "
        "other templates, or Jinja globals that lead to Python objects (cycler, joiner, "
        "lipsum, self) are the building blocks of sandbox escapes. Read the template first.",
    ),
    UNPARSABLE: (
        Severity.MEDIUM,
        "does not parse",
        "The template is not valid Jinja for the standard parser, so it could not be "
        "analysed. Other renderers may still accept it; read it before use.",
    ),
    HEURISTIC: (
        Severity.LOW,
        "checked by pattern matching only",
        "jinja2 is not installed, so the template was checked with conservative patterns "
        "instead of its syntax tree. Install jinja2 for a precise analysis.",
    ),
}


class TemplateRules:
    """The four template rules of one caller (``gguf.chat-template.*``...)."""

    __slots__ = ("by_kind",)

    def __init__(self, by_kind: dict[str, Rule]) -> None:
        self.by_kind = by_kind

    def __repr__(self) -> str:
        return f"TemplateRules({sorted(r.id for r in self.by_kind.values())})"

    def __getitem__(self, kind: str) -> Rule:
        return self.by_kind[kind]


def template_rules(prefix: str, title: str) -> TemplateRules:
    """Declare ``{prefix}.sandbox-escape`` and its siblings; call once, at import time."""
    return TemplateRules(
        {
            kind: Rule(f"{prefix}.{kind}", severity, f"{title} {what}", why)
            for kind, (severity, what, why) in _RULE_TEXT.items()
        }
    )
