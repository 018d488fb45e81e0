"""Fill docs/experiments.md's tables from a run of the studies (explorer.micro.studies).

    .venv/bin/python -m explorer.micro.studies --out docs/experiments-results.json   # about 25 minutes
    .venv/bin/python scripts/experiment_docs.py            # the tables, and the page's two figures

Each table sits between `<!-- table: NAME -->` and `<!-- end -->` in docs/experiments.md; the prose
around them is written by hand from the same numbers.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explorer.micro.studies import RESOLUTIONS, example_figures  # noqa: E402

PAGE = ROOT / "docs" / "experiments.md"
RESULTS = ROOT / "docs" / "experiments-results.json"


def pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def resolution_table(summary: dict) -> str:
    lines = ["| layers reading the other prompt | colour from it | shape from it | position from it | image change |",
             "|---|---:|---:|---:|---:|"]
    for size in RESOLUTIONS:
        s = summary[f"P+ {size}"]
        lines.append(f"| {size} | {pct(s['colour from the other prompt'])} | {pct(s['shape from the other prompt'])} | "
                     f"{pct(s['position from the other prompt'])} | {100 * s['change']:.1f} % |")
    return "\n".join(lines)


def edits_table(summary: dict, names: list[str]) -> str:
    lines = ["| edit | colour as asked | shape as asked | position as asked | nothing drawn | image change |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in ["baseline", *names]:
        s = summary[name]
        lines.append(f"| {'none (the baseline)' if name == 'baseline' else name} | {pct(s['colour as asked'])} | "
                     f"{pct(s['shape as asked'])} | {pct(s['position as asked'])} | {pct(s['nothing drawn'])} | "
                     f"{100 * s['change']:.1f} % |")
    return "\n".join(lines)


def swap_table(summary: dict) -> str:
    names = ["swap colour", "swap colour, steps 0–4", "swap colour, steps 5–20"]
    heads = ["every step", "steps 0–4 only", "steps 5–20 only"]
    rows = [("colour became the new word's", "colour swapped"), ("shape kept", "shape kept"), ("position kept", "position kept")]
    lines = ["| swap the colour word, every layer | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(names)]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(pct(summary[n][key]) for n in names) + " |")
    lines.append("| red → blue with the position kept (a test holds it at 80 % or more) | "
                 + " | ".join(pct(summary[n]["red → blue"]) for n in names) + " |")
    lines.append("| mean image change | " + " | ".join(f"{100 * summary[n]['change']:.1f} %" for n in names) + " |")
    return "\n".join(lines)


def main() -> None:
    results = json.loads(RESULTS.read_text())
    summary = results["summary"]
    tables = {
        "resolutions": resolution_table(summary),
        "swap": swap_table(summary),
        "blocks": edits_table(summary, ["mid block off", "cross-attention off"]),
        "skips": edits_table(summary, ["FreeU", "finest skips off", "coarse skips off"]),
        "time": edits_table(summary, ["t + 300", "t − 300"]),
        "guidance": edits_table(summary, ["no guidance, steps 0–4", "no guidance, steps 5–20"]),
    }
    text = PAGE.read_text()
    for name, table in tables.items():
        pattern = re.compile(rf"(<!-- table: {re.escape(name)} -->\n).*?(<!-- end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{PAGE.name} has no table {name!r}")
        text = pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)
    images = len([r for r in results["rows"] if r["study"] == "baseline"])
    text = re.sub(r"(<!-- run -->).*?(<!-- end -->)", lambda m: m.group(1) + (
        f"{images} images a study ({images // len(results['seeds'])} prompts × seeds "
        f"{', '.join(map(str, results['seeds']))}), {results['steps']} PNDM steps, guidance {results['guidance']}; "
        f"the whole run took {results['seconds'] / 60:.0f} minutes on this project's 2-core CPU") + m.group(2), text, flags=re.S)
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    for path in example_figures(PAGE.parent).values():
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
