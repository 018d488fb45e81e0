"""Write docs/naming.md: every block of SD1.5 under its three names (diffusers, the original
checkpoint, the article's section), derived from diffusers' own single-file conversion.

    python scripts/naming_page.py docs/naming.md
"""

from __future__ import annotations

from typing import Any

from explorer.naming import span, to_original_checkpoint


def original_names(component: str, model, config: dict[str, Any]) -> dict[str, str]:
    """diffusers parameter name -> original checkpoint key, as diffusers' own single-file loader maps
    them: every key of `to_original_checkpoint` goes through diffusers' conversion, and each tensor
    is followed by identity (through the views the conversion makes) to the name it lands on."""
    from diffusers.loaders import single_file_utils as sfu

    state = model.state_dict()
    empty: dict[str, Any] = {}
    parts = {"unet": (state, empty, empty), "vae": (empty, state, empty), "clip": (empty, empty, state)}[component]
    original = to_original_checkpoint(*parts, unet_config=config, vae_config=config)
    if component == "unet":
        converted = sfu.convert_ldm_unet_checkpoint(original, config)
    elif component == "vae":
        converted = sfu.convert_ldm_vae_checkpoint(original, config)
    else:
        converted = {k.removeprefix("text_model."): v for k, v in sfu.convert_ldm_clip_checkpoint(original).items()}
    origin = {id(_root(v)): k for k, v in original.items()}
    return {key: origin[id(_root(value))] for key, value in converted.items()}


def _root(tensor):
    """The tensor a view was cut from (the VAE's 1x1-conv reshapes are views), or the tensor itself."""
    return tensor._base if tensor._base is not None else tensor


def naming_rows(trace, model, config: dict[str, Any], section_of, depth: int) -> list[tuple[str, str, str, str]]:
    """(diffusers path, class, original checkpoint prefix, article section) for every module with
    parameters down to `depth`, in call order."""
    names = original_names(trace.component, model, config)
    rows = []
    for node in trace.nodes:
        if node.kind != "module" or node.call or not node.path or node.depth > depth or not node.params:
            continue
        owners = [names[k].rsplit(".", 1)[0] for k in names if k.startswith(node.path + ".")]  # drop .weight
        if owners:
            rows.append((node.path, node.type, span(owners), section_of(node)))
    return rows


def write_naming_page(page) -> None:
    """docs/naming.md: the three names of every block, generated."""
    from pathlib import Path

    from explorer import trace
    from explorer.loading import build
    from explorer.specs import SD15
    from explorer.views.figures import FIGURES

    lines = [PAGE_HEAD]
    for component, depth, title in (("unet", 2, "The UNet"), ("vae", 3, "The VAE"), ("clip", 2, "The CLIP text encoder")):
        t = trace(component)
        alike, named = {}, {}  # the article's section of a node: the figure drawing it, or one like it
        for figure in (f for f in FIGURES if f.component == component):
            section = figure.heading.split(" ")[0]
            for child in figure.only or ():
                named.setdefault(child, section)
            if (block := figure.select(t)) is not None:
                n = t.find(block)
                alike.setdefault((n.type, frozenset(n.inputs)), section)

        def section_of(n):
            return named.get(n.path) or alike.get((n.type, frozenset(n.inputs)), "")

        config = SD15.config(component)
        rows = naming_rows(t, build(component, config), config, section_of, depth)
        lines += [f"\n## {title}\n", "| diffusers | class | original checkpoint | article |", "|---|---|---|---|"]
        lines += [f"| `{p}` | {cls} | `{orig}` | {sec} |" for p, cls, orig, sec in rows]
    Path(page).write_text("\n".join(lines) + "\n")


PAGE_HEAD = """# Names: diffusers, the original checkpoint, the article

A learner meets every block of SD1.5 under up to three names:

- **diffusers** (what sd-explorer shows, and what the article's figures label): `down_blocks.0.attentions.0`;
- **the original checkpoint** (CompVis / ldm, the single `.safetensors` file most people download):
  `model.diffusion_model.input_blocks.1.1`;
- **the article's section** that draws it.

The table below is generated (`python scripts/naming_page.py docs/naming.md`, checked by a test): every
parameter of the real models is written out in the original layout by `explorer.naming`, sent through
diffusers' own single-file conversion (`diffusers.loaders.single_file_utils`), and followed by identity
to the diffusers name it lands on. Where one diffusers block spans several original ones, the range is
given (`input_blocks.1 … 3`). Inside the blocks, names change too: a UNet ResnetBlock2D's
`norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut` are `in_layers.0, in_layers.2,
emb_layers.1, out_layers.0, out_layers.3, skip_connection`; the VAE's attention `to_q, to_k, to_v,
to_out.0, group_norm` are `q, k, v, proj_out, norm` (1x1 convolutions there, Linear layers here).
"""


if __name__ == "__main__":
    import sys

    write_naming_page(sys.argv[1] if len(sys.argv) > 1 else "docs/naming.md")
