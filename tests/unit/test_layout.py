"""The package root holds only the composition, and the layer contract covers every module:
a new module at the root, or a package the contract does not name, fails here before it can
dodge import-linter."""

from __future__ import annotations

import tomllib
from pathlib import Path

import imagedepot

PACKAGE = Path(imagedepot.__file__).parent
ROOT_MODULES = {"__init__", "bootstrap", "config", "ports"}


def layer_names() -> set[str]:
    document = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    contract = next(
        c for c in document["tool"]["importlinter"]["contracts"] if c["type"] == "layers"
    )
    names: set[str] = set()
    for layer in contract["layers"]:
        names.update(part.strip().removeprefix("imagedepot.") for part in layer.split("|"))
    return names


def test_only_the_composition_lives_at_the_package_root() -> None:
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    assert modules == ROOT_MODULES


def test_the_layer_contract_names_every_module_and_package_at_the_root() -> None:
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert packages | (ROOT_MODULES - {"__init__"}) == layer_names()
