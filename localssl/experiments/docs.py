"""Numbers in ``README.md`` and ``docs/*.md`` are generated from results files, never typed by hand.

A generated region of a page is::

    <!-- generated: SOURCE [table=N] [cols=1,3,4] -->
    ...rendered text...
    <!-- end generated -->

``SOURCE`` is a file of the repository, relative to its root:

* ``FILE.md`` or ``FILE.md#anchor`` (a heading's GitHub anchor: the section under that heading, down to the
  next heading of its level or above): its ``N``-th Markdown table (default the first), only the columns
  ``cols`` (1-based, default all), then a line naming the source — a ``results/`` report, or a dated entry
  of ``benchmarks/RESULTS.md`` with the command that made it;
* ``docs/demo.json`` (written by ``localssl demo``): the demo's accuracy table.

:func:`render_docs` rewrites every region from its source (``localssl reproduce --docs``; also after every
``localssl reproduce NAME --scale cpu`` to the default place); ``tests/test_docs_numbers.py`` re-renders
them and fails if the committed text differs, so no page can disagree with its source.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

REGION = re.compile(
    r"(?P<open><!-- generated: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(?P<close><!-- end generated -->)", re.S
)
HEADING = re.compile(r"^(#+) +(.*?)\s*$")


def pages(root: Path) -> list[Path]:
    """The pages that may hold generated regions: ``README.md`` and ``docs/*.md`` (not ``docs/results.md``,
    which is generated whole by :func:`localssl.experiments.engine.report.write_results_page`)."""
    docs = sorted(p for p in (root / "docs").glob("*.md") if p.name != "results.md")
    return [root / "README.md", *docs]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def section(text: str, anchor: str) -> tuple[str, str]:
    """(heading, body) of the section whose heading's anchor is ``anchor``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = HEADING.match(line)
        if m and slug(m.group(2)) == anchor:
            level, body = len(m.group(1)), []
            for rest in lines[i + 1 :]:
                n = HEADING.match(rest)
                if n and len(n.group(1)) <= level:
                    break
                body.append(rest)
            return m.group(2), "\n".join(body)
    raise ValueError(f"no heading with anchor '#{anchor}'")


def tables(text: str) -> list[list[str]]:
    """Every Markdown table of ``text`` (runs of lines starting with ``|``), as lists of lines."""
    found: list[list[str]] = []
    run: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            run.append(line.rstrip())
        elif run:
            found.append(run)
            run = []
    return found


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def select_columns(table: list[str], cols: list[int]) -> list[str]:
    out = []
    for line in table:
        cells = _cells(line)
        picked = [cells[c - 1] for c in cols]
        if set("".join(picked)) <= set("-: "):  # the separator row
            picked = ["---"] * len(cols)
        out.append("| " + " | ".join(picked) + " |")
    return out


def render_table(root: Path, page: Path, source: str, options: dict[str, str]) -> str:
    file, _, anchor = source.partition("#")
    text = (root / file).read_text()
    where = f"`{file}`"
    if anchor:
        heading, text = section(text, anchor)
        where = f"`{file}`, {heading.replace('`', '')}"
    found = tables(text)
    n = int(options.get("table", "1"))
    if not 1 <= n <= len(found):
        raise ValueError(f"{source}: has {len(found)} table(s), asked for table={n}")
    table = found[n - 1]
    if "cols" in options:
        table = select_columns(table, [int(c) for c in options["cols"].split(",")])
    link = Path(os.path.relpath(root / file, page.parent)).as_posix() + (f"#{anchor}" if anchor else "")
    return "\n".join([*table, "", f"<sub>From [{where}]({link}).</sub>"])


def render_demo(root: Path, page: Path, source: str) -> str:
    data = json.loads((root / source).read_text())
    titles, chance = data.get("titles", {}), data.get("chance", {})
    lines = [
        f"| task | method | pretraining steps | test accuracy (%), mean ± std over {data['seeds']} seeds |",
        "| --- | --- | --- | --- |",
    ]
    for task, methods in data["summary"].items():
        name = titles.get(task, task) + (f", chance {chance[task]:.1f}" if task in chance else "")
        for m in methods.values():
            label = " ".join(m["label"].split())  # a figure label's line break: one table line
            lines.append(f"| {name} | {label} | {m['steps']} | {m['test_mean']:.1f} ± {m['test_std']:.1f} |")
            name = "″"
    link = Path(os.path.relpath(root / source, page.parent)).as_posix()
    budgets = "; ".join(f"{titles.get(t, t).split(' (')[0]}: {b}" for t, b in data["budget"].items())
    wall = f"{data['wall_s'] // 60:.0f} min {data['wall_s'] % 60:.0f} s"
    note = f"{wall} wall, {data['cpu_s'] / 60:.1f} CPU-minutes" + (f"; {data['made']}" if data.get("made") else "")
    return "\n".join([*lines, "", f"<sub>{budgets}. From [`{source}`]({link}) ({note}).</sub>"])


def render_region(root: Path, page: Path, spec: str) -> str:
    source, *rest = spec.split()
    options = dict(o.split("=", 1) for o in rest)
    if source.endswith(".json"):
        return render_demo(root, page, source)
    return render_table(root, page, source, options)


def render_page(root: Path, page: Path, text: str) -> str:
    """``text`` with every generated region re-rendered from its source."""

    def one(m: re.Match) -> str:
        try:
            body = render_region(root, page, m.group("spec"))
        except (OSError, ValueError, KeyError, IndexError) as err:
            raise ValueError(f"{page.name}: generated region '{m.group('spec')}': {err}") from err
        return f"{m.group('open')}{body}\n{m.group('close')}"

    return REGION.sub(one, text)


def render_docs(root: Path) -> list[Path]:
    """Re-render every generated region of every page of ``root``; returns the pages that changed."""
    changed = []
    for page in pages(root):
        if not page.exists():
            continue
        text = page.read_text()
        new = render_page(root, page, text)
        if new != text:
            page.write_text(new)
            changed.append(page)
    return changed
