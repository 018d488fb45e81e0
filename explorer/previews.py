"""Looking at latents without the VAE: a linear map from the 4 latent channels to RGB.

SD1.x latents are close to a linear function of the image's colours. The factors below are the
usual approximation, fitted by keturn for Stable Diffusion 1.4 ("Decoding latents to RGB without
upscaling", discuss.huggingface.co/t/23204) and used by most SD front-ends for live previews. They
map scaled latents (what the UNet sees) to RGB in about [-1, 1]. Good enough to watch an image
emerge from noise; not a replacement for the decoder.
"""

from __future__ import annotations

from typing import Sequence

LATENT_RGB = (
    #   R       G       B
    (0.298, 0.207, 0.208),  # latent channel 1
    (0.187, 0.286, 0.173),  # latent channel 2
    (-0.158, 0.189, 0.264),  # latent channel 3
    (-0.184, -0.271, -0.473),  # latent channel 4
)
PREVIEW_WIDTH = 128  # pixels: how wide readers show a latent preview


def latent_pixels(latents: Sequence, factors: Sequence[Sequence[float]] = LATENT_RGB):
    """RGB pixels (k, h, w, 3) uint8 of the first latent of each (B, 4, h, w) batch, at the latent's
    own size (one pixel per latent position; `upscaled` shows them bigger), mapped all at once:
    a watched run maps five every step. `factors`: the latent -> RGB map, 4 rows of (R, G, B) and
    maybe a fifth, a constant; SD1.x's by default (a micro model carries its own, fitted when it
    was trained). numpy does the mapping: at these sizes it takes half the time torch does or less."""
    import numpy as np

    from explorer.capture.activity import float32_numpy

    factors = np.asarray(factors, dtype=np.float32)  # (4, 3), or (5, 3) with a constant
    stacked = np.stack([float32_numpy(batch)[0] for batch in latents])  # (k, 4, h, w)
    rgb = stacked.transpose(0, 2, 3, 1) @ factors[:4]  # (k, h, w, 3) in about [-1, 1]
    if len(factors) == 5:
        rgb += factors[4]
    return np.rint((np.clip(rgb, -1, 1) + 1) * 127.5).astype(np.uint8)


def upscaled(image, size: int = PREVIEW_WIDTH):
    """A latent preview shown `size` pixels wide (nearest neighbour: each latent position a square);
    an image already that wide or wider is returned as it is."""
    from PIL import Image

    if image.width >= size:
        return image
    return image.resize((size, max(1, round(size * image.height / image.width))), Image.NEAREST)


STORE_UNDER = 1 << 14  # bytes of pixels: a smaller PNG is stored, not deflated


def rgb_png(pixels, compress_level: int | None = None) -> bytes:
    """PNG bytes of (h, w, 3) uint8 pixels: the signature, a header, the rows deflated, an end. For
    the small previews a watched run writes every step this costs a third of PIL's save, which
    spends its time setting up its plugin and encoder, not compressing. By default pixels under
    STORE_UNDER bytes (a micro step's strip of previews, 4 kB; SD1.5's at 256 px, 15 kB) are stored
    as they are (level 0): deflating micro's 3.8 kB at level 1 takes 30 µs (100 in a running
    pipeline), storing them 4, and would save 1 kB; larger ones are deflated at level 1."""
    import struct
    import zlib

    import numpy as np

    height, width, _ = pixels.shape
    no_filter = np.zeros((height, 1), np.uint8)  # each row starts with its filter type: 0, none
    rows = np.concatenate([no_filter, pixels.reshape(height, width * 3)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, deflate, no interlace
    if compress_level is None:
        compress_level = 0 if pixels.nbytes < STORE_UNDER else 1
    deflated = zlib.compress(rows.tobytes(), compress_level)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", deflated) + chunk(b"IEND", b"")


def png(image, compress_level: int = 6) -> bytes:
    """A PIL image as PNG bytes (for an atomic write). Previews written every step use level 1:
    a third of the time of the default, files a tenth larger."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="png", compress_level=compress_level)
    return buffer.getvalue()


def fit_latent_rgb(latents, images) -> list[list[float]]:
    """The linear map from latents (N, 4, h, w) to the images (N, 3, H, W) in [-1, 1] averaged down
    to the latent's size: least squares, the way SD1.x's preview factors were found."""
    import torch
    import torch.nn.functional as F

    small = F.adaptive_avg_pool2d(images.float(), latents.shape[-2:])  # (N, 3, h, w)
    x = latents.float().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])  # (N·h·w, 4)
    y = small.permute(0, 2, 3, 1).reshape(-1, 3)  # (N·h·w, 3)
    x = torch.cat([x, torch.ones(len(x), 1)], dim=1)  # with a constant: the background's colour
    solution = torch.linalg.lstsq(x, y).solution  # (5, 3)
    return [[round(float(v), 4) for v in row] for row in solution]  # 4 channel rows, then the constant


def contact_sheet(previews: Sequence, captions: Sequence[str], columns: int = 5):
    """The previews in a grid, each with its caption under it."""
    from PIL import Image, ImageDraw

    if not previews:
        return Image.new("RGB", (1, 1), "white")
    w, h = previews[0].size
    pad, text_h = 6, 14
    columns = min(columns, len(previews))
    rows = (len(previews) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (preview, caption) in enumerate(zip(previews, captions)):
        x = pad + (k % columns) * (w + pad)
        y = pad + (k // columns) * (h + text_h + pad)
        sheet.paste(preview, (x, y))
        draw.text((x, y + h + 1), caption, fill=(60, 60, 60))
    return sheet
