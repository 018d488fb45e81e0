"""`--compare`: every module's shapes in the real run against the static trace of the same settings."""

from __future__ import annotations

from typing import Any

from explorer.generation.watching import wrap

def compare_first_calls(pipe, live_shapes: dict, undo: list) -> None:
    """Trace the first call of the text encoder, the UNet and the VAE decoder with module hooks,
    to compare with the static traces afterwards."""
    from explorer.capture.hooks import instrumented

    def traced_once(component: str, module, prefix: str = ""):
        """`prefix`: the module's path in the static trace ("decoder." for the VAE's decoder,
        "text_encoder_2." for SDXL's second text encoder)."""
        def wrapper_of(original):
            def run(*args, **kwargs):
                if (component, prefix) in live_shapes:
                    return original(*args, **kwargs)
                with instrumented(module, dataflow=False) as recorder:
                    out = original(*args, **kwargs)
                live_shapes[component, prefix] = {(n["path"], n["call"]): (n["inputs"], n["outputs"]) for n in recorder.nodes}
                return out

            return run

        return wrapper_of

    encoders = ["text_encoder", "text_encoder_2"] if getattr(pipe, "text_encoder_2", None) is not None else ["text_encoder"]
    for name in encoders:  # SDXL's clip component holds both, under their names
        prefix = f"{name}." if len(encoders) > 1 else ""
        wrap(getattr(pipe, name), "forward", traced_once("clip", getattr(pipe, name), prefix), undo)
    wrap(pipe.unet, "forward", traced_once("unet", pipe.unet), undo)
    wrap(pipe.vae.decoder, "forward", traced_once("vae", pipe.vae.decoder, "decoder."), undo)


def compare_shapes(live_shapes: dict, static: dict[str, Any]) -> dict:
    """Per module: the shapes seen in the real run against the static trace of the same settings."""
    differences, checked = [], 0
    for (component, prefix), live in live_shapes.items():
        expected = {
            (n.path[len(prefix) :], n.call): (n.inputs, n.outputs)
            for n in static[component].nodes
            if n.path.startswith(prefix) and n.path != prefix.rstrip(".") and n.path
        }
        for key, (inputs, outputs) in live.items():
            if key not in expected:
                continue
            checked += 1
            want_in, want_out = expected[key]
            if dict(inputs) != dict(want_in) or tuple(outputs) != tuple(want_out):
                differences.append({"component": component, "path": key[0], "call": key[1],
                                    "live": [inputs, outputs], "static": [want_in, want_out]})
    return {"checked": checked, "differences": differences}
