"""Thin adapters between the sentinel and training frameworks.

* :mod:`.loop`: the hooks ``protect()`` installs (plain loops need nothing else).
* :mod:`.ddp`: unwrapping ``DistributedDataParallel`` and its comm hook for the census.
* :mod:`.fsdp`: FSDP2 (``fully_shard``) parameters: local shards, which are replicated.
* :mod:`.hf_trainer`: a ``transformers.TrainerCallback`` (transformers imported lazily).
* :mod:`.lightning`: a Lightning ``Callback`` (lightning imported lazily).
"""

from __future__ import annotations

__all__: list[str] = []
