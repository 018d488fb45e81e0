"""SDXL's two text encoders, held together as StableDiffusionXLPipeline holds them.

SDXL encodes the prompt twice: with OpenAI's CLIP ViT-L (`text_encoder`, a `CLIPTextModel`, 768
channels) and with OpenCLIP ViT-bigG (`text_encoder_2`, a `CLIPTextModelWithProjection`, 1280
channels). Its pipeline (`encode_prompt`) takes each encoder's penultimate hidden state, joins them
channel-wise into the 2048-channel prompt embedding every cross-attention reads, and keeps the
second encoder's projected, pooled embedding (`text_embeds`) for the UNet's extra conditioning.

`TextEncoders.forward` does exactly that, with the real classes, recording the two steps between
them (take the penultimate layer, concatenate) so the views draw them like any block. It is the
`clip` component of a model that has a `text_encoder_2`.
"""

from __future__ import annotations

import torch
from torch import nn

from explorer.capture.recorder import manual_steps, record_step


class TextEncoders(nn.Module):
    def __init__(self, text_encoder: nn.Module, text_encoder_2: nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.text_encoder_2 = text_encoder_2

    def forward(self, input_ids: torch.Tensor, input_ids_2: torch.Tensor) -> dict[str, torch.Tensor]:
        """`input_ids` (B, 77) from the first tokenizer, `input_ids_2` (B, 77) from the second
        (padded with "!"); returns prompt_embeds (B, 77, 2048) and pooled_prompt_embeds (B, 1280)."""
        first = self.text_encoder(input_ids=input_ids, output_hidden_states=True)
        second = self.text_encoder_2(input_ids=input_ids_2, output_hidden_states=True)
        with manual_steps():
            hidden = [self._penultimate(n, out) for n, out in (("penultimate", first), ("penultimate_2", second))]
            prompt_embeds = torch.cat(hidden, dim=-1)  # (B, 77, 768 + 1280)
            widths = " + ".join(str(h.shape[-1]) for h in hidden)
            record_step(
                "concat",
                "Concat",
                {"text_encoder": hidden[0], "text_encoder_2": hidden[1]},
                prompt_embeds,
                label=f"concat channels: {widths} = {prompt_embeds.shape[-1]}",
                note="The two encoders' token embeddings side by side: the context every cross-attention reads.",
            )
        return {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": second.text_embeds}  # text_embeds: (B, 1280)

    @staticmethod
    def _penultimate(name: str, output) -> torch.Tensor:
        layers = len(output.hidden_states) - 1  # hidden_states: the embeddings, then each layer's output
        hidden = output.hidden_states[-2]  # (B, 77, C)
        record_step(
            name,
            "PenultimateLayer",
            {"hidden_states": hidden},
            hidden,
            label=f"hidden_states[-2]: layer {layers - 1} of {layers}",
            note="SDXL reads each encoder one layer before the last, without its final layer norm.",
        )
        return hidden
