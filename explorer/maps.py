"""Cross-attention maps on disk, and how they add up to one map per word.

While a watched generation runs, every cross-attention layer's softmax weights (the conditional
half of the batch, averaged over heads) are kept for the prompt's real tokens, plus one row for all
padding tokens together, reshaped to the layer's feature map: an array (tokens, h, w) per layer.
A step's maps are one `.npz` file: per layer `L<k>` as 8-bit values scaled to each map's maximum,
and `S<k>` the float32 maxima (a 50-step SD1.5 run at 512 px with a 10-token prompt: about 15 MB).

`aggregate` sums them the way DAAM (Tang et al., 2022) does: each layer's map upsampled to the
latent's size, summed over layers and steps (heads were averaged when recorded), normalized to sum
to 1. Words made of several tokens add their tokens' maps.

numpy and PIL only: reading a run needs no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from explorer.errors import ExplorerError

START, END = "<|startoftext|>", "<|endoftext|>"


def quantize(maps) -> tuple[Any, Any]:
    """(tokens, h, w) floats -> 8-bit values scaled to each token's maximum, and those maxima."""
    import numpy as np

    maps = np.asarray(maps, dtype=np.float32)
    scales = maps.reshape(len(maps), -1).max(axis=1).clip(min=1e-12)
    values = np.rint(maps / scales[:, None, None] * 255).clip(0, 255).astype(np.uint8)
    return values, scales.astype(np.float32)


def write_maps(path: Path, layers: Sequence[Any]) -> None:
    """One step's maps, one array (tokens, h, w) per layer, into `path` (.npz), written atomically."""
    import io

    import numpy as np

    from explorer.files import write_atomic

    arrays = {}
    for k, maps in enumerate(layers):
        arrays[f"L{k}"], arrays[f"S{k}"] = quantize(maps)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def read_maps(path: Path, layers: int, tokens: int) -> list[Any]:
    """One step's maps back as float32 arrays; one sentence when the file is missing or damaged."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            found = [data[f"L{k}"].astype(np.float32) / 255 * data[f"S{k}"][:, None, None] for k in range(layers)]
    except (OSError, KeyError, ValueError) as exc:
        raise ExplorerError(f"{path} is missing or damaged ({exc.__class__.__name__}): the run's maps cannot be read.") from None
    if any(m.ndim != 3 or len(m) != tokens for m in found):
        raise ExplorerError(f"{path} does not hold one map per token of the prompt: the run's maps are damaged.")
    return found


def upsample(image, size: tuple[int, int]):
    """A float map (h, w) resized to `size` (H, W), bilinear."""
    import numpy as np
    from PIL import Image

    height, width = size
    if image.shape == (height, width):
        return image
    return np.asarray(Image.fromarray(image, mode="F").resize((width, height), Image.BILINEAR))


def aggregate(steps: Iterable[list[Any]], layers: list[int], rows: list[int], size: tuple[int, int]):
    """The sum over steps, layers and `rows` of the maps, each upsampled to `size`, normalized."""
    import numpy as np

    total = np.zeros(size, dtype=np.float64)
    for maps in steps:
        for k in layers:
            total += upsample(maps[k][rows].sum(axis=0).astype(np.float32), size)
    whole = total.sum()
    return (total / whole if whole > 0 else total).astype(np.float32)


# -- tokens and words ----------------------------------------------------------------------------------


def word_spans(tokens: Sequence[str]) -> list[tuple[str, list[int]]]:
    """The words the tokens spell, with their rows: BPE tokens end a word with `</w>`; special
    tokens and the padding row are words of their own."""
    spans: list[tuple[str, list[int]]] = []
    text, rows = "", []
    for i, token in enumerate(tokens):
        if token.startswith("<|") or token.startswith("<pad"):
            spans.append((token, [i]))
            continue
        text += token.replace("</w>", "")
        rows.append(i)
        if token.endswith("</w>"):
            spans.append((text, rows))
            text, rows = "", []
    if rows:
        spans.append((text, rows))
    return spans


def words_of(tokens: Sequence[str]) -> list[str]:
    """The prompt's words, without the start, end and padding rows."""
    return [word for word, _ in word_spans(tokens) if not word.startswith("<")]


def token_rows(tokens: Sequence[str], word: str) -> list[int]:
    """The rows of every occurrence of `word` (case-insensitive), or of a special token named as
    such (`<|startoftext|>`, `<|endoftext|>`, `<padding>`)."""
    wanted = word.strip().lower()
    return [row for text, rows in word_spans(tokens) if text.lower() == wanted for row in rows]
