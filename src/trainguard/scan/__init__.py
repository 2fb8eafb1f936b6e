"""Static analysis of model artifacts. Never imports, unpickles or evaluates what it reads.

Supported: pickle (protocols 0-5), PyTorch zip, legacy and tar checkpoints,
TorchScript archives, numpy ``.npy``/``.npz``, joblib, safetensors, GGUF,
Keras ``.keras``/``.h5``, ONNX and Hugging Face model folders. Formats are
decided from content, never from the file extension alone.

Example:
    >>> from trainguard.scan import scan_buffer
    >>> report = scan_buffer(b"\\x80\\x04K\\x01.", "one.pkl")  # pickle of the int 1
    >>> [f.rule for f in report.findings]
    []
"""

from __future__ import annotations

from trainguard.scan._context import ScanContext
from trainguard.scan._engine import scan_buffer, scan_paths
from trainguard.scan.limits import DEFAULT_LIMITS, ScanLimits

__all__ = ["DEFAULT_LIMITS", "ScanContext", "ScanLimits", "scan_buffer", "scan_paths"]
