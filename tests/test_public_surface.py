"""The public API: every package's ``__all__`` is real and complete, and its docstring example runs."""

from __future__ import annotations

import doctest
import importlib
import inspect
import types

import pytest

#: Public packages and modules; each re-exports its API with ``__all__``.
PUBLIC = [
    "trainguard",
    "trainguard.errors",
    "trainguard.findings",
    "trainguard.report",
    "trainguard.scan",
    "trainguard.scan.load",
    "trainguard.scan.pickle",
    "trainguard.env",
    "trainguard.ledger",
    "trainguard.sentinel",
    "trainguard.dashboard",
    "trainguard.drill",
    "trainguard.demo",
]


@pytest.mark.parametrize("name", PUBLIC)
def test_all_names_resolve(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported)), f"{name}.__all__ has duplicates"
    for attr in exported:
        assert getattr(module, attr, None) is not None, f"{name}.{attr} is in __all__ but missing"


@pytest.mark.parametrize("name", PUBLIC)
def test_public_definitions_are_exported(name: str) -> None:
    # A public class or function defined in the module itself must be in __all__.
    module = importlib.import_module(name)
    defined = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", None) == module.__name__
    }
    missing = defined - set(module.__all__)
    assert not missing, f"{name} defines public names not in __all__: {sorted(missing)}"


@pytest.mark.parametrize("name", [n for n in PUBLIC if n != "trainguard.scan.load"])
def test_docstring_example_runs(name: str) -> None:
    module = importlib.import_module(name)
    assert isinstance(module, types.ModuleType) and module.__doc__
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module):
        runner.run(test)
    assert runner.failures == 0, f"{name}'s docstring example failed"
