"""Every Python snippet of the README and docs/ runs as pasted (issue 41 item 4): each block is run by a fresh
interpreter in an empty folder, and must exit 0. The snippets themselves are sized to run in well under a minute
(the shipped CIFAR-10 subset, a few hundred images, one epoch)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def snippets() -> list[tuple[str, str]]:
    """(``file:line``, code) of every fenced Python block."""
    out = []
    for path in DOCS:
        text = path.read_text()
        for m in BLOCK.finditer(text):
            line = text[: m.start()].count("\n") + 1
            out.append((f"{path.relative_to(ROOT)}:{line}", m.group(1)))
    return out


def test_the_docs_have_python_snippets():
    where = [w for w, _ in snippets()]
    assert any(w.startswith("README.md") for w in where) and any(w.startswith("docs/extending.md") for w in where)


@pytest.mark.slow  # about 25 s of CPU each (an interpreter, a tiny pretrain and a probe): `pytest -m slow`
@pytest.mark.parametrize("where,code", snippets(), ids=[w for w, _ in snippets()])
def test_snippet_runs_as_pasted(where, code, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("LOCALSSL_DATA", None)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"{where}:\n{done.stderr[-3000:]}"
    assert "%" in done.stdout  # each prints its run's probe accuracy
