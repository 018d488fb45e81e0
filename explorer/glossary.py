"""The glossary: the article's terms beside diffusers' module paths and classes, the original
checkpoint's names and the English terms (docs/glossary.md, docs/zh/glossary.md).

Only the words are written here. Where each term lives is read off the real SD1.5 traces (the path,
the class, the shape), its original checkpoint name is derived by `explorer.naming`, and its section
of the article is the one whose figure (explorer.views.figures) draws it: when a module is renamed,
a class changes or a figure moves, the page changes with it (a test keeps the committed pages fresh).

    python scripts/glossary_page.py      # writes both pages
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# (the article's term in Chinese, the English term, component, where: a module or step path, or
# "input:NAME" for one of the component's inputs)
TERMS: tuple[tuple[str, str, str, str], ...] = (
    ("潜变量（潜空间中的图像）", "latent", "unet", "input:sample"),
    ("时间步", "timestep", "unet", "input:timestep"),
    ("提示词编码（文本编码）", "prompt embedding", "unet", "input:encoder_hidden_states"),
    ("时间步编码：正弦编码", "sinusoidal timestep features", "unet", "time_proj"),
    ("时间步编码", "timestep embedding (temb)", "unet", "time_embedding"),
    ("输入卷积", "input convolution", "unet", "conv_in"),
    ("带交叉注意力的下采样块", "down block with cross-attention", "unet", "down_blocks.0"),
    ("残差块", "residual block", "unet", "down_blocks.0.resnets.0"),
    ("通道变化时的捷径卷积", "shortcut convolution", "unet", "down_blocks.1.resnets.0.conv_shortcut"),
    ("Transformer 模块", "spatial transformer", "unet", "down_blocks.0.attentions.0"),
    ("基本 Transformer 块", "transformer block", "unet", "down_blocks.0.attentions.0.transformer_blocks.0"),
    ("自注意力", "self-attention", "unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1"),
    ("交叉注意力", "cross-attention", "unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2"),
    ("多头拆分", "split into heads", "unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.split_heads"),
    ("注意力分数（注意力图）", "attention scores (attention map)", "unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.scores"),
    ("前馈网络", "feed-forward", "unet", "down_blocks.0.attentions.0.transformer_blocks.0.ff"),
    ("残差连接", "residual connection", "unet", "down_blocks.0.attentions.0.transformer_blocks.0.add"),
    ("下采样", "downsampling", "unet", "down_blocks.0.downsamplers.0"),
    ("不带注意力的下采样块", "down block", "unet", "down_blocks.3"),
    ("中间块", "mid block", "unet", "mid_block"),
    ("上采样块", "up block", "unet", "up_blocks.0"),
    ("跳跃连接（与上采样路径拼接）", "skip connection (concatenated on the up path)", "unet", "up_blocks.0.concat"),
    ("上采样", "upsampling", "unet", "up_blocks.0.upsamplers.0"),
    ("带交叉注意力的上采样块", "up block with cross-attention", "unet", "up_blocks.3"),
    ("输出卷积：预测的噪声", "output convolution: the predicted noise", "unet", "conv_out"),
    ("图像", "image", "vae", "input:sample"),
    ("编码器", "encoder", "vae", "encoder"),
    ("下采样编码块", "down encoder block", "vae", "encoder.down_blocks.0"),
    ("VAE 的中间块", "the VAE's mid block", "vae", "encoder.mid_block"),
    ("均值和对数方差", "mean and log-variance", "vae", "mean_logvar"),
    ("采样（重参数化）", "sample (reparameterization)", "vae", "sample"),
    ("缩放因子 ×0.18215", "scaling factor", "vae", "scale"),
    ("解码器", "decoder", "vae", "decoder"),
    ("上采样解码块", "up decoder block", "vae", "decoder.up_blocks.0"),
    ("分词结果（token id）", "token ids", "clip", "input:input_ids"),
    ("文本编码器", "text encoder", "clip", ""),
    ("词嵌入 + 位置嵌入", "token + position embedding", "clip", "embeddings"),
    ("Transformer 编码层（带因果掩码）", "encoder layer (causal self-attention)", "clip", "encoder.layers.0"),
)


@dataclass(frozen=True)
class Entry:
    zh: str
    en: str
    component: str
    path: str  # "" for the component itself
    kind: str  # "module", "step" or "input"
    type: str  # its class (or the step's type)
    shape: str  # its (first) output shape, or the input's
    original: str  # its name in the original single-file checkpoint ("" where it has none)
    section: str  # the article's section drawing it ("" where none does)


def entries(traces: dict[str, Any]) -> list[Entry]:
    """Every term, found in the SD1.5 traces (unet, vae, clip); one sentence when one is not there."""
    from explorer.views.format import shape_str

    found = []
    for zh, en, component, where in TERMS:
        trace = traces[component]
        if where.startswith("input:"):
            name = where.split(":", 1)[1]
            if name not in trace.inputs:
                raise LookupError(f"the glossary's {en!r}: the {component} has no input {name!r}")
            found.append(Entry(zh, en, component, name, "input", "", shape_str(trace.inputs[name]), "", ""))
            continue
        node = trace.find(where)  # KeyError when a path moved: the glossary must follow
        found.append(Entry(zh, en, component, where, node.kind, node.type, shape_str(node.outputs[0]) if node.outputs else "",
                           original_name(component, where) if node.kind == "module" else "", section_of(trace, node)))
    return found


def original_name(component: str, path: str) -> str:
    """The module's name in the original SD1.5 single-file checkpoint (CompVis / ldm), derived by
    explorer.naming; a diffusers block spanning several original ones as a range."""
    from explorer import naming
    from explorer.specs import SD15

    if component == "clip":
        return naming.CLIP_PREFIX + "text_model" + (f".{path}" if path else "")
    config = SD15.config(component)
    modules = naming.unet_module_map(config) if component == "unet" else naming.vae_module_map(config)
    prefix = naming.UNET_PREFIX if component == "unet" else naming.VAE_PREFIX
    key = (naming.unet_key_to_ldm if component == "unet" else naming.vae_key_to_ldm)(path + ".weight", config)
    if key != path + ".weight":
        return prefix + key.removesuffix(".weight")
    inside = [v for k, v in modules.items() if k.startswith(path + ".")]
    return prefix + naming.span(inside) if inside else ""


def section_of(trace, node) -> str:
    """The article's section whose figure draws this node, or one of its kind."""
    from explorer.views.figures import FIGURES

    for figure in (f for f in FIGURES if f.component == trace.component):
        try:
            drawn = figure.select(trace)
        except LookupError:
            continue
        shown = trace.find(drawn) if drawn else trace.nodes[0]
        alike = (shown.type, shown.kind, frozenset(shown.inputs)) == (node.type, node.kind, frozenset(node.inputs))
        if drawn == node.path or (node.path and node.path in (figure.only or ())) or (alike and drawn is not None):
            return figure.heading.split(" ")[0]
    return ""


HEADS = {
    "en": ("| the article's term | English | in diffusers | class | shape | original checkpoint | section |",
           "# Glossary: the article's terms, diffusers' names and the original checkpoint's"),
    "zh": ("| 文章的术语 | 英文 | diffusers 里的名字 | 类 | 形状 | 原始权重里的名字 | 章节 |",
           "# 术语表：文章的术语、diffusers 的名字和原始权重的名字"),
}
INTRO = {
    "en": "Every term of the article (\"Stable Diffusion1.5网络结构-超详细\") where it lives in the real SD1.5: the module "
          "path and class in diffusers, the shape it hands on (batch 2 for classifier-free guidance, 512x512 images), the "
          "name in the original single-file checkpoint (`v1-5-pruned-emaonly.safetensors`) and the article's section. "
          "Generated from the traces and the naming tables (`python scripts/glossary_page.py`); every block's original "
          "name: [naming.md](naming.md).",
    "zh": "文章里的每个术语，在真实的 SD1.5 里对应哪里：diffusers 里的模块路径和类，它输出的形状（无分类器引导时 batch 为 2，"
          "图像 512x512），原始单文件权重（`v1-5-pruned-emaonly.safetensors`）里的名字，以及文章的章节。本页由前向记录和命名表"
          "自动生成（`python scripts/glossary_page.py`）；每个模块的原始名字见 [naming.md](../naming.md)。",
}
COMPONENTS = {"en": {"unet": "The UNet", "vae": "The VAE", "clip": "The CLIP text encoder"},
              "zh": {"unet": "UNet", "vae": "VAE", "clip": "CLIP 文本编码器"}}
WHERE = {"en": {"input": "input", "step": "a step, not a module: "}, "zh": {"input": "输入", "step": "步骤，不是模块："}}


def page(found: list[Entry], lang: str = "en") -> str:
    """The glossary page in `lang` (en or zh): one table per component."""
    head, title = HEADS[lang]
    lines = [title, "", INTRO[lang]]
    for component, name in COMPONENTS[lang].items():
        lines += ["", f"## {name}", "", head, "|---|---|---|---|---|---|---|"]
        for e in (e for e in found if e.component == component):
            kind = e.type if e.kind == "module" else WHERE[lang][e.kind] + e.type
            path = f"`{e.path}`" if e.path else f"`{e.component}`"
            original = f"`{e.original}`" if e.original else ""
            lines.append(f"| {e.zh} | {e.en} | {path} | {kind} | {e.shape} | {original} | {e.section} |")
    return "\n".join(lines) + "\n"
