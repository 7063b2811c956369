"""README.md and docs/ numbers come from results files (oracle: the source files themselves).

Every generated region (``<!-- generated: SOURCE ... -->``) is re-rendered from its source and must equal the
committed text, docs/results.md must equal what the harness writes, and every number in the README outside a
generated region must cite a dated entry of benchmarks/RESULTS.md. Fix a failure with
``localssl reproduce --docs`` (never by editing the numbers by hand).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from localssl.experiments.docs import REGION, pages, render_page, render_region, section, slug, tables
from localssl.experiments.engine.report import results_page

ROOT = Path(__file__).resolve().parents[1]
FIX = "run `localssl reproduce --docs` and commit the result"


@pytest.mark.parametrize("page", pages(ROOT), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_generated_regions_match_their_sources(page: Path) -> None:
    text = page.read_text()
    assert render_page(ROOT, page, text) == text, f"{page.relative_to(ROOT)} disagrees with its sources: {FIX}"


def test_results_page_matches_the_reports() -> None:
    assert (ROOT / "docs" / "results.md").read_text() == results_page(ROOT), f"docs/results.md is stale: {FIX}"


def test_readme_is_a_front_page_with_its_generated_numbers() -> None:
    text = (ROOT / "README.md").read_text()
    assert 150 <= len(text.splitlines()) <= 230
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).splitlines()
    assert [line.split("  #")[0].strip() for line in first_block] == [
        'pip install "torch==2.13.0" -e ".[test]" && localssl demo',
        "python -m pytest",
    ]
    specs = [m.group("spec") for m in REGION.finditer(text)]
    assert "docs/demo.json" in specs and any(s.startswith("results/table2/cpu/") for s in specs)
    for page in ["docs/usage.md", "docs/rules.md", "docs/reproduce.md", "docs/extending.md", "docs/speed.md"]:
        assert f"]({page})" in text, f"README does not link {page}"


def _outside_regions_and_code(text: str) -> str:
    text = REGION.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.sub(r"\b(?:Def|Eq|Sec|Table|Fig|App)\. [\dA-Z]+(?:\.\d+)?", "", text)  # a paper's numbering


NUMBER = re.compile(r"\d+(?:\.\d+)?\s?%|\b\d+\.\d+\b")  # a percentage or a decimal number (an accuracy, a time)


def test_every_readme_number_is_generated_or_cites_results() -> None:
    text = _outside_regions_and_code((ROOT / "README.md").read_text())
    uncited = [
        para.strip()[:120] for para in re.split(r"\n\s*\n", text) if NUMBER.search(para) and "RESULTS.md#" not in para
    ]
    assert not uncited, f"README numbers typed by hand (generate them, or cite RESULTS.md#...): {uncited}"


@pytest.mark.parametrize("page", pages(ROOT), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_resolve(page: Path) -> None:
    """Every relative link of a page names a file, and every ``FILE.md#anchor`` a heading of that file, so a
    citation of a dated ``benchmarks/RESULTS.md`` entry cannot dangle."""
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        file, _, anchor = target.partition("#")
        if target.startswith(("http://", "https://")):
            continue
        path = page.parent / file if file else page
        if not path.exists():
            bad.append(target)
        elif anchor and path.suffix == ".md":
            headings = re.findall(r"^#+ +(.*?)\s*$", path.read_text(), flags=re.M)
            bad += [] if anchor in {slug(h) for h in headings} else [target]
    assert not bad, f"{page.relative_to(ROOT)}: links to nothing: {bad}"


# ------------------------------------------------------------------ the renderer itself, on small files
def test_table_region_selects_section_table_and_columns(tmp_path: Path) -> None:
    (tmp_path / "log.md").write_text(
        "# Log\n\n## Run A — 2026-01-02\n\n| a | b | c |\n| --- | --- | --- |\n| x | 1.5 | 2 |\n\n"
        "| d | e |\n|---|---|\n| y | 3 |\n\n## Run B\n\n| z |\n| --- |\n| 9 |\n"
    )
    page = tmp_path / "docs" / "p.md"
    page.parent.mkdir()
    out = render_region(tmp_path, page, "log.md#run-a--2026-01-02 cols=1,2")
    assert out.splitlines()[:3] == ["| a | b |", "| --- | --- |", "| x | 1.5 |"]
    assert "(../log.md#run-a--2026-01-02)" in out and "Run A — 2026-01-02" in out
    second = render_region(tmp_path, page, "log.md#run-a--2026-01-02 table=2")
    assert second.startswith("| d | e |\n|---|---|\n| y | 3 |")
    with pytest.raises(ValueError, match="table=3"):
        render_region(tmp_path, page, "log.md#run-a--2026-01-02 table=3")
    with pytest.raises(ValueError, match="anchor"):
        section("# x\n", "nowhere")
    assert len(tables((tmp_path / "log.md").read_text())) == 3


def test_a_number_edited_by_hand_is_caught(tmp_path: Path) -> None:
    (tmp_path / "r.md").write_text("| m | acc |\n| --- | --- |\n| clapp++ | 59.15 |\n")
    page = tmp_path / "README.md"
    page.write_text("Intro.\n\n<!-- generated: r.md -->\nstale\n<!-- end generated -->\n\nEnd.\n")
    fresh = render_page(tmp_path, page, page.read_text())
    assert "| clapp++ | 59.15 |" in fresh and "stale" not in fresh
    assert fresh.endswith("<!-- end generated -->\n\nEnd.\n")
    assert render_page(tmp_path, page, fresh) == fresh  # rendering is idempotent
    assert render_page(tmp_path, page, fresh.replace("59.15", "60.00")) != fresh.replace("59.15", "60.00")


def test_demo_region_renders_the_demo_output(tmp_path: Path) -> None:
    summary = {"speech": {"clapp": {"label": "CLAPP (local)", "steps": 192, "test_mean": 75.44, "test_std": 0.91}}}
    data = {"summary": summary, "seeds": 3, "wall_s": 131.5, "cpu_s": 258.6, "budget": {"speech": "tiny"}}
    data["titles"], data["chance"] = {"speech": "synthetic speech"}, {"speech": 12.5}
    (tmp_path / "demo.json").write_text(json.dumps(data))
    out = render_region(tmp_path, tmp_path / "README.md", "demo.json")
    assert "| synthetic speech, chance 12.5 | CLAPP (local) | 192 | 75.4 ± 0.9 |" in out
    assert "4.3 CPU-minutes" in out
