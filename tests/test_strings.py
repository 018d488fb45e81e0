"""The page's words in both languages (explorer.views.strings): one list, complete, and Chinese that
is Chinese; every label and note of the SD1.5 records has its Chinese form."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from explorer.cli import app
from explorer.views.strings import LANGS, SENTENCES, STRINGS, fill_html, translate, translations

ASSETS = Path(__file__).parent.parent / "explorer" / "views" / "assets"

# Names and code a Chinese string may hold as they are: the components, units, the search's examples,
# a formula's terms, and the switch to the English page, which names it in its own language.
LATIN = {"sd-explorer", "UNet", "VAE", "CLIP", "FLOPs", "RGB", "x0", "uncond", "cond", "conv_shortcut", "Attention",
         "U", "English"}
PLACEHOLDER = re.compile(r"\{\w+\}")


def _latin_words(text: str) -> set[str]:
    from explorer.micro.data import vocabulary  # the live page's example prompt: micro's own words

    return set(re.findall(r"[A-Za-z][\w-]*", PLACEHOLDER.sub("", text))) - LATIN - set(vocabulary()) - {"micro"}


def test_every_string_has_both_languages_with_the_same_values():
    for key, text in STRINGS.items():
        assert set(text) == set(LANGS) and all(text.values()), key
        assert set(PLACEHOLDER.findall(text["en"])) == set(PLACEHOLDER.findall(text["zh"])), key


def test_the_chinese_strings_hold_no_english_but_names_and_code():
    assert {key: _latin_words(t["zh"]) for key, t in STRINGS.items() if _latin_words(t["zh"])} == {}


def test_the_page_uses_every_string_and_no_other():
    """page.js asks for T("key"), or names the key first ("map.one"), or a family of keys
    (T("seam." + key)); index.html has {{key}}."""
    script = (ASSETS / "page.js").read_text() + (ASSETS / "live.js").read_text()
    html = (ASSETS / "index.html").read_text()
    asked = set(re.findall(r'T\("([\w.]*\w)"', script))
    named = set(re.findall(r'"([\w.]*\w)"', script)) | set(re.findall(r"\{\{([\w.]+)\}\}", html))
    families = set(re.findall(r'"([\w.]+\.)" \+', script))
    assert asked - set(STRINGS) == set()
    assert {key for key in STRINGS if key not in named and not any(key.startswith(f) for f in families)} == set()


@pytest.mark.parametrize("lang", LANGS)
def test_index_html_is_filled_in_whole(lang):
    values = {"lang": lang, "model": "SD2.1 <b>", "figures": f"figures-{lang}.js", "other": "x.html", "other.lang": "en"}
    page = fill_html((ASSETS / "index.html").read_text(), lang, values)
    assert "{{" not in page and "}}" not in page and f'<html lang="{lang}">' in page
    assert "SD2.1 &lt;b&gt;" in page and "<b>" not in page  # a model's name is text


@pytest.mark.parametrize("component", ["unet", "vae", "clip"])
def test_every_label_and_note_of_the_sd15_records_has_its_chinese(component):
    from explorer import trace

    missing, english = [], []
    for node in trace(component).nodes:
        for text in (node.label, node.note):
            zh = translate(text)
            if zh is None:
                missing.append(text)
            elif text == node.note and text and _latin_words(zh) - {"Q", "K", "V", "softmax", "GELU", "SiLU", "sigmoid",
                                                                   "x", "mean", "logvar"}:
                english.append(zh)
    assert missing == [] and english == []


def test_what_a_run_and_an_experiment_say_reads_in_chinese():
    from explorer.generation.watching import PLMS_NOTE

    plms = PLMS_NOTE.format(asked=2, calls=3, first=901, second=801)
    summary = ("tiny · 'a red circle' · seed 1 · 4 steps\nno edit: the two runs must be the same, bit for bit\n"
               "image: 12.5 % mean change, 3.0 % of the pixels moved by more than 48/255\n"
               "the judge: red circle left → blue circle left (changed: colour)\n"
               "the change entered at step 0, in up_blocks.1\nx0 change per step: 0 3 12 (%)")
    found = translations([plms, summary, "random weights: the architecture is real, the image is noise"])
    assert len(found) == 3 and not any(_latin_words(t) - {"UNet", "PNDM", "PLMS", "t", "tiny", "a", "red", "circle",
                                                          "up_blocks"} for t in found.values())
    assert "判定器：红色 圆形 左边 → 蓝色 圆形 左边（变的是：颜色）" in found[summary]
    assert translate("something the table does not know") is None and translate("anything", "en") == "anything"


def test_an_edit_reads_in_chinese():
    swap = ("swap red → blue: 3 of the 10 cross-attention layers (down.1, up.2: 8x8) attend as for 'a red circle' and "
            "take their values from 'a blue circle', every step")
    off = ("up_blocks.3.attentions.1.transformer_blocks.0.attn2 off (Attention: its output becomes zero: the residual "
           "stream it is added to passes on unchanged), steps 0–3")
    assert translate(swap) == ("把 red 换成 blue：10 个交叉注意力层中的 3 个（down.1, up.2: 8x8）按 'a red circle' 算注意力权重，"
                               "值却取自 'a blue circle'；作用于每一步")
    assert translate(off) == ("up_blocks.3.attentions.1.transformer_blocks.0.attn2 关闭（Attention：它的输出变成零：它所加入的"
                              "残差流原样传下去），作用于第 0–3 步")


def test_every_sentence_pattern_compiles_and_gives_a_form():
    for pattern, zh in SENTENCES:
        groups = re.compile(pattern).groupindex
        assert set(PLACEHOLDER.findall(zh)) <= {"{" + g + "}" for g in groups}, pattern


def test_an_unknown_language_is_refused_by_name(tmp_path):
    result = CliRunner().invoke(app, ["html", str(tmp_path / "site"), "--lang", "fr"])
    assert result.exit_code == 2 and "'fr' is not one of" in result.output and not (tmp_path / "site").exists()
