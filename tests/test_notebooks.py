"""The walkthrough notebooks run headless, top to bottom, and are committed with their outputs."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import needs_chromium

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
SECTIONS = {
    "00_diffusion": ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8"],
    "01_unet": ["1.1", "1.2", "1.3", "1.4", "1.4.1", "1.4.2", "1.4.2.1", "1.4.2.1.1", "1.4.2.1.2", "1.4.2.1.3",
                "1.4.3", "1.5", "1.6", "1.7", "1.7.1", "1.8"],
    "02_vae": ["2.0", "2.1", "2.2", "2.3", "2.4", "2.4.1", "2.4.2", "2.5", "2.6", "2.7"],
    "03_clip": ["3", "3.1", "3.2"],
    "04_generation": [],
    "05_micro": [],
    "06_family": [],
    "07_experiments": ["7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "7.7", "7.8"],
}


def test_the_notebooks_exist():
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
    order = [tuple(int(part) for part in n.split(".")) for n in numbers]
    assert order == sorted(order), f"{path.name}: its sections are not in the article's order: {numbers}"


def anchors(path: Path) -> set[str]:
    """The ids JupyterLab and nbconvert (so GitHub) give a notebook's headings: the heading's text with
    its spaces as "-", characters a URL fragment cannot hold percent-encoded."""
    from urllib.parse import quote

    book = nbformat.read(path, as_version=4)
    texts = [line.lstrip("#").strip() for c in book.cells if c.cell_type == "markdown"
             for line in c.source.splitlines() if re.match(r"#+ ", line)]
    return {quote(text.replace(" ", "-"), safe="?/:@!$&'()*+,;=") for text in texts}


def test_in_the_notebook_links_land_on_their_section():
    """Every link from the docs (and from one notebook to another) into a notebook's section lands on a
    heading; and each doc page's "In the notebook: [NN_name § N](...)" links to section N's heading."""
    root = NOTEBOOKS[0].parent.parent
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    texts = {page.name: page.read_text() for page in pages}
    texts.update({p.name: "".join(c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "markdown")
                  for p in NOTEBOOKS})
    seen = 0
    for name, text in texts.items():
        for notebook, anchor in re.findall(r"\]\((?:\.\./notebooks/)?(\w+)\.ipynb#([^)]+)\)", text):
            found = anchors(NOTEBOOKS[0].parent / f"{notebook}.ipynb")
            assert anchor in found, f"{name}: {notebook}#{anchor} is no heading"
            seen += 1
        for section, anchor in re.findall(r"In the notebook: \[\w+ § ([\d.]+)\]\([^)#]*(?:#([^)]*))?\)", text):
            assert anchor.startswith(section + "-"), f"{name}: the link to § {section} lands on {anchor or 'the top'}"
    assert seen >= 35  # the sections of parts 0 to 3, and the notebooks' links to one another


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


# What a reader sees: every notebook rendered to HTML by nbconvert, in Chromium at 1100 px wide.
READER = """() => {
  const cut = [];
  for (const area of document.querySelectorAll('.jp-OutputArea-output, .output_subarea')) {
    const box = area.getBoundingClientRect();
    for (const e of area.querySelectorAll('svg, img')) {
      const r = e.getBoundingClientRect();
      if (r.width && r.right > box.right + 1) cut.push([e.tagName, Math.round(r.width), Math.round(box.width)]);
    }
    if (area.scrollWidth > area.clientWidth + 1) cut.push(['scroll', area.scrollWidth, area.clientWidth]);
  }
  return {cut, figures: document.querySelectorAll('.jp-RenderedSVG img, .output_svg svg').length,
          page: document.documentElement.scrollWidth};
}"""


@needs_chromium()
def test_rendered_to_html_nothing_is_cut_off_at_1100_px(browser, tmp_path):
    """nbconvert's HTML shows each SVG as an image (as JupyterLab and GitHub do): every figure and
    every output fits its cell. Screenshots of each page are left in the test's folder."""
    from nbconvert import HTMLExporter

    page = browser.new_page(viewport={"width": 1100, "height": 900})
    figures = 0
    for path in NOTEBOOKS:
        html, _ = HTMLExporter().from_notebook_node(nbformat.read(path, as_version=4))
        out = tmp_path / f"{path.stem}.html"
        out.write_text(html)
        page.goto(out.as_uri())
        seen = page.evaluate(READER)
        page.screenshot(path=str(tmp_path / f"{path.stem}.png"), full_page=True)
        assert seen["cut"] == [] and seen["page"] <= 1100, f"{path.name}: {seen}"
        figures += seen["figures"]
    assert figures >= 25  # the notebooks' figures were there to check
    page.close()


@needs_chromium()
def test_inline_figures_fit_and_open_at_full_size(browser, tmp_path):
    """Shown inline, as the classic notebook shows SVG (in a div.output_svg of a 900 px cell), each
    figure fits; the link in a wide figure's corner opens it at full size, and back."""
    svgs = [o.data["image/svg+xml"] for p in NOTEBOOKS for c in nbformat.read(p, as_version=4).cells
            if c.cell_type == "code" for o in c.outputs if "image/svg+xml" in o.get("data", {})]
    cells = "".join(f'<div class="output_subarea output_svg">{svg[svg.index("<svg"):]}</div>' for svg in svgs)
    out = tmp_path / "inline.html"
    out.write_text(f'<!doctype html><html><body><div style="width:900px;overflow-x:auto">{cells}</div></body></html>')
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(out.as_uri())
    seen = page.evaluate(READER)
    assert seen["cut"] == [] and seen["figures"] == len(svgs) >= 25, seen
    svg = page.locator("svg[width='100%']").first
    fitted = svg.bounding_box()["width"]
    svg.locator("a.sdx-full").click()
    natural = page.evaluate("(id) => document.getElementById(id).viewBox.baseVal.width", svg.get_attribute("id"))
    assert abs(svg.bounding_box()["width"] - natural * 4 / 3) < 2 and natural * 4 / 3 > fitted
    svg.locator("a.sdx-fit").click()
    assert abs(svg.bounding_box()["width"] - fitted) < 2
    page.close()
