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


def latent_preview(latents, size: int = 128, factors: Sequence[Sequence[float]] = LATENT_RGB):
    """A PIL image of the first latent of a (B, 4, h, w) batch, upscaled to `size` pixels wide.
    `factors`: the latent -> RGB map, 4 rows of (R, G, B) and maybe a fifth, a constant; SD1.x's
    by default (a micro model carries its own, fitted when it was trained)."""
    import torch
    from PIL import Image

    factors = torch.tensor(factors, dtype=torch.float32)  # (4, 3), or (5, 3) with a constant
    latent = latents[0].detach().float().cpu()  # (4, h, w)
    rgb = torch.einsum("chw,cr->hwr", latent, factors[:4])  # (h, w, 3) in about [-1, 1]
    if len(factors) == 5:
        rgb = rgb + factors[4]
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    image = Image.fromarray(pixels, "RGB")
    height = max(1, round(size * image.height / image.width))
    return image.resize((size, height), Image.NEAREST)


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
