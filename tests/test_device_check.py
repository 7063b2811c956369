"""``benchmarks/device_check.sh --dry-run``: the script a session runs first on a GPU, run on CPU at tiny size.

The dry run writes to a temporary file (never ``benchmarks/RESULTS.md``), smoke-tests two presets, benches
one, and cuts the table stage at its 20 s time box, so the path of a cut-off run (the cells finished so far,
or a note that none did) is exercised too; it ends by exporting a clapp++ run (the table's, or a short one it
trains when none finished) and loading the file back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.sh"


def _dry_run(tmp_path: Path, **env: str) -> tuple[str, str]:
    full = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    full.update(env)
    done = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=full, cwd=tmp_path, timeout=900
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = Path(re.search(r"^results: (.+)$", done.stdout, re.M).group(1))
    return out.read_text(), str(out)


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_dry_run_writes_every_stage_to_a_temporary_file(tmp_path):
    before = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    text, path = _dry_run(tmp_path)
    assert Path(path).resolve() != (ROOT / "benchmarks" / "RESULTS.md").resolve()
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == before
    assert "## Device check — " in text and "CPU dry run" in text
    # stage 2: both presets stepped, with finite losses
    assert "Smoke stage: done." in text, text
    for preset in ("clapp++", "bp-clapp++"):
        assert re.search(rf"^\| {re.escape(preset)} \| yes \| 32 \| 2 \| [0-9.]+ \| [0-9.e+-]+ \| – \|$", text, re.M)
    assert "2/2 presets ran with finite losses." in text
    # stage 3: one bench entry with its table and the epochs-per-hour line
    assert "### " in text.split("`localssl bench` on cpu")[1]
    assert re.search(r"\| clapp\+\+ \| [0-9.]+ \|", text)
    assert re.search(r"clapp\+\+: [0-9.]+ epochs/hour of the paper's protocol", text)
    # stage 4: the table ran under --jobs 2, and either finished or was cut at its time box with what it had
    stage = text.split("localssl reproduce table2 --scale smoke --jobs 2")[1]
    assert re.search(r"Table stage: (done|\*\*stopped at its \d+ s time box\*\*)", stage), stage
    assert "| " in stage or "No cell finished" in stage
    # stage 5: a clapp++ run exported (fp32 and bf16) and loaded back to the checkpoint's features, bitwise on CPU
    export = text.split("`localssl export` of the clapp++ run it trained")[1]
    assert "Export stage: done." in export, export
    found = re.search(r"`(clapp\+\+-[0-9a-f]{12}\.safetensors)` fp32 ([0-9,]+) bytes, exported in [0-9.]+ s", export)
    assert found, export
    assert "max |Δ| = 0 against the checkpoint's (bitwise equal)" in export
    files = sorted(p.name for p in (Path(path).parent / "table2" / "export").iterdir())
    assert found.group(1) in files and len(files) == 6  # fp32 and bf16, each with its card (.json, .md)
    assert re.search(r"Device check finished in \d+ s\.", text)


def test_a_spent_budget_skips_the_stages_and_says_so(tmp_path):
    out = tmp_path / "r.md"
    text, _ = _dry_run(tmp_path, DEVICE_CHECK_BUDGET="1", DEVICE_CHECK_OUT=str(out))
    assert text.count("the budget was spent") == 4, text  # smoke, bench, table, export
    assert "| clapp++ | yes" not in text
