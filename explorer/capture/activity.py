"""Values while a pipeline runs: how active every block is, and where each word's attention goes.

- `BlockActivity`: forward hooks on the UNet's modules down to a depth (the record's depth: called
  ancestors, so `--watch-depth 2` means the blocks and their ResnetBlock2D / Transformer2DModel),
  keeping the mean, standard deviation and mean absolute value of each one's output for the
  conditional half of the batch; and the RMS of every skip tensor a down block hands to the up path.
  Scalars only: cheap to compute, small to store.
- `AttentionMaps`: every stock cross-attention's softmax weights for the conditional half, averaged
  over heads, for the prompt's tokens: taken from the query and key the recording processor computes
  (`explorer.capture.attention`), beside the real attention, which stays exactly the stock one. Only
  cross-attention (77 keys) is materialized, never the self-attention scores.

Both only read what flows: the pipeline computes exactly what it would unwatched.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

CONTAINERS = (nn.ModuleList, nn.ModuleDict)  # never called themselves: they add no level


def called_depths(model: nn.Module) -> dict[str, int]:
    """Every module's depth as the record counts it: its ancestors, containers not counted."""
    kinds = {name: m for name, m in model.named_modules()}
    depths = {}
    for name, m in kinds.items():
        if not name or isinstance(m, CONTAINERS):
            continue
        parts = name.split(".")
        prefixes = (".".join(parts[:k]) for k in range(1, len(parts)))
        depths[name] = 1 + sum(not isinstance(kinds[p], CONTAINERS) for p in prefixes)
    return depths


def conditional_half(t: torch.Tensor, halves: int) -> torch.Tensor:
    """The prompt's half of a classifier-free-guidance batch [negative prompts, prompts]."""
    return t[t.shape[0] // 2 :] if halves == 2 and t.shape[0] % 2 == 0 else t


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return getattr(output, "sample", None)


class BlockActivity:
    """Statistics of every watched module's output, per UNet call."""

    def __init__(self, unet: nn.Module, depth: int = 2):
        self.unet = unet
        self.paths = [path for path, d in called_depths(unet).items() if d <= depth]
        self.halves = 2  # set by the watcher before each UNet call: 2 with classifier-free guidance
        # Kept as tensors, read as numbers once per call by take(): path -> (mean, ‖x − mean‖, ‖x‖₁)
        # and its element count; skip name -> (‖x‖, element count). Norms are a fraction of the cost
        # of torch.std_mean on the CPU, and exact: the mean is taken out before squaring.
        self.blocks: dict[str, tuple[torch.Tensor, int]] = {}
        self.skips: dict[str, tuple[torch.Tensor, int]] = {}

    def install(self) -> Callable[[], None]:
        modules = dict(self.unet.named_modules())
        handles = [modules[p].register_forward_hook(self._stats_of(p)) for p in self.paths]
        skip_sources = ["conv_in", *(p for p in modules if p.startswith("down_blocks.") and p.count(".") == 1)]
        handles += [modules[p].register_forward_hook(self._skips_of(p)) for p in skip_sources if p in modules]

        def undo() -> None:
            for handle in handles:
                handle.remove()

        return undo

    def take(self) -> tuple[dict, dict]:
        """What the last UNet call produced, as numbers, and a fresh start for the next one. The
        hooks keep tensors: one conversion here instead of three per module in the forward pass."""
        blocks, skips = self.blocks, self.skips
        self.blocks, self.skips = {}, {}
        stats = {}
        rows = torch.stack([v for v, _ in blocks.values()]).tolist() if blocks else []
        for (path, (_, n)), (mean, spread, l1) in zip(blocks.items(), rows):
            std = spread / (n - 1) ** 0.5 if n > 1 else 0.0  # unbiased, as torch.std
            stats[path] = {"mean": round(mean, 5), "std": round(std, 5), "abs": round(l1 / n, 5)}
        norms = torch.stack([v for v, _ in skips.values()]).tolist() if skips else []
        rms = {name: round(norm / n**0.5, 5) for (name, (_, n)), norm in zip(skips.items(), norms)}
        return stats, rms

    def _stats_of(self, path: str):
        def hook(module, args, output) -> None:
            t = _first_tensor(output)
            if t is None or not t.is_floating_point():
                return
            t = conditional_half(t.detach(), self.halves).float()
            mean = t.mean()
            norms = torch.stack((mean, torch.linalg.vector_norm(t - mean), torch.linalg.vector_norm(t, 1)))  # (3,)
            self.blocks[path] = (norms, t.numel())

        return hook

    def _skips_of(self, path: str):
        def hook(module, args, output) -> None:
            if path == "conv_in":
                tensors = [output]
            elif isinstance(output, tuple) and len(output) > 1 and isinstance(output[1], (tuple, list)):
                tensors = list(output[1])  # a down block's skip tensors
            else:
                return
            for k, t in enumerate(tensors):
                half = conditional_half(t.detach(), self.halves).float()
                name = path if path == "conv_in" else f"{path}[{k}]"
                self.skips[name] = (torch.linalg.vector_norm(half), half.numel())

        return hook


class AttentionMaps:
    """Cross-attention weights per layer call: (rows, h, w) for the first image of the prompt half."""

    def __init__(self, unet: nn.Module, rows: list[int], padding: list[int]):
        from explorer.capture.attention import cross_attention

        self.unet = unet
        self.rows, self.padding = rows, padding  # token positions kept, and those summed as padding
        self.halves = 2
        self.latent: tuple[int, int] = (0, 0)  # the UNet input's (H, W), set by the watcher
        self.layers = cross_attention(unet)
        self.current: list[tuple[str, Any]] = []  # (path, (rows + 1, h, w) numpy array) in call order

    @property
    def available(self) -> bool:
        """False when no cross-attention has a stock processor (xformers, LoRA variants...)."""
        return bool(self.layers)

    def install(self) -> Callable[[], None]:
        from explorer.capture.attention import hand_over_cross_attention

        return hand_over_cross_attention(self.layers, self._take_for)

    def take(self) -> list[tuple[str, Any]]:
        found, self.current = self.current, []
        return found

    def _take_for(self, path: str):
        from explorer.capture.attention import attention_weights

        def take(query: torch.Tensor, key: torch.Tensor, scale: float) -> None:
            q = conditional_half(query, self.halves)[:1].float()  # (1, heads, N, d): the first image
            k = conditional_half(key, self.halves)[:1].float()  # (1, heads, 77, d)
            probs = attention_weights(q, k, scale)[0]  # (N, 77)
            kept = torch.cat([probs[:, self.rows], probs[:, self.padding].sum(dim=1, keepdim=True)], dim=1)
            h, w = self.feature_size(probs.shape[0])
            self.current.append((path, kept.T.reshape(-1, h, w).cpu().numpy()))  # (rows + 1, h, w)

        return take

    def feature_size(self, tokens: int) -> tuple[int, int]:
        """A layer's feature map (h, w) from its number of query tokens and the latent's size."""
        height, width = self.latent
        factor = round((height * width / tokens) ** 0.5)
        return height // factor, width // factor
