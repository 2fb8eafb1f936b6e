"""Rules the pickle engine reports (declared once, at import)."""

from __future__ import annotations

from trainguard.findings import Rule, Severity

_FULL = (
    "Loading it needs a full unpickler (torch.load(weights_only=False), pickle.load, "
    "joblib.load), which runs whatever the file says."
)

DANGEROUS_GLOBAL = Rule(
    "pickle.dangerous-global",
    Severity.CRITICAL,
    "Pickle imports a dangerous callable or module",
    "The pickle imports something that runs code, spawns processes, touches files or the "
    "network, or changes process-wide state when the file is loaded. " + _FULL,
)
DOTTED_GLOBAL = Rule(
    "pickle.dotted-global",
    Severity.HIGH,
    "Pickle resolves a dotted attribute path",
    "Protocol 4 STACK_GLOBAL walks a dotted name attribute by attribute (module 'torch', "
    "name 'serialization.os.system' is os.system). Checkpoints never need this; scanners "
    "that compare names against lists are bypassed by it.",
)
COMPUTED_GLOBAL = Rule(
    "pickle.computed-global",
    Severity.CRITICAL,
    "Pickle imports a name computed at load time",
    "STACK_GLOBAL took its module or name from something other than a string literal (the "
    "result of a call, an unset memo slot, a non-string). What it imports cannot be known "
    "without running the pickle.",
)
COMPUTED_CALL = Rule(
    "pickle.computed-call",
    Severity.HIGH,
    "Pickle calls an object produced at load time",
    "A call opcode (REDUCE, NEWOBJ, OBJ...) calls something that is not an imported global: "
    "the result of another call, an attribute fetched at load time, or an unknown value. "
    "This is how gadget chains (getattr, attrgetter, methodcaller) reach os.system.",
)
UNKNOWN_GLOBAL = Rule(
    "pickle.unknown-global",
    Severity.MEDIUM,
    "Pickle imports a global that is on no allowlist",
    "trainguard does not know this global. Importing a module runs its top-level code and "
    "calling the object runs whatever it does. " + _FULL + " Check what it is before loading.",
)
NON_WEIGHTS_GLOBAL = Rule(
    "pickle.non-weights-global",
    Severity.LOW,
    "Pickle needs a full unpickler (data-only class)",
    "The pickle uses a known, data-only class (training arguments, config enums, numpy "
    "scalars...) that torch.load(weights_only=True) rejects, so loading it needs "
    "weights_only=False. Save plain state dicts or safetensors instead.",
)
CODE_ARGUMENT = Rule(
    "pickle.code-argument",
    Severity.HIGH,
    "Pickle passes code or a shell command to a callable",
    "A non-allowlisted callable is called with a string that reads like Python source or a "
    "shell command line: the shape of a payload, whatever the callable is called.",
)
GLOBAL_MUTATION = Rule(
    "pickle.global-mutation",
    Severity.CRITICAL,
    "Pickle modifies a module, class or function",
    "BUILD, APPEND, SETITEM or ADDITEMS target an imported global instead of an object the "
    "pickle created: loading the file sets attributes or items on live modules and classes "
    "(monkeypatching, registering hooks, poisoning later loads).",
)
DUNDER_STATE = Rule(
    "pickle.dunder-state",
    Severity.HIGH,
    "Pickle sets special attributes through BUILD",
    "A BUILD state sets attributes such as __class__ or __dict__ on an object with setattr, "
    "which changes how the object behaves rather than what data it holds.",
)
EXTENSION_CODE = Rule(
    "pickle.extension-code",
    Severity.HIGH,
    "Pickle uses the copyreg extension registry",
    "EXT1/EXT2/EXT4 import whatever the loading process registered under a numeric code "
    "(copyreg.add_extension). The registry is empty by default, so a checkpoint never needs "
    "it; what the code resolves to depends on the loading process.",
)
NESTED_UNRESOLVED = Rule(
    "pickle.nested-unresolved",
    Severity.HIGH,
    "Pickle deserializes data that cannot be scanned",
    "A nested loader (pickle.loads, torch.load, numpy.load...) is called on data built at "
    "load time, so its content could not be extracted and scanned.",
)
TRAILING_DATA = Rule(
    "pickle.trailing-data",
    Severity.MEDIUM,
    "Data follows the pickle's STOP opcode",
    "pickle.load stops at STOP, but a loader that reads again (or another tool) will see "
    "the rest. Trailing bytes hide second payloads and polyglots.",
)
MULTIPLE_STREAMS = Rule(
    "pickle.multiple-streams",
    Severity.HIGH,
    "Several pickles are concatenated in one file",
    "Another pickle follows the first one. Scanners that stop at the first STOP miss it; "
    "loaders that call load() repeatedly run it. Every stream was scanned.",
)
TRUNCATED = Rule(
    "pickle.truncated",
    Severity.HIGH,
    "Pickle ends before STOP",
    "The stream ends in the middle of an opcode or without STOP. The unpickler executes "
    "every opcode before the error, so a broken pickle is not a harmless one: findings "
    "before the break are reported.",
)
UNKNOWN_OPCODE = Rule(
    "pickle.unknown-opcode",
    Severity.HIGH,
    "Pickle contains a byte that is not an opcode",
    "Parsing stopped at a byte that is no pickle opcode. The opcodes before it run when "
    "the file is loaded; what follows was not examined.",
)
MALFORMED_OPCODE = Rule(
    "pickle.malformed-opcode",
    Severity.HIGH,
    "Pickle opcode has a malformed argument",
    "An opcode argument is not valid (unquoted STRING, bad integer, invalid UTF-8, negative "
    "length). The unpickler fails there after running everything before it.",
)
STACK_ERROR = Rule(
    "pickle.stack-error",
    Severity.HIGH,
    "Pickle misuses the stack or marks",
    "An opcode pops more than the stack holds or needs a MARK that is not there. The real "
    "unpickler fails at this point, after running the opcodes before it: a crafted error "
    "is a known way to crash scanners while the payload still executes.",
)
MEMO_ERROR = Rule(
    "pickle.memo-error",
    Severity.HIGH,
    "Pickle reads a memo slot that was never written",
    "GET/BINGET of an unset memo index fails at load time after the opcodes before it ran; "
    "it is also used to desynchronize scanners that track the memo loosely.",
)
INVALID_OPERATION = Rule(
    "pickle.invalid-operation",
    Severity.HIGH,
    "Pickle opcode would fail at load time",
    "An opcode's operands have types the unpickler rejects (a non-string STACK_GLOBAL "
    "name, a call of a literal, odd DICT items). Loading fails here, after everything "
    "before it ran.",
)
UNSUPPORTED_PROTOCOL = Rule(
    "pickle.unsupported-protocol",
    Severity.HIGH,
    "Pickle declares an unsupported protocol",
    "PROTO names a protocol above 5; Python refuses to load it. It is not something a "
    "real pickler writes.",
)
OUT_OF_BAND = Rule(
    "pickle.out-of-band-buffer",
    Severity.MEDIUM,
    "Pickle refers to out-of-band buffers",
    "NEXT_BUFFER (protocol 5) takes data from outside the file, which was not scanned.",
)
LEFTOVER_STACK = Rule(
    "pickle.leftover-stack",
    Severity.LOW,
    "Pickle leaves values on the stack at STOP",
    "A pickler never leaves extra values or open marks behind; values built and dropped "
    "this way were still computed when the file was loaded.",
)
