"""Registering components of your own (issue 24, extension contracts): a notebook cell run twice
replaces its registration, a clash names both components, and the only code localssl imports is what
the user consented to: installed packages' ``localssl.components`` entry points and ``--import``."""

from __future__ import annotations

import sys

import pytest

from localssl.registry import OBJECTIVES, ConfigError, import_components

CELL = """
import dataclasses
from torch import nn
from localssl.registry import OBJECTIVES

@dataclasses.dataclass
class EchoConfig:
    name: str = "{name}"
    scale: float = 1.0

@OBJECTIVES.register("{name}", EchoConfig)
class {cls}(nn.Module):
    def __init__(self, cfg, target, refs):
        super().__init__()
"""


def _run_cell(name: str = "echo", cls: str = "Echo") -> dict:
    """What a notebook does with a cell: its classes belong to module ``__main__``."""
    namespace = {"__name__": "__main__"}
    exec(CELL.format(name=name, cls=cls), namespace)
    return namespace


def test_running_a_registering_cell_again_replaces_the_registration(isolated_registries):
    first, second = _run_cell(), _run_cell()
    assert first["Echo"] is not second["Echo"]  # a new class object, same module and qualified name
    assert OBJECTIVES.get("echo").builder is second["Echo"]
    assert OBJECTIVES.get("echo").config_cls is second["EchoConfig"]


def test_a_different_component_under_a_taken_name_is_an_error_naming_both(isolated_registries):
    _run_cell(cls="Echo")
    with pytest.raises(ValueError, match=r"'echo' is registered twice: by __main__\.Echo and by __main__\.Other"):
        _run_cell(cls="Other")


def test_a_built_in_name_is_refused_at_the_users_registration(isolated_registries):
    with pytest.raises(ValueError, match=r"by localssl\.objectives\.contrastive\.\w+ and by __main__\.Echo"):
        _run_cell(name="contrastive")


def test_source_is_none_for_built_ins_and_the_module_for_user_components(isolated_registries, tmp_path):
    assert OBJECTIVES.source("contrastive") is None
    (tmp_path / "user_echo.py").write_text(CELL.format(name="user-echo", cls="Echo"))
    sys.path.insert(0, str(tmp_path))
    import_components(["user_echo"])
    assert OBJECTIVES.source("user-echo") == "user_echo"


def _fake_installed_package(site, module: str, body: str, name: str = "fake-localssl-plugin") -> None:
    """A package as pip leaves it: ``NAME.dist-info`` with an entry point, beside its module."""
    dist = site / f"{name.replace('-', '_')}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[localssl.components]\nplugin = {module}\n")
    (site / f"{module}.py").write_text(body)


def test_an_installed_entry_point_is_imported_when_a_name_is_missing(isolated_registries, tmp_path):
    _fake_installed_package(tmp_path, "ep_echo", CELL.format(name="ep-echo", cls="Echo"))
    sys.path.insert(0, str(tmp_path))
    assert OBJECTIVES.get("contrastive") and "ep_echo" not in sys.modules  # built-in names import no plugin
    assert OBJECTIVES.get("ep-echo").builder.__module__ == "ep_echo"
    assert OBJECTIVES.make_config({"name": "ep-echo", "scale": 2}).scale == 2.0
    assert OBJECTIVES.source("ep-echo") == "ep_echo"


def test_a_broken_entry_point_is_named_with_the_unknown_name(isolated_registries, tmp_path):
    _fake_installed_package(tmp_path, "ep_broken", "raise RuntimeError('boom')\n", name="broken-plugin")
    sys.path.insert(0, str(tmp_path))
    with pytest.raises(ConfigError) as err:
        OBJECTIVES.get("nowhere")
    text = str(err.value)
    assert "unknown objective 'nowhere'" in text and "--import MODULE" in text
    assert "plugin = ep_broken" in text and "broken-plugin" in text and "boom" in text


def test_import_components_by_name_by_file_and_a_missing_one(isolated_registries, tmp_path, monkeypatch):
    (tmp_path / "by_name.py").write_text(CELL.format(name="by-name", cls="Echo"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "by_file.py").write_text(CELL.format(name="by-file", cls="Echo"))
    monkeypatch.chdir(tmp_path)  # a module name is also looked up in the current directory
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    import_components(["by_name", "sub/by_file.py"])
    import_components(["by_name", str(tmp_path / "sub" / "by_file.py")])  # again: nothing happens
    assert OBJECTIVES.get("by-name") and OBJECTIVES.get("by-file")
    assert OBJECTIVES.source("by-file") == str(tmp_path / "sub" / "by_file.py")  # what to --import later
    with pytest.raises(ConfigError, match=r"cannot import 'no_such_module' \(No module named 'no_such_module'\)"):
        import_components(["no_such_module"])
    with pytest.raises(ConfigError, match="no such file"):
        import_components(["missing.py"])
