"""The real loaders that execute corpus samples, as snippets for a throwaway subprocess.

Only ``tests/e2e/test_corpus_proof.py`` runs these, each in its own
``subprocess.run([sys.executable, "-c", snippet, path], cwd=tmpdir)``: never in
the test process. Errors after the payload ran (a broken pickle, a fake tensor
layout) are swallowed, as they would be too late to matter.
"""

from __future__ import annotations

_PRELUDE = "import sys, traceback\npath = sys.argv[1]\ntry:\n"
_EPILOGUE = "\nexcept BaseException:\n    traceback.print_exc()\n"


def _wrap(body: str) -> str:
    indented = "\n".join("    " + line for line in body.strip().splitlines())
    return _PRELUDE + indented + _EPILOGUE


#: Loader name -> Python source run as ``python -c SOURCE PATH``.
LOADERS: dict[str, str] = {
    "pickle": _wrap(
        """
import pickle
with open(path, "rb") as fh:
    pickle.load(fh)
"""
    ),
    # Back-to-back pickles, read until the end (torch's legacy format does this).
    "pickle-stream": _wrap(
        """
import pickle
with open(path, "rb") as fh:
    while fh.peek(1):
        pickle.load(fh)
"""
    ),
    "torch": _wrap(
        """
import torch
torch.load(path, weights_only=False)
"""
    ),
    "torchscript": _wrap(
        """
import torch
torch.jit.load(path)
"""
    ),
    "numpy": _wrap(
        """
import numpy
data = numpy.load(path, allow_pickle=True)
for key in getattr(data, "files", []):
    data[key]
"""
    ),
    "joblib": _wrap(
        """
import joblib
joblib.load(path)
"""
    ),
    # What llama-cpp-python did before CVE-2024-34359: render the GGUF's chat
    # template with an unsandboxed Jinja2 environment.
    "gguf-chat-template": _wrap(
        """
import gguf, jinja2
reader = gguf.GGUFReader(path)
field = reader.fields["tokenizer.chat_template"]
template = bytes(field.parts[field.data[0]]).decode()
jinja2.Environment().from_string(template).render(messages=[], add_generation_prompt=True)
"""
    ),
    # transformers imports the folder's auto_map module when trust_remote_code=True.
    "hf-remote-code": _wrap(
        """
import os
from transformers import AutoConfig
AutoConfig.from_pretrained(path, trust_remote_code=True)
"""
    ),
}
