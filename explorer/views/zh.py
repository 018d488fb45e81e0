"""The figures in Chinese: what the article's readers read in them, in the article's own words.

Pure functions of a scene (explorer.views.graph.Scene). Module names, types, paths and shapes stay
as they are; what the figures *say* — the titles, the captions under them, the colour key, the words
the drawing adds ("into every ResnetBlock2D (22)", "from encoder", "output") and the steps' labels
("split into 8 heads of 40") — is said in Chinese. `translated(scene)` returns a new scene;
`explorer.views.graph.to_dot(scene, lang="zh")` calls it and draws with a CJK font.
"""

from __future__ import annotations

import dataclasses
import re

FONT = "Noto Sans CJK SC"  # Debian's fonts-noto-cjk; `make install` and .ci/run install it

LEGEND = {
    "conv": "卷积",
    "norm": "归一化",
    "attention": "注意力",
    "linear": "线性层 / 嵌入",
    "activation": "激活 / dropout",
    "block": "模块",
    "step": "步骤（不是模块）",
    "io": "输入 / 输出",
    "added": "新增",
    "changed": "有变化（或内部有变化）",
    "same": "相同",
    "removed": "删除",
    "effect0": "图像不变",
    "effect1": "图像变化不到 0.5 %",
    "effect2": "0.5 % 到 2 %",
    "effect3": "2 % 到 5 %",
    "effect4": "5 % 到 12 %",
    "effect5": "12 % 以上",
}

# The figures of the article (explorer.views.figures.FIGURES), by name: the heading and the line under it.
FIGURES = {
    "unet-1.1-overall": ("1.1 UNet 详细整体结构", "左边是下采样路径，右边是上采样路径，中间横跨的是跳跃连接"),
    "unet-1.2-compact": ("1.2 UNet 缩小版整体结构：U 形", ""),
    "unet-1.3-time-embedding": ("1.3 时间步编码", "正弦编码，Linear，SiLU，Linear"),
    "unet-1.4-CrossAttnDownBlock2D": ("1.4 CrossAttnDownBlock2D", ""),
    "unet-1.4.1-ResnetBlock2D": ("1.4.1 ResnetBlock2D", "时间步编码按通道加上去；通道数变化时走 1x1 的 conv_shortcut"),
    "unet-1.4.2-Transformer2DModel": ("1.4.2 Transformer2DModel", "特征图先变成一串 token，最后再变回特征图"),
    "unet-1.4.2.1-BasicTransformerBlock": ("1.4.2.1 BasicTransformerBlock", "自注意力、交叉注意力、前馈网络，每一步都带残差连接"),
    "unet-1.4.2.1.1-SelfAttention": ("1.4.2.1.1 自注意力（SelfAttention）", "Q、K、V 都来自潜空间的 token"),
    "unet-1.4.2.1.2-CrossAttention": ("1.4.2.1.2 交叉注意力（CrossAttention）", "Q 来自潜空间的 token，K 和 V 来自提示词编码"),
    "unet-1.4.2.1.3-FeedForward": ("1.4.2.1.3 前馈网络 FeedForward（GEGLU）", ""),
    "unet-1.4.3-Downsample2D": ("1.4.3 Downsample2D", "步长为 2 的 3x3 卷积，把分辨率减半"),
    "unet-1.5-DownBlock2D": ("1.5 DownBlock2D", "没有注意力，也没有下采样"),
    "unet-1.6-UNetMidBlock2DCrossAttn": ("1.6 UNetMidBlock2DCrossAttn", ""),
    "unet-1.7-UpBlock2D": ("1.7 UpBlock2D", "每个 ResnetBlock2D 先拼接一个来自下采样路径的跳跃连接张量"),
    "unet-1.7.1-Upsample2D": ("1.7.1 Upsample2D", "最近邻插值放大 2 倍，再做 3x3 卷积"),
    "unet-1.8-CrossAttnUpBlock2D": ("1.8 CrossAttnUpBlock2D", "最后一个上采样块：末尾没有 Upsample2D"),
    "vae-2.3-overall": ("2.3 VAE 整体结构", "编码器往下，潜空间的分布和采样，解码器往上"),
    "vae-2.4-DownEncoderBlock2D": ("2.4 DownEncoderBlock2D", ""),
    "vae-2.4.1-ResnetBlock2D": ("2.4.1 VAE 里的 ResnetBlock2D", "这里没有时间步编码"),
    "vae-2.5-UNetMidBlock2D": ("2.5 UNetMidBlock2D", "单头自注意力，覆盖全部 4096 个位置"),
    "vae-2.6-sample": ("2.6 Sample：重参数化", ""),
    "vae-2.7-UpDecoderBlock2D": ("2.7 UpDecoderBlock2D", ""),
    "clip-3-overall": ("3 CLIP 文本编码器", ""),
    "clip-3.1-CLIPTextEmbeddings": ("3.1 CLIPTextEmbeddings", "token 嵌入 + 位置嵌入"),
    "clip-3.2-CLIPEncoderLayer": ("3.2 CLIPEncoderLayer", "先归一化的自注意力（带因果掩码），然后是 MLP"),
}

# What the drawing and the records say, as patterns: the longest and most specific first.
PHRASES: tuple[tuple[str, str], ...] = (
    # the pipeline overview
    (r"^The pipeline: text to image$", "整条流水线：从文字到图像"),
    (r"(\d+) denoising steps, guidance ([\d.]+) · shapes read off the component traces", r"\1 个去噪步，引导系数 \2 · 形状读自各组件的前向记录"),
    (r"^prompt \+ negative prompt$", "提示词 + 负面提示词"),
    (r"^text$", "文本"),
    (r"^BPE, padded to (\d+) tokens$", r"BPE 分词，补齐到 \1 个词元"),
    (r"^random latent$", "随机潜变量"),
    (r"^classifier-free guidance$", "无分类器引导"),
    (r"^the latent twice: one for each prompt$", "潜变量复制两份：每个提示词一份"),
    (r"^predicts the noise · ([\d,]+) params$", r"预测噪声 · 参数量 \1"),
    (r"^guided noise$", "引导后的噪声"),
    (r"^scheduler step$", "调度器的一步"),
    (r"removes a little noise$", "去掉一点噪声"),
    (r"^(.*), then decode · ([\d,]+) params \(whole VAE\)$", r"\1，然后解码 · 参数量 \2（整个 VAE）"),
    (r"^image$", "图像"),
    (r"^noise prediction (\[.*\])$", r"噪声预测 \1"),
    (r"^(\[.*\]): the next step$", r"\1：下一步"),
    (r"^after (\d+) steps?: (\[.*\])$", r"\1 步之后：\2"),
    (r"^denoising loop$", "去噪循环"),
    (r"^(\d+) steps?$", r"\1 步"),
    (r"^(\d+) text encoders? · ([\d,]+) params$", r"\1 个文本编码器 · 参数量 \2"),
    (r"^text encoder · ([\d,]+) params$", r"文本编码器 · 参数量 \1"),
    (r"^([\d,]+) params$", r"参数量 \1"),
    (r"\(joined with another text encoder's\)", "（与另一个文本编码器的输出拼接）"),
    # steps the records name
    (r"^split into (\d+) heads? of (\d+)$", r"拆成 \1 个头，每头 \2 维"),
    (r"^merge (\d+) heads?$", r"合并 \1 个头"),
    (r"^softmax\(QKᵀ/√(\d+) \+ causal mask\)$", r"softmax(QKᵀ/√\1 + 因果掩码)"),
    (r"^(\d+) channels → mean, log-variance$", r"\1 个通道 → 均值、对数方差"),
    (r"^concat on dim (\d+)$", r"在第 \1 维拼接"),
    (r"^split in (\d+) on dim (\d+)$", r"在第 \2 维拆成 \1 份"),
    (r"^concat channels: (.*)$", r"按通道拼接：\1"),
    (r"^hidden_states\[-2\]: layer (\d+) of (\d+)$", r"hidden_states[-2]：第 \1 层（共 \2 层）"),
    (r"^latents ÷ ", "潜变量 ÷ "),
    (r"^latent unscaled$", "潜变量还原缩放"),
    (r"^latent ÷ ", "潜变量 ÷ "),
    # the words the drawing adds
    (r"^into every (\S+) \((\d+)\)$", r"送入每个 \1（共 \2 个）"),
    (r"^into (\d+) nodes?$", r"送入 \1 个节点"),
    (r"^into (\S+)$", r"送入 \1"),
    (r"^from (\S+)$", r"来自 \1"),
    (r"^output (\S+)$", r"输出 \1"),
    (r"^output$", "输出"),
    (r" · ([\d.]+[KMG]?) each$", r" · 每个 \1"),
    (r" · one of (\d+) alike · ", r" · 同类共 \1 个 · "),
    (r"^image ([\d.]+) %$", r"图像变化 \1 %"),
    # what a diff or a sweep figure says
    (r": what changed$", "：有哪些变化"),
    (r"^only in (.+)$", r"只在 \1 里有"),
    (r"^(off|scale), one module at a time: how much the image of (.*) changed$", r"\1，每次只改一个模块：\2 的图像变了多少"),
)
_COMPILED = tuple((re.compile(pattern), replacement) for pattern, replacement in PHRASES)
_TEXT = re.compile(r"(>|^)([^<>]+)(<|$)")  # the text between the tags of a Graphviz HTML-like label


def phrase(text: str) -> str:
    """One line of a figure in Chinese, where a pattern knows it; otherwise as it is (a name, a shape)."""
    for pattern, replacement in _COMPILED:
        if pattern.search(text):
            text = pattern.sub(replacement, text)
    return text


def _label(label: str) -> str:
    """Every run of text between the tags of an HTML-like label, said in Chinese."""
    return _TEXT.sub(lambda m: m.group(1) + _unescaped(phrase, m.group(2)) + m.group(3), label)


def _unescaped(work, text: str) -> str:
    from html import escape, unescape

    return escape(work(unescape(text)), quote=False)


def title(text: str) -> str:
    """A figure's title: its heading (the article's section) found by its English words, then its lines."""
    head, *rest = text.split("\n")
    for heading, (zh_heading, zh_about) in _english_headings().items():
        if head == heading or head.startswith(heading + ": "):
            head = zh_heading + (f"：{zh_about}" if zh_about else "")
            break
    else:
        head = phrase(head)
    return "\n".join([head, *(phrase(line) for line in rest)])


def _english_headings() -> dict[str, tuple[str, str]]:
    from explorer.views.figures import FIGURES as ENGLISH

    return {figure.heading: FIGURES[figure.name] for figure in ENGLISH if figure.name in FIGURES}


def translated(scene):
    """The scene with everything it says in Chinese (a new scene; the one given is left as it was)."""
    boxes = [dataclasses.replace(b, label=_label(b.label), tags=[phrase(t) for t in b.tags]) for b in scene.boxes]
    clusters = [dataclasses.replace(c, label=_label(c.label)) for c in scene.clusters]
    arrows = [dataclasses.replace(a, label=phrase(a.label)) for a in scene.arrows]
    return dataclasses.replace(scene, title=title(scene.title), boxes=boxes, clusters=clusters, arrows=arrows)
