"""FLOPs by node: PyTorch's own formulas, each count given to the node that ran it."""

from __future__ import annotations

from dataclasses import replace

from torch.utils._python_dispatch import TorchDispatchMode

from explorer.capture.recorder import Recorder
from explorer.record import Trace


class FlopsByNode(TorchDispatchMode):
    """Counts floating-point operations with PyTorch's own formulas (those of
    `torch.utils.flop_counter.FlopCounterMode`: matmuls, convolutions, scaled-dot-product attention)
    and gives each count to the node running at that moment; `with_flops` then sums them up the tree.
    The attribution uses the recorder's module stack, so names are the record's own, also for the
    VAE, whose encoder and decoder are not called through the VAE's forward."""

    def __init__(self, recorder: Recorder):
        from torch.utils.flop_counter import flop_registry  # only explore stats pays for this import

        super().__init__()
        self.recorder = recorder
        self.registry = flop_registry
        self.own: dict[int, int] = {}  # node index -> flops run directly in it

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.registry.get(func._overloadpacket)
        if formula is not None and self.recorder.stack:
            index = self.recorder.stack[-1]["index"]
            self.own[index] = self.own.get(index, 0) + int(formula(*args, **kwargs, out_val=out))
        return out

    def with_flops(self, trace: Trace) -> Trace:
        """`trace` with every node's FLOPs: its own plus its descendants'."""
        totals = [self.own.get(i, 0) for i in range(len(trace.nodes))]
        for i, parent in reversed(list(enumerate(trace.parents()))):  # children before their parent
            if parent is not None:
                totals[parent] += totals[i]
        nodes = tuple(replace(n, flops=total) for n, total in zip(trace.nodes, totals))
        return replace(trace, nodes=nodes, total_flops=totals[0] if totals else 0)
