"""Generation: a real diffusers pipeline run step by step, watched.

One module per concern, in the order a generation goes through them:

    settings    what is asked (`Settings`), checked before anything is built; the schedulers
    building    the model's real pipeline (`build_pipeline`): random weights for a preset, its own otherwise
    recording   the generation record while it is made (`Recording`, `Step`): plain data, trace.json
    watching    the watchers on a running pipeline (`watch` for yours, `Watcher` for what they saw)
    run         the explorer's way: `generate` = `prepare` (build, trace) + `run_prepared` (run, watched)
    shapes      --compare: every module's shapes in the real run against the static trace

`explorer.edits` and `explorer.experiments` sit beside this package and use it through these names.
"""

from explorer.generation.building import Built, build_pipeline, check_drivable, pipeline_class, resolve, scheduler_config_of
from explorer.generation.recording import Recording, Step
from explorer.generation.run import GenerationError, Prepared, Result, call_pipeline, generate, prepare, run_prepared, settings_record
from explorer.generation.settings import SCHEDULERS, Settings, check, default_out, max_steps, own_scheduler
from explorer.generation.watching import PLMS_NOTE, Watcher, predicted_x0, watch, watched

__all__ = [
    "Settings", "SCHEDULERS", "check", "default_out", "max_steps", "own_scheduler",
    "Built", "build_pipeline", "check_drivable", "pipeline_class", "resolve", "scheduler_config_of",
    "Recording", "Step",
    "Watcher", "watch", "watched", "predicted_x0", "PLMS_NOTE",
    "Prepared", "prepare", "run_prepared", "generate", "call_pipeline", "settings_record", "GenerationError", "Result",
]
