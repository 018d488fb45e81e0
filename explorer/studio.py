"""The live page's work, in plain Python: one model chosen at start-up, jobs run one at a time.

A `Studio` holds one pipeline (built once, `prepare(reuse=True)`) and a bounded queue of jobs —
generate, experiment, sweep — that a worker thread runs through the public API (`run_prepared`,
`explorer.experiment`, `explorer.sweep`), each into a normal run folder under `runs`. Every job keeps
the events it made (each step as it ends, each run as it starts, the end), for whoever follows it.
A job asked to stop stops at its next step and keeps what was done. Nothing here knows HTTP:
`explorer.server` serves it, and a notebook could drive it the same way.
"""

from __future__ import annotations

import itertools
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from explorer.errors import ExplorerError, OptionError

QUEUE = 4  # jobs that may wait while one runs; a fifth is refused at once
KINDS = ("generate", "experiment", "sweep")
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
SETTINGS = {"prompt": str, "negative_prompt": str, "seed": int, "steps": int, "guidance": float, "scheduler": str}


class Busy(ExplorerError):
    """The queue is full."""


class Stopped(KeyboardInterrupt):
    """The page asked the job to stop (its Stop button, or its tab closed): it stops at its next step,
    as Ctrl-C would, and what was done is kept."""


@dataclass
class Job:
    id: str
    kind: str
    request: dict  # what was asked, checked
    folder: Path
    status: str = "queued"  # queued, running, done, stopped, failed
    error: str = ""
    events: list[dict] = field(default_factory=list)
    stop_asked: bool = False
    lock: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def add(self, event: dict) -> None:
        with self.lock:
            self.events.append(event)
            self.lock.notify_all()

    def since(self, start: int) -> list[dict]:
        with self.lock:
            return self.events[start:]

    @property
    def finished(self) -> bool:
        return self.status in ("done", "stopped", "failed")

    def stop(self) -> None:
        self.stop_asked = True


class Studio:
    """One model, its pipeline built once; jobs run one at a time, at most QUEUE waiting."""

    def __init__(self, model: str = "micro", runs: Path = Path("runs"), lang: str = "en"):
        import torch

        from explorer.generation import Settings, prepare

        # One core left to the browser, which draws each step as it comes on the same machine: PyTorch's
        # threads wait for one another at every operation, and one of them waiting for a core the page
        # holds made a step of micro 150 ms on two cores (100 on one thread, 30 alone). Put back by close().
        self.threads = torch.get_num_threads()
        torch.set_num_threads(max(1, self.threads - 1))
        self.model, self.runs, self.lang = model, Path(runs), lang
        self.prepared = prepare(Settings(prompt="", model=model), reuse=True)  # fails here, not at the first click
        self.size = self.prepared.settings.height
        self.scheduler_config = self.prepared.built.scheduler_config
        self.jobs: dict[str, Job] = {}
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=QUEUE)
        self.counter = itertools.count(1)
        self.current: Job | None = None
        self.worker = threading.Thread(target=self._work, name="sd-explorer studio", daemon=True)
        self.worker.start()

    # -- what a request may ask -----------------------------------------------------------------------

    def settings(self, request: dict):
        """The generation a request asks for, checked (one sentence for what cannot work)."""
        from explorer.generation import Settings, check

        if not isinstance(request, dict):
            raise OptionError("request", "must be a JSON object.")
        unknown = sorted(set(request) - set(SETTINGS) - {"edits", "edit", "over", "factor", "kind"})
        if unknown:
            raise OptionError("request", f"has fields the page does not send: {', '.join(unknown)}.")
        values = {}
        for name, kind in SETTINGS.items():
            if name in request:
                value = request[name]
                if kind is float and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
                if not isinstance(value, kind) or isinstance(value, bool):
                    raise OptionError(name, f"must be {'text' if kind is str else 'a number'}, got {value!r}.")
                values[name] = value
        if not values.get("prompt", "").strip():
            raise OptionError("prompt", "is empty: type what to draw.")
        if len(values["prompt"]) > 1000 or len(values.get("negative_prompt", "")) > 1000:
            raise OptionError("prompt", "is longer than 1000 characters; CLIP reads 75 tokens anyway.")
        if not 0 <= values.get("seed", 0) < 2**63:
            raise OptionError("seed", f"must be between 0 and 2**63 - 1, got {values['seed']}.")
        settings = Settings(model=self.model, attention_maps=True, height=self.size, width=self.size, **values)
        check(settings, self.scheduler_config)
        if settings.steps > 200:
            raise OptionError("steps", f"must be 200 or fewer on the live page, got {settings.steps}.")
        return settings

    def edits(self, request: dict, settings) -> list:
        """The edits an experiment asks for ({"kind": "off", "text": "mid_block"}, ...), each checked
        against the pipeline before the job is queued."""
        from explorer import edits

        asked = request.get("edits")
        if not isinstance(asked, list) or not asked or len(asked) > 8:
            raise OptionError("edits", "must be a list of one to eight edits, each {\"kind\": ..., \"text\": ...}.")
        found = []
        for one in asked:
            if not isinstance(one, dict) or not isinstance(one.get("kind"), str) or not isinstance(one.get("text", ""), str):
                raise OptionError("edits", f"must hold {{\"kind\": ..., \"text\": ...}} objects, got {one!r}.")
            if one["kind"] == "freeu":
                found.append(edits.freeu())
            else:
                found.append(edits.parse(one["kind"], one.get("text", ""), one.get("steps") or None))
        edits.bind(self.prepared.built.pipe, found, prompt=settings.prompt, steps=settings.steps)  # one sentence if not
        return found

    # -- jobs -------------------------------------------------------------------------------------------

    def submit(self, kind: str, request: dict) -> Job:
        """Check the request, then queue the job; Busy when QUEUE jobs already wait."""
        from explorer.generation import default_out

        if kind not in KINDS:
            raise OptionError("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}.")
        settings = self.settings(request)
        checked: dict[str, Any] = {"settings": settings}
        if kind == "experiment":
            checked["edits"] = self.edits(request, settings)
        if kind == "sweep":
            checked["edit"], checked["over"] = self._sweep_request(request)
        folder = default_out(settings.prompt, self.runs)
        folder = folder.with_name(f"{folder.name}-{next(self.counter)}" + ("" if kind == "generate" else f"-{kind}"))
        job = Job(folder.name, kind, checked, folder)
        job.add({"type": "queued", "job": job.id, "kind": kind, "waiting": self.queue.qsize()})
        self.jobs[job.id] = job
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            del self.jobs[job.id]
            raise Busy(f"{QUEUE} jobs are waiting already: try again when one has finished.") from None
        return job

    @staticmethod
    def _sweep_request(request: dict) -> tuple[str, str]:
        edit, over = request.get("edit", "off"), request.get("over", "cross-attention")
        if edit not in ("off",) or not isinstance(over, str):
            raise OptionError("edit", "of a sweep from the page is off, over a kind of layer (cross-attention, resnets, ...).")
        return edit, over

    def _work(self) -> None:
        while True:
            job = self.queue.get()
            self.current, job.status = job, "running"
            job.add({"type": "started", "job": job.id})
            try:
                {"generate": self._generate, "experiment": self._experiment, "sweep": self._sweep}[job.kind](job)
                job.status = "stopped" if job.stop_asked else "done"
            except KeyboardInterrupt:  # Stopped
                job.status = "stopped"
            except Exception as exc:  # a failing pipeline: one sentence, the server goes on
                job.status, job.error = "failed", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            finally:
                self.current = None
                job.add({"type": "end", "job": job.id, "status": job.status, "error": job.error})

    def _on_step(self, job: Job, run: str):
        def on_step(watcher) -> None:
            step = watcher.recording.steps[-1]
            job.add({"type": "step", "run": run, "folder": watcher.out.name, "index": step.index,
                     "timestep": step.timestep, "seconds": step.seconds, "total": watcher.recording.total_steps,
                     "blocks": {p: s.get("std") for p, s in step.blocks.items()}, "stats": step.latent_stats})
            if job.stop_asked:
                raise Stopped

        return on_step

    def _on_start(self, job: Job, run: str):
        return lambda watcher: job.add({"type": "run", "run": run, "folder": watcher.out.name})

    def _generate(self, job: Job) -> None:
        from explorer.generation import prepare, run_prepared

        prepared = prepare(job.request["settings"], reuse=True)
        result = run_prepared(prepared, job.folder, on_start=self._on_start(job, "run"), on_step=self._on_step(job, "run"))
        if result.interrupted:
            raise Stopped

    def _experiment(self, job: Job) -> None:
        from explorer.experiments import experiment

        s = job.request["settings"]
        result = experiment(s.prompt, edits=job.request["edits"], model=self.model, seed=s.seed, steps=s.steps,
                            guidance=s.guidance, negative_prompt=s.negative_prompt, scheduler=s.scheduler,
                            out=job.folder, attention_maps=True,
                            on_run=lambda name: {"on_start": self._on_start(job, name), "on_step": self._on_step(job, name)})
        if result.status == "interrupted":
            raise Stopped

    def _sweep(self, job: Job) -> None:
        from explorer.experiments import sweep

        s = job.request["settings"]

        def on_progress(done: int, total: int, path: str) -> None:
            job.add({"type": "sweep", "done": done, "total": total, "path": path})
            if job.stop_asked:
                raise Stopped

        sweep(s.prompt, edit=job.request["edit"], over=job.request["over"], model=self.model, seed=s.seed,
              steps=s.steps, guidance=s.guidance, out=job.folder, on_progress=on_progress)

    # -- the runs kept --------------------------------------------------------------------------------

    def folder(self, name: str, run: str | None = None) -> Path:
        """A run (or experiment, or sweep) folder under `runs`, by the name the page was given, and
        one of an experiment's two runs (baseline, edited); one sentence for any other name (a request
        never names a path)."""
        if not isinstance(name, str) or not RUN_NAME.match(name) or not (self.runs / name).is_dir():
            raise OptionError("run", f"{name!r} is not a run of this page.")
        if run is None:
            return self.runs / name
        if run not in ("baseline", "edited") or not (self.runs / name / run).is_dir():
            raise OptionError("run", f"{name!r} has no run {run!r}: an experiment has baseline and edited.")
        return self.runs / name / run

    def listing(self) -> list[dict]:
        """Every run folder under `runs`, newest first: its name, kind, prompt and status (each record
        read again only when it has changed since the last listing)."""
        found = []
        if not self.runs.is_dir():
            return found
        for folder in sorted(self.runs.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)[:200]:
            for kind, record in (("generate", "trace.json"), ("experiment", "experiment.json"), ("sweep", "sweep.json")):
                path = folder / record
                if RUN_NAME.match(folder.name) and path.is_file() and not path.is_symlink():
                    try:
                        stat = path.stat()
                    except OSError:
                        break
                    entry = listed_entry(path, kind, stat.st_mtime_ns, stat.st_size)
                    if entry is not None:
                        found.append(entry)
                    break
        return found

    def close(self, timeout: float = 10.0) -> None:
        """Stop what runs and what waits (Ctrl-C on the server): each keeps what it had done."""
        while True:
            try:
                waiting = self.queue.get_nowait()
            except queue.Empty:
                break
            waiting.status = "stopped"
            waiting.add({"type": "end", "job": waiting.id, "status": "stopped", "error": ""})
        if self.current is not None:
            self.current.stop()
            started = time.perf_counter()
            while self.current is not None and time.perf_counter() - started < timeout:
                time.sleep(0.05)
        import torch

        torch.set_num_threads(self.threads)


@lru_cache(maxsize=1000)
def listed_entry(path: Path, kind: str, mtime_ns: int, size: int) -> dict | None:
    """What the runs list says of one record: read again only when the file has changed (another
    modification time or size)."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        settings = data.get("settings", {}) if isinstance(data, dict) else {}
        return {"name": path.parent.name, "kind": kind, "prompt": str(settings.get("prompt", ""))[:200],
                "status": str(data.get("status", "")), "modified": round(mtime_ns / 1e9)}
    except (OSError, ValueError, AttributeError):
        return None
