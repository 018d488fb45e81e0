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
}


def test_the_four_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == list(SECTIONS)


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
def test_runs_headless(path, tmp_path):
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
