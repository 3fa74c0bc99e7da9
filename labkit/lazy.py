"""Packages that load a name's module on first use (PEP 562), so importing one light module of a package,
or the command line parsing a flag, does not import torch and everything else the package offers."""
from __future__ import annotations

from importlib import import_module


def exports(package: str, where: dict[str, str]):
    """``(__getattr__, __dir__)`` for ``package``: each name in ``where`` comes from the submodule named there.

    A name must not be the name of a submodule too: importing that submodule would bind the module
    over it (tests/test_cli.py checks every lazy package).
    """
    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f"{package}.{where[name]}"), name)
        setattr(import_module(package), name, value)
        return value

    def __dir__() -> list:
        return sorted(set(vars(import_module(package))) | set(where))
    return __getattr__, __dir__
