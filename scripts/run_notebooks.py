"""Execute the walkthrough notebooks in place, so the committed outputs are current.

    .venv/bin/python scripts/run_notebooks.py            # all of them
    .venv/bin/python scripts/run_notebooks.py 02_vae     # some of them
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run(path: Path, timeout: int = 900) -> None:
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(book, path)


def main() -> None:
    wanted = sys.argv[1:]
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        if wanted and not any(w in path.stem for w in wanted):
            continue
        start = time.perf_counter()
        run(path)
        print(f"{path.name}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
