"""The component registry: what each part of a Stable Diffusion pipeline is, written once.

A *component* is one model of the pipeline that the explorer can build and trace: the UNet, the
VAE, the CLIP text encoder. Everything the rest of the project needs to know about one lives in its
entry here: its folder in a diffusers pipeline folder, its class and the library it comes from, how
a forward pass is driven (`explorer.capture.drivers`), its batch by default, its name in an original
(CompVis) single-file checkpoint and diffusers' function that converts it, and how it is shown.
Loading, tracing, the CLI, the figures, the page and watching all read it.

Adding a component is one entry here (and its configs in the presets of `explorer.specs`); a new
way of driving it is one function in `explorer.capture.drivers`.

This module imports nothing heavy: the CLI reads it before torch is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from explorer.errors import ExplorerError


@dataclass(frozen=True)
class Component:
    name: str  # what the user types: `explore unet`, `explore diagram vae`
    folder: str  # its subfolder in a diffusers pipeline folder
    library: str  # "diffusers" or "transformers": where `class_name` is found
    class_name: str  # the model class, built from the folder's config.json
    driver: str  # how one forward pass is driven: a name in explorer.capture.drivers.DRIVERS
    default_batch: int  # 2 where classifier-free guidance runs the prompt and the negative prompt together
    ldm_prefix: str  # prefix of its tensors in an original (CompVis / ldm) single-file checkpoint
    ldm_converter: str  # the diffusers.loaders.single_file_utils function converting them to diffusers names
    title: str  # as shown on a tab: "UNet"
    heading: str  # as shown in a heading: "CLIP text encoder"
    summary: str  # what it does, in one line
    config_class: str = ""  # transformers: the config class the model is built from
    ldm_marker: str = ""  # another key prefix that marks the original layout (the VAE's "encoder.down.")
    image_sized: bool = True  # its inputs grow with the image (height, width apply)


UNET = Component(
    name="unet",
    folder="unet",
    library="diffusers",
    class_name="UNet2DConditionModel",
    driver="denoiser",
    default_batch=2,
    ldm_prefix="model.diffusion_model.",
    ldm_converter="convert_ldm_unet_checkpoint",
    title="UNet",
    heading="UNet",
    summary="predicts the noise in a latent, given the timestep and the prompt embedding",
)
VAE = Component(
    name="vae",
    folder="vae",
    library="diffusers",
    class_name="AutoencoderKL",
    driver="autoencoder",
    default_batch=1,
    ldm_prefix="first_stage_model.",
    ldm_converter="convert_ldm_vae_checkpoint",
    ldm_marker="encoder.down.",
    title="VAE",
    heading="VAE",
    summary="encodes an image to a latent and decodes it back",
)
CLIP = Component(
    name="clip",
    folder="text_encoder",
    library="transformers",
    class_name="CLIPTextModel",
    config_class="CLIPTextConfig",
    driver="text",
    default_batch=2,
    ldm_prefix="cond_stage_model.transformer.",
    ldm_converter="convert_ldm_clip_checkpoint",
    title="CLIP",
    heading="CLIP text encoder",
    summary="turns the prompt into the embedding every cross-attention reads",
    image_sized=False,
)

# SDXL's second text encoder (OpenCLIP ViT-bigG with its projection). Not a component of its own:
# where a model has one, the `clip` component is both encoders together (explorer.textencoders),
# as the pipeline runs them. It has an entry so that it loads like any component: its folder, its
# class, its weights.
CLIP_2 = Component(
    name="clip_2",
    folder="text_encoder_2",
    library="transformers",
    class_name="CLIPTextModelWithProjection",
    config_class="CLIPTextConfig",
    driver="text",
    default_batch=2,
    ldm_prefix="conditioner.embedders.1.model.",
    ldm_converter="",  # the original layout's OpenCLIP weights are not converted: a diffusers folder is needed
    title="CLIP 2",
    heading="second text encoder",
    summary="SDXL's second text encoder: the wider half of the prompt embedding and the pooled text_embeds",
    image_sized=False,
)

COMPONENTS: dict[str, Component] = {c.name: c for c in (UNET, VAE, CLIP)}
PARTS: dict[str, Component] = {**COMPONENTS, CLIP_2.name: CLIP_2}  # what loads: the components and the parts of one


def component(name: str) -> Component:
    """The registry entry of `name`, or one sentence naming the components."""
    if name not in PARTS:
        raise ExplorerError(f"Unknown component {name!r}: choose one of {', '.join(COMPONENTS)}.")
    return PARTS[name]
