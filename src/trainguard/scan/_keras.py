"""Static analysis of Keras model configs (``.keras`` ``config.json``, ``.h5`` ``model_config``).

Loading a Keras model rebuilds every object its config names, so the config
decides what code runs:

* ``Lambda`` layers (and ``__lambda__`` objects) carry marshalled Python
  bytecode that ``load_model`` turns back into a function (CVE-2024-3660).
  Keras 3 ``safe_mode`` refuses it for ``.keras`` archives, but legacy ``.h5``
  loading ignores ``safe_mode`` (CVE-2025-9905) and older Keras has none.
* Function references (``{"class_name": "function", "module": ...}``, Keras 2
  ``Lambda`` ``module``/``function`` pairs) import and call a named function:
  ``builtins.exec`` or ``keras.config.enable_unsafe_deserialization``
  bypass ``safe_mode`` (CVE-2025-1550, CVE-2025-9906, CVE-2025-8747).
* Custom objects (classes outside Keras) run the user's code of that name.
* ``TFOpLambda`` layers call TensorFlow functions by name, file I/O included.

The walk is iterative, bounded by ``ScanLimits.message_depth`` and
``metadata_entries``; the bytecode is decoded only to hash it and list the
names it contains, never unmarshalled.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

from trainguard.errors import LimitExceeded
from trainguard.findings import Rule, Severity

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

__all__ = [
    "CONFIG_INVALID",
    "CUSTOM_OBJECT",
    "FUNCTION_REFERENCE",
    "LAMBDA_CODE",
    "TF_OP",
    "UNSAFE_REFERENCE",
    "analyse_config",
    "analyse_json",
]

LAMBDA_CODE = Rule(
    "keras.lambda-code",
    Severity.CRITICAL,
    "Keras Lambda layer carries Python bytecode",
    "The config stores a function as marshalled bytecode; load_model turns it back into a "
    "function and runs it (CVE-2024-3660). Keras 3 safe_mode refuses it only for .keras "
    "archives; .h5 loading ignores safe_mode (CVE-2025-9905). Never load it unless you "
    "wrote it.",
)
UNSAFE_REFERENCE = Rule(
    "keras.unsafe-reference",
    Severity.CRITICAL,
    "Keras config references a dangerous module or function",
    "The config names a module or function that runs commands, touches files or the "
    "network, or switches off Keras safe_mode (os, subprocess, builtins, "
    "keras.config.enable_unsafe_deserialization, keras.models.load_model...). Loading it "
    "calls that function (CVE-2025-1550, CVE-2025-9906, CVE-2025-8747).",
)
FUNCTION_REFERENCE = Rule(
    "keras.function-reference",
    Severity.HIGH,
    "Keras config calls a named function outside Keras",
    "A Lambda layer or serialized function names a function by module and name; loading "
    "imports that module and calls it with arguments from the config.",
)
CUSTOM_OBJECT = Rule(
    "keras.custom-object",
    Severity.MEDIUM,
    "Keras model needs custom objects",
    "Classes outside Keras are rebuilt from the user's own code of that name (custom_objects "
    "or registered classes). Whatever is registered under that name at load time runs.",
)
TF_OP = Rule(
    "keras.tf-op",
    Severity.MEDIUM,
    "Keras model calls TensorFlow functions by name",
    "TFOpLambda/SlicingOpLambda layers call a TensorFlow function named in the config; "
    "tf.io and raw_ops functions read and write files.",
)
CONFIG_INVALID = Rule(
    "keras.config-invalid",
    Severity.MEDIUM,
    "Keras model config is not valid JSON",
    "The model config could not be parsed, so the layers it builds were not analysed. "
    "Keras would fail to load it, or another loader may read it differently.",
)

#: Module roots whose functions run commands, touch files or the network, or load code.
DANGEROUS_MODULES = frozenset(
    """
    os posix nt subprocess builtins __builtin__ sys shutil socket importlib pickle marshal
    ctypes runpy code codeop pty commands webbrowser requests urllib urllib3 http httpx ftplib
    telnetlib smtplib multiprocessing signal tempfile pathlib io glob dill cloudpickle joblib
    """.split()  # noqa: SIM905 - a word list
)
#: Keras functions that load other models, fetch files or switch safe_mode off.
DANGEROUS_KERAS = re.compile(
    r"(enable_unsafe_deserialization|load_model|load_weights|get_file|set_global_attribute"
    r"|model_from_json|model_from_yaml|deserialize_keras_object|safe_mode)"
)
_KERAS_ROOTS = frozenset({"keras", "tf_keras", "tensorflow", "tf"})
#: Modules whose functions are plain math (activations, losses, metrics, ops).
_SAFE_FUNCTION_MODULE = re.compile(
    r"^(keras|tf_keras|tensorflow\.keras)(\.src)?\.(activations|losses|metrics|ops|backend|initializers)\b"
)
_TF_OP_RISKY = re.compile(
    r"^(compat\.v1\.)?(io|raw_ops|gfile|py_function|numpy_function|py_func|load_library|load_op_library|saved_model|debugging|summary)\b"
)
#: TensorFlow namespaces of pure tensor math, which TFOpLambda layers call all the time.
_TF_OP_MATH = re.compile(
    r"^(compat\.v1\.)?(__operators__|math|nn|linalg|signal|bitwise|image\.resize\w*|reshape"
    r"|concat|stack|unstack|transpose|expand_dims|squeeze|cast|shape|split|tile|gather\w*|where"
    r"|clip_by_value|reduce_\w+|broadcast_to|ones_like|zeros_like|fill|range|one_hot|einsum"
    r"|matmul|identity|pad|slice|strided_slice|sequence_mask|argmax|argmin|cumsum|sort|norm)$"
    r"|^(compat\.v1\.)?(__operators__|math|nn|linalg|signal|bitwise)\."
)
#: Keras 2 configs have no "module" key; classes outside this list are custom.
_KNOWN_CLASSES = frozenset(
    """
    Sequential Functional Model InputLayer Dense Activation Dropout Flatten Reshape Permute
    RepeatVector Lambda Masking Embedding Conv1D Conv2D Conv3D Conv1DTranspose Conv2DTranspose
    Conv3DTranspose SeparableConv1D SeparableConv2D DepthwiseConv1D DepthwiseConv2D
    Convolution1D Convolution2D Convolution3D Cropping1D Cropping2D Cropping3D UpSampling1D
    UpSampling2D UpSampling3D ZeroPadding1D ZeroPadding2D ZeroPadding3D MaxPooling1D
    MaxPooling2D MaxPooling3D AveragePooling1D AveragePooling2D AveragePooling3D MaxPool1D
    MaxPool2D MaxPool3D AvgPool1D AvgPool2D AvgPool3D GlobalMaxPooling1D GlobalMaxPooling2D
    GlobalMaxPooling3D GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D
    GlobalMaxPool1D GlobalMaxPool2D GlobalAvgPool1D GlobalAvgPool2D LocallyConnected1D
    LocallyConnected2D RNN SimpleRNN GRU LSTM SimpleRNNCell GRUCell LSTMCell StackedRNNCells
    ConvLSTM1D ConvLSTM2D ConvLSTM3D Bidirectional TimeDistributed Add Subtract Multiply
    Average Maximum Minimum Concatenate Dot BatchNormalization LayerNormalization
    GroupNormalization UnitNormalization SyncBatchNormalization Normalization
    GaussianNoise GaussianDropout AlphaDropout SpatialDropout1D SpatialDropout2D
    SpatialDropout3D ActivityRegularization ReLU LeakyReLU PReLU ELU ThresholdedReLU Softmax
    MultiHeadAttention Attention AdditiveAttention GroupQueryAttention Identity Rescaling
    Resizing CenterCrop RandomFlip RandomRotation RandomZoom RandomCrop RandomContrast
    RandomTranslation RandomBrightness TextVectorization StringLookup IntegerLookup
    CategoryEncoding Hashing Discretization HashedCrossing InputSpec TFOpLambda
    SlicingOpLambda Wrapper EinsumDense Cropping CategoryCrossing
    GlorotUniform GlorotNormal HeUniform HeNormal LecunUniform LecunNormal Zeros Ones
    Constant RandomUniform RandomNormal TruncatedNormal Orthogonal Identity VarianceScaling
    L1 L2 L1L2 OrthogonalRegularizer MaxNorm MinMaxNorm NonNeg UnitNorm RadialConstraint
    Adam AdamW Adamax Adadelta Adagrad Adafactor Nadam RMSprop SGD Ftrl Lion LossScaleOptimizer
    ExponentialDecay PiecewiseConstantDecay PolynomialDecay InverseTimeDecay CosineDecay
    CosineDecayRestarts MeanSquaredError MeanAbsoluteError MeanAbsolutePercentageError
    MeanSquaredLogarithmicError BinaryCrossentropy CategoricalCrossentropy
    SparseCategoricalCrossentropy BinaryFocalCrossentropy CategoricalFocalCrossentropy Hinge
    SquaredHinge CategoricalHinge Huber LogCosh Poisson KLDivergence CosineSimilarity Accuracy
    BinaryAccuracy CategoricalAccuracy SparseCategoricalAccuracy TopKCategoricalAccuracy
    SparseTopKCategoricalAccuracy AUC Precision Recall Mean Sum MeanMetricWrapper
    DTypePolicy Policy FloatDTypePolicy QuantizedDTypePolicy __tensor__ __numpy__ __bytes__
    __tuple__ __typespec__ __ellipsis__ __slice__ TensorShape
    """.split()  # noqa: SIM905 - a word list
)
_PRINTABLE = re.compile(rb"[A-Za-z_][A-Za-z0-9_.]{2,}")
_LISTED = 20


def analyse_json(text: str | bytes, ctx: ScanContext, *, where: str) -> None:
    """Parse a config and analyse it; an unparsable config is a finding."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        ctx.add(CONFIG_INVALID, f"{where}: {type(exc).__name__}: {exc}"[:300], where=where)
        return
    analyse_config(obj, ctx, where=where)


def analyse_config(obj: Any, ctx: ScanContext, *, where: str) -> None:
    """Walk a parsed config (any JSON value) and report what loading it would run."""
    limits = ctx.limits
    found = _Found()
    stack: list[tuple[Any, int, str]] = [(obj, 0, "")]
    visited = 0
    while stack:
        node, depth, layer = stack.pop()
        visited += 1
        if visited > limits.metadata_entries:
            raise LimitExceeded(
                "metadata_entries", visited, limits.metadata_entries, subject=ctx.subject
            )
        if depth > limits.message_depth:
            raise LimitExceeded("message_depth", depth, limits.message_depth, subject=ctx.subject)
        if isinstance(node, dict):
            cfg = node.get("config")
            if isinstance(cfg, dict) and isinstance(cfg.get("name"), str):
                layer = cfg["name"]
            _inspect(node, layer, found)
            stack.extend((v, depth + 1, layer) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1, layer) for v in node)
    found.report(ctx, where)


class _Found:
    """What the walk found, grouped so that one finding names every instance."""

    def __init__(self) -> None:
        self.by_rule: dict[str, tuple[Rule, list[dict[str, Any]]]] = {}

    def add(self, rule: Rule, **item: Any) -> None:
        self.by_rule.setdefault(rule.id, (rule, []))[1].append(item)

    def report(self, ctx: ScanContext, where: str) -> None:
        for rule, items in self.by_rule.values():
            severity = max((i.pop("severity", rule.severity) for i in items), default=rule.severity)
            first = items[0]
            summary = ", ".join(f"{i.get('layer') or '?'}: {i['what']}" for i in items[:3])
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            ctx.add(
                rule,
                f"{where}: {summary}{more}",
                severity=None if severity == rule.severity else severity,
                where=where,
                items=items[:_LISTED],
                count=len(items),
                **({"layer": first.get("layer")} if first.get("layer") else {}),
            )


def _inspect(node: dict[str, Any], layer: str, found: _Found) -> None:
    class_name = node.get("class_name")
    module = node.get("module")
    cfg = node.get("config")
    if not isinstance(class_name, str):
        _keras2_lambda(node, layer, found)  # a layer's "config" dict (Lambda keys live here)
        return
    if class_name == "__lambda__" and isinstance(cfg, dict):
        _bytecode(cfg.get("code"), layer, found)
        return
    if class_name == "function":
        _function_reference(module, cfg, layer, found)
        return
    if class_name in ("TFOpLambda", "SlicingOpLambda") and isinstance(cfg, dict):
        function = str(cfg.get("function", ""))
        if _TF_OP_RISKY.match(function):
            severity = Severity.HIGH
        elif _TF_OP_MATH.match(function):
            severity = Severity.LOW  # what tf.keras writes for x + y, tf.reshape...
        else:
            severity = TF_OP.severity
        found.add(
            TF_OP,
            layer=layer,
            what=f"{class_name} calls tf.{function}",
            function=function,
            severity=severity,
        )
    for key in ("module", "fn_module"):
        value = node.get(key)
        if isinstance(value, str) and _root(value) in DANGEROUS_MODULES:
            found.add(UNSAFE_REFERENCE, layer=layer, what=f"{key} {value!r}", module=value)
    registered = node.get("registered_name")
    custom = (
        isinstance(registered, str) and ">" in registered and not _builtin_registered(registered)
    )
    if isinstance(module, str):
        custom = custom or _root(module) not in _KERAS_ROOTS
    elif "config" in node:  # a Keras 2 object: no module, so judge by class name
        known = class_name in _KNOWN_CLASSES or _builtin_registered(class_name)
        custom = custom or (not known and not class_name.startswith("__"))
    if custom and _root(str(module or "")) not in DANGEROUS_MODULES:
        found.add(
            CUSTOM_OBJECT,
            layer=layer,
            what=f"{class_name} from {module or registered or 'user code'}",
            class_name=class_name,
            module=module,
            registered_name=registered,
        )


def _keras2_lambda(cfg: dict[str, Any], layer: str, found: _Found) -> None:
    """Keras 2 Lambda configs: function (+ output_shape, mask) as bytecode or a module name."""
    for key in ("function", "output_shape", "mask"):
        value = cfg.get(key)
        kind = cfg.get(f"{key}_type")
        if kind == "lambda" and isinstance(value, list) and value and isinstance(value[0], str):
            _bytecode(value[0], layer, found, what=f"Lambda {key}")
        elif kind == "lambda" and isinstance(value, str):
            _bytecode(value, layer, found, what=f"Lambda {key}")
        elif kind == "function" and isinstance(value, str):
            module = cfg.get(f"{key}_module") if key != "function" else cfg.get("module")
            _function_reference(module, value, layer, found)
    arguments = cfg.get("arguments")
    if isinstance(arguments, dict) and arguments.get("safe_mode") is False:
        found.add(UNSAFE_REFERENCE, layer=layer, what="Lambda passes safe_mode=False")


def _function_reference(module: Any, name: Any, layer: str, found: _Found) -> None:
    module_s = module if isinstance(module, str) else ""
    name_s = name if isinstance(name, str) else json.dumps(name)[:80]
    target = f"{module_s}.{name_s}" if module_s else name_s
    if _root(module_s) in DANGEROUS_MODULES or DANGEROUS_KERAS.search(name_s):
        found.add(UNSAFE_REFERENCE, layer=layer, what=f"calls {target}", function=target)
    elif _SAFE_FUNCTION_MODULE.match(module_s):
        return
    else:
        found.add(FUNCTION_REFERENCE, layer=layer, what=f"calls {target}", function=target)


def _bytecode(code: Any, layer: str, found: _Found, *, what: str = "lambda") -> None:
    item: dict[str, Any] = {"layer": layer, "what": f"{what} with marshalled bytecode"}
    if isinstance(code, str):
        try:
            raw = base64.b64decode(code.encode("ascii", "replace"), validate=False)
        except (binascii.Error, ValueError):
            raw = code.encode("utf-8", "replace")
        item.update(
            code_bytes=len(raw),
            code_sha256=hashlib.sha256(raw).hexdigest(),
            # Names in the code object (co_names, strings) say what it touches.
            names=list(dict.fromkeys(m.decode() for m in _PRINTABLE.findall(raw)))[:_LISTED],
        )
    found.add(LAMBDA_CODE, **item)


def _builtin_registered(name: str) -> bool:
    """TF 2.11+ registers its own optimizers as ``Custom>Adam``: a Keras class, not user code."""
    package, _, cls = name.partition(">")
    return package in ("Custom", "keras", "Keras") and cls in _KNOWN_CLASSES


def _root(module: str) -> str:
    return module.split(".", 1)[0]
