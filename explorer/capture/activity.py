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

import math
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


def prompt_start(t: torch.Tensor, halves: int) -> int:
    """Where the prompt's half of a classifier-free-guidance batch [negative prompts, prompts] starts:
    half way along an even batch when there are two halves, else 0 (all of it is the prompt's)."""
    return t.shape[0] // 2 if halves == 2 and t.ndim and t.shape[0] % 2 == 0 else 0


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return getattr(output, "sample", None)


class Moments:
    """n, mean, Σ(x − mean)² and Σ|x| of the conditional half of many tensors, in a dozen tensor
    operations whatever their number: at micro's sizes an operation costs more than its arithmetic,
    and three per tensor for 38 tensors took three times as long.

    Each tensor is seen as (2, n), its two halves, and all are laid side by side: row 1 is then
    every conditional half end to end. That is cut into rows of g elements (g divides every half),
    each row is summed in float32 (x, x², |x|), and the rows' sums are added up per tensor in
    float64. Where the mean dominates the spread (mean² over 100 times the variance, which the
    subtraction Σx² − n·mean² would blur), that tensor is measured again the exact way, centred."""

    def __init__(self):
        # the tensors' shapes -> g, each tensor's size, each tensor's last row
        self.layouts: dict[tuple, tuple[int, list[int], torch.Tensor]] = {}

    def __call__(self, tensors: list[torch.Tensor], halves: int) -> list[tuple[int, float, float, float]]:
        """(n, mean, Σ(x − mean)², Σ|x|) of each tensor's prompt half (`prompt_start`)."""
        split = [prompt_start(t, halves) > 0 for t in tensors]
        if any(split) and not all(split):  # some batches split in two, some not: each its own way
            return [self([t], halves)[0] for t in tensors]
        parts = 2 if all(split) else 1
        g, sizes, last_rows = self._layout(tensors, parts)
        halves_of = [t.detach().reshape(parts, -1) for t in tensors]
        side_by_side = torch.cat(halves_of, dim=1) if len(tensors) > 1 else halves_of[0]  # (parts, Σn)
        rows = side_by_side[parts - 1].view(-1, g)  # (R, g): the conditional halves; no row spans two
        per_row = torch.stack((rows.sum(1), torch.linalg.vector_norm(rows, dim=1), rows.abs().sum(1)), 1)  # (R, 3)
        per_row = per_row.double()
        per_row[:, 1].square_()  # ‖row‖ -> Σx²
        ends = [(0.0, 0.0, 0.0), *per_row.cumsum(0)[last_rows].tolist()]  # running sums at each tensor's last row
        found = []
        for t, n, before, after in zip(tensors, sizes, ends, ends[1:]):
            s, q, a = (y - x for x, y in zip(before, after))  # Σx, Σx², Σ|x| of this tensor
            mean, square_sum = s / n, max(q - s * s / n, 0.0)
            if 100 * square_sum < n * mean * mean:  # ill-conditioned: centre first, in float64
                x = t.detach()[prompt_start(t, halves) :].double()
                square_sum = float(torch.sum((x - x.mean()) ** 2))
            found.append((n, mean, square_sum, a))
        return found

    def _layout(self, tensors: list[torch.Tensor], parts: int) -> tuple[int, list[int], torch.Tensor]:
        key = (parts, *(t.shape for t in tensors))
        if key not in self.layouts:
            sizes = [t.numel() // parts for t in tensors]
            g = 64
            for n in sizes:
                g = math.gcd(g, n)
            self.layouts[key] = (g, sizes, torch.tensor(sizes).cumsum(0) // g - 1)
        return self.layouts[key]


class BlockActivity:
    """Statistics of every watched module's output, per UNet call.

    The hooks keep the outputs, and they are measured together when the UNet call ends (`Moments`),
    a skip tensor that is also a watched module's output only once. An output of 32,768 elements or
    more is measured at once instead: from that size on its arithmetic outweighs the operations'
    cost (PyTorch splits such work across threads), and holding it would cost memory (SD1.5). The
    first call copies what it keeps and notes the outputs that the rest of the call changes in place
    (a T2I-adapter's residual added to a down block's output): those are copied in every call, so
    every number describes the output as its module returned it.
    """

    AT_ONCE = 1 << 15  # elements: measured in the hook, not kept until the call ends

    def __init__(self, unet: nn.Module, depth: int = 2):
        self.unet = unet
        self.paths = [path for path, d in called_depths(unet).items() if d <= depth]
        self.halves = 2  # set by the watcher before each UNet call: 2 with classifier-free guidance
        self.calls = 0  # UNet calls seen
        self.moments = Moments()
        self.kept: dict[int, tuple[torch.Tensor, torch.Tensor, int, list]] = {}  # id -> (output, copy, version, keys)
        self.copied: set[tuple[str, str]] = set()  # outputs changed in place after their module returned
        self.measured: dict[tuple[str, str], tuple[int, float, float, float]] = {}  # (kind, name) -> moments

    def install(self) -> Callable[[], None]:
        modules = dict(self.unet.named_modules())
        skip_sources = {"conv_in", *(p for p in modules if p.startswith("down_blocks.") and p.count(".") == 1)}
        watched = [*self.paths, *sorted(skip_sources & set(modules) - set(self.paths))]
        hooks = [self._hook_of(p, p in self.paths, p in skip_sources) for p in watched]
        handles = [modules[p].register_forward_hook(hook) for p, hook in zip(watched, hooks)]
        handles.append(self.unet.register_forward_hook(self._call_ended))

        def undo() -> None:
            for handle in handles:
                handle.remove()

        return undo

    def take(self) -> tuple[dict, dict]:
        """What the last UNet call produced, as numbers, and a fresh start for the next one:
        path -> mean, std (unbiased, as torch.std) and mean absolute value; skip tensor -> RMS."""
        measured, self.measured, self.kept = self.measured, {}, {}
        stats, rms = {}, {}
        for (kind, name), (n, mean, square_sum, abs_sum) in measured.items():
            if kind == "block":
                std = (square_sum / (n - 1)) ** 0.5 if n > 1 else 0.0
                stats[name] = {"mean": round(mean, 5), "std": round(std, 5), "abs": round(abs_sum / n, 5)}
            else:  # ‖x‖/√n from the mean and the spread around it
                rms[name] = round(((square_sum + n * mean * mean) / n) ** 0.5, 5)
        return stats, rms

    def _keep(self, key: tuple[str, str], t: torch.Tensor) -> None:
        if id(t) in self.kept:  # a skip tensor that is also a module's output
            self.kept[id(t)][3].append(key)
        elif t.numel() >= self.AT_ONCE:
            self.measured[key] = self.moments([t], self.halves)[0]
        elif t.numel():
            copy = t.detach().clone() if self.calls == 0 or key in self.copied else t
            self.kept[id(t)] = (t, copy, t._version, [key])  # _version: bumped by every in-place change

    def _call_ended(self, module, args, output) -> None:
        kept, self.kept = list(self.kept.values()), {}
        if self.calls == 0:
            self.copied = {key for t, _, version, keys in kept if t._version != version for key in keys}
        if kept:
            for (_, _, _, keys), found in zip(kept, self.moments([copy for _, copy, _, _ in kept], self.halves)):
                self.measured.update(dict.fromkeys(keys, found))
        self.calls += 1

    def _hook_of(self, path: str, stats: bool, skips: bool):
        """One hook per module: its output's statistics, and the skip tensors it hands on (conv_in's
        output, a down block's output[1])."""

        def hook(module, args, output) -> None:
            if stats:
                t = _first_tensor(output)
                if t is not None and t.is_floating_point():
                    self._keep(("block", path), t)
            if skips and path == "conv_in":
                self._keep(("skip", path), output)
            elif skips and isinstance(output, tuple) and len(output) > 1 and isinstance(output[1], (tuple, list)):
                for k, t in enumerate(output[1]):  # a down block's skip tensors
                    self._keep(("skip", f"{path}[{k}]"), t)

        return hook


class AttentionMaps:
    """Cross-attention weights per layer call: (tokens + 1, h, w) for the first image of the prompt
    half: the prompt's first `tokens` tokens (start, words, end), then all the padding together.

    Each layer hands over its query and key; `take()` computes the maps of layers of the same size
    together (one matmul and one softmax for the three 16x16 layers of micro, say). A layer whose
    query has 32,768 elements or more (SD1.5, SDXL) is computed at once instead: its arithmetic
    outweighs the operations' cost, and holding its query would cost memory.
    """

    AT_ONCE = 1 << 15  # query elements

    def __init__(self, unet: nn.Module, tokens: int = 0):
        from explorer.capture.attention import cross_attention

        self.unet = unet
        self.tokens = tokens  # kept one by one; the keys after them are summed as padding
        self.halves = 2
        self.latent: tuple[int, int] = (0, 0)  # the UNet input's (H, W), set by the watcher
        self.layers = cross_attention(unet)
        self.kept: list[tuple[str, Any]] = []  # (path, (query, key, scale) or maps), in call order

    @property
    def available(self) -> bool:
        """False when no cross-attention has a stock processor (xformers, LoRA variants...)."""
        return bool(self.layers)

    def install(self) -> Callable[[], None]:
        from explorer.capture.attention import hand_over_cross_attention

        return hand_over_cross_attention(self.layers, self._take_for)

    def take(self) -> list[tuple[str, Any]]:
        """Every layer call's maps since the last take, in call order: (path, (tokens + 1, h, w) array)."""
        kept, self.kept = self.kept, []
        groups: dict[tuple, list[int]] = {}
        for i, (_, item) in enumerate(kept):
            if isinstance(item, tuple):
                q, k, scale = item
                groups.setdefault((q.shape, k.shape, scale), []).append(i)
        found = list(kept)
        for members in groups.values():
            queries = torch.cat([kept[i][1][0] for i in members])  # (g, heads, N, d)
            keys = torch.cat([kept[i][1][1] for i in members])  # (g, heads, 77, d)
            for i, maps in zip(members, self._maps(queries, keys, kept[members[0]][1][2])):
                found[i] = (kept[i][0], maps)
        return found

    def _take_for(self, path: str):
        def take(query: torch.Tensor, key: torch.Tensor, scale: float) -> None:
            first = prompt_start(query, self.halves)  # the prompt half's first image
            q, k = query[first : first + 1], key[first : first + 1]  # (1, heads, N, d), (1, heads, 77, d)
            self.kept.append((path, self._maps(q, k, scale)[0] if q.numel() >= self.AT_ONCE else (q, k, scale)))

        return take

    def _maps(self, q: torch.Tensor, k: torch.Tensor, scale: float):
        """(g, heads, N, d) queries and (g, heads, 77, d) keys -> g arrays (tokens + 1, h, w)."""
        from explorer.capture.attention import attention_weights

        probs = attention_weights(q.float(), k.float(), scale, keep=self.tokens)  # (g, N, tokens)
        padding = 1 - probs.sum(dim=-1, keepdim=True)  # (g, N, 1): every weight row sums to 1
        maps = torch.cat([probs, padding], dim=-1).transpose(1, 2)  # (g, tokens + 1, N)
        h, w = self.feature_size(probs.shape[1])
        return maps.reshape(len(maps), -1, h, w).cpu().numpy()  # (g, tokens + 1, h, w)

    def feature_size(self, tokens: int) -> tuple[int, int]:
        """A layer's feature map (h, w) from its number of query tokens and the latent's size."""
        height, width = self.latent
        factor = round((height * width / tokens) ** 0.5)
        return height // factor, width // factor
