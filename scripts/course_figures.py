"""Draw the course's pictures from micro's weights and fill in the numbers the docs quote.

    .venv/bin/python scripts/course_figures.py          # `make diagrams` runs it

Writes docs/figures/<name>.png for every figure of `explorer.course.FIGURES`, docs/figures/numbers.json
(the numbers each picture is drawn from: tests/test_course.py regenerates and compares them), and
the numbers in docs/*.md between markers: <!-- n:alpha_bar_500 -->0.276<!-- /n -->. Takes about
half a minute on a CPU.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FIGURES = DOCS / "figures"
MARKER = re.compile(r"<!-- n:(\w+) -->(.*?)<!-- /n -->")


def shown(value) -> str:
    """A number as the docs show it: as it was rounded, a whole number with thousands separated
    (12,288); a list as its items, comma-separated."""
    if isinstance(value, list):
        return ", ".join(shown(v) for v in value)
    return f"{value:,}" if isinstance(value, int) else str(value)


def fill(text: str, numbers: dict) -> str:
    def one(match: re.Match) -> str:
        key = match.group(1)
        if key not in numbers:
            sys.exit(f"a marker names {key!r}, which no figure of explorer.course measures")
        return f"<!-- n:{key} -->{shown(numbers[key])}<!-- /n -->"

    return MARKER.sub(one, text)


def main() -> None:
    import torch

    from explorer import course

    torch.set_num_threads(1)  # micro's tensors are tiny: one thread is enough, and a busy machine cannot stall it
    made = course.figures()
    FIGURES.mkdir(exist_ok=True)
    for figure in made:
        figure.draw().save(FIGURES / f"{figure.name}.png", optimize=True)
        print(f"docs/figures/{figure.name}.png", flush=True)
    drawn_from = json.dumps({f.name: f.numbers for f in made}, indent=1, ensure_ascii=False)
    (FIGURES / "numbers.json").write_text(drawn_from + "\n")
    numbers = course.numbers(made)
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        filled = fill(text, numbers)
        if filled != text:
            page.write_text(filled)
            print(f"{page.relative_to(ROOT)}: numbers filled in")


if __name__ == "__main__":
    main()
