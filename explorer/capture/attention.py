"""Attention that says what it does: the split into heads, the score matrix and the merge.

- diffusers (UNet, VAE): `RecordingAttnProcessor` is diffusers' `AttnProcessor2_0` operation for
  operation, plus `record_step` calls. Same numbers as the stock processor (tests compare them).
- transformers (CLIP): a function registered in transformers' `AttentionInterface` that delegates
  to the model's own implementation (sdpa or eager) and records the same steps.

Neither stores the score matrix: like the stock code they call scaled-dot-product attention, and
record the scores' shape. `install(model)` switches a model over and returns the undo.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from explorer.capture.recorder import Virtual, record_step, tracing


def _s(n: int) -> str:
    return "s" if n != 1 else ""


def attention_steps(
    q_tokens: Any,
    k_tokens: Any,
    v_tokens: Any,
    q: Any,
    k: Any,
    v: Any,
    attended: Any,
    merged: Any,
    self_attention: bool,
    causal: bool = False,
) -> None:
    """Record the four steps of multi-head attention from the tensors the attention code used.

    q_tokens, k_tokens, v_tokens: (B, N, C) before the split; q, k, v: (B, heads, N, d) after it;
    attended: (B, heads, N_q, d), the weighted sum; merged: (B, N_q, C), the heads joined again.
    """
    batch, heads, n_q, d = q.shape
    n_k = k.shape[2]
    scores = Virtual((batch, heads, n_q, n_k))  # (B, heads, N_q, N_k): never materialized
    record_step(
        "split_heads",
        "SplitHeads",
        {"query": q_tokens, "key": k_tokens, "value": v_tokens},
        (q, k, v),
        label=f"split into {heads} head{_s(heads)} of {d}",
        note=f"The {q_tokens.shape[-1]} channels of Q, K and V are cut into {heads} head{_s(heads)} "
        f"of {d} channels; each head attends on its own.",
    )
    if causal:
        attends_to = "itself and the tokens before it (causal mask)"
    elif self_attention:
        attends_to = "every token of the same sequence"
    else:
        attends_to = f"the {n_k} tokens of the context"
    record_step(
        "scores",
        "AttentionScores",
        {"query": q, "key": k},
        scores,
        label=f"softmax(QKᵀ/√{d}" + (" + causal mask)" if causal else ")"),
        note=f"Per head, each of the {n_q} query tokens gets one score per key token ({n_k}), "
        f"and softmax turns them into weights: a token attends to {attends_to}.",
    )
    record_step(
        "weighted_sum",
        "WeightedSum",
        {"scores": scores, "value": v},
        attended,
        label="scores · V",
        note="Each query token becomes the score-weighted average of the value vectors.",
    )
    record_step(
        "merge_heads",
        "MergeHeads",
        {"heads": attended},
        merged,
        label=f"merge {heads} head{_s(heads)}",
        note=f"The heads' outputs are concatenated back to {merged.shape[-1]} channels per token.",
    )


def attention_probabilities(
    query: torch.Tensor, key: torch.Tensor, scale: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(QKᵀ · scale + mask): (B, heads, N_q, N_k) from query (B, heads, N_q, d) and key (B,
    heads, N_k, d). Materialized on purpose: only for cross-attention, whose N_k is 77. `mask` as
    scaled-dot-product attention takes it: added to the scores, or boolean (True: attended)."""
    scores = query @ key.transpose(-1, -2) * scale
    if mask is not None:
        scores = scores + additive_mask(mask)
    return torch.softmax(scores, dim=-1)


def additive_mask(mask: torch.Tensor) -> torch.Tensor:
    """An attention mask as the scores' addend: a boolean one's False becomes −∞."""
    if mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill_(~mask, float("-inf"))


def attention_weights(
    query: torch.Tensor, key: torch.Tensor, scale: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """`attention_probabilities` averaged over the heads: (B, N_q, N_k)."""
    return attention_probabilities(query, key, scale, mask).mean(dim=1)


# -- diffusers ---------------------------------------------------------------------------------------

# The processors RecordingAttnProcessor reproduces exactly. Others (xformers, IP-Adapter, LoRA
# variants...) are left in place: their attention is traced as modules only.
STOCK_PROCESSORS = {"AttnProcessor2_0", "AttnProcessor"}


class RecordingAttnProcessor:
    """diffusers' `AttnProcessor2_0`, step for step, recording the head split, scores and merge.

    With `on_cross` (a function of query and key, both (B, heads, N, d), the attention's scale and
    its mask, None or (B, heads, 1 or N_q, N_k)), every cross-attention also hands them to it before
    attending: that is how the cross-attention maps are taken, beside the real computation, which
    stays exactly the stock one.
    """

    def __init__(self, on_cross: Callable[[torch.Tensor, torch.Tensor, float, Any], None] | None = None):
        self.on_cross = on_cross

    def __call__(
        self,
        attn: Any,  # diffusers.models.attention_processor.Attention
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:  # the VAE's attention works on a feature map
            image = hidden_states
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
            # (B, C, H, W) -> (B, H*W, C): every pixel becomes a token
            record_step(
                "to_tokens",
                "ToTokens",
                {"hidden_states": image},
                hidden_states,
                label="[B,C,H,W] → [B,HW,C]",
                note=f"The {height}x{width} feature map becomes {height * width} tokens of {channel} channels.",
            )

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)  # (B, N_q, inner)
        self_attention = encoder_hidden_states is None
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)

        key = attn.to_k(encoder_hidden_states)  # (B, N_k, inner): from the prompt in cross-attention
        value = attn.to_v(encoder_hidden_states)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        q_tokens, k_tokens, v_tokens = query, key, value
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, N_q, d)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, N_k, d)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)

        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if self.on_cross is not None and not self_attention:
            self.on_cross(query, key, attn.scale, attention_mask)
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )  # (B, heads, N_q, d)
        hidden_states = attended.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)  # (B, N_q, inner)
        hidden_states = hidden_states.to(query.dtype)
        if tracing():  # a watched generation runs this at every step: nothing to prepare then
            attention_steps(q_tokens, k_tokens, v_tokens, query, key, value, attended, hidden_states, self_attention)

        hidden_states = attn.to_out[0](hidden_states)  # linear projection
        hidden_states = attn.to_out[1](hidden_states)  # dropout

        if input_ndim == 4:
            tokens = hidden_states
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
            record_step(
                "to_image",
                "ToImage",
                {"hidden_states": tokens},
                hidden_states,
                label="[B,HW,C] → [B,C,H,W]",
                note="The tokens are laid back out as a feature map.",
            )

        if attn.residual_connection:
            attention_out = hidden_states
            hidden_states = hidden_states + residual
            record_step(
                "residual",
                "Add",
                {"input": attention_out, "other": residual},
                hidden_states,
                label="+",
                note="The attention's input is added back: a residual connection.",
            )

        hidden_states = hidden_states / attn.rescale_output_factor
        return hidden_states


# -- transformers ------------------------------------------------------------------------------------


def _recording_attention(delegate: Callable) -> Callable:
    def attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
        out, weights = delegate(module, query, key, value, attention_mask, **kwargs)
        batch, heads, n_q, d = query.shape  # (B, heads, N, d): CLIPAttention split them just before

        def tokens(t):  # the same values before the split: (B, N, heads * d)
            return Virtual((t.shape[0], t.shape[2], t.shape[1] * t.shape[3]), source=t)

        attention_steps(
            tokens(query),
            tokens(key),
            tokens(value),
            query,
            key,
            value,
            Virtual((batch, heads, n_q, value.shape[-1])),
            Virtual((batch, n_q, heads * value.shape[-1]), source=out),  # merged right after this returns
            self_attention=True,
            causal=bool(kwargs.get("is_causal", getattr(module, "is_causal", False))),
        )
        return out, weights

    return attention


def _use_recording_attention(model: nn.Module) -> Callable[[], None] | None:
    """Route the attention of every transformers model in `model` (the model itself, or SDXL's two
    text encoders held together) through a recording function; returns the undo, None if none."""
    undos = []
    configs: dict[int, nn.Module] = {}
    for m in model.modules():  # a model and its inner parts share one config object: routed once
        config = getattr(m, "config", None)
        if getattr(config, "_attn_implementation", None) is not None and id(config) not in configs:
            configs[id(config)] = m
    for m in configs.values():
        if (undo := _route_attention(m)) is not None:
            undos.append(undo)
    if not undos:
        return None

    def undo_all() -> None:
        for undo in reversed(undos):
            undo()

    return undo_all


def _route_attention(model: nn.Module) -> Callable[[], None] | None:
    """Route one transformers model's attention through a recording function; returns the undo."""
    config = getattr(model, "config", None)
    original = getattr(config, "_attn_implementation", None)
    if original is None:
        return None
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    except ImportError:  # a transformers without pluggable attention: modules are still traced
        return None

    if original == "eager":
        owners = [sys.modules[type(m).__module__] for m in model.modules() if "Attention" in type(m).__name__]
        delegate = getattr(owners[0], "eager_attention_forward", None) if owners else None
    else:
        delegate = ALL_ATTENTION_FUNCTIONS.get(original)
    mask = ALL_MASK_ATTENTION_FUNCTIONS.get(original)
    if delegate is None or mask is None:
        return None

    name = f"sd_explorer_{original}"
    AttentionInterface.register(name, _recording_attention(delegate))
    AttentionMaskInterface.register(name, mask)
    config._attn_implementation = name

    def undo() -> None:
        config._attn_implementation = original

    return undo


def stock_attention(model: nn.Module) -> dict[str, nn.Module]:
    """The diffusers attention modules of `model` whose processor RecordingAttnProcessor reproduces
    exactly, by path (others, xformers or LoRA variants, are left alone)."""
    return {
        name: m
        for name, m in model.named_modules()
        if hasattr(m, "set_processor") and type(getattr(m, "processor", None)).__name__ in STOCK_PROCESSORS
    }


def cross_attention(model: nn.Module) -> dict[str, nn.Module]:
    """The stock cross-attention modules of `model` (those attending to the prompt), by path."""
    return {p: m for p, m in stock_attention(model).items() if getattr(m, "is_cross_attention", False)}


def hand_over_cross_attention(layers: dict[str, nn.Module], on_cross_of: Callable[[str], Callable]) -> Callable[[], None]:
    """Switch each of `layers` (path -> attention module) to the recording processor, handing its
    query, key, scale and mask to `on_cross_of(path)` at every call; returns the function that puts
    the previous processors back."""
    previous = {m: m.processor for m in layers.values()}
    for path, m in layers.items():
        m.set_processor(RecordingAttnProcessor(on_cross=on_cross_of(path)))

    def undo() -> None:
        for m, processor in previous.items():
            m.set_processor(processor)

    return undo


def install(model: nn.Module) -> tuple[set[int], Callable[[], None]]:
    """Make every attention of `model` record its steps. Returns the ids of the attention modules
    (their inside is described by those steps) and a function that puts everything back."""
    processors = {m: m.processor for m in stock_attention(model).values()}
    for m in processors:
        m.set_processor(RecordingAttnProcessor())
    undo_transformers = _use_recording_attention(model)
    attention_modules = set(map(id, processors))
    if undo_transformers is not None:  # transformers attention: the modules holding q/k/v projections
        attention_modules |= {id(m) for m in model.modules() if hasattr(m, "q_proj") and hasattr(m, "k_proj")}

    def undo() -> None:
        if undo_transformers is not None:
            undo_transformers()
        for m, processor in processors.items():
            m.set_processor(processor)

    return attention_modules, undo
