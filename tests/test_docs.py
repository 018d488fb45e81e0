"""The docs show real output: every ```console block in docs/ is run and compared.

Regenerate after changing what the CLI prints:  SD_EXPLORER_UPDATE_DOCS=1 pytest tests/test_docs.py
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from explorer.cli import app

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"```console\n\$ (explore [^\n]*)\n(.*?)```", re.S)
UPDATE = os.environ.get("SD_EXPLORER_UPDATE_DOCS") == "1"


def output_of(command: str) -> str:
    result = CliRunner().invoke(app, shlex.split(command)[1:])
    text = result.stdout + result.stderr
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def console_blocks():
    for page in sorted(DOCS.glob("*.md")):
        for match in BLOCK.finditer(page.read_text()):
            yield pytest.param(page, match.group(1), match.group(2), id=f"{page.name}: {match.group(1)[:60]}")


@pytest.mark.parametrize("page, command, shown", list(console_blocks()))
def test_console_blocks_show_real_output(page, command, shown):
    actual = output_of(command)
    if UPDATE and actual != shown:
        text = page.read_text()
        page.write_text(text.replace(f"$ {command}\n{shown}```", f"$ {command}\n{actual}```", 1))
        return
    assert actual == shown, f"{page.name}: `{command}` prints something else now; see the module docstring"


def test_relative_links_resolve():
    root = DOCS.parent
    for page in [root / "README.md", *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def _slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as "-"."""
    text = re.sub(r"`([^`]*)`", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_links_to_a_section_of_a_page_land_on_a_heading():
    root = DOCS.parent
    seen = 0
    for page in [root / "README.md", *DOCS.glob("*.md")]:
        for target, anchor in re.findall(r"\]\(([^)#:\s]*\.md)?#([^)]+)\)", page.read_text()):
            linked = page.parent / target if target else page
            headings = {_slug(h) for h in re.findall(r"^#+ (.*)$", linked.read_text(), re.M)}
            assert anchor in headings, f"{page.name} links to {target or page.name}#{anchor}, which is no heading"
            seen += 1
    assert seen >= 10


def test_naming_page_is_generated_from_the_real_conversion(tmp_path):
    import subprocess
    import sys

    fresh = tmp_path / "naming.md"
    script = DOCS.parent / "scripts" / "naming_page.py"
    subprocess.run([sys.executable, str(script), str(fresh)], check=True, cwd=tmp_path)
    assert (DOCS / "naming.md").read_text() == fresh.read_text(), "run `python scripts/naming_page.py docs/naming.md`"
    text = fresh.read_text()
    assert "| `down_blocks.0.attentions.0` | Transformer2DModel | `model.diffusion_model.input_blocks.1.1` | 1.4.2 |" in text
    assert "| `up_blocks.0.resnets.0` | ResnetBlock2D | `model.diffusion_model.output_blocks.0.0` | 1.4.1 |" in text
    assert "`first_stage_model.encoder.mid.attn_1`" in text


def _sh_commands():
    for page in [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))]:
        for block in re.findall(r"```sh\n(.*?)```", page.read_text(), re.S):
            for line in block.splitlines():
                command = line.split("#")[0].strip()
                if re.match(r"explore (unet|vae|clip)\b", command) and "--model" not in command and "|" not in command:
                    yield command


@pytest.mark.parametrize("command", sorted(set(_sh_commands())))
def test_commands_shown_in_the_docs_work(command):
    result = CliRunner().invoke(app, shlex.split(command)[1:])
    assert result.exit_code == 0, f"`{command}`: {result.output}"


def test_make_demo_ends_with_three_next_steps_that_run_as_written(tmp_path):
    """The three lines `make demo` prints last: the explore commands in them run as written (in a
    fresh folder), and what the others open exists."""
    import subprocess
    import sys

    root = DOCS.parent
    make = (root / "Makefile").read_text()
    demo = make[make.index("\ndemo:") :].split("\n\n")[0]
    steps = re.findall(r"@echo [\"']  (\$\(BIN\)/.*?)\s+# ", demo)
    assert len(steps) == 3, demo
    bin_dir = str(Path(sys.executable).parent)
    ran = 0
    for step in steps:
        first = step.split("&&")[0].replace("$(BIN)", bin_dir).strip()
        words = shlex.split(first)
        if Path(words[0]).name == "explore":
            result = subprocess.run(words, cwd=tmp_path, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, f"{first}: {result.stderr}"
            ran += 1
    assert ran == 2 and (tmp_path / "unet.svg").stat().st_size > 10_000 and (tmp_path / "site" / "index.html").exists()
    assert "notebooks/01_unet.ipynb" in demo and (root / "notebooks" / "01_unet.ipynb").exists()
    assert "notebooks = [" in (root / "pyproject.toml").read_text()  # the extra the second line installs


def test_the_glossary_is_generated_from_the_real_models(tmp_path):
    """docs/glossary.md and docs/zh/glossary.md are what explorer.glossary makes from the SD1.5 traces
    and the naming tables now: a renamed module, a moved figure or a changed class shows."""
    from explorer import trace
    from explorer.glossary import entries, page

    found = entries({c: trace(c) for c in ("unet", "vae", "clip")})
    assert (DOCS / "glossary.md").read_text() == page(found, "en"), "run `python scripts/glossary_page.py`"
    assert (DOCS / "zh" / "glossary.md").read_text() == page(found, "zh"), "run `python scripts/glossary_page.py`"
    cross = next(e for e in found if e.en == "cross-attention")
    assert cross.section == "1.4.2.1.2" and cross.type == "Attention" and cross.original.endswith("input_blocks.1.1.transformer_blocks.0.attn2")
    assert next(e for e in found if e.en == "prompt embedding").shape == "[2, 77, 768]"
