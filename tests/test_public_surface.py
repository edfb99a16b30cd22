"""Each package of core declares its public surface (`__all__`), and this test holds the
declaration to the modules themselves, in the spirit of httpx's test_exported_members: nothing is
listed by hand here. What must hold:
- every declared name resolves, and is defined inside the package that declares it (a surface
  is never a re-export of another package's names: each thing has one home);
- a lazy package (`core._surface.lazy`) names, for each export, the submodule that defines it;
- every public submodule of a package is part of its surface (none hidden, none forgotten);
- `__all__` is sorted, so a diff of the surface reads as a list."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(
    ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "core").rglob("__init__.py")
    if "__pycache__" not in p.parts and p.parent != ROOT / "core"
)
SURFACED = [name for name in PACKAGES if hasattr(importlib.import_module(name), "__all__")]


def test_every_package_of_core_declares_a_surface():
    missing = [name for name in PACKAGES if name not in SURFACED and name != "core.commands"]
    assert not missing, f"packages without __all__: {missing}"


@pytest.mark.parametrize("package", SURFACED)
def test_exported_members(package):
    module = importlib.import_module(package)
    assert list(module.__all__) == sorted(module.__all__)
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.ismodule(value):
            assert value.__name__ == f"{package}.{name}", f"{package}.{name} is not its own submodule"
        elif inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__ == package or value.__module__.startswith(package + "."), (
                f"{package}.{name} is defined in {value.__module__}: import it from there, not from {package}")


@pytest.mark.parametrize("package", [p for p in SURFACED if hasattr(importlib.import_module(p), "_EXPORTS")])
def test_a_lazy_surface_names_the_module_that_defines_each_name(package):
    module = importlib.import_module(package)
    for name, where in module._EXPORTS.items():
        value = getattr(module, name)
        if where == "":
            assert inspect.ismodule(value)
        elif inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__ == f"{package}.{where}", f"{package}.{name} lives in {value.__module__}"
        else:
            assert name in vars(importlib.import_module(f"{package}.{where}"))


@pytest.mark.parametrize("package", [p for p in SURFACED if hasattr(importlib.import_module(p), "_EXPORTS")])
def test_every_public_submodule_is_on_the_surface(package):
    module = importlib.import_module(package)
    public = {m.name for m in pkgutil.iter_modules(module.__path__) if not m.name.startswith("_")}
    assert public <= set(module.__all__), f"{package} does not declare {sorted(public - set(module.__all__))}"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError):
        importlib.import_module("core.batches").no_such_thing  # noqa: B018
