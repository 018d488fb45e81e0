"""The article's figures (SEED_GUIDE.md), each drawn from a real trace.

A figure names the block it shows by what it is (the first CrossAttnDownBlock2D, the first
ResnetBlock2D whose channels change), never by a hard-coded path, and how deep to draw it.
`figure_scenes(traces)` turns the three SD1.5 traces into every figure's scene: pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from explorer.record import Node, Trace
from explorer.specs import model_name
from explorer.views.format import esc, plural, shape_str, small
from explorer.views.graph import Arrow, Box, Cluster, Scene, scene

Select = Callable[[Trace], "str | None"]


def first(type_name: str, where: Callable[[Node], bool] = lambda n: True) -> Select:
    """The first module of `type_name` (in call order) for which `where` holds."""

    def select(trace: Trace) -> str | None:
        for n in trace.nodes:
            if n.type == type_name and n.kind == "module" and n.call == 0 and where(n):
                return n.path
        raise LookupError(f"no {type_name} in this {trace.component} trace")

    return select


def last(type_name: str) -> Select:
    def select(trace: Trace) -> str | None:
        found = [n.path for n in trace.nodes if n.type == type_name and n.call == 0]
        if not found:
            raise LookupError(f"no {type_name} in this {trace.component} trace")
        return found[-1]

    return select


def whole(trace: Trace) -> None:
    return None


def _channels_change(n: Node) -> bool:
    first_in = next(iter(n.inputs.values()))
    return first_in[1] != n.outputs[0][1]


@dataclass(frozen=True)
class Figure:
    name: str  # file name without extension: "unet-1.4.1-ResnetBlock2D"
    component: str
    heading: str  # "1.4.1 ResnetBlock2D"
    select: Select
    depth: int = 1
    only: tuple[str, ...] | None = None
    expand: tuple[str, ...] = ()
    fold: tuple[str, str] | None = None
    detail: bool = True
    about: str = ""  # one line under the heading


FIGURES: tuple[Figure, ...] = (
    Figure("unet-1.1-overall", "unet", "1.1 The UNet, block by block", whole,
           about="down path on the left, up path on the right, skip connections across"),
    Figure("unet-1.2-compact", "unet", "1.2 The UNet: the U", whole, detail=False),
    Figure("unet-1.3-time-embedding", "unet", "1.3 Time-step encoding", whole, depth=2,
           only=("time_proj", "time_embedding"), about="sinusoidal embedding, Linear, SiLU, Linear"),
    Figure("unet-1.4-CrossAttnDownBlock2D", "unet", "1.4 CrossAttnDownBlock2D", first("CrossAttnDownBlock2D")),
    Figure("unet-1.4.1-ResnetBlock2D", "unet", "1.4.1 ResnetBlock2D", first("ResnetBlock2D", _channels_change),
           about="the time embedding is added per channel; a 1x1 conv_shortcut when the channels change"),
    Figure("unet-1.4.2-Transformer2DModel", "unet", "1.4.2 Transformer2DModel", first("Transformer2DModel"),
           about="the feature map becomes a sequence of tokens and back"),
    Figure("unet-1.4.2.1-BasicTransformerBlock", "unet", "1.4.2.1 BasicTransformerBlock",
           first("BasicTransformerBlock"), about="self-attention, cross-attention, feed-forward, each with a residual"),
    Figure("unet-1.4.2.1.1-SelfAttention", "unet", "1.4.2.1.1 Self-attention",
           first("Attention", lambda n: "encoder_hidden_states" not in n.inputs),
           about="Q, K and V all come from the latent tokens"),
    Figure("unet-1.4.2.1.2-CrossAttention", "unet", "1.4.2.1.2 Cross-attention",
           first("Attention", lambda n: "encoder_hidden_states" in n.inputs),
           about="Q from the latent tokens, K and V from the prompt embedding"),
    Figure("unet-1.4.2.1.3-FeedForward", "unet", "1.4.2.1.3 FeedForward (GEGLU)", first("FeedForward"), depth=2),
    Figure("unet-1.4.3-Downsample2D", "unet", "1.4.3 Downsample2D", first("Downsample2D"),
           about="a 3x3 convolution with stride 2 halves the resolution"),
    Figure("unet-1.5-DownBlock2D", "unet", "1.5 DownBlock2D", first("DownBlock2D"),
           about="no attention, no downsampling"),
    Figure("unet-1.6-UNetMidBlock2DCrossAttn", "unet", "1.6 UNetMidBlock2DCrossAttn", first("UNetMidBlock2DCrossAttn")),
    Figure("unet-1.7-UpBlock2D", "unet", "1.7 UpBlock2D", first("UpBlock2D"),
           about="each ResnetBlock2D first concatenates a skip tensor from the down path"),
    Figure("unet-1.7.1-Upsample2D", "unet", "1.7.1 Upsample2D", first("Upsample2D"),
           about="nearest-neighbour x2, then a 3x3 convolution"),
    Figure("unet-1.8-CrossAttnUpBlock2D", "unet", "1.8 CrossAttnUpBlock2D", last("CrossAttnUpBlock2D"),
           about="the last up block: no Upsample2D at the end"),
    Figure("vae-2.3-overall", "vae", "2.3 The VAE", whole, depth=2, fold=("sample", "scale"),
           about="the encoder down, the latent distribution and its sample, the decoder up"),
    Figure("vae-2.4-DownEncoderBlock2D", "vae", "2.4 DownEncoderBlock2D", first("DownEncoderBlock2D")),
    Figure("vae-2.4.1-ResnetBlock2D", "vae", "2.4.1 ResnetBlock2D in the VAE", first("ResnetBlock2D", _channels_change),
           about="no time embedding here"),
    Figure("vae-2.5-UNetMidBlock2D", "vae", "2.5 UNetMidBlock2D", first("UNetMidBlock2D"),
           expand=("attentions.0",), about="self-attention with one head over all 4096 positions"),
    Figure("vae-2.6-sample", "vae", "2.6 Sample: the reparameterization trick", whole,
           only=("quant_conv", "mean_logvar", "sample", "scale", "unscale", "post_quant_conv")),
    Figure("vae-2.7-UpDecoderBlock2D", "vae", "2.7 UpDecoderBlock2D", first("UpDecoderBlock2D")),
    Figure("clip-3-overall", "clip", "3 The CLIP text encoder", whole, depth=2),
    Figure("clip-3.1-CLIPTextEmbeddings", "clip", "3.1 CLIPTextEmbeddings", first("CLIPTextEmbeddings"),
           about="token embedding + position embedding"),
    Figure("clip-3.2-CLIPEncoderLayer", "clip", "3.2 CLIPEncoderLayer", first("CLIPEncoderLayer"), depth=2,
           about="pre-norm self-attention with a causal mask, then an MLP"),
)


def heading(figure: Figure, trace: Trace, block: str | None) -> str:
    """Two lines: the article's section, then which node this is and how many alike there are."""
    node = trace.find(block) if block else trace.nodes[0]
    alike = sum(1 for n in trace.nodes if n.type == node.type and n.call == 0)
    where = [node.path or trace.component, node.type]
    if alike > 1:
        where.append(f"one of {alike} alike")
    where.append(trace.model)
    where.append(", ".join(f"{k} {shape_str(v)}" for k, v in trace.inputs.items()))
    line = figure.heading + (f": {figure.about}" if figure.about else "")
    return line + "\n" + " · ".join(where)


def figure_scene(figure: Figure, trace: Trace) -> Scene:
    block = figure.select(trace)
    return scene(
        trace,
        block,
        figure.depth,
        title=heading(figure, trace, block),
        only=figure.only,
        expand=figure.expand,
        fold=figure.fold,
        detail=figure.detail,
    )


def pipeline_scene(unet: Trace, vae: Trace, clip: Trace, steps: int = 50, guidance: float = 7.5) -> Scene:
    """The whole text-to-image pipeline, with the shapes read off the three component traces."""
    ids = clip.inputs["input_ids"]
    embedding = clip.nodes[0].outputs[0]
    context = unet.inputs.get("encoder_hidden_states", embedding)
    # SDXL: two encoders, their outputs joined channel-wise (768 + 1280 = 2048)
    encoders = [n for n in clip.nodes if n.depth == 1 and n.type.startswith("CLIPTextModel")] or [clip.nodes[0]]
    concat = next((n.label.split(": ")[-1] for n in clip.nodes if n.depth == 1 and n.type == "Concat"), "")
    joined = f" ({concat})" if concat else ("" if context == embedding else " (joined with another text encoder's)")
    extra = [f"{k} {shape_str(v)}" for k, v in unet.inputs.items() if k in ("text_embeds", "time_ids")]
    latent = unet.inputs["sample"]
    noise = unet.nodes[0].outputs[0]
    single = (1, *latent[1:])
    decoder = next(n for n in vae.nodes if n.type == "Decoder")
    image = decoder.outputs[0]

    def box(box_id: str, title: str, sub: str, category: str = "block", cluster: str = "") -> Box:
        return Box(box_id, f"<b>{esc(title)}</b><br/>{small(sub)}", category, cluster)

    loop = "cluster_loop"

    boxes = [
        box("prompt", "prompt + negative prompt", "text", "io"),
        box("tokenizer", "CLIPTokenizer" + (f" ×{len(encoders)}" if len(encoders) > 1 else ""), "BPE, padded to 77 tokens", "step"),
        box("clip", " + ".join(n.type for n in encoders), f"{plural(len(encoders), 'text encoder')} · {clip.total_params:,} params".removeprefix("1 "), "linear"),
        box("noise", "random latent", f"{shape_str(single)} ~ N(0, I)", "io"),
        box("cfg_in", "classifier-free guidance", "the latent twice: one for each prompt", "step", loop),
        box("unet", unet.nodes[0].type, f"predicts the noise · {unet.total_params:,} params", "attention", loop),
        box("guide", "guided noise", f"uncond + {guidance} · (cond − uncond)", "step", loop),
        box("scheduler", "scheduler step", f"{_scheduler_name(unet.model)}removes a little noise", "step", loop),
        box("decode", f"VAE {decoder.type}", f"{_unscale_label(vae)}, then decode · {vae.total_params:,} params (whole VAE)", "conv"),
        box("image", "image", shape_str(image), "io"),
    ]
    arrows = [
        Arrow("prompt", "tokenizer"),
        Arrow("tokenizer", "clip", f"input_ids {shape_str(ids)}" + (f" ×{len(encoders)}" if len(encoders) > 1 else "")),
        Arrow("clip", "unet", f"encoder_hidden_states {shape_str(context)}{joined}" + "".join(f", {e}" for e in extra)),
        Arrow("noise", "cfg_in", shape_str(single)),
        Arrow("cfg_in", "unet", f"sample {shape_str(latent)}, timestep {shape_str(unet.inputs['timestep'])}"),
        Arrow("unet", "guide", f"noise prediction {shape_str(noise)}"),
        Arrow("guide", "scheduler", shape_str(single)),
        Arrow("scheduler", "cfg_in", f"{shape_str(single)}: the next step", dashed=True),
        Arrow("scheduler", "decode", f"after {plural(steps, 'step')}: {shape_str(single)}"),
        Arrow("decode", "image", shape_str(image)),
    ]
    return Scene(
        title=f"The pipeline: text to image\n{model_name(unet.model)} · {steps} denoising steps, guidance {guidance} · "
        "shapes read off the component traces",
        boxes=boxes,
        clusters=[Cluster(loop, f"<b>denoising loop</b> {small(plural(steps, 'step'))}", "step")],
        arrows=arrows,
    )



def _scheduler_name(model: str) -> str:
    """"PNDM: " for a preset whose scheduler is known, "" otherwise."""
    from explorer.specs import PRESETS

    preset = PRESETS.get(model)
    return f"{preset.scheduler['_class_name'].removesuffix('Scheduler')}: " if preset is not None else ""


def _unscale_label(vae: Trace) -> str:
    """"latent ÷ 0.18215", with the VAE's own scaling factor (the label of its unscale step)."""
    try:
        label = vae.find("unscale").label
    except KeyError:  # a VAE traced some other way
        label = ""
    return label.replace("latents", "latent") if label else "latent unscaled"
