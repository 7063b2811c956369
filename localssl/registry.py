"""Name -> component registries for the three axes (views, objective, credit assignment) and models.

Every component registers itself with a typed config dataclass, so that a YAML preset or a
``key=value`` override is validated against the fields that component really has::

    @OBJECTIVES.register("contrastive", ContrastiveConfig)
    class ContrastiveObjective(nn.Module): ...

A new rule is one file that registers itself here; nothing else needs to change.

Components of your own (an objective in a notebook, a rule in your package) register the same way.
localssl imports code only with your consent: the modules you name (``localssl ... --import MODULE``,
:func:`import_components`) and installed packages that declare an entry point in the group
``localssl.components`` (each entry point names a module; they are imported the first time a name is
looked up that nothing registered, so runs of built-in components never pay for them). A run records in
its ``config.yaml`` which module each non-built-in component came from (:meth:`Registry.source`), so a
later ``resume`` or ``probe`` can say what to import; reading a run never imports that module itself.

Registering the same component again under its name (a notebook cell run twice: a new class object with
the same module and qualified name) replaces the entry; a different component under a taken name is an
error naming both.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that cannot be built (unknown key, unknown name, bad value)."""


@dataclasses.dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    builder: T
    config_cls: type


class Registry(Generic[T]):
    """A mapping from a component name to its builder and its config dataclass."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, config_cls: type) -> Callable[[T], T]:
        if not dataclasses.is_dataclass(config_cls):
            raise TypeError(f"{self.kind} '{name}': config_cls must be a dataclass")

        def deco(builder: T) -> T:
            if not _is_builtin(builder):
                _import_builtin_components()  # a clash with a built-in name is reported here, at the user's line
            old = self._entries.get(name)
            if old is not None and qualified_name(old.builder) != qualified_name(builder):
                raise ValueError(
                    f"{self.kind} '{name}' is registered twice: by {qualified_name(old.builder)} and by "
                    f"{qualified_name(builder)}; register one of them under another name"
                )
            self._entries[name] = Entry(name, builder, config_cls)  # the same component again: replaced
            return builder

        return deco

    def names(self) -> list[str]:
        _import_builtin_components()
        _load_entry_points()
        return sorted(self._entries)

    def get(self, name: str) -> Entry[T]:
        _import_builtin_components()
        if name not in self._entries:
            _load_entry_points()
        if name not in self._entries:
            raise ConfigError(
                f"unknown {self.kind} '{name}'; valid {self.kind} names: {', '.join(self.names())}. "
                "One of your own is found once the module that registers it is imported: `--import MODULE` "
                f"on the command line, or a package installed with an entry point in the group "
                f"'{ENTRY_POINT_GROUP}'" + _entry_point_failures()
            )
        return self._entries[name]

    def source(self, name: str) -> str | None:
        """Where the component registered as ``name`` came from, as a run's ``config.yaml`` records it:
        ``None`` for a built-in one; else the module that registered it, or the file for a script
        (``__main__``) or a module imported from a file. ``'__main__'`` alone: an interactive session."""
        module = getattr(self.get(name).builder, "__module__", None) or "__main__"
        if module == "localssl" or module.startswith("localssl."):
            return None
        path = _FILE_MODULES.get(module)
        if module == "__main__":
            path = getattr(sys.modules.get("__main__"), "__file__", None)
        return str(Path(path).resolve()) if path else module

    def make_config(self, raw: dict[str, Any]) -> Any:
        """Build the typed config of the component named by ``raw['name']``."""
        raw = dict(raw)
        if "name" not in raw:
            raise ConfigError(f"{self.kind} config needs a 'name' (one of: {', '.join(self.names())})")
        entry = self.get(str(raw["name"]))
        return build_dataclass(entry.config_cls, raw, where=self.kind)

    def __contains__(self, name: str) -> bool:
        _import_builtin_components()
        if name not in self._entries:
            _load_entry_points()
        return name in self._entries


def qualified_name(builder: Any) -> str:
    """``module.QualName`` of a registered builder: the identity that a re-registration must keep."""
    return f"{getattr(builder, '__module__', None)}.{getattr(builder, '__qualname__', repr(builder))}"


def _is_builtin(builder: Any) -> bool:
    module = getattr(builder, "__module__", None) or ""
    return module == "localssl" or module.startswith("localssl.")


def build_dataclass(cls: type, raw: dict[str, Any], where: str) -> Any:
    """Instantiate dataclass ``cls`` from ``raw``; unknown keys are an error listing valid keys."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)}; "
            f"valid keys for {where}: {', '.join(f'{where}.{k}' for k in fields)}"
        )
    hints = typing.get_type_hints(cls)
    raw = {k: _coerce(v, hints.get(k), f"{where}.{k}") for k, v in raw.items()}
    try:
        return cls(**raw)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Light type check for YAML/CLI values: numbers given as strings ('5e-4') become numbers;
    a string where only a number is allowed is an error naming the key."""
    if hint is None or value is None:
        return value
    allowed = set(typing.get_args(hint)) or {hint}
    if isinstance(value, str) and not (allowed & {str, Any}):
        if float in allowed or int in allowed:
            try:
                number = float(value)
            except ValueError:
                raise ConfigError(f"{key} expects a number, got '{value}'") from None
            value = number
        elif bool in allowed and value.lower() in ("true", "false"):
            return value.lower() == "true"
    if isinstance(value, bool) and allowed <= {int, float, type(None)}:
        raise ConfigError(f"{key} expects a number, got {value}")
    if isinstance(value, float) and int in allowed and float not in allowed:  # a count: 1.5 epochs is no setting
        if not value.is_integer():
            raise ConfigError(f"{key}={value:g} is invalid: it must be a whole number (e.g. {key}={round(value)})")
        return int(value)
    return value


VIEWS: Registry[Any] = Registry("views")
OBJECTIVES: Registry[Any] = Registry("objective")
RULES: Registry[Any] = Registry("rule")
MODELS: Registry[Any] = Registry("model")

_IMPORTED = False


def _import_builtin_components() -> None:
    """Import every module of the component packages so that they register themselves: adding a
    rule, objective, view generator or model is adding one file to its package."""
    global _IMPORTED
    if _IMPORTED:
        return
    _IMPORTED = True
    import importlib
    import pkgutil

    for package in ("localssl.models", "localssl.objectives", "localssl.rules", "localssl.views"):
        pkg = importlib.import_module(package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{package}.{mod.name}")


# --- components of your own: entry points of installed packages, modules named by the user ---

ENTRY_POINT_GROUP = "localssl.components"
_ENTRY_POINTS_LOADED = False
_ENTRY_POINT_ERRORS: list[str] = []
_FILE_MODULES: dict[str, str] = {}  # module name -> the .py file import_components loaded it from


def _load_entry_points() -> None:
    """Import, once, the module named by every entry point in the group ``localssl.components`` of the
    installed packages (installing a package is consent to run its code). Called when a name is looked
    up that nothing registered: a run of built-in components never imports a plugin. A plugin that fails
    to import is reported with the unknown-name error, not raised: it may not be the one asked for."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points  # here: its import costs more than a run of built-ins needs

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as err:  # noqa: BLE001 - any error of foreign code: reported with the lookup
            dist = getattr(ep.dist, "name", "?")
            _ENTRY_POINT_ERRORS.append(f"entry point '{ep.name} = {ep.value}' of package {dist}: {err!r}")


def _entry_point_failures() -> str:
    return "".join(f"; could not import {e}" for e in _ENTRY_POINT_ERRORS)


def import_components(modules: Iterable[str]) -> None:
    """Import the modules that register your components (``localssl ... --import MODULE``): a dotted
    module name, looked up on ``sys.path`` and in the current directory (as ``python -m`` does), or a
    ``.py`` file (imported as a module named after the file). Importing one twice does nothing."""
    modules = list(modules)
    if modules:
        importlib.invalidate_caches()  # a module written since the interpreter started (a notebook's) is found
    for spec in modules:
        if spec.endswith(".py") or os.sep in spec:
            _import_file(Path(spec))
            continue
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            importlib.import_module(spec)
        except ImportError as err:
            raise ConfigError(
                f"cannot import '{spec}' ({err}); put its folder on PYTHONPATH or run from it, install the "
                "package that provides it, or give the .py file's path"
            ) from err


def _import_file(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"cannot import '{path}': no such file")
    path = path.resolve()
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if getattr(loaded, "__file__", None) and Path(loaded.__file__).resolve() == path:
            return
        raise ConfigError(f"cannot import '{path}': a module named '{name}' is already imported; rename the file")
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # its sibling modules import as when it runs as a script
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import '{path}': not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve the module's annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    _FILE_MODULES[name] = str(path)
