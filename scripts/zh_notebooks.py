"""The Chinese notebooks (notebooks/zh/): the English notebooks' code cells and outputs, Chinese prose.

One source for the code: a zh notebook is built from its English notebook (executed, with its outputs)
and the Chinese text of its markdown cells, kept in notebooks/zh/text/NN_name.md, one cell after each
`<!-- cell K -->` line (K counts the English notebook's markdown cells from 0). Change a code cell in
the English notebook, run `make notebooks` and this script, and the zh notebook follows; the tests
fail when it does not.

    .venv/bin/python scripts/zh_notebooks.py build             # every zh notebook whose text exists
    .venv/bin/python scripts/zh_notebooks.py extract 07_experiments   # the English prose to translate
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
ZH = NOTEBOOKS / "zh"
TEXT = ZH / "text"
MARK = re.compile(r"^<!-- cell (\d+) -->$", re.M)


def markdown_cells(book) -> list:
    return [c for c in book.cells if c.cell_type == "markdown"]


def read_text(path: Path) -> list[str]:
    """The cells of a text file, in order; one sentence when they are not numbered 0, 1, 2, ..."""
    text = path.read_text(encoding="utf-8")
    numbers = [int(n) for n in MARK.findall(text)]
    if numbers != list(range(len(numbers))):
        raise SystemExit(f"{path}: its cells are numbered {numbers}, not 0 to {len(numbers) - 1} in order")
    return [part.strip("\n") for part in MARK.split(text)[2::2]]


def extract(name: str) -> Path:
    """notebooks/zh/text/NAME.md with the English notebook's markdown cells, ready to translate."""
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    TEXT.mkdir(parents=True, exist_ok=True)
    path = TEXT / f"{name}.md"
    path.write_text("".join(f"<!-- cell {k} -->\n{c.source.strip()}\n\n" for k, c in enumerate(markdown_cells(book))),
                    encoding="utf-8")
    return path


def built(name: str):
    """The zh notebook of NAME: the English one, its markdown cells replaced by the Chinese text."""
    english = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    cells = read_text(TEXT / f"{name}.md")
    prose = markdown_cells(english)
    if len(cells) != len(prose):
        raise SystemExit(f"{TEXT / (name + '.md')} has {len(cells)} cells; {name}.ipynb has {len(prose)} markdown cells")
    book = copy.deepcopy(english)
    for cell, text in zip(markdown_cells(book), cells):
        cell.source = text
    book.metadata["language_info"] = {**book.metadata.get("language_info", {}), "name": "python"}
    return book


def build() -> list[Path]:
    ZH.mkdir(exist_ok=True)
    written = []
    for text in sorted(TEXT.glob("*.md")):
        path = ZH / f"{text.stem}.ipynb"
        nbformat.write(built(text.stem), path)
        written.append(path)
    return written


def main() -> None:
    if sys.argv[1:2] == ["extract"]:
        for name in sys.argv[2:] or [p.stem for p in sorted(NOTEBOOKS.glob("*.ipynb"))]:
            print(f"wrote {extract(name).relative_to(ROOT)}")
    elif sys.argv[1:2] == ["build"]:
        for path in build():
            print(f"wrote {path.relative_to(ROOT)}")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
