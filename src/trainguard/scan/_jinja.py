"""Static analysis of Jinja chat templates (GGUF metadata, ``tokenizer_config.json``).

Chat templates are Jinja programs that loaders render with the user's
messages. Rendered outside a sandbox they reach Python: llama-cpp-python
before 0.2.72 rendered GGUF ``tokenizer.chat_template`` with a plain
``jinja2.Environment`` (CVE-2024-34359), so a template walking
``__class__.__mro__[1].__subclasses__()`` or ``cycler.__init__.__globals__``
ran shell commands at load time. Sandboxed renderers block those walks, but a
chat template has no legitimate use for them, so their presence is the finding.

The template is *parsed* with jinja2's parser (``Environment.parse`` builds an
AST, nothing is compiled or rendered) and the AST is walked for Python
internals: dunder and private attributes (also spelled as subscripts, through
``|attr``, ``map(attribute=...)`` or built from string pieces and ``{% set %}``
variables), names of dangerous modules and functions, the default globals that
lead to Python objects (``cycler``, ``joiner``, ``lipsum``, ``self``), and tags
that load other templates (``import``, ``include``, ``extends``). When jinja2
is not importable a conservative pattern scan runs instead and says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainguard.findings import Severity
from trainguard.scan._templaterules import (
    HEURISTIC,
    SANDBOX_ESCAPE,
    SUSPICIOUS,
    UNPARSABLE,
    TemplateRules,
    template_rules,
)

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

__all__ = [
    "HEURISTIC",
    "SANDBOX_ESCAPE",
    "SUSPICIOUS",
    "UNPARSABLE",
    "Issue",
    "TemplateRules",
    "analyse",
    "check_template",
    "template_rules",
]

#: Attribute, item and variable names with no use in a chat template but many in an escape.
ESCAPE_NAMES = frozenset(
    """
    os sys subprocess builtins popen eval exec execfile import_module importlib getattr setattr
    delattr globals locals vars func_globals func_code f_globals f_locals f_back f_builtins
    gi_frame gi_code cr_frame ag_frame tb_frame tb_next co_code load_module check_output
    check_call getoutput spawnl spawnv spawnve execv execve execl fork environ breakpoint
    compile mro subclasses
    """.split()  # noqa: SIM905 - a word list reads better than 45 quoted strings
)
#: Jinja default globals and web-framework globals whose attributes lead to Python objects.
GADGET_NAMES = frozenset(
    {"cycler", "joiner", "lipsum", "self", "request", "config", "url_for", "get_flashed_messages"}
)
#: Filters whose string arguments name attributes.
_ATTRIBUTE_FILTERS = frozenset(
    {"attr", "map", "selectattr", "rejectattr", "sort", "groupby", "sum", "unique", "min", "max"}
)
_DUNDER = re.compile(r"__[A-Za-z][A-Za-z0-9_]*__")  # a letter first: "_____" rules are text
_LISTED = 20


@dataclass
class Issue:
    """One construct found in a template; ``kind`` is one of the module's kind constants."""

    kind: str
    what: str
    line: int | None = None
    severity: Severity | None = None


def _name_issue(name: str, how: str, line: int | None) -> Issue | None:
    """Classify an attribute/item/variable name reached through ``how``."""
    bare = name.strip()
    if _DUNDER.fullmatch(bare) or bare in ESCAPE_NAMES or bare == "__import__":
        return Issue(SANDBOX_ESCAPE, f"{how} {bare!r}", line)
    if bare.startswith("_"):
        return Issue(SUSPICIOUS, f"private {how} {bare!r}", line)
    return None


def _string_issue(value: str, how: str, line: int | None) -> Issue | None:
    """A string constant that spells an escape (also reversed) is worth a look on its own."""
    for candidate in (value, value[::-1]):
        match = _DUNDER.search(candidate)
        if match is not None:
            return Issue(SANDBOX_ESCAPE, f"{how} spells {match.group(0)!r}", line)
    return None


def analyse(source: str, *, use_jinja: bool = True, max_chars: int | None = None) -> list[Issue]:
    """Every suspicious construct in ``source``; an empty list means a clean template.

    Templates longer than ``max_chars`` are not parsed, only pattern-scanned.
    """
    if max_chars is not None and len(source) > max_chars:
        what = f"{len(source)} characters exceed the template_chars limit ({max_chars})"
        return [Issue(UNPARSABLE, what, severity=Severity.HIGH), *_pattern_scan(source)]
    if use_jinja:
        try:
            import jinja2  # noqa: F401 - comes with torch, but optional for trainguard
        except ImportError:
            use_jinja = False
    if not use_jinja:
        return [Issue(HEURISTIC, "jinja2 not importable: pattern scan"), *_pattern_scan(source)]
    from jinja2 import TemplateSyntaxError

    try:
        tree = _parse(source)
    except RecursionError:
        return [Issue(UNPARSABLE, "nesting too deep for the parser", severity=Severity.HIGH)]
    except TemplateSyntaxError as exc:
        issues = [Issue(UNPARSABLE, f"syntax error: {exc.message}", exc.lineno)]
        return issues + _pattern_scan(source)  # still say what it seems to contain
    return _Walker().run(tree)


def _parse(source: str) -> Any:
    """Parse (never compile or render) with the extensions chat-template renderers enable."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols

    class _Generation(Extension):
        # transformers' {% generation %} block (assistant-token masks); parsed, not rendered.
        tags = {"generation"}  # noqa: RUF012 - jinja2's class attribute

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    env = jinja2.Environment(extensions=[loopcontrols, _Generation])
    return env.parse(source)


class _Walker:
    """An iterative walk over a jinja2 AST (no recursion on template nesting)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.issues: list[Issue] = []
        #: Names the template defines itself ({% set %}, loop variables, macro arguments).
        self.own: set[str] = set()

    def run(self, tree: Any) -> list[Issue]:
        from jinja2 import nodes

        # Resolve {% set %} chains first so that an indirection anywhere is seen everywhere.
        for _ in range(4):
            changed = False
            for node in _iter_nodes(tree):
                name, value = None, None
                if isinstance(node, nodes.Assign) and isinstance(node.target, nodes.Name):
                    name, value = node.target.name, self.fold(node.node)
                elif isinstance(node, nodes.AssignBlock) and isinstance(node.target, nodes.Name):
                    name, value = node.target.name, self.fold_body(node.body)
                if name is not None and value is not None and self.values.get(name) != value:
                    self.values[name] = value
                    changed = True
            if not changed:
                break
        self.own = {
            n.name
            for n in _iter_nodes(tree)
            if isinstance(n, nodes.Name) and n.ctx in ("store", "param")
        }
        for node in _iter_nodes(tree):
            self.visit(node)
        return self.issues

    def add(self, issue: Issue | None) -> None:
        if issue is not None:
            self.issues.append(issue)

    def visit(self, node: Any) -> None:
        from jinja2 import nodes

        line = getattr(node, "lineno", None)
        if isinstance(node, nodes.Getattr):
            self.add(_name_issue(node.attr, "attribute", line))
        elif isinstance(node, nodes.Getitem):
            self.subscript(node.arg, line)
        elif isinstance(node, (nodes.Filter, nodes.Test)):
            self.filter(node, line)
        elif isinstance(node, nodes.Name) and node.ctx == "load" and node.name not in self.own:
            if node.name in GADGET_NAMES:
                self.add(Issue(SUSPICIOUS, f"global {node.name!r}", line, Severity.MEDIUM))
            elif node.name in ESCAPE_NAMES or _DUNDER.fullmatch(node.name):
                self.add(Issue(SANDBOX_ESCAPE, f"name {node.name!r}", line))
        elif isinstance(node, (nodes.Import, nodes.FromImport, nodes.Include, nodes.Extends)):
            self.add(Issue(SUSPICIOUS, f"{type(node).__name__.lower()} of another template", line))
        elif isinstance(node, nodes.Const) and isinstance(node.value, str):
            self.add(_string_issue(node.value, "string constant", line))
        elif isinstance(node, (nodes.Concat, nodes.Add, nodes.Mod)):
            value = self.fold(node)
            if value is not None:
                self.add(_string_issue(value, "string built from pieces", line))

    def subscript(self, arg: Any, line: int | None) -> None:
        from jinja2 import nodes

        if isinstance(arg, nodes.Slice):
            return
        value = self.fold(arg)
        if value is not None:
            self.add(_name_issue(value, "item", line))
        elif isinstance(arg, (nodes.Concat, nodes.Add, nodes.Mod, nodes.Filter)):
            self.add(Issue(SUSPICIOUS, "item key built at render time", line))

    def filter(self, node: Any, line: int | None) -> None:
        from jinja2 import nodes

        kind = "filter" if isinstance(node, nodes.Filter) else "test"
        name = node.name
        if name in ESCAPE_NAMES or _DUNDER.fullmatch(name):
            self.add(Issue(SANDBOX_ESCAPE, f"{kind} {name!r}", line))
            return
        if kind != "filter" or name not in _ATTRIBUTE_FILTERS:
            return
        args = list(node.args) + [kw.value for kw in node.kwargs if kw.key == "attribute"]
        if name == "map" and node.args and self.fold(node.args[0]) == "attr":
            name, args = "attr", list(node.args[1:])
        if name == "attr":
            self.add(Issue(SUSPICIOUS, "attr filter", line))
            for arg in args[:1]:
                value = self.fold(arg)
                if value is None:
                    self.add(Issue(SUSPICIOUS, "attribute name computed at render time", line))
                else:
                    self.add(_name_issue(value, "attribute via |attr", line))
            return
        for arg in args:
            value = self.fold(arg)
            if value is not None:
                for part in value.split("."):  # map(attribute='a.__class__') follows dots
                    self.add(_name_issue(part, f"attribute via |{name}", line))

    def fold(self, node: Any, depth: int = 0) -> str | None:
        """The string an expression always evaluates to, if it is built from constants."""
        from jinja2 import nodes

        if depth > 50:
            return None
        if isinstance(node, nodes.Const):
            return node.value if isinstance(node.value, str) else None
        if isinstance(node, nodes.TemplateData):
            return str(node.data)
        if isinstance(node, nodes.Name):
            return self.values.get(node.name)
        if isinstance(node, nodes.Concat):
            parts = [self.fold(n, depth + 1) for n in node.nodes]
            return None if None in parts else "".join(p for p in parts if p is not None)
        if isinstance(node, (nodes.Add, nodes.Mod)):
            left, right = self.fold(node.left, depth + 1), self.fold(node.right, depth + 1)
            if left is None or right is None:
                return None
            if isinstance(node, nodes.Add):
                return left + right
            return left.replace("%s", right, 1)
        if isinstance(node, (nodes.List, nodes.Tuple)):
            items = [self.fold(n, depth + 1) for n in node.items]
            return None if None in items else "".join(i for i in items if i is not None)
        if isinstance(node, nodes.Filter) and node.node is not None:
            return self.fold_filter(node, depth)
        return None

    def fold_filter(self, node: Any, depth: int) -> str | None:
        inner = self.fold(node.node, depth + 1)
        if inner is None:
            return None
        transforms: dict[str, Callable[[str], str]] = {
            "join": lambda s: s,  # lists fold to their concatenation already
            "reverse": lambda s: s[::-1],
            "lower": str.lower,
            "upper": str.upper,
            "trim": str.strip,
            "string": lambda s: s,
            "safe": lambda s: s,
        }
        if node.name in transforms:
            return str(transforms[node.name](inner))
        if node.name == "replace" and len(node.args) >= 2:
            old, new = self.fold(node.args[0], depth + 1), self.fold(node.args[1], depth + 1)
            if old is not None and new is not None:
                return inner.replace(old, new)
        if node.name == "format":
            args = [self.fold(a, depth + 1) for a in node.args]
            if None not in args:
                try:
                    return inner % tuple(args)
                except (TypeError, ValueError):
                    return None
        return None

    def fold_body(self, body: list[Any]) -> str | None:
        from jinja2 import nodes

        parts: list[str] = []
        for stmt in body:
            if not isinstance(stmt, nodes.Output):
                return None
            for n in stmt.nodes:
                value = self.fold(n)
                if value is None:
                    return None
                parts.append(value)
        return "".join(parts)


def _iter_nodes(tree: Any) -> Iterator[Any]:
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(list(node.iter_child_nodes())))  # keep source order


# -- fallback -----------------------------------------------------------------------

_PATTERNS: list[tuple[re.Pattern[str], str, str]] = [
    (_DUNDER, SANDBOX_ESCAPE, "dunder name"),
    (
        re.compile(r"\.\s*(" + "|".join(sorted(ESCAPE_NAMES)) + r")\b"),
        SANDBOX_ESCAPE,
        "dangerous attribute",
    ),
    (re.compile(r"\{%-?\s*(import|include|extends|from)\b"), SUSPICIOUS, "loads another template"),
    (re.compile(r"\|\s*attr\b"), SUSPICIOUS, "attr filter"),
    (re.compile(r"\.\s*_[A-Za-z0-9]\w*"), SUSPICIOUS, "private attribute"),
    (
        re.compile(r"\b(" + "|".join(sorted(GADGET_NAMES - {"config", "self"})) + r")\b"),
        SUSPICIOUS,
        "gadget",
    ),
]


def _pattern_scan(source: str) -> list[Issue]:
    issues = []
    for pattern, kind, label in _PATTERNS:
        for match in pattern.finditer(source):
            line = source.count("\n", 0, match.start()) + 1
            issues.append(Issue(kind, f"{label} {match.group(0)!r}", line))
    return issues


# -- reporting ----------------------------------------------------------------------


def check_template(
    source: str, ctx: ScanContext, rules: TemplateRules, *, where: str
) -> list[Issue]:
    """Analyse ``source`` and add one finding per kind found to ``ctx``; returns the issues.

    ``where`` names the template (``tokenizer.chat_template``, ``chat_template[tool_use]``).
    """
    issues = analyse(source, max_chars=ctx.limits.template_chars)
    by_kind: dict[str, list[Issue]] = {}
    for issue in issues:
        by_kind.setdefault(issue.kind, []).append(issue)
    for kind, group in by_kind.items():
        rule = rules[kind]
        severity = max((i.severity or rule.severity) for i in group)
        constructs = [f"line {i.line}: {i.what}" if i.line else i.what for i in group[:_LISTED]]
        ctx.add(
            rule,
            f"{where}: {group[0].what}" + (f" (+{len(group) - 1} more)" if len(group) > 1 else ""),
            severity=severity if severity != rule.severity else None,
            template=where,
            constructs=constructs,
            count=len(group),
            template_chars=len(source),
        )
    return issues
