"""One self-contained HTML page and a Markdown twin from one or more run directories.

    from trace_realign.report import build_report
    html_path, md_path = build_report(["runs/x"])          # writes runs/x/report.html, report.md

The page reads whatever parts of the runs exist (`collect.py`) and notes what is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from trace_realign.io import write_text_atomic
from trace_realign.report.collect import read_runs
from trace_realign.report.render import build_blocks, to_html, to_markdown

ASSETS = "report_assets"


def build_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path | None = None,
    *,
    before: str | None = None,
    examples: int = 6,
) -> tuple[Path, Path]:
    """Write `report.html` and `report.md` (+ `report_assets/*.png`) into `out_dir`
    (default: the first run directory) and return both paths.

    `before` names the evaluation shown as "before" in the examples (default: one named M_ref,
    reference, base, baseline or before, else the first).
    """
    if not run_dirs:
        raise ValueError("build_report needs at least one run directory")
    runs = read_runs(list(run_dirs))
    out = Path(out_dir) if out_dir is not None else Path(run_dirs[0])
    blocks = build_blocks(runs, before=before, examples=examples)
    html_path, md_path = out / "report.html", out / "report.md"
    write_text_atomic(html_path, to_html(blocks))
    assets = out / ASSETS
    markdown, files = to_markdown(blocks, assets)
    # the folder belongs to the report: stale plots of a section that is gone must not linger
    shutil.rmtree(assets, ignore_errors=True)
    assets.mkdir(parents=True, exist_ok=True)
    for name, png in files.items():
        (assets / name).write_bytes(png)
    write_text_atomic(md_path, markdown)
    return html_path, md_path


__all__ = ["build_report"]
