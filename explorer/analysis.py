"""Where the compute goes: FLOPs by kind of work, and how they grow with the image size.

The FLOPs themselves are counted while tracing (`trace(..., flops=True)`, PyTorch's own
FlopCounterMode formulas, on the meta device); this module only sorts them:

- convolution: what Conv2d layers run;
- self-attention / cross-attention: the attention itself (QKᵀ and the weighted sum of V) in an
  attention layer whose keys come from the same tokens / from the prompt;
- linear / other: everything else (the Q, K, V and output projections, feed-forward layers...).

Pure functions of records, except `scaling`, which traces the component at each size.
"""

from __future__ import annotations

from dataclasses import dataclass

from explorer.record import Node, Trace

WORK = ("convolution", "self-attention", "cross-attention", "linear / other")  # the kinds of work
SORTS = ("tree", "flops", "params", "activation")  # how `explore stats` orders its rows


def own_flops(trace: Trace) -> list[int]:
    """Per node (by position): its FLOPs minus its children's: what ran in the node itself."""
    own = [n.flops for n in trace.nodes]
    for i, parent in enumerate(trace.parents()):
        if parent is not None:
            own[parent] -= trace.nodes[i].flops
    return own


def _attention_layers(trace: Trace) -> set[str]:
    """Paths of the nodes that compute attention: those with an AttentionScores step inside."""
    return {n.path.rsplit(".", 1)[0] for n in trace.nodes if n.type == "AttentionScores"}


def work_of(node: Node, attention: set[str]) -> str:
    """Which of WORK a node's own FLOPs are."""
    if node.path in attention:
        return "cross-attention" if "encoder_hidden_states" in node.inputs else "self-attention"
    if "Conv" in node.type:
        return "convolution"
    return "linear / other"


def flops_by_work(trace: Trace) -> dict[str, int]:
    """The component's FLOPs split into WORK."""
    attention = _attention_layers(trace)
    totals = dict.fromkeys(WORK, 0)
    for node, own in zip(trace.nodes, own_flops(trace)):
        if own:
            totals[work_of(node, attention)] += own
    return totals


def activation_bytes(node: Node, bytes_per_value: int = 4) -> int:
    """Bytes of the node's outputs (float32 by default)."""
    total = 0
    for shape in node.outputs:
        count = 1
        for d in shape:
            count *= d
        total += count * bytes_per_value
    return total


def leaf_activation_bytes(trace: Trace) -> int:
    """Bytes written by all the layers that compute (modules without children), float32."""
    total = 0
    for i, n in enumerate(trace.nodes):
        is_leaf = i + 1 == len(trace.nodes) or trace.nodes[i + 1].depth <= n.depth
        if is_leaf and n.kind == "module":
            total += activation_bytes(n)
    return total


@dataclass(frozen=True)
class Scaling:
    size: int  # image side in pixels
    tokens: int  # latent positions: what attention is quadratic in
    flops: dict[str, int]  # by kind of work

    @property
    def total(self) -> int:
        return sum(self.flops.values())


def scaling(component: str, sizes: list[int], **trace_options) -> list[Scaling]:
    """Trace `component` at each square image size and split its FLOPs by kind."""
    from explorer.explore import trace

    rows = []
    for size in sizes:
        t = trace(component, height=size, width=size, flops=True, **trace_options)
        scores = [n for n in t.nodes if n.type == "AttentionScores"]
        tokens = max((n.outputs[0][2] for n in scores), default=0)
        rows.append(Scaling(size, tokens, flops_by_work(t)))
    return rows


def parse_sizes(sizes: str, component: str) -> list[int]:
    """'256,512,768' -> [256, 512, 768], each a valid image size; one sentence otherwise."""
    from explorer.components import component as entry
    from explorer.errors import OptionError
    from explorer.explore import check_size

    if not entry(component).image_sized:
        raise OptionError("sizes", f"is about image sizes: it applies to unet and vae, not to the {component}.")
    try:
        values = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise OptionError("sizes", f"takes pixel sizes separated by commas, e.g. 256,512,768; got {sizes!r}.") from None
    if not values:
        raise OptionError("sizes", "needs at least one size, e.g. 256,512,768.")
    for value in values:
        check_size("sizes", value)
    return values
