"""Fill docs/experiments.md's tables from a run of the studies (explorer.micro.studies).

    .venv/bin/python -m explorer.micro.studies --out docs/experiments-results.json   # about 25 minutes
    .venv/bin/python scripts/experiment_docs.py            # the tables (both languages), and the two figures
    .venv/bin/python scripts/experiment_docs.py --tables   # the tables only

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


# The tables' words, in the page's two languages (docs/experiments.md and docs/zh/experiments.md).
WORDS = {
    "en": {
        "resolutions": "| layers reading the other prompt | colour from it | shape from it | position from it | image change |",
        "edits": "| edit | colour as asked | shape as asked | position as asked | nothing drawn | image change |",
        "swap": ("| swap the colour word, every layer | every step | steps 0–4 only | steps 5–20 only |",
                 "colour became the new word's", "shape kept", "position kept",
                 "red → blue with the position kept (a test holds it at 80 % or more)", "mean image change"),
        "names": {"baseline": "none (the baseline)"},
        "run": "{images} images a study ({prompts} prompts × seeds {seeds}), {steps} PNDM steps, guidance {guidance}; "
               "the whole run took {minutes} minutes on this project's 2-core CPU",
    },
    "zh": {
        "resolutions": "| 读另一个提示词的层 | 颜色随它 | 形状随它 | 位置随它 | 图像变化 |",
        "edits": "| 修改 | 颜色符合提示词 | 形状符合提示词 | 位置符合提示词 | 什么也没画 | 图像变化 |",
        "swap": ("| 替换颜色词（所有层） | 每一步 | 只在第 0–4 步 | 只在第 5–20 步 |",
                 "颜色变成新词的颜色", "形状不变", "位置不变", "红 → 蓝且位置不变（测试要求至少 80 %）", "平均图像变化"),
        "names": {"baseline": "无（基线）", "mid block off": "关闭中间块", "cross-attention off": "关闭全部交叉注意力",
                  "finest skips off": "关闭最细的跳跃连接（16x16）", "coarse skips off": "关闭较粗的跳跃连接（4x4）",
                  "no guidance, steps 0–4": "第 0–4 步不做引导", "no guidance, steps 5–20": "第 5–20 步不做引导"},
        "run": "每项研究 {images} 张图（{prompts} 个提示词 × 种子 {seeds}），PNDM {steps} 步，引导系数 {guidance}；"
               "整个运行在本项目的双核 CPU 上用了 {minutes} 分钟",
    },
}


def pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def resolution_table(summary: dict, lang: str = "en") -> str:
    lines = [WORDS[lang]["resolutions"], "|---|---:|---:|---:|---:|"]
    for size in RESOLUTIONS:
        s = summary[f"P+ {size}"]
        lines.append(f"| {size} | {pct(s['colour from the other prompt'])} | {pct(s['shape from the other prompt'])} | "
                     f"{pct(s['position from the other prompt'])} | {100 * s['change']:.1f} % |")
    return "\n".join(lines)


def edits_table(summary: dict, names: list[str], lang: str = "en") -> str:
    lines = [WORDS[lang]["edits"], "|---|---:|---:|---:|---:|---:|"]
    for name in ["baseline", *names]:
        s = summary[name]
        lines.append(f"| {WORDS[lang]['names'].get(name, name)} | {pct(s['colour as asked'])} | "
                     f"{pct(s['shape as asked'])} | {pct(s['position as asked'])} | {pct(s['nothing drawn'])} | "
                     f"{100 * s['change']:.1f} % |")
    return "\n".join(lines)


def swap_table(summary: dict, lang: str = "en") -> str:
    names = ["swap colour", "swap colour, steps 0–4", "swap colour, steps 5–20"]
    head, swapped, shape, position, red, change = WORDS[lang]["swap"]
    rows = [(swapped, "colour swapped"), (shape, "shape kept"), (position, "position kept")]
    lines = [head, "|---|" + "---:|" * len(names)]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(pct(summary[n][key]) for n in names) + " |")
    lines.append(f"| {red} | " + " | ".join(pct(summary[n]["red → blue"]) for n in names) + " |")
    lines.append(f"| {change} | " + " | ".join(f"{100 * summary[n]['change']:.1f} %" for n in names) + " |")
    return "\n".join(lines)


def tables(summary: dict, lang: str) -> dict[str, str]:
    return {
        "resolutions": resolution_table(summary, lang),
        "swap": swap_table(summary, lang),
        "blocks": edits_table(summary, ["mid block off", "cross-attention off"], lang),
        "skips": edits_table(summary, ["FreeU", "finest skips off", "coarse skips off"], lang),
        "time": edits_table(summary, ["t + 300", "t − 300"], lang),
        "guidance": edits_table(summary, ["no guidance, steps 0–4", "no guidance, steps 5–20"], lang),
    }


def filled(text: str, results: dict, lang: str) -> str:
    """The page's text with its tables and its sentence on the run made from `results`."""
    for name, table in tables(results["summary"], lang).items():
        pattern = re.compile(rf"(<!-- table: {re.escape(name)} -->\n).*?(<!-- end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"a page has no table {name!r}")
        text = pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)
    images = len([r for r in results["rows"] if r["study"] == "baseline"])
    run = WORDS[lang]["run"].format(images=images, prompts=images // len(results["seeds"]),
                                    seeds=", ".join(map(str, results["seeds"])), steps=results["steps"],
                                    guidance=results["guidance"], minutes=f"{results['seconds'] / 60:.0f}")
    return re.sub(r"(<!-- run -->).*?(<!-- end -->)", lambda m: m.group(1) + run + m.group(2), text, flags=re.S)


def main() -> None:
    results = json.loads(RESULTS.read_text())
    for lang, page in (("en", PAGE), ("zh", PAGE.parent / "zh" / PAGE.name)):
        if page.exists():
            page.write_text(filled(page.read_text(), results, lang))
            print(f"wrote {page.relative_to(ROOT)}")
    if "--tables" not in sys.argv:
        for path in example_figures(PAGE.parent).values():
            print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
