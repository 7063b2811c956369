"""A run made with a component of the user's own survives the CLI (issue 24, extension contracts):
``config.yaml`` records the module it came from, ``--import`` (or an installed entry point) brings it
back for ``resume`` and ``probe``, and without it the error names the component, the module and the fix.
Oracle: end to end, through ``python -m localssl`` in subprocesses."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from localssl.cli import main
from localssl.config import config_from_dict, load_config, read_run_config, save_config
from localssl.registry import VIEWS, ConfigError

REPO = Path(__file__).resolve().parents[1]

USER_MODULE = '''
"""An objective of the user's own: the two views' pooled activity pulled together, VICReg's variance hinge."""
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from localssl import OBJECTIVES, LossOut, SpatialPool


@dataclasses.dataclass
class PullConfig:
    name: str = "{name}"
    std_coeff: float = 1.0


@OBJECTIVES.register("{name}", PullConfig)
class PullTogether(nn.Module):
    def __init__(self, cfg, target, refs):
        super().__init__()
        self.cfg, self.pool = cfg, SpatialPool(None)

    def forward(self, h, refs, views):
        z = self.pool(h)
        sim = F.cosine_similarity(z[views.pos_ref], z[views.pos]).mean()
        std = F.relu(1 - torch.sqrt(z.var(dim=0) + 1e-4)).mean()
        return LossOut(self.cfg.std_coeff * std - sim, {{"sim": sim.detach()}})
'''


def _cli(*args: str, pythonpath: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [REPO, *pythonpath])), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "localssl", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_user_objective_run_is_resumed_and_probed_from_the_cli(tmp_path, tiny_run, isolated_registries, capsys):
    user = tmp_path / "user"
    user.mkdir()
    (user / "user_objectives.py").write_text(USER_MODULE.format(name="pull-together"))
    cli = {"pythonpath": [user], "cwd": tmp_path}

    made = _cli("pretrain", "vicreg", "objective.name=pull-together", *tiny_run, "--import", "user_objectives", **cli)
    assert made.returncode == 0, made.stderr
    run = Path(made.stdout.strip().splitlines()[-1])
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["components"] == {"objective": "user_objectives"}  # built-in views, model, rule: not listed

    # without --import: the module is on PYTHONPATH, yet reading the run imports nothing by itself
    refused = _cli("probe", str(run), **cli)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    for part in ("objective 'pull-together'", "came from user_objectives", "`--import user_objectives`", "install"):
        assert part in refused.stderr, refused.stderr
    assert not (run / "probe.json").exists()
    for argv in (["pretrain", "--resume", str(run)], ["align", str(run)]):  # same message, in this process
        assert main(argv) == 2
        assert "`--import user_objectives`" in capsys.readouterr().err

    resumed = _cli("pretrain", "--resume", str(run), "train.epochs=2", "--import", "user_objectives", **cli)
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in csv.DictReader((run / "metrics.csv").open())] == ["1", "2"]
    assert yaml.safe_load((run / "config.yaml").read_text())["components"] == {"objective": "user_objectives"}

    probed = _cli("probe", str(run), "--import", "user_objectives", **cli)
    assert probed.returncode == 0, probed.stderr
    result = json.loads(probed.stdout)
    assert result["checkpoint_epoch"] == 2 and 0 <= result["test_acc_pct"] <= 100


def test_an_installed_entry_point_needs_no_import(tmp_path):
    site = tmp_path / "site"
    dist = site / "my_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[localssl.components]\nobjectives = my_plugin_objectives\n")
    (site / "my_plugin_objectives.py").write_text(USER_MODULE.format(name="plugin-pull"))
    out = _cli(
        "config", "vicreg", "objective.name=plugin-pull", "objective.std_coeff=3", pythonpath=[site], cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert "objective.name = 'plugin-pull'" in out.stdout and "objective.std_coeff = 3" in out.stdout


def test_config_yaml_records_only_components_from_outside_localssl(tmp_path, isolated_registries):
    save_config(load_config("clapp++"), tmp_path / "config.yaml")
    assert "components" not in yaml.safe_load((tmp_path / "config.yaml").read_text())
    (tmp_path / "user_views.py").write_text(
        "import dataclasses\nfrom localssl import VIEWS\nfrom localssl.views.simclr import SimCLRViews\n"
        "@dataclasses.dataclass\nclass MyViewsConfig:\n    name: str = 'my-views'\n"
        "@VIEWS.register('my-views', MyViewsConfig)\nclass MyViews(SimCLRViews):\n"
        "    def __init__(self, cfg, info):\n        super().__init__(VIEWS.make_config({'name': 'simclr'}), info)\n"
    )
    sys.path.insert(0, str(tmp_path))
    __import__("user_views")
    cfg = load_config("clapp++", ["views.name=my-views"])
    save_config(cfg, tmp_path / "config.yaml")
    raw = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert raw["components"] == {"views": "user_views"}
    assert config_from_dict(raw) == cfg  # the record is not a setting of the run
    with pytest.raises(ConfigError, match="'components' must map a component section"):
        config_from_dict({**raw, "components": {"train": "x"}})


def test_reading_a_run_never_imports_its_recorded_module(tmp_path, isolated_registries):
    (tmp_path / "trap.py").write_text("raise SystemExit('imported without consent')\n")
    sys.path.insert(0, str(tmp_path))
    raw = {**load_config("clapp++").to_dict(), "components": {"objective": "trap", "rule": "trap"}}
    raw["objective"] = {"name": "trap-objective"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        read_run_config(tmp_path)
    assert "objective 'trap-objective'" in str(err.value) and "`--import trap`" in str(err.value)
    assert "trap" not in sys.modules


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("__main__", "interactive session"),
        ("/home/me/train_mine.py", "`--import /home/me/train_mine.py`"),
    ],
)
def test_missing_component_message_for_a_notebook_and_a_script(tmp_path, source, expected):
    raw = {**load_config("clapp++").to_dict(), "components": {"views": source}}
    raw["views"] = {"name": "mine"}
    with pytest.raises(ConfigError, match="views 'mine' is not built into localssl") as err:
        config_from_dict(raw)
    assert expected in str(err.value)


def test_declared_optional_interfaces_match_the_built_ins():
    """The Protocols that replaced getattr/hasattr probing see the built-ins that implement them."""
    from localssl.objectives.base import LabelsConfig, PoolingConfig
    from localssl.registry import OBJECTIVES
    from localssl.views.base import CustomInputShape

    shaped = {n for n in VIEWS.names() if isinstance(VIEWS.get(n).builder, CustomInputShape)}
    assert shaped == {"crops", "patch_grid", "time_shift"}
    assert isinstance(OBJECTIVES.make_config({"name": "cross_entropy"}), LabelsConfig)
    assert not isinstance(OBJECTIVES.make_config({"name": "contrastive"}), LabelsConfig)
    assert isinstance(OBJECTIVES.make_config({"name": "vicreg"}), PoolingConfig)
