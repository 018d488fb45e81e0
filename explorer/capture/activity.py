"""Values while a pipeline runs: how active every block is, and where each word's attention goes.

- `BlockActivity`: the UNet's modules down to a depth, seen as they return (the record's depth:
  called ancestors, so `--watch-depth 2` means the blocks and their ResnetBlock2D / Transformer2DModel),
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

import functools
import itertools
from typing import Any, Callable

import numpy as np
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


def wrap_on_instance(obj: Any, name: str, wrapper_of: Callable[[Callable], Callable]) -> Callable[[], None]:
    """Replace `obj.name` by `wrapper_of(obj.name)` on this instance only. Returns the undo, which
    puts back what the instance held before (another wrapper, accelerate's say), or nothing."""
    previous = vars(obj).get(name)
    setattr(obj, name, wrapper_of(getattr(obj, name)))

    def undo() -> None:
        if previous is None:
            vars(obj).pop(name, None)
        else:
            setattr(obj, name, previous)

    return undo


def after_forward(module: nn.Module, on_return: dict[str, Callable[[Any], None]], path: str) -> Callable[[], None]:
    """Call `on_return[path](output)` after every forward of `module`, as a forward hook would, from
    a wrapper of the module's own forward (`wrap_on_instance`): a module with hooks is called the
    slow way, which for micro's 48 watched modules cost 2 % of a step, a wrapper nothing measurable.
    The entry is looked up at every call, so it can be replaced while installed (by a list's
    `append`, say, which runs no Python code). Returns the undo."""

    def wrapper_of(forward: Callable) -> Callable:
        @functools.wraps(forward)  # inspect.signature still sees the module's own
        def watched(*args, **kwargs):
            output = forward(*args, **kwargs)
            on_return[path](output)
            return output

        return watched

    return wrap_on_instance(module, "forward", wrapper_of)


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return getattr(output, "sample", None)


@functools.cache
def _blas_libraries() -> Any:
    """numpy's BLAS (OpenBLAS, MKL, BLIS...) as threadpoolctl finds it among the loaded libraries:
    once, a few ms."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


def one_blas_thread() -> Any:
    """A context in which numpy's BLAS computes in the calling thread only (9 µs to enter and leave).
    Its own threads would share the cores with PyTorch's, which run the UNet: after a matmul large
    enough for BLAS to split, they spin a while waiting for more (one made micro's next UNet call at
    256 px a third slower), and micro's maps at 256 px made a step 1.58 times as long, 1.11 since."""
    return _blas_libraries().limit(limits=1)


def float32_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor as float32 numpy: a view where it can be one (a CPU float32 tensor), else a copy (on
    a GPU, in bfloat16, needing grad)."""
    try:
        found = t.numpy()
    except (TypeError, RuntimeError):  # on a GPU, bfloat16, needing grad
        return t.detach().float().cpu().numpy()
    return found if found.dtype == np.float32 else found.astype(np.float32)


Found = tuple[int, float, float, float]  # n, mean, Σ(x − mean)², Σ|x|


def moments(t: torch.Tensor, halves: int) -> Found:
    """n, mean, Σ(x − mean)² and Σ|x| of one tensor's prompt half (`prompt_start`), on its own
    device: for a large output, whose arithmetic PyTorch spreads over its threads."""
    return each_moments([t], halves)[0]


def each_moments(tensors: list[torch.Tensor], halves: int) -> list[Found]:
    """`moments` of several large tensors, each measured by PyTorch on its own device, their sums
    brought over together: one transfer (and one wait for a GPU) for all of them."""
    with torch.no_grad():
        xs = [t.detach()[prompt_start(t, halves) :].float() for t in tensors]
        rows = [torch.stack((x.sum(), x.abs().sum(), (x * x).sum())) for x in xs]  # Σx, Σ|x|, Σx² each
        if len({row.device for row in rows}) > 1:  # a model spread over devices
            rows = [row.cpu() for row in rows]
        s, a, q = torch.stack(rows).double().cpu().numpy().T.tolist()  # (n, 3) -> three lists
    return _finished(tensors, halves, [x.numel() for x in xs], s, a, q)


def batch_moments(tensors: list[torch.Tensor], halves: int) -> list[Found]:
    """`moments` of many small tensors in a handful of numpy operations whatever their number: at
    micro's sizes an operation costs more than its arithmetic, and a numpy one a fraction of a torch
    one. The prompt halves are laid end to end in one float32 array (numpy views of CPU tensors; a
    GPU's, bfloat16 or ones needing grad go through torch), and x, |x| and x² summed per tensor by
    `reduceat`, pairwise within each tensor (about 1e-7 relative)."""
    parts = 2 if halves == 2 and all(t.ndim and t.shape[0] % 2 == 0 for t in tensors) else 1
    if parts == 1 and halves == 2 and len(tensors) > 1:  # odd batches among them: each its own way
        return [batch_moments([t], halves)[0] for t in tensors]
    try:
        flat = [t.numpy().reshape(parts, -1)[parts - 1] for t in tensors]  # views: no copy
        x = np.concatenate(flat, dtype=np.float32)
    except (TypeError, RuntimeError):
        flat = [t.detach().reshape(parts, -1)[parts - 1] for t in tensors]
        x = torch.cat(flat).float().cpu().numpy()
    sizes = [len(f) for f in flat]
    starts = list(itertools.accumulate(sizes[:-1], initial=0))
    sums = np.add.reduceat(x, starts).tolist()
    abs_sums = np.add.reduceat(np.abs(x, out=x), starts).tolist()  # in place: x is our own copy
    square_sums = np.add.reduceat(np.square(x, out=x), starts).tolist()  # |x|² = x²
    return _finished(tensors, halves, sizes, sums, abs_sums, square_sums)


def _finished(tensors: list[torch.Tensor], halves: int, sizes, s, a, q) -> list[Found]:
    """From each tensor's n, Σx, Σ|x| and Σx² to (n, mean, Σ(x − mean)², Σ|x|), in Python floats:
    for a few dozen tensors cheaper than numpy's calls. Where the mean dominates the spread (mean²
    over 100 times the variance, which Σx² − n·mean² would blur), that tensor is measured again the
    exact way, centred, in float64."""
    found = []
    for t, n, total, abs_total, square_total in zip(tensors, sizes, s, a, q):
        mean = total / n
        square_sum = max(square_total - total * mean, 0.0)
        if 100 * square_sum < n * mean * mean:
            x = t.detach()[prompt_start(t, halves) :].double()
            square_sum = float(torch.sum((x - x.mean()) ** 2))
        found.append((n, mean, square_sum, abs_total))
    return found


def _paths(keys) -> set[str]:
    """The watched modules behind (kind, name) keys: a skip tensor's name, "down_blocks.1[2]", is its
    block's path and the index of the tensor it hands on."""
    return {name.split("[")[0] for _, name in keys}


def _five(x: float) -> float:
    """A number to 5 decimals, as the record keeps them, in under half the time round(x, 5) takes
    (it goes through decimal digits): 40 µs less a micro step. A NaN or an infinity as it is."""
    return x if x - x else (x * 1e5 + 0.5) // 1 / 1e5


class BlockActivity:
    """Statistics of every watched module's output, per UNet call.

    The modules' outputs are kept as they return (`after_forward`) and measured together when the
    UNet call ends: those under 32,768 elements in a handful of numpy operations (`batch_moments`),
    the larger ones each by PyTorch (`each_moments`), whose threads share their arithmetic. A tensor
    returned again unchanged (a skip tensor that is also a watched module's output, a block handing
    on its last module's output) is measured once; one returned again changed in place (by
    `ReLU(inplace=True)`) counts as a new output. Large outputs are held up to `HOLD` bytes a call,
    the first ones to return; past that (SD1.5 at 512 px, SDXL) each is measured as it returns, so
    watching holds no more. (A call larger than the first, a second generation at a larger size,
    holds its outputs once; from the next call on, those past `HOLD` are measured as they return.)
    The first call copies what it keeps and notes the outputs that the rest of the call changes in
    place (a T2I-adapter's residual added to a down block's output): those are copied in every call,
    or measured as they return when large, so every number describes the output as its module
    returned it.

    From the second call on, a module whose outputs the first call neither copied nor measured as
    they returned only puts its output in a list (no Python code runs there), and the lists are
    looked at when the call ends: inside a pipeline the watchers' code has left the caches by the
    time each module returns, while at the end the same work runs in one loop. For micro's 48
    modules at 64 px: 0.24 ms a step as they return, 0.1 ms at the end. Micro's 26 large outputs at
    256 px (15 MB) cost 7 to 10 ms a step measured as they returned (a skip tensor twice: its
    module's output was no longer kept), 2 ms at the end.
    """

    LARGE = 1 << 15  # elements: from this size on, measured by PyTorch rather than together in numpy
    HOLD = 64 << 20  # bytes of large outputs held until the call ends; past it, measured as they return

    def __init__(self, unet: nn.Module, depth: int = 2):
        self.unet = unet
        self.paths = [path for path, d in called_depths(unet).items() if d <= depth]
        self.halves = 2  # set by the watcher before each UNet call: 2 with classifier-free guidance
        self.calls = 0  # UNet calls seen
        self.kept: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, int, list]] = {}  # (id, version) -> ...
        self.room = self.HOLD  # bytes of large outputs that may still be held until this call ends
        self.copied: set[tuple[str, str]] = set()  # outputs changed in place after their module returned
        self.measured: dict[tuple[str, str], Found] = {}  # (kind, name) -> moments
        self.hooks: dict[str, Callable[[Any], None]] = {}  # path -> what its output is looked at with
        self.on_return: dict[str, Callable[[Any], None]] = {}  # path -> its hook, or a waiting list's append
        self.waiting: list[tuple[str, Callable[[Any], None], list]] = []  # (path, hook, outputs returned this call)

    def install(self) -> Callable[[], None]:
        modules = dict(self.unet.named_modules())
        skip_sources = {"conv_in", *(p for p in modules if p.startswith("down_blocks.") and p.count(".") == 1)}
        watched = [*self.paths, *sorted(skip_sources & set(modules) - set(self.paths))]
        self.hooks = {p: self._hook_of(p, p in self.paths, p in skip_sources) for p in watched}
        self.on_return = dict(self.hooks)
        undos = [after_forward(modules[p], self.on_return, p) for p in watched]
        undos.append(self.unet.register_forward_hook(self._call_ended).remove)

        def undo() -> None:
            for one in reversed(undos):
                one()
            self._forget_waiting()

        return undo

    def take(self) -> tuple[dict, dict]:
        """What the last UNet call produced, as numbers, and a fresh start for the next one:
        path -> mean, std (unbiased, as torch.std) and mean absolute value; skip tensor -> RMS."""
        measured, self.measured, self.kept = self.measured, {}, {}
        self.room = 0 if self.calls else self.HOLD  # see _call_ended
        self._forget_waiting()  # left by a call that did not end (an exception); else empty already
        stats, rms = {}, {}
        for (kind, name), (n, mean, square_sum, abs_sum) in measured.items():
            if kind == "block":
                std = (square_sum / (n - 1)) ** 0.5 if n > 1 else 0.0
                stats[name] = {"mean": _five(mean), "std": _five(std), "abs": _five(abs_sum / n)}
            else:  # ‖x‖/√n from the mean and the spread around it
                rms[name] = _five(((square_sum + n * mean * mean) / n) ** 0.5)
        return stats, rms

    def _keep(self, key: tuple[str, str], t: torch.Tensor | None) -> None:
        if t is None or not t.is_floating_point():
            return
        version = t._version  # bumped by every in-place change
        seen = self.kept.get((id(t), version))
        if seen is not None:  # a skip tensor that is also a module's output, unchanged since
            seen[3].append(key)
            return
        n = t.numel()
        large = n >= self.LARGE
        if large and (key in self.copied or t.nbytes > self.room):
            self.measured[key] = moments(t, self.halves)  # changed in place later, or past what is held
        elif n:
            self.room -= t.nbytes if large else 0
            copy = t.detach().clone() if self.calls == 0 or key in self.copied else t
            self.kept[id(t), version] = (t, copy, version, [key])

    def _call_ended(self, module, args, output) -> None:
        as_returned, self.room = len(self.measured), self.HOLD  # the waiting outputs have all the room
        for _, hook, outputs in self.waiting:
            for one in outputs:
                hook(one)
            outputs.clear()
        if len(self.measured) > as_returned:  # waiting outputs past what is held: a call larger than the first
            self._stop_waiting(_paths(list(self.measured)[as_returned:]))
        kept, self.kept = list(self.kept.values()), {}
        if self.calls == 0:
            self.copied = {key for t, _, version, keys in kept if t._version != version for key in keys}
            self._let_wait(_paths(self.copied | set(self.measured)))
        small = [one for one in kept if one[1].numel() < self.LARGE]
        large = [one for one in kept if one[1].numel() >= self.LARGE]
        for group, measure in ((small, batch_moments), (large, each_moments)):
            if group:
                for (_, _, _, keys), found in zip(group, measure([copy for _, copy, _, _ in group], self.halves)):
                    self.measured.update(dict.fromkeys(keys, found))
        self.calls += 1
        self.room = 0  # the outputs still looked at as they return were past it in the first call

    def _let_wait(self, not_these: set[str]) -> None:
        """From now on, the watched modules but `not_these` (paths) put their outputs in a list as
        they return, looked at when the call ends."""
        for path, hook in self.hooks.items():
            if path not in not_these:
                outputs: list = []
                self.waiting.append((path, hook, outputs))
                self.on_return[path] = outputs.append

    def _stop_waiting(self, paths: set[str]) -> None:
        """From now on, these watched modules' outputs are looked at as they return again (measured
        there when past what is held)."""
        for path, hook, _ in self.waiting:
            if path in paths:
                self.on_return[path] = hook
        self.waiting = [one for one in self.waiting if one[0] not in paths]

    def _forget_waiting(self) -> None:
        for _, _, outputs in self.waiting:
            outputs.clear()

    def _hook_of(self, path: str, stats: bool, skips: bool) -> Callable[[Any], None]:
        """One per module, called after its forward: its output's statistics, and the skip tensors
        it hands on (conv_in's output, a down block's output[1])."""
        keep, block = self._keep, ("block", path)

        def hook(output) -> None:
            if stats:
                keep(block, output if type(output) is torch.Tensor else _first_tensor(output))
            if not skips:
                return
            if path == "conv_in":
                keep(("skip", path), output)
            elif isinstance(output, tuple) and len(output) > 1 and isinstance(output[1], (tuple, list)):
                for k, t in enumerate(output[1]):  # a down block's skip tensors
                    keep(("skip", f"{path}[{k}]"), t)

        return hook


class AttentionMaps:
    """Cross-attention weights per layer call: (tokens + 1, h, w) for the first image of the prompt
    half: the prompt's first `tokens` tokens (start, words, end), then all the padding together.

    Each layer hands over its query and key, kept as they are; `take()` computes the maps of all of
    them together (a matmul each into one array of scores, then one softmax for micro's ten layers).
    Inside a pipeline the hand-over runs with its code out of the caches, so it does nothing more
    (taking the prompt half's first image there as well cost micro 0.1 ms a step). A layer whose
    query has 32,768 elements or more an image (SD1.5, SDXL) is computed at once instead: its
    arithmetic outweighs the operations' cost, and holding its query would cost memory.
    """

    AT_ONCE = 1 << 15  # query elements

    def __init__(self, unet: nn.Module, tokens: int = 0):
        from explorer.capture.attention import cross_attention

        self.unet = unet
        self.tokens = tokens  # kept one by one; the keys after them are summed as padding
        self.halves = 2
        self.latent: tuple[int, int] = (0, 0)  # the UNet input's (H, W), set by the watcher
        self.layers = cross_attention(unet)
        self.kept: list[tuple[str, Any]] = []  # (path, (query, key, scale, mask, halves) or maps), in call order

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
        waiting = [i for i, (_, item) in enumerate(kept) if isinstance(item, tuple)]
        found = list(kept)
        for i, maps in zip(waiting, self._maps_together([kept[i][1] for i in waiting])):
            found[i] = (kept[i][0], maps)
        return found

    def _take_for(self, path: str):
        def take(query: torch.Tensor, key: torch.Tensor, scale: float, mask: torch.Tensor | None = None) -> None:
            # query (B, heads, N, d), key (B, heads, 77, d), mask None or (B, heads, 1 or N, 77)
            if query.numel() < self.AT_ONCE * len(query):  # small: kept as it is until the step ends
                self.kept.append((path, (query, key, scale, mask, self.halves)))
                return
            first = prompt_start(query, self.halves)  # the prompt half's first image
            if mask is not None and len(mask) > 1:
                mask = mask[first : first + 1]
            self.kept.append((path, self._maps(query[first : first + 1], key[first : first + 1], scale, mask)))

        return take

    def _maps(self, q: torch.Tensor, k: torch.Tensor, scale: float, mask: torch.Tensor | None) -> np.ndarray:
        """One large layer's (1, heads, N, d) query and (1, heads, 77, d) key -> (tokens + 1, h, w), in
        torch: its arithmetic outweighs the operations' cost, and PyTorch spreads it over its threads."""
        from explorer.capture.attention import attention_weights

        averaged = attention_weights(q.float(), k.float(), scale, mask)[0, :, : self.tokens]  # (N, tokens)
        return self._arranged(averaged.cpu().numpy(), [0, q.shape[2]])[0]

    def _maps_together(self, layers: list[tuple]) -> list[np.ndarray]:
        """Many small layers' maps in a handful of numpy operations whatever their number (at micro's
        sizes an operation costs more than its arithmetic, and a numpy one a fraction of a torch one):
        every layer's scores QKᵀ · scale (+ its mask) for the prompt half's first image into one array,
        each head's rows of every layer side by side, then one softmax over all the rows and one mean
        over the heads. The matmuls run in this thread only (`one_blas_thread`). A layer: query, key,
        scale and mask as the attention handed them over, and the halves of the batch then."""
        from explorer.capture.attention import additive_mask

        keys, heads = {k.shape[2] for _, k, _, _, _ in layers}, {q.shape[1] for q, _, _, _, _ in layers}
        if len(keys) != 1 or len(heads) != 1:  # none (every layer was large), prompts of different
            # lengths in one call, or layers with different numbers of heads (SD2.x, SDXL)
            return [self._maps_together([layer])[0] for layer in layers]
        heads = heads.pop()
        at = list(itertools.accumulate((q.shape[2] for q, _, _, _, _ in layers), initial=0))  # each layer's rows
        scores = np.empty((heads, at[-1], keys.pop()), np.float32)  # (heads, Σ N, 77)
        with one_blas_thread():
            for (q, k, scale, mask, halves), start, end in zip(layers, at, at[1:]):
                first = prompt_start(q, halves)
                key = float32_numpy(k)[first] * scale  # (heads, 77, d): scaled here, on 77 rows rather than N
                np.matmul(float32_numpy(q)[first], key.swapaxes(1, 2), out=scores[:, start:end])  # (heads, N, 77)
                if mask is not None:  # (B, heads, 1 or N, 77)
                    scores[:, start:end] += float32_numpy(additive_mask(mask))[first if len(mask) > 1 else 0]
        probs = torch.softmax(torch.from_numpy(scores), dim=2)[..., : self.tokens].numpy()  # every row at once
        return self._arranged(np.add.reduce(probs, axis=0) / heads, at)  # (Σ N, tokens): the heads' mean

    def _arranged(self, averaged: np.ndarray, at: list[int]) -> list[np.ndarray]:
        """Layers' weights averaged over the heads, one layer's N rows of `tokens` after the other (`at`:
        where each starts, and the end) -> each layer's (tokens + 1, h, w): the padding's weight as one
        more row (every weight row sums to 1), laid out as the layer's feature map."""
        laid = np.concatenate([averaged, 1 - averaged.sum(axis=1, keepdims=True)], axis=1).T  # (tokens + 1, Σ N)
        return [laid[:, first:last].reshape(-1, *self.feature_size(last - first)) for first, last in itertools.pairwise(at)]

    def feature_size(self, tokens: int) -> tuple[int, int]:
        """A layer's feature map (h, w) from its number of query tokens and the latent's size."""
        height, width = self.latent
        factor = round((height * width / tokens) ** 0.5)
        return height // factor, width // factor


class BlockAdds:
    """What each watched module adds to what it is given, per UNet call: ‖output − input‖ / ‖input‖ of
    the prompt's half of the batch, for the modules whose output has their input's shape (a ResnetBlock2D
    that keeps its channels, a Transformer2DModel, the mid block...; none for those that resample or
    change the channels). An output's own size (BlockActivity's std) is mostly the residual stream it
    carries; this is the module's own contribution to it. Forward hooks; on request only (`adds`), as
    it reads every input too."""

    def __init__(self, unet: nn.Module, depth: int = 2):
        self.unet = unet
        self.paths = [path for path, d in called_depths(unet).items() if d <= depth]
        self.halves = 2
        self.found: dict[str, float] = {}

    def install(self) -> Callable[[], None]:
        modules = dict(self.unet.named_modules())
        handles = [modules[p].register_forward_hook(self._hook_of(p), with_kwargs=True) for p in self.paths]

        def undo() -> None:
            for handle in handles:
                handle.remove()

        return undo

    def take(self) -> dict[str, float]:
        found, self.found = self.found, {}
        return found

    def _hook_of(self, path: str) -> Callable:
        def hook(module, args, kwargs, output) -> None:
            given = args[0] if args else next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
            made = _first_tensor(output)
            if path in self.found or not isinstance(given, torch.Tensor) or made is None or given.shape != made.shape:
                return
            with torch.no_grad():
                start = prompt_start(given, self.halves)
                x, y = given.detach()[start:].float(), made.detach()[start:].float()
                size = float(torch.linalg.vector_norm(x))
                self.found[path] = _five(float(torch.linalg.vector_norm(y - x)) / size) if size else 0.0

        return hook
