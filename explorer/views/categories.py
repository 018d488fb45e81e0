"""What a node does, in one word, read off its type: the colour key shared by every view."""

from __future__ import annotations

from explorer.record import Node

CATEGORIES = ("conv", "norm", "attention", "linear", "activation", "block", "step")

_BY_NAME = (
    (("Block",), "block"),  # before "Attn": a CrossAttnDownBlock2D is a block
    (("Conv",), "conv"),
    (("Norm",), "norm"),
    (("Attention", "Attn", "Transformer2D"), "attention"),
    (("Linear", "Embedding", "GEGLU", "MLP", "FeedForward"), "linear"),
    (("SiLU", "GELU", "Activation", "Dropout", "Identity"), "activation"),
)


def category_of(node: Node) -> str:
    """One of CATEGORIES. Steps (recorded computations, not modules) are "step"; a module whose
    name says nothing is a "block"."""
    if node.is_step:
        return "step"
    for words, category in _BY_NAME:
        if any(word in node.type for word in words):
            return category
    return "block"
