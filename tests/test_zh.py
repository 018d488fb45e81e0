"""The guide and the notebooks in Chinese keep step with the English ones: every page has its zh page
with the same sections, figures and commands, every zh link lands somewhere, and the zh notebooks
run the English notebooks' code cells, unchanged, with Chinese prose."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS, ZH = ROOT / "docs", ROOT / "docs" / "zh"
GUIDE = ("index", "diffusion", "unet", "vae", "clip", "generation", "micro", "family", "experiments", "glossary")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
# names that may stand in Chinese running text as they are: libraries, models, papers, units
NAMES = {
    "UNet", "VAE", "CLIP", "SD", "SDXL", "GPU", "CPU", "PyTorch", "diffusers", "transformers", "Graphviz", "Jupyter",
    "JupyterLab", "Chromium", "DAAM", "FreeU", "PNDM", "PLMS", "DDIM", "Euler", "GEGLU", "GELU", "SiLU", "MLP", "BPE",
    "OpenAI", "CompVis", "ldm", "LoRA", "xformers", "Transformer", "FLOPs", "GFLOPs", "MFLOPs", "RGB", "PNG", "SVG", "JSON",
    "DOT", "HTML", "CLI", "API", "KL", "AE", "ReLU", "softmax", "dropout", "token", "tokens", "batch", "micro", "tiny",
    "prompt", "baseline", "img2img", "safetensors", "hub", "et", "al", "Ho", "Rombach", "Kingma", "Welling", "Hertz",
    "Voynov", "Si", "Kwon", "Tang", "Radford", "Vaswani", "Song", "Nichol", "Dhariwal", "Ronneberger", "Prompt",
    "prompt-to-prompt", "h-space", "P+", "TokenCompose", "SNR", "EMA", "BK-SDM", "B-LoRA", "InstantStyle",
    "Stable", "Diffusion", "Hugging", "Face", "Python", "Kullback", "Leibler", "Kandinsky", "Wang", "Sample", "None",
    # symbols of the formulas the pages write out
    "exp", "log", "mean", "logvar", "sample", "uncond", "cond", "scale", "shift", "std", "var",
}


def fenced(text: str) -> list[str]:
    return FENCE.findall(text)


def prose(text: str) -> str:
    """The running text: no fenced or indented blocks, code spans, link targets, images, quoted
    prompts, tables a script writes (between markers), file names or HTML."""
    text = FENCE.sub("", text)
    text = re.sub(r"<!-- ([^/][^>]*?) -->.*?<!-- (/[^>]*|end) -->", "", text, flags=re.S)  # generated
    text = re.sub(r"(?m)^(?: {4}|\t).*$", "", text)
    text = re.sub(r"`[^`]*`", "", text)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r'"[ -~]*"', "", text)  # a prompt, as the model reads it
    text = re.sub(r"\b[\w\-]+\.(?:md|py|png|svg|json|ipynb|safetensors)\b", "", text)
    return re.sub(r"<!--.*?-->|<[^>]+>", "", text)


def heading_numbers(text: str) -> list[str]:
    lines = [line for line in FENCE.sub("", text).splitlines() if re.match(r"#{1,4} ", line)]
    return [m.group(1) if (m := re.match(r"#+ (\d+(?:\.\d+)*)\b", line)) else "" for line in lines]


def images(text: str) -> set[str]:
    return {Path(target).name for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", text)}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation gone (CJK kept), spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def page_anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in FENCE.sub("", path.read_text()).splitlines() if re.match(r"#+ ", line)}


def notebook_anchors(path: Path) -> set[str]:
    book = nbformat.read(path, as_version=4)
    return {line.lstrip("#").strip().replace(" ", "-") for c in book.cells if c.cell_type == "markdown"
            for line in c.source.splitlines() if re.match(r"#+ ", line)}


@pytest.mark.parametrize("name", GUIDE)
def test_every_page_has_its_chinese_page_with_the_same_sections_figures_and_commands(name):
    english, chinese = (DOCS / f"{name}.md").read_text(), (ZH / f"{name}.md")
    assert chinese.exists(), f"docs/zh/{name}.md is missing"
    chinese = chinese.read_text()
    assert heading_numbers(chinese) == heading_numbers(english), "the zh page's sections are not the English page's"
    assert images(chinese) == images(english), "the zh page shows other figures"
    assert fenced(chinese) == fenced(english), "a command or its output differs: copy the English blocks verbatim"


@pytest.mark.parametrize("page", sorted(ZH.glob("*.md")), ids=lambda p: p.name)
def test_every_chinese_link_lands(page):
    for target in re.findall(r"\]\(([^)\s:]+)\)", FENCE.sub("", page.read_text())):
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        assert path.exists(), f"{page.name} links to missing {target}"
        if anchor and path.suffix == ".ipynb":
            assert unquote(anchor) in notebook_anchors(path), f"{page.name}: {target} is no heading of the notebook"
        elif anchor and path.suffix == ".md":
            assert unquote(anchor) in page_anchors(path), f"{page.name}: {target} is no heading of {path.name}"


@pytest.mark.parametrize("name", [n for n in GUIDE if n != "glossary"])
def test_chinese_running_text_leaves_no_english(name):
    text = prose((ZH / f"{name}.md").read_text())
    words = re.findall(r"(?<![\w.\-/])[A-Za-z][a-z]{2,}(?:[-'][a-z]+)*(?![\w\-/(])", text)
    from explorer.micro.data import vocabulary  # micro's own words: what its prompts are made of

    allowed = {n.lower() for n in NAMES} | set(vocabulary())
    left = sorted({w for w in words if w.lower() not in allowed})
    assert len(left) <= 3, f"docs/zh/{name}.md has English in its running text: {left[:30]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_chinese_notebook_runs_the_english_code_with_chinese_prose(path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from zh_notebooks import built

    chinese_path = ROOT / "notebooks" / "zh" / path.name
    assert chinese_path.exists(), f"notebooks/zh/{path.name} is missing: translate notebooks/zh/text/{path.stem}.md"
    english, chinese = nbformat.read(path, as_version=4), nbformat.read(chinese_path, as_version=4)
    code = lambda book: [(c.source, c.outputs) for c in book.cells if c.cell_type == "code"]  # noqa: E731
    assert code(chinese) == code(english), "a code cell differs: run scripts/zh_notebooks.py build"
    assert chinese.cells == built(path.stem).cells, "run scripts/zh_notebooks.py build"
    english_numbers = [n for n in heading_numbers("\n".join(c.source for c in english.cells if c.cell_type == "markdown")) if n]
    chinese_text = "\n".join(c.source for c in chinese.cells if c.cell_type == "markdown")
    assert [n for n in heading_numbers(chinese_text) if n] == english_numbers
    assert len(re.findall(r"[\u4e00-\u9fff]", chinese_text)) > 100, "the prose is not in Chinese yet"
