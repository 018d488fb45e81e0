"""The interactive page, in a real browser: Debian's Chromium driven by Playwright, headless."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from conftest import needs_chromium
from explorer.cli import app
from explorer.generation import Settings, generate

HOSTILE = '<img src=x onerror="window.__xss=1"></script><script>window.__xss=2</script> a lighthouse'

pytestmark = needs_chromium()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    generate(Settings(prompt=HOSTILE, model="tiny", steps=2, seed=1, attention_maps=True), run)
    folder = tmp_path_factory.mktemp("site") / "site"
    result = CliRunner().invoke(app, ["html", str(folder), "--run", str(run), "--model", "sd15"])
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def page(browser, site):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.errors, page.requests, page.dialogs = [], [], []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.goto((site / "index.html").as_uri())
    yield page
    assert not page.errors
    assert [u for u in page.requests if not u.startswith("file://")] == []  # offline: no network at all
    page.close()


def info(page) -> str:
    return page.inner_text("#info")


def test_opens_on_the_pipeline_and_the_u(page, tmp_path):
    assert page.locator("#diagram [data-component=unet]").count() == 1
    assert page.locator('#diagram [data-section=unet] [data-path="up_blocks.3"]').count() == 1
    page.screenshot(path=str(tmp_path / "pipeline.png"), full_page=True, caret="initial")  # no injected style: the CSP would refuse it


def test_drill_from_the_u_into_a_block_and_see_real_shapes(page):
    page.click('#diagram [data-section=unet] [data-path="down_blocks.0"]')
    assert "down_blocks.0" in page.inner_text("#crumbs")
    resnet = page.locator('#diagram [data-path="down_blocks.0.resnets.0"]')
    assert resnet.count() == 1
    resnet.hover()
    text = info(page)
    assert "ResnetBlock2D" in text and "[2, 320, 64, 64]" in text and "[2, 1280]" in text and "2,255,040" in text
    assert "GFLOPs" in text


def test_down_to_cross_attention_and_the_77_prompt_tokens(page):
    page.click("#tabs button[data-tab=unet]")
    for path in ("down_blocks.0", "down_blocks.0.attentions.0", "down_blocks.0.attentions.0.transformer_blocks.0",
                 "down_blocks.0.attentions.0.transformer_blocks.0.attn2"):
        page.click(f'#diagram [data-path="{path}"]')
    diagram = page.inner_text("#diagram")
    assert "[2, 77, 768]" in diagram and "[2, 8, 4096, 77]" in diagram  # keys from 77 prompt tokens; the scores
    page.hover('#diagram [data-path="down_blocks.0.attentions.0.transformer_blocks.0.attn2.scores"]')
    assert "77" in info(page) and "AttentionScores" in info(page)
    page.click("#crumbs a >> text=UNet")
    assert page.locator('#diagram [data-path="mid_block"]').count() == 1


def test_every_box_of_a_module_or_step_carries_its_path(page):
    page.click("#tabs button[data-tab=vae]")
    page.click('#diagram [data-path="encoder"]')
    page.click('#diagram [data-path="encoder.mid_block"]')
    page.click('#diagram [data-path="encoder.mid_block.attentions.0"]')
    paths = page.eval_on_selector_all("#diagram .sd-node", "els => els.map(e => e.getAttribute('data-path'))")
    assert "encoder.mid_block.attentions.0.scores" in paths and all(paths)
    page.click("#tabs button[data-tab=vae]")
    assert page.locator('#diagram [data-path="sample"]').count() == 1  # the reparameterization step
    assert page.locator("#diagram [data-component=vae]").count() == 0
    page.click("#tabs button[data-tab=pipeline]")
    assert page.locator('#diagram [data-component=clip][data-path=""]').count() == 1  # a component's root


def test_outputs_by_name_and_figures_fit_the_width_or_show_at_full_size(page):
    page.hover('#diagram [data-component=clip][data-path=""]')
    assert "last_hidden_state" in info(page) and "pooler_output" in info(page)  # from CLIP's own output class
    page.click("#tabs button[data-tab=vae]")
    svg = page.locator("#diagram svg")
    stage = page.locator("#diagram").bounding_box()
    assert svg.bounding_box()["width"] <= stage["width"] + 1  # fits the width
    natural = page.evaluate("() => document.querySelector('#diagram svg').viewBox.baseVal.width") * 4 / 3
    page.click("#zoom-full")
    assert abs(svg.bounding_box()["width"] - natural) < 2  # 1:1, 1 pt = 4/3 px
    page.click("#zoom-in")
    assert abs(svg.bounding_box()["width"] - natural * 1.25) < 2
    page.click("#zoom-fit")
    assert svg.bounding_box()["width"] <= stage["width"] + 1


def test_search_jumps_to_a_module(page):
    page.fill("#search", "conv_shortcut")
    matches = page.locator("#matches button[data-path]")
    assert matches.count() >= 3
    page.click('#matches button[data-path="down_blocks.1.resnets.0.conv_shortcut"]')
    picked = page.locator("#diagram .sd-node.picked")
    assert picked.get_attribute("data-path") == "down_blocks.1.resnets.0.conv_shortcut"
    assert "Conv2d" in info(page) and "[2, 640, 32, 32]" in info(page)
    page.fill("#search", "CLIPEncoderLayer")
    assert page.locator('#matches button[data-component=clip]').count() == 12


def test_the_content_security_policy_blocks_injected_code(page):
    """Even markup that an escaping bug let in cannot run: inline scripts and event handlers are
    refused by the page's Content-Security-Policy, while its own files run (from file://)."""
    policy = page.get_attribute('meta[http-equiv="Content-Security-Policy"]', "content")
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    page.evaluate("""() => {
        window.__violations = [];
        document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective));
        document.body.insertAdjacentHTML('beforeend', '<img src="data:," onload="window.__xss = 5">');
        const s = document.createElement('script'); s.textContent = 'window.__xss = 6'; document.body.append(s);
    }""")
    page.wait_for_function("window.__violations.length >= 2")
    page.wait_for_timeout(200)
    assert page.evaluate("window.__xss") is None
    assert any(v.startswith("script-src") for v in page.evaluate("window.__violations"))
    assert page.locator("#diagram svg").count() >= 1  # page.js ran: the policy lets the page's own script in
    page.errors.clear()  # the refusals are logged as console errors, on purpose here


def test_hostile_module_names_reach_the_page_as_text(browser, tmp_path):
    """A hand-made record whose module paths and type names are markup: shown as text, run never."""
    import dataclasses

    from explorer import trace
    from explorer.site import build

    bad_type = '<img src=x onerror="window.__xss=7">Block'
    bad_path = 'conv_in"><script>window.__xss=8</script>'

    def hostile(t):
        nodes = tuple(dataclasses.replace(n, path=n.path.replace("conv_in", bad_path),
                                          type=bad_type if n.type == "ResnetBlock2D" else n.type) for n in t.nodes)
        edges = tuple(dataclasses.replace(e, src=e.src.replace("conv_in", bad_path), dst=e.dst.replace("conv_in", bad_path))
                      for e in t.edges)
        return dataclasses.replace(t, nodes=nodes, edges=edges)

    traces = {c: hostile(trace(c, model="tiny")) for c in ("unet", "vae", "clip")}
    build(tmp_path / "site", traces)
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((tmp_path / "site" / "index.html").as_uri())
    page.click("#tabs button[data-tab=unet]")
    page.hover(f"#diagram [data-path='{bad_path}']")  # the box is there, tagged with the path as it is
    assert bad_path in page.inner_text("#info")
    page.fill("#search", "Block")
    assert any(bad_type in text for text in page.locator("#matches button").all_inner_texts())
    assert page.evaluate("window.__xss") is None and page.locator('img[src="x"]').count() == 0 and errors == []
    page.close()


def test_a_run_with_a_hostile_prompt_runs_no_script(page, tmp_path):
    page.click("#tabs button[data-tab=run]")
    assert page.inner_text(".run .prompt") == HOSTILE  # shown as text
    assert page.evaluate("window.__xss") is None and page.dialogs == []
    assert page.locator('img[src="x"]').count() == 0
    assert "random weights" in page.inner_text("#run").lower()
    first = page.inner_text("#run h2")  # the page opens on the last step: the finished image
    page.eval_on_selector("#step", "s => { s.value = 0; s.dispatchEvent(new Event('input')); }")
    assert page.inner_text("#run h2") != first and "timestep" in page.inner_text("#run h2")
    assert "[2, 4, 8, 8]" in page.inner_text("#run")
    assert page.eval_on_selector("#preview", "img => img.complete && img.naturalWidth > 0")
    page.screenshot(path=str(tmp_path / "run.png"), full_page=True, caret="initial")


def test_the_run_drives_the_architecture_and_shows_guidance_and_maps(page, tmp_path):
    page.click("#tabs button[data-tab=run]")
    parts = page.eval_on_selector_all(".guidance figure", "fs => fs.map(f => f.dataset.part)")
    assert parts == ["uncond", "cond", "guided", "x0"]
    assert page.eval_on_selector_all(".guidance img", "imgs => imgs.every(i => i.complete && i.naturalWidth > 0)")
    words = page.eval_on_selector_all("#run-word option", "os => os.map(o => o.value)")
    assert "lighthouse" in words and "<|endoftext|>" in words
    page.select_option("#run-word", "lighthouse")
    assert page.locator("#run figure.map canvas.heat").count() == 1
    assert "'lighthouse' over every cross-attention layer" in page.inner_text("#run")
    # the UNet: the step slider and the word drive what a block shows
    page.click("#tabs button[data-tab=unet]")
    assert page.locator("#runbar #arch-step").count() == 1
    page.hover('#diagram [data-path="down_blocks.1"]')
    assert "output std at step" in info(page) and page.locator("#info svg.spark circle").count() == 1
    page.click('#diagram [data-path="down_blocks.1"]')
    page.click('#diagram [data-path="down_blocks.1.attentions.0"]')
    cross = page.locator('#diagram [data-path$="attn2"]')
    if cross.count() == 0:  # one level further down
        page.click('#diagram [data-path="down_blocks.1.attentions.0.transformer_blocks.0"]')
        cross = page.locator('#diagram [data-path$="attn2"]')
    cross.first.click()
    assert page.locator("#info figure.map canvas.heat").count() == 1 and "this cross-attention" in info(page)
    page.eval_on_selector("#arch-step", "s => { s.value = 0; s.dispatchEvent(new Event('input')); }")
    assert "step 0" in info(page)
    page.screenshot(path=str(tmp_path / "maps.png"), full_page=True, caret="initial")


def test_the_runs_map_scales_reach_the_page_as_short_decimals(site):
    """Rounded in float64: 0.00097439, not float32's 0.0009743900061584473, in every step's layers."""
    import json

    data = json.loads((site / "data.js").read_text().removeprefix("window.SD = ").rstrip().rstrip(";"))
    scales = [v for step in data["run"]["maps"]["steps"] for layer in step for v in layer["scales"]]
    assert scales and all(v == round(v, 8) for v in scales)


def test_bad_input(tmp_path):
    runner = CliRunner()
    no_run = runner.invoke(app, ["html", str(tmp_path / "site"), "--run", str(tmp_path)])
    assert no_run.exit_code == 2 and "no valid trace.json" in no_run.stderr
    unwritable = runner.invoke(app, ["html", "/proc/site"])
    assert unwritable.exit_code == 2 and "cannot be" in unwritable.stderr and "Traceback" not in unwritable.output
    assert not (tmp_path / "site").exists()


def test_a_run_folder_cannot_make_the_page_carry_other_files(tmp_path):
    """File names come from step numbers, never from trace.json; a link in the run folder pointing
    outside it is left out."""
    import json

    run = tmp_path / "run"
    generate(Settings(prompt="a red circle", model="micro", steps=2, seed=0), run)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not copy me")
    (run / "previews" / "000.png").unlink()
    (run / "previews" / "000.png").symlink_to(secret)
    record = json.loads((run / "trace.json").read_text())
    record["steps"][1]["preview"] = "../../secret.txt"
    record["image"] = "../secret.txt"
    (run / "trace.json").write_text(json.dumps(record))
    result = CliRunner().invoke(app, ["html", str(tmp_path / "site"), "--run", str(run)])
    assert result.exit_code == 0, result.output
    copied = [p for p in (tmp_path / "site").rglob("*") if p.is_file()]
    assert (tmp_path / "site" / "run" / "previews" / "001.png").exists()
    assert not any(p.is_symlink() or b"do not copy me" in p.read_bytes() for p in copied)


# -- an experiment and a sweep on the page ------------------------------------------------------------------


@pytest.fixture(scope="module")
def experiment_site(tmp_path_factory):
    import explorer
    from explorer import edits

    root = tmp_path_factory.mktemp("experiment")
    explorer.experiment("a red circle on the left", edits=[edits.swap("red", "blue", "8x8")], steps=4, out=root / "exp")
    explorer.sweep("a red circle on the left", over="up.3", steps=3, out=root / "sweep")
    folder = root / "site"
    result = CliRunner().invoke(app, ["html", str(folder), "--experiment", str(root / "exp"), "--sweep", str(root / "sweep")])
    assert result.exit_code == 0, result.output
    return folder


def test_the_experiment_on_the_u_and_in_its_tab(browser, experiment_site):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((experiment_site / "index.html").as_uri() + "#unet")
    painted = page.locator("#diagram .sd-node.painted")
    assert painted.count() >= 10  # every block of the U at depth 1 has its change
    fills = lambda: page.eval_on_selector_all("#diagram .sd-node.painted > polygon, #diagram .sd-node.painted > path",  # noqa: E731
                                              "els => els.map(e => e.style.fill)")
    last = fills()
    page.fill("#exp-step", "0")  # step 0: upstream of the edited layers nothing changed yet
    page.dispatch_event("#exp-step", "input")
    assert fills() != last and "rgb(255, 255, 255)" in fills()
    assert page.locator("#expbar figure.thumb img").count() == 2
    page.hover('#diagram [data-path="down_blocks.1"]')
    assert "In the experiment" in page.inner_text("#info")
    page.click("#tabs button[data-tab=experiment]")
    assert "swap red → blue" in page.inner_text("#experiment")
    assert page.locator("#experiment table.strip td.cell").count() > 40
    assert page.locator('#experiment figure.result[data-run="edited"] img').count() == 1
    assert not errors
    page.close()


def test_the_sweep_colours_the_u_and_a_block_shows_its_two_images(browser, tmp_path, experiment_site):
    import shutil

    site = tmp_path / "site"
    shutil.copytree(experiment_site, site)
    (site / "data.js").write_text((site / "data.js").read_text().replace('"experiment":{', '"experiment_off":{'))  # the sweep alone
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto((site / "index.html").as_uri() + "#unet")
    assert page.locator("#sweepbar").count() == 1 and page.locator("#diagram .sd-node.painted").count() >= 1
    page.hover('#diagram [data-path="up_blocks.3"]')
    text = page.inner_text("#info")
    assert "In the sweep" in text and "up_blocks.3.attentions.1.transformer_blocks.0.attn2" in text
    assert page.locator("#info .pair img").count() == 4  # two layers, each: as it is, switched off
    page.close()


# -- the page in Chinese (explore html --lang zh) -------------------------------------------------------------

ZH_PROMPT = "a red circle on the left"


@pytest.fixture(scope="module")
def zh_site(tmp_path_factory):
    run = tmp_path_factory.mktemp("zh-run")
    generate(Settings(prompt=ZH_PROMPT, model="tiny", steps=2, seed=1, attention_maps=True), run)
    folder = tmp_path_factory.mktemp("zh-site") / "site"
    result = CliRunner().invoke(app, ["html", str(folder), "--run", str(run), "--model", "sd15", "--lang", "zh"])
    assert result.exit_code == 0, result.output
    return folder


def _english_ui_strings() -> dict[str, re.Pattern]:
    """Each English string of the page's list that its Chinese does not repeat, as a pattern: its words
    as they are, a {value} any text on the line."""
    from explorer.views.strings import STRINGS

    found = {}
    for key, text in STRINGS.items():
        if text["en"] == text["zh"] or not re.search("[A-Za-z]", re.sub(r"\{\w+\}", "", text["en"])):
            continue
        parts = [re.escape(part) for part in re.split(r"\{\w+\}", text["en"])]
        pattern = "[^\n]*?".join(parts)
        pattern = (r"\b" if text["en"][0].isalpha() else "") + pattern + (r"\b" if text["en"][-1].isalpha() else "")
        found[key] = re.compile(pattern)
    return found


SHOWN_TEXT = """() => {
    // what the page shows in words, its figures aside (they have their own language, explorer.views.zh):
    // the visible text, the tooltips, alt texts, placeholders and labels, the window's title
    const svgs = [...document.querySelectorAll("svg")];
    svgs.forEach((s) => { s.style.display = "none"; });
    let text = document.body.innerText;
    svgs.forEach((s) => { s.style.display = ""; });
    const named = ["title", "alt", "placeholder", "aria-label"];
    for (const e of document.querySelectorAll("[title], [alt], [placeholder], [aria-label]"))
      if (!e.closest("svg")) for (const a of named) if (e.hasAttribute(a)) text += "\\n" + e.getAttribute(a);
    text += "\\n" + document.title;
    // what the records say that the page shows as the record has it: prompts, edits, a diff's summary
    const SD = window.SD, own = [];
    for (const r of [SD.run, SD.experiment, SD.sweep]) if (r && r.settings) own.push(r.settings.prompt);
    if (SD.experiment) own.push(...SD.experiment.edits.map((e) => e.text));
    if (SD.diff) own.push(SD.diff.summary);
    const spaced = (t) => t.replace(/[ \t\u00a0]+/g, " ");  // as innerText lays the words out
    text = spaced(text);
    own.sort((a, b) => (b || "").length - (a || "").length);  // an edit that quotes the prompt first
    for (const o of own) if (o) text = text.split(spaced(o)).join(" ");
    return text;
}"""

OVERFLOWING = """() => {
    // boxes whose content is wider than they are, at this window's size (inline text has no box of its own)
    const bad = [];
    const selectors = "body, header, header h1, #tabs, #tabs button, .search, #search, #lang-switch, main, #info, " +
      "#info table, #info td, #info h2, #info h3, #crumbs, #hint, .runbar, .runbar b, .zoom button, #run, #run td, " +
      "#run th, #run h2, #run h3, .guidance figure, figcaption, #experiment, #experiment h3, .legend, #matches button";
    for (const e of document.querySelectorAll(selectors)) {
      if (e.tagName !== "BODY" && !e.offsetParent) continue;  // not shown
      if (e.clientWidth && e.scrollWidth > e.clientWidth + 1)
        bad.push(`${e.tagName}#${e.id}.${e.className} ${e.scrollWidth} > ${e.clientWidth}: ${e.textContent.slice(0, 60)}`);
    }
    const header = document.querySelector("header").getBoundingClientRect();
    const link = document.getElementById("lang-switch").getBoundingClientRect();
    if (header.height > 60) bad.push("the header takes " + header.height + " px: its line broke");
    if (link.right > window.innerWidth) bad.push("the language switch is outside the window");
    return bad;
}"""


def _english_left(page) -> dict[str, str]:
    """The page's English UI strings that its Chinese page still shows, with where."""
    text = page.evaluate(SHOWN_TEXT)
    return {key: m.group(0) for key, pattern in _english_ui_strings().items() if (m := pattern.search(text))}


def _check_chinese(page, where: str) -> None:
    assert _english_left(page) == {}, where
    assert page.evaluate(OVERFLOWING) == [], where


def test_the_chinese_page_has_no_english_ui_string_and_nothing_overflows(browser, zh_site, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto((zh_site / "index.html").as_uri())
    assert page.get_attribute("html", "lang") == "zh" and page.inner_text("#tabs button.on") == "流水线"
    _check_chinese(page, "pipeline")
    page.hover('#diagram [data-component=clip][data-path=""]')
    _check_chinese(page, "pipeline, the text encoder hovered")
    page.click('#diagram [data-section=unet] [data-path="down_blocks.0"]')  # the U, opened into a block
    page.hover('#diagram [data-path="down_blocks.0.resnets.0"]')
    assert "参数量" in page.inner_text("#info") and "2,255,040" in page.inner_text("#info")
    _check_chinese(page, "unet: down_blocks.0, a resnet hovered")
    for path in ("down_blocks.0.attentions.0", "down_blocks.0.attentions.0.transformer_blocks.0",
                 "down_blocks.0.attentions.0.transformer_blocks.0.attn2"):
        page.click(f'#diagram [data-path="{path}"]')
    page.hover('#diagram [data-path="down_blocks.0.attentions.0.transformer_blocks.0.attn2.scores"]')
    assert "交叉注意力" in page.inner_text("#info") or "上下文的 77 个词元" in page.inner_text("#info")
    _check_chinese(page, "unet: a cross-attention's scores hovered, the run's map shown")
    page.screenshot(path=str(tmp_path / "zh-attention.png"), full_page=True, caret="initial")
    page.fill("#search", "conv_shortcut")
    _check_chinese(page, "the search")
    page.fill("#search", "")
    for tab in ("vae", "clip"):
        page.click(f"#tabs button[data-tab={tab}]")
        page.hover('#diagram [data-path="encoder"]')
        _check_chinese(page, tab)
    page.click("#tabs button[data-tab=run]")
    assert "去噪步" in page.inner_text("#run") and "随机权重" in page.inner_text("#run")
    page.select_option("#run-word", "circle")
    _check_chinese(page, "the generation")
    page.screenshot(path=str(tmp_path / "zh-run.png"), full_page=True, caret="initial")
    assert not errors
    page.close()


def test_the_chinese_experiment_and_sweep(browser, experiment_site, tmp_path):
    """The English site carries the same page in Chinese beside it (zh.html)."""
    import shutil

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((experiment_site / "zh.html").as_uri() + "#unet")
    assert page.locator("#expbar").count() == 1 and "实验" in page.inner_text("#expbar")
    page.hover('#diagram [data-path="down_blocks.1"]')
    assert "在实验中" in page.inner_text("#info")
    _check_chinese(page, "unet, the experiment's bar, a block hovered")
    page.click("#tabs button[data-tab=experiment]")
    assert "两张图像" in page.inner_text("#experiment") and "种子" in page.inner_text("#experiment pre.summary")
    _check_chinese(page, "the experiment")
    page.screenshot(path=str(tmp_path / "zh-experiment.png"), full_page=True, caret="initial")
    site = tmp_path / "site"
    shutil.copytree(experiment_site, site)
    (site / "data.js").write_text((site / "data.js").read_text().replace('"experiment":{', '"experiment_off":{'))  # the sweep alone
    page.goto((site / "zh.html").as_uri() + "#unet")
    page.hover('#diagram [data-path="up_blocks.3"]')
    assert "在扫描中" in page.inner_text("#info") and page.locator("#sweepbar").count() == 1
    _check_chinese(page, "unet, the sweep's bar, a block hovered")
    assert not errors
    page.close()


def test_the_language_switch_keeps_the_tab_and_the_block(browser, zh_site):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto((zh_site / "index.html").as_uri() + "#unet/down_blocks.1")
    assert page.inner_text("#lang-switch") == "English"
    page.click("#lang-switch")
    page.wait_for_url("**/en.html#unet/down_blocks.1")
    assert page.get_attribute("html", "lang") == "en" and page.inner_text("#tabs button.on") == "UNet"
    assert "down_blocks.1" in page.inner_text("#crumbs") and "Thick boxes open further" in page.inner_text("#hint")
    assert page.inner_text("#lang-switch") == "中文"
    page.click("#tabs button[data-tab=run]")
    page.click("#lang-switch")
    page.wait_for_url("**/zh.html#run")  # index.html is zh.html
    assert page.get_attribute("html", "lang") == "zh" and page.inner_text("#tabs button.on") == "生成过程"
    assert (zh_site / "index.html").read_text() == (zh_site / "zh.html").read_text()
    page.close()
