"""The walkthrough notebooks run headless, top to bottom, and are committed with their outputs."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
SECTIONS = {
    "01_unet": ["1.1", "1.2", "1.3", "1.4", "1.4.1", "1.4.2", "1.4.2.1", "1.4.2.1.1", "1.4.2.1.2", "1.4.2.1.3",
                "1.4.3", "1.5", "1.6", "1.7", "1.7.1", "1.8"],
    "02_vae": ["2.0", "2.1", "2.2", "2.3", "2.4", "2.4.1", "2.5", "2.6", "2.7"],
    "03_clip": ["3", "3.1", "3.2"],
    "04_generation": [],
    "05_micro": [],
}


def test_the_five_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == list(SECTIONS)


def _kinds(cell) -> list[tuple[str, ...]]:
    """What a code cell shows: per output, its type and (for displays) its mime types."""
    return [(o.output_type, *sorted(o.get("data", {}))) for o in cell.outputs if o.output_type != "stream"] + (
        [("stream",)] if any(o.output_type == "stream" for o in cell.outputs) else []
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_outputs_and_the_article_sections(path):
    book = nbformat.read(path, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "run `make notebooks` and commit"
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    headings = [line for c in book.cells if c.cell_type == "markdown" for line in c.source.splitlines() if line.startswith("#")]
    numbers = [m.group(1) for h in headings if (m := re.match(r"#+ (\d+(?:\.\d+)*) ", h))]
    for section in SECTIONS[path.stem]:
        assert section in numbers, f"{path.name} has no heading for section {section}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_headless_and_shows_what_is_committed(path, tmp_path):
    """Executed again, every cell shows what its committed outputs show (the same kinds of output:
    text, a figure, a table) and at most one rich display: the committed notebook is current."""
    committed = nbformat.read(path, as_version=4)
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    for k, (fresh, old) in enumerate(zip(book.cells, committed.cells)):
        if fresh.cell_type == "code":
            assert _kinds(fresh) == _kinds(old), f"cell {k} shows something else now: run `make notebooks`"
            displays = [o for o in fresh.outputs if o.output_type in ("display_data", "execute_result")]
            assert len(displays) <= 1, f"cell {k} shows {len(displays)} displays"
