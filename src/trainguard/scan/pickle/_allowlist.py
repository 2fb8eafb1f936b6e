"""The allowlist tiers of the pickle policy: what is safe, and what is merely known.

* ``SAFE_GLOBALS``: exactly what ``torch.load(weights_only=True)`` accepts by
  default in torch 2.13 (``torch/_weights_only_unpickler.py``), plus numpy's
  array and scalar reconstruction helpers, which only carry data (torch's own
  error message tells users to allowlist them for checkpoints holding numpy
  arrays). A test keeps this in sync with the installed torch.
* ``KNOWN_EXACT`` and ``BUILTINS_DATA``: data-only classes of popular ML
  libraries that a weights-only load rejects (HF ``TrainingArguments`` and its
  enums, ``argparse.Namespace``, numpy scalar types...). Reported LOW: loading
  them needs ``weights_only=False``.
"""

from __future__ import annotations


def _w(text: str) -> list[str]:
    return text.split()


_STORAGE_TYPES = _w(
    "BFloat16 Bool Byte Char ComplexDouble ComplexFloat Double Float Half Int Long Short"
)
_TENSOR_TYPES = _w("BFloat16 Bool Byte Char Double Float Half Int Long Short")
_SPARSE_TYPES = _w("BFloat16 Byte Char Double Float Half Int Long Short")
_DTYPES = _w(
    "bfloat16 bits16 bits1x8 bits2x4 bits4x2 bits8 bool complex128 complex32 complex64 "
    "float16 float32 float4_e2m1fn_x2 float64 float8_e4m3fn float8_e4m3fnuz float8_e5m2 "
    "float8_e5m2fnuz float8_e8m0fnu qint32 qint8 quint2x4 quint4x2 quint8 "
    "int1 int2 int3 int4 int5 int6 int7 int8 int16 int32 int64 "
    "uint1 uint2 uint3 uint4 uint5 uint6 uint7 uint8 uint16 uint32 uint64"
)
_REBUILD = _w(
    "_rebuild_device_tensor_from_cpu_tensor _rebuild_device_tensor_from_numpy "
    "_rebuild_meta_tensor_no_storage _rebuild_nested_tensor _rebuild_parameter "
    "_rebuild_parameter_with_state _rebuild_qtensor _rebuild_sparse_tensor _rebuild_tensor "
    "_rebuild_tensor_v2 _rebuild_tensor_v3 _rebuild_wrapper_subclass"
)

#: torch 2.13 ``_get_allowed_globals()`` keys, verbatim.
TORCH_WEIGHTS_ONLY: frozenset[str] = frozenset(
    [
        "_codecs.encode",
        "builtins.bytearray",
        "builtins.complex",
        "builtins.set",
        "collections.Counter",
        "collections.OrderedDict",
        "torch.Size",
        "torch.Tensor",
        "torch.device",
        "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
        "torch._tensor._rebuild_from_type_v2",
        "torch.QInt32Storage",
        "torch.QInt8Storage",
        "torch.QUInt2x4Storage",
        "torch.QUInt4x2Storage",
        "torch.QUInt8Storage",
        "torch.per_channel_affine",
        "torch.per_channel_affine_float_qparams",
        "torch.per_channel_symmetric",
        "torch.per_tensor_affine",
        "torch.per_tensor_symmetric",
    ]
    + [f"torch.{t}Storage" for t in _STORAGE_TYPES]
    + [f"torch.cuda.{t}Storage" for t in _STORAGE_TYPES]
    + [f"torch.{t}Tensor" for t in _TENSOR_TYPES]
    + [f"torch.cuda.{t}Tensor" for t in _TENSOR_TYPES]
    + [f"torch.sparse.{t}Tensor" for t in _SPARSE_TYPES]
    + [f"torch.cuda.sparse.{t}Tensor" for t in _SPARSE_TYPES]
    + [f"torch.{d}" for d in _DTYPES]
    + [f"torch._utils.{f}" for f in _REBUILD]
)

#: numpy array/scalar reconstruction (``ndarray.__reduce__``): data only.
NUMPY_DATA: frozenset[str] = frozenset(
    f"{mod}.{name}"
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
) | frozenset({"numpy.ndarray", "numpy.dtype"})

SAFE_GLOBALS: frozenset[str] = TORCH_WEIGHTS_ONLY | NUMPY_DATA

_NUMPY_SCALARS = _w(
    "bool_ bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 intc uintc longlong "
    "ulonglong float16 float32 float64 longdouble complex64 complex128 clongdouble str_ "
    "bytes_ void datetime64 timedelta64 object_ half single double"
)

#: Data-only classes of popular libraries (weights_only=False needed: LOW).
KNOWN_EXACT: frozenset[str] = frozenset(
    [
        "argparse.Namespace",
        "types.SimpleNamespace",
        "collections.defaultdict",
        "collections.deque",
        "collections.ChainMap",
        "collections.UserDict",
        "collections.UserList",
        "collections.UserString",
        "copyreg._reconstructor",
        "copyreg.__newobj__",
        "copyreg.__newobj_ex__",
        "datetime.datetime",
        "datetime.date",
        "datetime.time",
        "datetime.timedelta",
        "datetime.timezone",
        "decimal.Decimal",
        "fractions.Fraction",
        "uuid.UUID",
        "pathlib.Path",
        "pathlib.PosixPath",
        "pathlib.WindowsPath",
        "pathlib.PurePath",
        "pathlib.PurePosixPath",
        "pathlib.PureWindowsPath",
        "re._compile",
        "enum.Enum",
        "json.loads",
        "json.load",
        "io.BytesIO",
        "_io.BytesIO",
        "base64.b64decode",
        "base64.standard_b64decode",
        "base64.urlsafe_b64decode",
        "binascii.a2b_base64",
        "binascii.a2b_hex",
        "binascii.unhexlify",
        "codecs.decode",
        "codecs.encode",
        "_codecs.decode",
        "zlib.decompress",
        "numpy.core.numeric._frombuffer",
        "numpy._core.numeric._frombuffer",
        "numpy.ma.core._mareconstruct",
        "numpy.ma.core.MaskedArray",
        "numpy.matrix",
        "numpy.matrixlib.defmatrix.matrix",
        "numpy.recarray",
        "numpy.record",
        "numpy.core.records.recarray",
        "numpy._core.records.recarray",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random.mtrand.RandomState",
        "numpy.random._mt19937.MT19937",
        "numpy.random._pcg64.PCG64",
        "numpy.random._pcg64.PCG64DXSM",
        "numpy.random._philox.Philox",
        "numpy.random._sfc64.SFC64",
        "numpy.random._generator.Generator",
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "joblib.numpy_pickle_compat.NDArrayWrapper",
        "joblib.numpy_pickle_compat.ZNDArrayWrapper",
        "torch.nn.parameter.Buffer",
        "torch.nn.parameter.UninitializedParameter",
        "torch.nn.parameter.UninitializedBuffer",
        "torch._tensor._rebuild_from_type",
        "torch._utils._rebuild_xla_tensor",
        "torch._utils._rebuild_mtia_tensor",
        "torch.nested._internal.nested_tensor.NestedTensor",
        "torch.nested._internal.nested_tensor._rebuild_njt",
        "torch.distributed.device_mesh.DeviceMesh",
        "torch.distributed.tensor.DTensor",
        "torch.distributed.tensor._api.DTensor",
        "torch.distributed.tensor._dtensor_spec.DTensorSpec",
        "torch.distributed.tensor._dtensor_spec.TensorMeta",
        "torch.distributed.tensor.placement_types.Partial",
        "torch.distributed.tensor.placement_types.Replicate",
        "torch.distributed.tensor.placement_types.Shard",
        "torch.contiguous_format",
        "torch.channels_last",
        "torch.channels_last_3d",
        "torch.preserve_format",
        "torch.strided",
        "torch.sparse_coo",
        "torch.sparse_csr",
        "torch.dtype",
        "torch.layout",
        "torch.memory_format",
        "transformers.training_args.TrainingArguments",
        "transformers.training_args.OptimizerNames",
        "transformers.training_args.ParallelMode",
        "transformers.training_args_seq2seq.Seq2SeqTrainingArguments",
        "transformers.trainer_utils.IntervalStrategy",
        "transformers.trainer_utils.SaveStrategy",
        "transformers.trainer_utils.HubStrategy",
        "transformers.trainer_utils.SchedulerType",
        "transformers.trainer_utils.EvaluationStrategy",
        "transformers.trainer_utils.FSDPOption",
        "transformers.trainer_utils.ShardedDDPOption",
        "transformers.debug_utils.DebugOption",
        "transformers.trainer_pt_utils.AcceleratorConfig",
        "transformers.configuration_utils.PretrainedConfig",
        "transformers.configuration_utils.PreTrainedConfig",
        "transformers.generation.configuration_utils.GenerationConfig",
        "transformers.utils.quantization_config.BitsAndBytesConfig",
        "transformers.utils.quantization_config.QuantizationMethod",
        "peft.utils.peft_types.PeftType",
        "peft.utils.peft_types.TaskType",
    ]
    + [f"numpy.{s}" for s in _NUMPY_SCALARS]
    + [f"numpy.dtypes.{s}" for s in ("StringDType", "ObjectDType", "VoidDType")]
)

#: Builtins that only construct data (LOW: still not weights-only).
BUILTINS_DATA: frozenset[str] = frozenset(
    _w(
        "int float complex str bytes bytearray bool tuple list dict set frozenset slice "
        "range object reversed enumerate zip Ellipsis NotImplemented print memoryview "
        "True False None"
    )
)
