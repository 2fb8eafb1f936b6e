"""Static analysis for scale-conditioned triggers: code that behaves differently at scale.

The 2024 sabotage fired only on jobs with more than 256 GPUs, so it never showed
in a small reproduction. This module reads Python source with :mod:`ast` (it
never imports or executes it) and reports comparisons of a *scale quantity*
against a constant:

* world size: ``dist.get_world_size()``, ``torch.cuda.device_count()``, the
  ``WORLD_SIZE``/``LOCAL_WORLD_SIZE``/``NNODES``/``SLURM_NNODES``... environment
  variables, names like ``world_size``/``num_nodes``, ``len(hosts)``;
* rank: ``dist.get_rank()``, ``RANK``/``LOCAL_RANK``/``SLURM_PROCID``, names like ``rank``;
* host name: ``socket.gethostname()``, ``platform.node()``, ``HOSTNAME``, ``MASTER_ADDR``.

Values derived from those (``ws = int(os.environ["WORLD_SIZE"]) // 8``) are
followed through assignments, and a module-level constant on the other side
(``THRESHOLD = 256``) is resolved. Common, harmless forms are not reported:
``world_size > 1``, ``rank == 0``, ``local_rank == 0``. A branch whose body
sleeps, kills, exits, reseeds or edits tensors in place is reported as critical.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass

from trainguard.findings import Finding, Rule, Severity

__all__ = [
    "HOST_BRANCH",
    "RANK_BRANCH",
    "UNPARSABLE",
    "WORLD_BRANCH",
    "scan_source",
]

WORLD_BRANCH = Rule(
    "sentinel.scale.world-size-branch",
    Severity.HIGH,
    "Code branches on the job's world size",
    "A comparison of the world size (or node/GPU count) with a constant makes the code behave "
    "differently on large jobs. The 2024 sabotage fired only above 256 GPUs, so small runs and "
    "debugging sessions never saw it. Run the job once in canary mode "
    "(`trainguard run --canary-world-size N`) so such a branch fires where the sentinel watches.",
)
RANK_BRANCH = Rule(
    "sentinel.scale.rank-branch",
    Severity.MEDIUM,
    "Code branches on a rank number other than the usual rank 0",
    "Comparing a rank with a large constant (rank >= 256) only fires on large jobs; singling out "
    "one specific rank targets one process. Both are ways to hide behaviour from small runs.",
)
HOST_BRANCH = Rule(
    "sentinel.scale.host-branch",
    Severity.MEDIUM,
    "Code branches on the host name",
    "Comparing the host name with constants makes code behave differently on particular "
    "machines or clusters, which a reproduction elsewhere never shows.",
)
UNPARSABLE = Rule(
    "sentinel.scale.unparsable",
    Severity.MEDIUM,
    "Training code could not be analysed for scale triggers",
    "The file could not be read or parsed, so it was not checked; a clean result does not cover it.",
)

_WORLD_ENV = frozenset(
    {
        "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_WORLD_SIZE", "ROLE_WORLD_SIZE", "NNODES",
        "NUM_NODES", "SLURM_NTASKS", "SLURM_NNODES", "SLURM_JOB_NUM_NODES", "SLURM_NPROCS",
        "SLURM_GPUS", "SLURM_GPUS_ON_NODE", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE",
        "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE", "TORCHELASTIC_MAX_RESTARTS",
    }
)  # fmt: skip
_RANK_ENV = frozenset(
    {
        "RANK", "LOCAL_RANK", "GROUP_RANK", "ROLE_RANK", "NODE_RANK", "SLURM_PROCID",
        "SLURM_NODEID", "SLURM_LOCALID", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
        "PMI_RANK", "PMIX_RANK",
    }
)  # fmt: skip
_HOST_ENV = frozenset(
    {"HOSTNAME", "HOST", "SLURMD_NODENAME", "SLURM_NODELIST", "SLURM_JOB_NODELIST", "MASTER_ADDR"}
)
_WORLD_CALLS = frozenset(
    {"get_world_size", "device_count", "xrt_world_size", "process_count", "get_node_count"}
)
_RANK_CALLS = frozenset(
    {
        "get_rank",
        "get_local_rank",
        "get_global_rank",
        "get_node_local_rank",
        "get_ordinal",
        "process_index",
    }
)
_HOST_CALLS = frozenset({"gethostname", "getfqdn", "node", "uname", "gethostbyname"})
_WORLD_NAME = re.compile(
    r"(world_?size|num_?(gpus|nodes|processes|procs|ranks|workers|devices)|n_?(gpus|nodes|ranks|procs)|nnodes|nproc(s|_per_node)?)$",
    re.I,
)
_RANK_NAME = re.compile(r"^(global_|local_|node_|world_|group_)?rank$", re.I)
_HOST_NAME = re.compile(r"^(host_?name|node_?name|hostname)$", re.I)
_COUNTED = re.compile(r"(hosts|nodes|ranks|gpus|devices|workers)$", re.I)
#: Calls in a branch body that make a scale trigger an attack rather than tuning.
_SABOTAGE_CALLS = frozenset(
    {
        "sleep", "kill", "killpg", "_exit", "abort", "raise_signal", "pthread_kill", "system",
        "Popen", "manual_seed", "manual_seed_all", "seed", "set_rng_state", "neg_", "zero_",
        "mul_", "copy_", "register_forward_hook", "register_step_pre_hook",
    }
)  # fmt: skip
_ORDER = (ast.Gt, ast.GtE, ast.Lt, ast.LtE)
_EQUAL = (ast.Eq, ast.NotEq, ast.Is, ast.IsNot)
_MEMBER = (ast.In, ast.NotIn)


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute):
            return func.attr
        if isinstance(func, ast.Name):
            return func.id
    return None


def _env_key(node: ast.AST) -> str | None:
    """``KEY`` of ``os.environ["KEY"]``, ``os.environ.get("KEY")``, ``os.getenv("KEY")``."""
    if isinstance(node, ast.Subscript):
        base = node.value
        if (isinstance(base, ast.Attribute) and base.attr == "environ") or (
            isinstance(base, ast.Name) and base.id == "environ"
        ):
            key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                return key.value
    if isinstance(node, ast.Call) and node.args:
        func, key = node.func, node.args[0]
        getter = (
            isinstance(func, ast.Attribute)
            and (
                (func.attr == "get" and isinstance(func.value, (ast.Attribute, ast.Name))
                 and getattr(func.value, "attr", getattr(func.value, "id", None)) == "environ")
                or func.attr == "getenv"
            )
        ) or (isinstance(func, ast.Name) and func.id == "getenv")  # fmt: skip
        if getter and isinstance(key, ast.Constant) and isinstance(key.value, str):
            return key.value
    return None


def _identifier(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


@dataclass(frozen=True)
class _Scale:
    kind: str  # world | rank | host
    source: str  # what the quantity is, in words


class _Analyzer:
    def __init__(self, tree: ast.Module, source: str, filename: str) -> None:
        self.tree = tree
        self.source = source
        self.filename = filename
        self.tainted: dict[str, _Scale] = {}
        self.constants: dict[str, object] = {}
        # Module-level constants (THRESHOLD = 2 ** 8), in order, folded without eval.
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign):
                value = self.constant(stmt.value)
                if value is None:
                    continue
                for target in stmt.targets:
                    if isinstance(target, ast.Name):
                        self.constants[target.id] = value

    # -- what is a scale quantity ---------------------------------------------------
    def scale_of(self, node: ast.AST) -> _Scale | None:
        """The scale quantity ``node`` (or anything inside it) depends on, if any."""
        for sub in ast.walk(node):
            found = self._direct(sub)
            if found is not None:
                return found
        return None

    def _direct(self, node: ast.AST) -> _Scale | None:
        key = _env_key(node)
        if key is not None:
            if key in _WORLD_ENV:
                return _Scale("world", f"the {key} environment variable")
            if key in _RANK_ENV:
                return _Scale("rank", f"the {key} environment variable")
            if key in _HOST_ENV:
                return _Scale("host", f"the {key} environment variable")
        name = _call_name(node)
        if name in _WORLD_CALLS:
            return _Scale("world", f"{name}()")
        if name in _RANK_CALLS:
            return _Scale("rank", f"{name}()")
        if name in _HOST_CALLS:
            return _Scale("host", f"{name}()")
        if name == "len" and isinstance(node, ast.Call) and node.args:
            counted = _identifier(node.args[0])
            if counted and _COUNTED.search(counted):
                return _Scale("world", f"len({counted})")
        if isinstance(node, ast.Attribute) and node.attr == "nodename":
            return _Scale("host", "os.uname().nodename")
        ident = _identifier(node)
        if ident is not None and isinstance(node, (ast.Name, ast.Attribute)):
            if ident in self.tainted and isinstance(node, ast.Name):
                return self.tainted[ident]
            if _WORLD_NAME.search(ident):
                return _Scale("world", ident)
            if _RANK_NAME.match(ident):
                return _Scale("rank", ident)
            if _HOST_NAME.match(ident):
                return _Scale("host", ident)
        return None

    def propagate(self) -> None:
        """Names assigned from scale quantities become scale quantities (to a fixpoint)."""
        for _ in range(8):
            changed = False
            for node in ast.walk(self.tree):
                targets: list[ast.AST] = []
                value: ast.AST | None = None
                if isinstance(node, ast.Assign):
                    targets, value = list(node.targets), node.value
                elif (
                    isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None
                ) or isinstance(node, ast.NamedExpr):
                    targets, value = [node.target], node.value
                if value is None:
                    continue
                scale = self.scale_of(value)
                if scale is None:
                    continue
                for target in targets:
                    if isinstance(target, ast.Name) and target.id not in self.tainted:
                        self.tainted[target.id] = scale
                        changed = True
            if not changed:
                return

    # -- comparisons -----------------------------------------------------------------
    def constant(self, node: ast.AST) -> object:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = self.constant(node.operand)
            return -inner if isinstance(inner, (int, float)) else None
        if isinstance(node, ast.Name) and node.id in self.constants:
            return self.constants[node.id]
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            values = [self.constant(e) for e in node.elts]
            return tuple(values) if all(v is not None for v in values) else None
        if isinstance(node, ast.BinOp):  # 2 ** 8, 32 * 8, 1 << 8
            left, right = self.constant(node.left), self.constant(node.right)
            if isinstance(left, int) and isinstance(right, int):
                return _fold(node.op, left, right)
        return None

    def comparisons(self) -> Iterator[tuple[ast.AST, ast.cmpop, _Scale, object]]:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
                    for quantity, other in ((left, right), (right, left)):
                        scale = self.scale_of(quantity)
                        value = self.constant(other)
                        if scale is not None and value is not None and self.scale_of(other) is None:
                            yield node, op, scale, value
                            break
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("startswith", "endswith", "match", "fullmatch", "search")
            ):
                # host.startswith("gpu-17"), re.match(pattern, host)
                target = (
                    node.func.value
                    if node.func.attr.endswith("with")
                    else (node.args[1] if len(node.args) > 1 else None)
                )
                scale = self.scale_of(target) if target is not None else None
                if scale is not None and scale.kind == "host":
                    pattern = self.constant(node.args[0]) if node.args else None
                    yield node, ast.Eq(), scale, pattern


def _fold(op: ast.operator, a: int, b: int) -> int | None:
    """Constant-fold small integer arithmetic (no eval; bounded so ``9 ** 9 ** 9`` cannot hang)."""
    if isinstance(op, ast.Add):
        return a + b
    if isinstance(op, ast.Sub):
        return a - b
    if isinstance(op, ast.Mult):
        return a * b
    if isinstance(op, ast.FloorDiv) and b:
        return a // b
    if isinstance(op, ast.Pow) and 0 <= b < 64 and abs(a) < 2**16:
        return int(a**b)
    if isinstance(op, ast.LShift) and 0 <= b < 64:
        return a << b
    return None


def _severity(scale: _Scale, op: ast.cmpop, value: object) -> Severity | None:
    """How suspicious the comparison is, or ``None`` for the common harmless forms."""
    if scale.kind == "host":
        return Severity.MEDIUM
    values = value if isinstance(value, tuple) else (value,)
    # "32" read from the environment is compared as a string: still a count.
    numbers = [
        int(v) if isinstance(v, str) else v
        for v in values
        if isinstance(v, (int, float)) or (isinstance(v, str) and v.isdigit())
    ]
    if not numbers:
        return Severity.LOW if isinstance(value, str) else None
    big = max(abs(v) for v in numbers)
    if isinstance(op, (_ORDER, _MEMBER)):
        if big >= 32:
            return Severity.HIGH
        if big >= 8:
            return Severity.MEDIUM
        return Severity.LOW if big > 2 and scale.kind == "world" else None
    if isinstance(op, _EQUAL):
        if big >= 8:
            return Severity.MEDIUM
        if scale.kind == "rank" and big >= 1:
            return Severity.LOW
        return Severity.LOW if big > 2 else None
    return None


def _branch_calls(parents: dict[ast.AST, ast.AST], node: ast.AST) -> list[str]:
    """Sabotage-like calls in the body of the ``if``/``while``/ternary that tests ``node``."""
    current = node
    while current in parents:
        parent = parents[current]
        if isinstance(parent, (ast.If, ast.While, ast.IfExp)) and parent.test is current:
            body: list[ast.AST] = (
                [parent.body, parent.orelse] if isinstance(parent, ast.IfExp)
                else [*parent.body, *parent.orelse]
            )  # fmt: skip
            names = {_call_name(sub) for stmt in body for sub in ast.walk(stmt)}
            return sorted(n for n in names if n in _SABOTAGE_CALLS)
        if isinstance(parent, (ast.stmt,)):
            return []
        current = parent
    return []


def scan_source(source: str, filename: str) -> list[Finding]:
    """Findings for the scale-conditioned comparisons in ``source`` (never executed)."""
    try:
        tree = ast.parse(source, filename=filename)
    except (SyntaxError, ValueError) as exc:
        return [UNPARSABLE.finding(filename, f"could not parse: {exc}")]
    analyzer = _Analyzer(tree, source, filename)
    analyzer.propagate()
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    findings: list[Finding] = []
    seen: set[tuple[int, int]] = set()
    for node, op, scale, value in analyzer.comparisons():
        severity = _severity(scale, op, value)
        if severity is None:
            continue
        line, col = getattr(node, "lineno", 0), getattr(node, "col_offset", 0)
        if (line, col) in seen:
            continue
        seen.add((line, col))
        calls = _branch_calls(parents, node)
        if calls:
            severity = Severity.CRITICAL
        rule = {"world": WORLD_BRANCH, "rank": RANK_BRANCH, "host": HOST_BRANCH}[scale.kind]
        code = ast.get_source_segment(source, node) or ast.unparse(node)
        message = f"{filename}:{line}: `{code[:120]}` compares {scale.source} with {value!r}"
        if calls:
            message += f", and the branch calls {', '.join(calls)}"
        findings.append(
            rule.finding(
                f"{filename}:{line}",
                message,
                severity=severity,
                file=filename,
                line=line,
                column=col,
                code=code[:300],
                quantity=scale.source,
                kind=scale.kind,
                operator=type(op).__name__,
                constant=repr(value)[:100],
                branch_calls=calls,
            )
        )
    return findings
