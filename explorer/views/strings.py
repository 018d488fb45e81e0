"""The interactive page's words, in every language it speaks: one table is the source of both pages.

`STRINGS`: the page's own words (tabs, hints, headings, captions, legends, tooltips, alt texts),
key -> {"en": ..., "zh": ...}. `{name}` marks a value the page fills in (a number, a module path, a
word of the prompt). index.html's static words are filled in by `fill_html` when the site is built;
page.js reads the same table from data.js (`T(key, values)`).

`SENTENCES`: what the records themselves say (a node's label and note, a run's warning, the lines of
an experiment's summary, a diff's words), which the records keep in English. Each entry is a regular
expression over the English sentence, with groups for its numbers and names, and the Chinese form,
where `{group}` puts a group back. A group whose name begins with `sentence` is itself translated
(a phrase inside a sentence); one whose name begins with `words` is translated word by word with
`WORDS` (the judge's colours, shapes and places). A label that is a formula or a piece of code is
the same in Chinese: its entry gives it back as it is.

Module names, type names and shapes are never translated: they are what the code calls them.
"""

from __future__ import annotations

import re
from typing import Iterable

LANGS = ("en", "zh")
LANGUAGE_NAMES = {"en": "English", "zh": "中文"}

STRINGS: dict[str, dict[str, str]] = {
    # the header, the tabs, the search box, the zoom buttons, the language switch (index.html)
    "page.title": {"en": "sd-explorer: {model}, block by block", "zh": "sd-explorer：{model} 逐块拆解"},
    "page.model": {"en": "{model}, block by block", "zh": "{model} 逐块拆解"},
    "tab.pipeline": {"en": "Pipeline", "zh": "流水线"},
    "tab.run": {"en": "Generation", "zh": "生成过程"},
    "tab.diff": {"en": "Diff", "zh": "模型对比"},
    "tab.experiment": {"en": "Experiment", "zh": "实验"},
    "search.placeholder": {"en": "Search a module: conv_shortcut, Attention…", "zh": "搜索模块：conv_shortcut、Attention…"},
    "search.label": {"en": "Search modules", "zh": "搜索模块"},
    "search.none": {"en": "no module matches", "zh": "没有匹配的模块"},
    "zoom.out": {"en": "smaller", "zh": "缩小"},
    "zoom.fit": {"en": "fit the width", "zh": "适应宽度"},
    "zoom.full": {"en": "full size (100 %)", "zh": "原始大小（100 %）"},
    "zoom.in": {"en": "larger", "zh": "放大"},
    "lang.switch": {"en": "中文", "zh": "English"},  # the other language, in its own words
    "lang.switch.title": {"en": "The same page in Chinese", "zh": "同一页面的英文版"},
    # the components' headings (explorer.components), where they are not a name
    "heading.clip": {"en": "CLIP text encoder", "zh": "CLIP 文本编码器"},
    "heading.clip_2": {"en": "second text encoder", "zh": "第二个文本编码器"},
    # the architecture: hints, the info panel
    "info.hint": {"en": "Hover a box to see what it is; click a block to open it.",
                  "zh": "把鼠标停在方框上，看它是什么；点击一个块，就能展开它。"},
    "pipeline.unet": {"en": "The UNet: click a block to open it", "zh": "UNet：点击任一块即可展开"},
    "hint.pipeline": {
        "en": "The whole pipeline, with the shapes read off the three traces, then the UNet's U. Click the text "
              "encoder, the UNet or the VAE decoder to open it, or any block of the U.",
        "zh": "上面是整条流水线，形状都读自三个组件的前向记录；下面是 UNet 的 U 形结构。"
              "点击文本编码器、UNet 或 VAE 解码器即可展开，U 里的任一块也可以点开。",
    },
    "hint.root": {"en": "Click a block to open it; hover any box for its shapes, parameters and FLOPs.",
                  "zh": "点击一个块即可展开；鼠标停在任一方框上，可以看到它的形状、参数量和 FLOPs。"},
    "hint.inner": {"en": "Thick boxes open further. Hover any box for its shapes, parameters and FLOPs.",
                   "zh": "粗框的块还能继续展开。鼠标停在任一方框上，可以看到它的形状、参数量和 FLOPs。"},
    "info.call": {"en": "(call {n})", "zh": "（第 {n} 次调用）"},
    "info.step": {"en": "a step: {type}, not a module", "zh": "一个步骤（{type}），不是模块"},
    "info.in": {"en": "in: {name}", "zh": "输入 {name}"},
    "info.out": {"en": "out", "zh": "输出"},
    "info.out.named": {"en": "out {name}", "zh": "输出 {name}"},
    "info.params": {"en": "parameters", "zh": "参数量"},
    "info.open": {"en": "Open {path} ›", "zh": "展开 {path} ›"},
    # a generation on the architecture
    "run.bar": {"en": "Run", "zh": "本次生成"},
    "run.in": {"en": "In the run", "zh": "在这次生成中"},
    "run.std": {"en": "output std at step {step}: {value}", "zh": "第 {step} 步输出的标准差：{value}"},
    "run.step": {"en": "step {step} · timestep {timestep}", "zh": "第 {step} 步 · 时间步 {timestep}"},
    "map.one": {"en": "where '{word}' goes in this cross-attention, step {step}",
                "zh": "“{word}”在这个交叉注意力里的注意力图，第 {step} 步"},
    "map.some": {"en": "where '{word}' goes in {n} cross-attention layers, step {step}",
                 "zh": "“{word}”在 {n} 个交叉注意力层里的注意力图，第 {step} 步"},
    "map.all": {"en": "'{word}' over every cross-attention layer, step {step}",
                "zh": "“{word}”在所有交叉注意力层上的注意力图，第 {step} 步"},
    "map.x0": {"en": "x0 at this step", "zh": "这一步的 x0"},
    "picker.word": {"en": "word", "zh": "词"},
    "picker.word.label": {"en": "word of the prompt", "zh": "提示词里的词"},
    "slider.step": {"en": "denoising step", "zh": "去噪步"},
    # the Generation tab
    "run.negative": {"en": "negative prompt: {text}", "zh": "负面提示词：{text}"},
    "run.steps.one": {"en": "{n} step", "zh": "{n} 步"},
    "run.steps.many": {"en": "{n} steps", "zh": "{n} 步"},
    "run.guidance": {"en": "guidance {value}", "zh": "引导系数 {value}"},
    "run.seed": {"en": "seed {seed}", "zh": "种子 {seed}"},
    "run.warning": {"en": "{text}.", "zh": "{text}。"},
    "run.image": {"en": "the image", "zh": "最终图像"},
    "run.image.alt": {"en": "the generated image", "zh": "生成的图像"},
    "run.nosteps": {"en": "This run recorded no step.", "zh": "这次生成没有记录任何一步。"},
    "run.steps": {"en": "Steps", "zh": "去噪步"},
    "run.preview.alt": {"en": "latent preview", "zh": "潜变量预览"},
    "run.preview": {"en": "the latent after this step, mapped to RGB", "zh": "这一步之后的潜变量，映射到 RGB 显示"},
    "run.guidance.title": {"en": "Guidance at this step", "zh": "这一步的无分类器引导"},
    "run.maps.title": {"en": "Where a word goes", "zh": "一个词的注意力图"},
    "tokens.title": {"en": "Tokens", "zh": "词元"},
    "tokens.padding": {"en": "+ {padding} padding = {total}", "zh": "+ {padding} 个填充 = {total}"},
    "tokens.prompt": {"en": "prompt", "zh": "提示词"},
    "tokens.negative": {"en": "negative prompt (empty)", "zh": "负面提示词（空）"},
    "tokens.dropped": {"en": "{n} tokens dropped: {tokens}", "zh": "丢掉了 {n} 个词元：{tokens}"},
    "step.title": {"en": "Step {step} of {steps} · timestep {timestep}",
                   "zh": "第 {step} 步（共 {steps} 步）· 时间步 {timestep}"},
    "step.seconds": {"en": "{seconds} s", "zh": "{seconds} 秒"},
    "step.seam": {"en": "seam", "zh": "衔接处"},
    "step.shape": {"en": "shape", "zh": "形状"},
    "seam.latent_in": {"en": "latent in", "zh": "输入的潜变量"},
    "seam.unet_input": {"en": "UNet input (classifier-free guidance)", "zh": "UNet 的输入（无分类器引导）"},
    "seam.noise_pred": {"en": "noise prediction", "zh": "噪声预测"},
    "seam.guided": {"en": "guided prediction", "zh": "引导后的噪声预测"},
    "seam.latent_out": {"en": "latent out", "zh": "输出的潜变量"},
    "step.stats": {"en": "latent mean {mean} · std {std} · min {min} · max {max}",
                   "zh": "潜变量 均值 {mean} · 标准差 {std} · 最小 {min} · 最大 {max}"},
    "guidance.uncond": {"en": "unconditional noise prediction", "zh": "无条件的噪声预测"},
    "guidance.cond": {"en": "conditional noise prediction", "zh": "有条件的噪声预测"},
    "guidance.guided": {"en": "guided: uncond + {scale} · (cond − uncond)",
                        "zh": "引导后：uncond + {scale} · (cond − uncond)"},
    "guidance.x0": {"en": "x0: the clean image it predicts", "zh": "x0：由这一步预测出的干净图像"},
    # the Diff tab
    "diff.params": {"en": "{a} → {b} parameters", "zh": "参数量 {a} → {b}"},
    "diff.identical": {"en": "identical", "zh": "完全相同"},
    "diff.modules": {"en": "modules {counts}", "zh": "模块：{counts}"},
    "diff.added": {"en": "{n} added", "zh": "新增 {n} 个"},
    "diff.removed": {"en": "{n} removed", "zh": "删除 {n} 个"},
    "diff.changed": {"en": "{n} changed", "zh": "改动 {n} 个"},
    "diff.module": {"en": "module", "zh": "模块"},
    "diff.what": {"en": "what changed", "zh": "改了什么"},
    "list.separator": {"en": ", ", "zh": "，"},
    "list.semicolon": {"en": "; ", "zh": "；"},
    # an experiment and a sweep
    "legend": {"en": "{title}: ", "zh": "{title}："},
    "effect.none": {"en": "image unchanged", "zh": "图像不变"},
    "effect.under": {"en": "under 0.5 %", "zh": "不到 0.5 %"},
    "effect.small": {"en": "0.5 to 2 %", "zh": "0.5 % 到 2 %"},
    "effect.some": {"en": "2 to 5 %", "zh": "2 % 到 5 %"},
    "effect.large": {"en": "5 to 12 %", "zh": "5 % 到 12 %"},
    "effect.most": {"en": "12 % or more", "zh": "12 % 以上"},
    "exp.baseline": {"en": "baseline", "zh": "基线"},
    "exp.edited": {"en": "edited", "zh": "改动后"},
    "exp.thumb.alt": {"en": "x0 of the {run} run", "zh": "{run}那次运行的 x0"},
    "exp.bar": {"en": "Experiment", "zh": "实验"},
    "exp.bar.step": {"en": "step {step} · x0 changed {change}", "zh": "第 {step} 步 · x0 变化 {change}"},
    "exp.noedit": {"en": "no edit", "zh": "没有改动"},
    "exp.slider": {"en": "denoising step of the experiment", "zh": "实验的去噪步"},
    "exp.legend": {"en": "how much each block's output changed", "zh": "每个块的输出变了多少"},
    "exp.in": {"en": "In the experiment", "zh": "在实验中"},
    "exp.block": {"en": "output changed {change} at step {step} (‖edited − baseline‖ / ‖baseline‖)",
                  "zh": "第 {step} 步输出变化 {change}（‖改动后 − 基线‖ / ‖基线‖）"},
    "exp.both": {"en": "seed {seed} (both runs)", "zh": "种子 {seed}（两次运行相同）"},
    "exp.edit": {"en": "edit: {text}", "zh": "改动：{text}"},
    "exp.none": {"en": "No edit: the two runs are the same, bit for bit.", "zh": "没有改动：两次运行逐位相同。"},
    "exp.image.alt": {"en": "the {run} image", "zh": "{run}的图像"},
    "exp.images": {"en": "The images", "zh": "两张图像"},
    "exp.step": {"en": "step {step}: x0 changed {change}", "zh": "第 {step} 步：x0 变化 {change}"},
    "exp.x0": {"en": "x0, step by step", "zh": "x0 的逐步变化"},
    "exp.strip.block": {"en": "block", "zh": "块"},
    "exp.cell": {"en": "{path}, step {step}: {change}", "zh": "{path}，第 {step} 步：{change}"},
    "exp.strip": {"en": "How much each block's output changed, step by step", "zh": "每个块的输出在每一步变了多少"},
    "exp.strip.note": {
        "en": "‖edited − baseline‖ / ‖baseline‖ of the prompt's half of the batch; white: nothing changed. Open the "
              "UNet tab to see it on the U, at any depth.",
        "zh": "取批次中提示词那一半，算 ‖改动后 − 基线‖ / ‖基线‖；白色表示没有变化。"
              "打开 UNet 标签页，可以在 U 形结构的任意一层看到它。",
    },
    "sweep.bar": {"en": "Sweep", "zh": "扫描"},
    "sweep.off": {"en": "off", "zh": "关闭"},
    "sweep.scale": {"en": "× {factor}", "zh": "乘以 {factor}"},
    "sweep.what": {"en": "{n} modules, each {what} in turn: '{prompt}'", "zh": "{n} 个模块逐一{what}：“{prompt}”"},
    "sweep.legend": {"en": "image change", "zh": "图像变化"},
    "sweep.in": {"en": "In the sweep", "zh": "在扫描中"},
    "sweep.judge": {"en": "the judge: {said}", "zh": "判定器：{said}"},
    "sweep.change": {"en": "image change {change}", "zh": "图像变化 {change}"},
    "sweep.baseline.alt": {"en": "the baseline image", "zh": "基线图像"},
    "sweep.as_is": {"en": "as it is", "zh": "原样"},
    "sweep.edited.alt": {"en": "the image with {path} edited", "zh": "改动 {path} 之后的图像"},
    "sweep.switched_off": {"en": "switched off", "zh": "关闭之后"},
    "sweep.more": {"en": "and {n} more inside", "zh": "里面还有 {n} 个"},
    # the live page (explore serve): the prompt box, the settings, what a job is doing, a block's edits
    "live.label": {"en": "Live", "zh": "实时"},
    "live.prompt": {"en": "What to draw, e.g. a red circle on the left",
                    "zh": "要画什么，例如 a red circle on the left（micro 只认得英文词）"},
    "live.prompt.label": {"en": "prompt", "zh": "提示词"},
    "live.seed": {"en": "seed", "zh": "种子"},
    "live.steps": {"en": "steps", "zh": "步数"},
    "live.guidance": {"en": "guidance", "zh": "引导系数"},
    "live.scheduler": {"en": "sampler", "zh": "采样器"},
    "live.scheduler.own": {"en": "{name} (the model's own)", "zh": "{name}（模型自带）"},
    "live.go": {"en": "Generate", "zh": "生成"},
    "live.stop": {"en": "Stop", "zh": "停止"},
    "live.runs": {"en": "runs kept", "zh": "已保存的运行"},
    "live.runs.pick": {"en": "open a run…", "zh": "打开一次运行…"},
    "live.queued": {"en": "waiting: {waiting} ahead", "zh": "排队中：前面还有 {waiting} 个"},
    "live.running": {"en": "step {step} of {total}", "zh": "第 {step} 步，共 {total} 步"},
    "live.running.run": {"en": "{run}: step {step} of {total}", "zh": "{run}：第 {step} 步，共 {total} 步"},
    "live.sweeping": {"en": "sweep: {done} of {total} layers", "zh": "扫描：第 {done} 层，共 {total} 层"},
    "live.done": {"en": "done in {seconds} s", "zh": "完成，用时 {seconds} 秒"},
    "live.stopped": {"en": "stopped: the steps done are kept", "zh": "已停止：已完成的步都保存了"},
    "live.failed": {"en": "failed: {error}", "zh": "失败：{error}"},
    "live.refused": {"en": "{error}", "zh": "{error}"},
    "live.gone": {"en": "the server went away", "zh": "与服务器的连接断开了"},
    "live.baseline": {"en": "baseline", "zh": "基线"},
    "live.edited": {"en": "edited", "zh": "编辑后"},
    "live.edit.head": {"en": "Change it, and see", "zh": "改动它，看看会怎样"},
    "live.edit.off": {"en": "Switch it off", "zh": "关闭它"},
    "live.edit.scale": {"en": "Halve what it adds", "zh": "把它的贡献减半"},
    "live.edit.other": {"en": "Give it another prompt", "zh": "给它另一个提示词"},
    "live.edit.other.placeholder": {"en": "another prompt, e.g. a blue square at the top",
                                    "zh": "另一个提示词，例如 a blue square at the top"},
    "live.edit.sweep": {"en": "Switch off each cross-attention in turn", "zh": "逐一关闭每一层交叉注意力"},
    "live.edit.hint": {"en": "Runs the prompt above twice from the same noise, as it is and changed.",
                       "zh": "用上面的提示词从同一份噪声跑两遍：一遍原样，一遍改动后。"},
}


def string(key: str, lang: str, /, **values: object) -> str:
    """One of the page's strings in `lang`, its {name}s filled from `values` (others left as they are)."""
    text = STRINGS[key][lang]
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), text)


# -- what the records say ------------------------------------------------------------------------------

WORDS = {  # the judge's words (explorer.micro.data), and how an interpolation resamples
    "colour": "颜色", "shape": "形状", "position": "位置",
    "red": "红色", "orange": "橙色", "yellow": "黄色", "green": "绿色", "blue": "蓝色", "purple": "紫色",
    "circle": "圆形", "square": "正方形", "triangle": "三角形",
    "left": "左边", "right": "右边", "top": "上方", "bottom": "下方", "middle": "中间",
    "small": "小", "large": "大", "nothing": "没有", "drawn": "画出", "off": "关闭",
    "nearest": "最近邻", "bilinear": "双线性", "bicubic": "双三次",
}

_N = r"(?P<{}>-?\d+)"  # a whole number, named
_X = r"(?P<{}>[-\d.e]+)"  # a decimal, named

SENTENCES: list[tuple[str, str]] = [
    # explorer/capture/attention.py: multi-head attention, step by step
    (r"The {} channels of Q, K and V are cut into {} heads? of {} channels; each head attends on its own\."
     .format(_N.format("c"), _N.format("h"), _N.format("d")),
     "Q、K、V 各有 {c} 个通道，被切成 {h} 个头，每个头 {d} 个通道，各自独立计算注意力。"),
    (r"Per head, each of the {} query tokens gets one score per key token \({}\), and softmax turns them into "
     r"weights: a token attends to (?P<sentence>.+)\.".format(_N.format("q"), _N.format("k")),
     "在每个头里，{q} 个查询词元各自给每个键词元（共 {k} 个）打一个分数，softmax 再把分数变成权重：每个词元关注{sentence}。"),
    (r"every token of the same sequence", "同一序列中的全部词元"),
    (r"the {} tokens of the context".format(_N.format("n")), "上下文的 {n} 个词元"),
    (r"itself and the tokens before it \(causal mask\)", "它自己和它前面的词元（因果掩码）"),
    (r"Each query token becomes the score-weighted average of the value vectors\.", "每个查询词元变成值向量按分数加权的平均。"),
    (r"The heads' outputs are concatenated back to {} channels per token\.".format(_N.format("c")),
     "各个头的输出重新拼接起来，每个词元又回到 {c} 个通道。"),
    (r"The {}x{} feature map becomes {} tokens of {} channels\.".format(*(_N.format(g) for g in "hwnc")),
     "{h}×{w} 的特征图展开成 {n} 个词元，每个词元 {c} 个通道。"),
    (r"The tokens are laid back out as a feature map\.", "词元重新排回特征图。"),
    (r"The attention's input is added back: a residual connection\.", "把注意力的输入加回来：这就是残差连接。"),
    (r"split into {} heads? of {}".format(_N.format("h"), _N.format("d")), "拆成 {h} 个头，每头 {d} 维"),
    (r"softmax\(QKᵀ/√{} \+ causal mask\)".format(_N.format("d")), "softmax(QKᵀ/√{d} + 因果掩码)"),
    (r"merge {} heads?".format(_N.format("h")), "合并 {h} 个头"),
    # explorer/capture/recorder.py: the torch operations a block runs between its modules
    (r"Joins its inputs along one axis; here the channels add up\.", "沿一个轴把输入拼接起来；这里是通道数相加。"),
    (r"Adds its inputs element by element, broadcasting a size-1 axis: a residual or an embedding\.",
     "把输入逐元素相加，长度为 1 的轴会被广播：可能是残差连接，也可能是加上一个嵌入。"),
    (r"Multiplies its inputs element by element, e\.g\. a value by its gate\.", "把输入逐元素相乘，比如一个值乘上它的门控。"),
    (r"Cuts one tensor into equal parts along an axis\.", "沿一个轴把张量切成相等的几份。"),
    (r"Changes how the same values are laid out, e\.g\. a feature map into a sequence of tokens\.",
     "数值不变，只改排列方式，比如把特征图排成词元序列。"),
    (r"The GELU activation, applied element by element\.", "GELU 激活函数，逐元素作用。"),
    (r"The SiLU activation, x·sigmoid\(x\), element by element\.", "SiLU 激活函数 x·sigmoid(x)，逐元素作用。"),
    (r"Turns scores into weights that sum to 1\.", "把分数变成和为 1 的权重。"),
    (r"Resizes the feature map by interpolation\.", "用插值改变特征图的大小。"),
    (r"A constant stored in the module \(a buffer\), not learned\.", "模块里存着的常量（缓冲区），不是学出来的。"),
    (r"concat", "拼接"),
    (r"concat on dim {}".format(_N.format("d")), "在第 {d} 维拼接"),
    (r"split", "切分"),
    (r"split in {} on dim {}".format(_N.format("n"), _N.format("d")), "在第 {d} 维拆成 {n} 份"),
    (r"reshape", "重排形状"),
    (r"upsample", "上采样"),
    (r"(?P<words>nearest|bilinear|bicubic) ×{}".format(_X.format("s")), "{words}插值 ×{s}"),
    # explorer/capture/drivers.py: the VAE's Gaussian, its sample and the latents' scaling
    (r"{} channels → mean, log-variance".format(_N.format("c")), "{c} 个通道 → 均值、对数方差"),
    (r"The encoder does not output a point but a Gaussian: half the channels are its mean, half its log-variance "
     r"\(clamped to \[-30, 20\]\)\.",
     "编码器输出的不是一个点，而是一个高斯分布：一半通道是均值，另一半是对数方差（截断到 [-30, 20]）。"),
    (r"A sample of the Gaussian written so gradients flow through mean and logvar: ε carries the randomness\.",
     "从这个高斯分布里采样，写成这种形式，梯度就能流过 mean 和 logvar：随机性全在 ε 里（重参数化）。"),
    (r"Scaled by {} so the latents have roughly unit variance: this is what the UNet sees\.".format(_X.format("f")),
     "乘以 {f}，让潜变量的方差大致为 1：UNet 看到的就是它。"),
    (r"latents ÷ {}".format(_X.format("f")), "潜变量 ÷ {f}"),
    (r"Before decoding, the pipeline undoes the scaling\.", "解码之前，流水线先把这次缩放还原。"),
    # explorer/textencoders.py: SDXL's two text encoders
    (r"concat channels: (?P<widths>[\d +]+) = {}".format(_N.format("n")), "按通道拼接：{widths} = {n}"),
    (r"The two encoders' token embeddings side by side: the context every cross-attention reads\.",
     "两个编码器的词元嵌入并排拼在一起：每个交叉注意力读的都是这份上下文。"),
    (r"hidden_states\[-2\]: layer {} of {}".format(_N.format("k"), _N.format("n")),
     "hidden_states[-2]：第 {k} 层（共 {n} 层）"),
    (r"SDXL reads each encoder one layer before the last, without its final layer norm\.",
     "SDXL 读的是每个编码器倒数第二层的输出，不经过最后的层归一化。"),
    # a generation's record (explorer.generation)
    (r"random weights: the architecture is real, the image is noise", "随机权重：结构是真的，图像只是噪声"),
    (r"{} steps asked, {} UNet calls: PNDM \(PLMS\) combines up to four earlier noise predictions, and before its "
     r"first step it has none\. So it steps from t={} to t={} with the first prediction alone, calls the UNet again "
     r"at t=(?P=second), and redoes that step from t=(?P=first) with the average of the two; every later step costs "
     r"one call\.".format(_N.format("asked"), _N.format("calls"), _N.format("first"), _N.format("second")),
     "要求 {asked} 步，UNet 却调用了 {calls} 次：PNDM（PLMS）要把之前最多四个噪声预测组合起来，而第一步之前一个也没有。"
     "所以它先只用第一个预测从 t={first} 走到 t={second}，在 t={second} 再调用一次 UNet，"
     "然后用两个预测的平均值从 t={first} 重走这一步；之后每一步只调用一次。"),
    # an experiment's summary (explorer.views.experiment.summary), line by line, and a sweep's judge
    (r"(?P<head>.*) · seed (?P<seed>\S+) · {} steps?".format(_N.format("n")), "{head} · 种子 {seed} · {n} 步"),
    (r"edit: (?P<sentence>.+)", "改动：{sentence}"),
    (r"no edit: the two runs must be the same, bit for bit", "没有改动：两次运行应当逐位相同"),
    (r"status: (?P<rest>.+)", "状态：{rest}"),
    (r"image: (?P<mean>[\d.]+ %) mean change, (?P<pixels>[\d.]+ %) of the pixels moved by more than 48/255",
     "图像：平均变化 {mean}，有 {pixels} 的像素变化超过 48/255"),
    (r"the judge: (?P<words_b>.+) → (?P<words_e>.+) \(changed: (?P<words_c>.+)\)",
     "判定器：{words_b} → {words_e}（变的是：{words_c}）"),
    (r"the change entered at step {}, in (?P<block>\S+)".format(_N.format("step")), "变化在第 {step} 步出现，从 {block} 开始"),
    (r"no block's output changed at any step", "没有哪个块的输出在哪一步变过"),
    (r"x0 change per step: (?P<values>[\d ]+) \(%\)", "x0 每一步的变化：{values}（%）"),
    # an edit (explorer.edits): a word swapped in some cross-attention layers, a module off or scaled
    (r"swap (?P<a>\S+) → (?P<b>\S+): (?P<sentence_layers>.+) attend as for (?P<p>'.*') and take their values from "
     r"(?P<q>'.*'), (?P<sentence_steps>.+)", "把 {a} 换成 {b}：{sentence_layers}按 {p} 算注意力权重，值却取自 {q}；作用于{sentence_steps}"),
    (r"all {} cross-attention layers".format(_N.format("n")), "全部 {n} 个交叉注意力层"),
    (r"{} of the {} cross-attention layers \((?P<where>.+)\)".format(_N.format("k"), _N.format("n")),
     "{n} 个交叉注意力层中的 {k} 个（{where}）"),
    (r"every step", "每一步"),
    (r"step {}".format(_N.format("k")), "第 {k} 步"),
    (r"steps (?P<a>\d+)–(?P<b>\d+)", "第 {a}–{b} 步"),
    (r"steps (?P<steps>[\d, ]+)", "第 {steps} 步"),
    (r"(?P<path>\S+) (?P<words_what>off|× \S+) \((?P<kind>\w+): (?P<sentence_meaning>.+)\), (?P<sentence_steps>.+)",
     "{path} {words_what}（{kind}：{sentence_meaning}），作用于{sentence_steps}"),
    (r"(?P<path>\S+) (?P<words_what>off|× \S+) \((?P<sentence_meaning>.+)\), (?P<sentence_steps>.+)",
     "{path} {words_what}（{sentence_meaning}），作用于{sentence_steps}"),
    (r"skips into (?P<level>\S+) × {} \((?P<sentence_meaning>.+)\), (?P<sentence_steps>.+)".format(_X.format("f")),
     "送进 {level} 的跳跃连接 × {f}（{sentence_meaning}），作用于{sentence_steps}"),
    (r"its output becomes zero: the residual stream it is added to passes on unchanged", "它的输出变成零：它所加入的残差流原样传下去"),
    (r"its shortcut passes on: the input itself, or conv_shortcut\(input\) where the channels change",
     "只剩捷径传下去：输入本身，通道数变化处是 conv_shortcut(input)"),
    (r"its input passes through unchanged", "它的输入原样通过"),
    (r"its output is multiplied by {}".format(_X.format("f")), "它的输出乘以 {f}"),
    (r"what it adds to its input is multiplied by {}".format(_X.format("f")), "它加到输入上的部分乘以 {f}"),
    (r"the skip tensor arriving in the up block becomes zero \(its place in the concatenation is kept\)",
     "送进上采样块的跳跃连接张量变成零（它在拼接里的位置保留）"),
    (r"the skip tensor arriving in (?P<block>\S+) is multiplied by {}".format(_X.format("f")),
     "送进 {block} 的跳跃连接张量乘以 {f}"),
    (r"the {} skip tensors arriving in (?P<block>\S+) \((?P<names>.+)\) × {}".format(_N.format("n"), _X.format("f")),
     "送进 {block} 的 {n} 个跳跃连接张量（{names}）× {f}"),
    (r"nothing drawn", "什么也没画出来"),
    (r"the same", "没有变化"),
    (r"(?P<words>(?:colour|shape|position) .+)", "{words}"),
    # a diff's words (explorer.compare, explorer.views.diff)
    (r"text encoder", "文本编码器"),
    (r"new: (?P<p>\S+) params", "新增：参数量 {p}"),
    (r"new", "新增"),
    (r"new step", "新增的步骤"),
    (r"gone: (?P<p>\S+) params", "已删除：参数量 {p}"),
    (r"gone", "已删除"),
    (r"step gone", "步骤已删除"),
    (r"was (?P<path>\S+)", "原来是 {path}"),
    (r"params (?P<a>\S+) → (?P<b>\S+)", "参数量 {a} → {b}"),
    (r"type (?P<a>\S+) → (?P<b>\S+)", "类型 {a} → {b}"),
    (r"heads (?P<a>.+) → (?P<b>.+)", "头 {a} → {b}"),
    (r"context (?P<a>.+) → (?P<b>.+)", "上下文 {a} → {b}"),
    (r"(?P<n>[\d,]+) differences? inside", "内部有 {n} 处不同"),
    (r"\+ in (?P<name>\S+) (?P<shape>.+)", "+ 输入 {name} {shape}"),
    (r"− in (?P<name>\S+)", "− 输入 {name}"),
    (r"in (?P<name>\S+) (?P<a>\[.*\]) → (?P<b>\[.*\])", "输入 {name} {a} → {b}"),
    (r"out (?P<a>\[.*\]) → (?P<b>\[.*\])", "输出 {a} → {b}"),
    (r"(?P<a>[\d,]+) outputs? → (?P<b>\d+)", "{a} 个输出 → {b}"),
]

# Labels that are a formula or a piece of code: the same in Chinese.
KEPT = [
    r"[+×]", r"GELU|SiLU|softmax", r"scores · V", r"softmax\(QKᵀ/√\d+\)", r"\[B,C,H,W\] → \[B,HW,C\]",
    r"\[B,HW,C\] → \[B,C,H,W\]", r"z = mean \+ exp\(0\.5·logvar\)·ε", r"z × [\d.]+",
    r"[A-Za-z]\w*_\w*",  # a buffer's name: position_ids
]

_COMPILED = [(re.compile(pattern), zh) for pattern, zh in SENTENCES]
_KEPT = [re.compile(pattern) for pattern in KEPT]


def _words(text: str) -> str:
    """Word by word (WORDS); the rest as it is."""
    return re.sub(r"[A-Za-z]+", lambda m: WORDS.get(m.group(0), m.group(0)), text).replace(", ", "，")


def _group(name: str, value: str) -> str:
    if name.startswith("sentence"):
        return translate(value) or value
    if name.startswith("words"):
        return _words(value)
    return value


def translate(text: str, lang: str = "zh") -> str | None:
    """What a record says, in `lang`: a label or a note, a line of a summary. None when the table
    has no form for it (the page then shows it as the record has it)."""
    if lang == "en" or not text:
        return text
    for pattern in _KEPT:
        if pattern.fullmatch(text):
            return text
    for pattern, zh in _COMPILED:
        if m := pattern.fullmatch(text):
            return zh.format(**{name: _group(name, value) for name, value in m.groupdict().items()})
    return None


def translations(texts: Iterable[str], lang: str = "zh") -> dict[str, str]:
    """English -> `lang` for every text the table has a form of; a text of several lines line by line
    (a line with no form stays as it is)."""
    found = {}
    for text in dict.fromkeys(t for t in texts if t):
        shown = "\n".join(translate(line, lang) or line for line in text.split("\n"))
        if shown != text:
            found[text] = shown
    return found


def fill_html(template: str, lang: str, values: dict[str, str]) -> str:
    """index.html in `lang`: each {{key}}, a key of `values` or of STRINGS (its {name}s from `values`),
    filled in and escaped."""
    import html

    def one(m: re.Match) -> str:
        key = m.group(1)
        return html.escape(values[key] if key in values else string(key, lang, **values), quote=True)

    return re.sub(r"\{\{([\w.]+)\}\}", one, template)
