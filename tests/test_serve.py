"""`explore serve`: the page, live, on a real uvicorn server on 127.0.0.1, driven over real HTTP and
in real Chromium. The same image as `explore generate`, steps as they happen, Stop, two tabs in
turn, refusals that leave the server serving, and a bounded load test."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import needs_chromium
from explorer.cli import app

PROMPT = "a red circle on the left"


class Served:
    """A running server: its address, its token, and requests to it."""

    def __init__(self, base: str, token: str, runs: Path, studio):
        self.base, self.token, self.runs, self.studio = base, token, runs, studio

    def call(self, method: str, path: str, body=None, *, token: bool = True, headers: dict | None = None, raw: bytes | None = None):
        """(status, parsed JSON or bytes) of one request."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        if token:
            request.add_header("X-SD-Token", self.token)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, payload, kind = response.status, response.read(), response.headers.get("content-type", "")
        except urllib.error.HTTPError as exc:
            status, payload, kind = exc.code, exc.read(), exc.headers.get("content-type", "")
        return status, json.loads(payload) if "json" in kind else payload

    def events(self, job: str) -> list[tuple[float, dict]]:
        """Every event of a job, with when it arrived, until its end."""
        request = urllib.request.Request(f"{self.base}/api/jobs/{job}/events", headers={"X-SD-Token": self.token})
        found = []
        with urllib.request.urlopen(request, timeout=120) as response:
            for line in response:
                if line.startswith(b"data: "):
                    found.append((time.perf_counter(), json.loads(line[6:])))
                    if found[-1][1]["type"] == "end":
                        break
        return found

    def generate(self, **settings) -> tuple[str, list]:
        status, answer = self.call("POST", "/api/jobs", {"kind": "generate", "prompt": PROMPT, "steps": 4, "seed": 3, **settings})
        assert status == 202, answer
        return answer["folder"], self.events(answer["job"])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import uvicorn

    from explorer.server import build_app, new_token, page_folder
    from explorer.studio import Studio

    runs = tmp_path_factory.mktemp("runs")
    studio = Studio("micro", runs)
    page = page_folder(studio, tmp_path_factory.mktemp("page") / "site")
    token, port = new_token(), free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(studio, page, token, {f"127.0.0.1:{port}"}), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield Served(f"http://127.0.0.1:{port}", token, runs, studio)
    server.should_exit = True
    thread.join(10)
    studio.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_generation_is_explore_generates_bit_for_bit(served, tmp_path):
    folder, events = served.generate()
    assert events[-1][1] == {"type": "end", "job": events[0][1]["job"], "status": "done", "error": ""}
    steps = [e for _, e in events if e["type"] == "step"]
    assert [s["index"] for s in steps] == list(range(5)) and steps[0]["blocks"]
    result = CliRunner().invoke(app, ["generate", "--model", "micro", "-p", PROMPT, "--steps", "4", "--seed", "3",
                                      "--attention-maps", "-o", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    ours, theirs = served.runs / folder, tmp_path / "cli"
    assert (ours / "image.png").read_bytes() == (theirs / "image.png").read_bytes()
    assert (ours / "maps.bin").read_bytes() == (theirs / "maps.bin").read_bytes()
    timing = ("seconds", "phases", "written")
    strip = lambda record: json.loads(json.dumps(record), object_hook=lambda d: {k: v for k, v in d.items() if k not in timing})  # noqa: E731
    a, b = (strip(json.loads((f / "trace.json").read_text())) for f in (ours, theirs))
    assert a == b
    status, page = served.call("GET", f"/api/runs/{folder}")
    assert status == 200 and page["status"] == "done" and len(page["steps"]) == 5 and page["maps"]
    status, png = served.call("GET", f"/api/runs/{folder}/steps/2/x0.png")
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"


def test_steps_arrive_while_the_run_goes(served):
    _, events = served.generate(steps=20)
    arrived = {e["index"]: at for at, e in events if e["type"] == "step"}
    end = events[-1][0]
    assert len(arrived) == 21 and arrived[0] < arrived[20] - 0.2 and arrived[20] <= end  # not all at once at the end


def test_stop_keeps_what_was_done(served):
    status, answer = served.call("POST", "/api/jobs", {"kind": "generate", "prompt": PROMPT, "steps": 200, "seed": 1})
    job = answer["job"]
    request = urllib.request.Request(f"{served.base}/api/jobs/{job}/events", headers={"X-SD-Token": served.token})
    seen = []
    with urllib.request.urlopen(request, timeout=120) as response:
        for line in response:
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                seen.append(event)
                if event["type"] == "step" and event["index"] == 2:
                    assert served.call("POST", f"/api/jobs/{job}/stop")[0] == 202
                if event["type"] == "end":
                    break
    assert seen[-1]["status"] == "stopped"
    record = json.loads((served.runs / answer["folder"] / "trace.json").read_text())
    assert record["status"] == "interrupted" and 3 <= len(record["steps"]) < 50


def test_two_at_once_finish_in_turn(served):
    results = {}

    def one(seed):
        results[seed] = served.generate(seed=seed)

    threads = [threading.Thread(target=one, args=(seed,)) for seed in (11, 12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    ends = sorted((events[-1][0], events[-1][1]["status"]) for _, events in results.values())
    assert [status for _, status in ends] == ["done", "done"]
    first_steps = sorted(min(at for at, e in events if e["type"] == "step") for _, events in results.values())
    assert first_steps[1] > ends[0][0] - 0.5  # the second ran after the first, not beside it


@pytest.mark.parametrize("request_, status, words", [
    ({"token": False}, 403, "token"),
    ({"headers": {"Origin": "http://evil.example"}}, 403, "another page"),
    ({"headers": {"Host": "evil.example:80"}}, 403, "Host header"),
    ({"raw": b"{not json"}, 400, "not JSON"),
    ({"raw": json.dumps({"kind": "generate", "prompt": "x" * 20000}).encode()}, 413, "larger than"),
    ({"body": {"kind": "generate", "prompt": PROMPT, "steps": 0}}, 400, "steps must be between 1"),
    ({"body": {"kind": "generate", "prompt": PROMPT, "steps": 5000}}, 400, "steps must be"),
    ({"body": {"kind": "generate", "prompt": PROMPT, "height": 4096}}, 400, "fields the page does not send"),
    ({"body": {"kind": "generate", "prompt": ""}}, 400, "prompt is empty"),
    ({"body": {"kind": "experiment", "prompt": PROMPT, "edits": [{"kind": "off", "text": "conv_in"}]}}, 400, "no meaning"),
    ({"body": {"kind": "wipe", "prompt": PROMPT}}, 400, "kind must be one of"),
    ({"body": ["a list"]}, 400, "JSON object"),
])
def test_bad_requests_are_refused_and_the_server_goes_on(served, request_, status, words):
    options = {"body": {"kind": "generate", "prompt": PROMPT}, **request_}
    got, answer = served.call("POST", "/api/jobs", options.get("body"), token=options.get("token", True),
                              headers=options.get("headers"), raw=options.get("raw"))
    assert got == status and words in answer["error"], answer
    assert served.call("GET", "/api/runs")[0] == 200


def test_no_request_names_a_file(served):
    for path in ("/api/runs/..%2F..%2Fetc", "/api/runs/nothing-here/image.png", "/../../etc/passwd", "/api/runs/x/steps/0/evil.png"):
        status, _ = served.call("GET", path)
        assert status in (403, 404), path


def test_a_full_queue_answers_at_once(served):
    from explorer.studio import QUEUE

    jobs, refused = [], None
    started = time.perf_counter()
    for seed in range(QUEUE + 3):
        status, answer = served.call("POST", "/api/jobs", {"kind": "generate", "prompt": PROMPT, "steps": 100, "seed": seed})
        if status == 429:
            refused = answer
            break
        jobs.append(answer["job"])
    assert refused is not None and "waiting" in refused["error"] and time.perf_counter() - started < 10
    for job in jobs:
        served.call("POST", f"/api/jobs/{job}/stop")
    for job in jobs:
        served.events(job)


def test_a_bounded_load(served):
    """200 requests of every kind within a minute (against 127.0.0.1 only): every one answered as it
    should be, and the process's memory back within 50 MB of where it started."""
    import gc

    def rss() -> int:
        return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024

    folder, _ = served.generate(steps=2)
    gc.collect()
    before = rss()
    started = time.perf_counter()
    answers = []
    kinds = [("GET", "/api/runs", None, 200), ("GET", f"/api/runs/{folder}", None, 200),
             ("GET", f"/api/runs/{folder}/steps/1/latent.png", None, 200), ("GET", "/page.js", None, 200),
             ("POST", "/api/jobs", {"kind": "generate", "prompt": ""}, 400), ("GET", "/api/runs/nope", None, 404)]
    for k in range(200):
        method, path, body, expected = kinds[k % len(kinds)]
        answers.append((served.call(method, path, body)[0], expected))
    jobs = [served.call("POST", "/api/jobs", {"kind": "generate", "prompt": PROMPT, "steps": 2, "seed": s})[1]["job"] for s in range(3)]
    for job in jobs:
        assert served.events(job)[-1][1]["status"] == "done"
    assert time.perf_counter() - started < 60
    assert all(got == expected for got, expected in answers)
    gc.collect()
    assert rss() - before < 50 * 2**20


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_ctrl_c_stops_the_server_cleanly(tmp_path):
    import signal
    import subprocess
    import sys

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "explorer.cli", "serve", "--port", str(port), "--runs", str(tmp_path / "runs")],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    url = None
    deadline = time.perf_counter() + 120
    while url is None and time.perf_counter() < deadline:
        line = process.stderr.readline()
        if match := re.search(r"(http://127\.0\.0\.1:\d+/\?token=\S+)", line):
            url = match.group(1)
    assert url is not None
    time.sleep(1)
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200 and b"<html" in response.read()
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    assert "Stopped" in process.stderr.read()


def test_serve_refuses_a_port_in_use_in_one_sentence(served):
    port = int(served.base.rsplit(":", 1)[1])
    result = CliRunner().invoke(app, ["serve", "--port", str(port)])
    assert result.exit_code == 2 and "cannot be served" in result.stderr


# -- in the browser --------------------------------------------------------------------------------------------


def until(page, selector: str, holds: str, seconds: float = 60) -> None:
    """Wait until `holds` (a function of the element) is true (the page's CSP refuses the string
    predicates Playwright's wait_for_function would evaluate)."""
    deadline = time.perf_counter() + seconds
    while not page.eval_on_selector(selector, holds):
        assert time.perf_counter() < deadline, f"{selector}: {holds} never held"
        page.wait_for_timeout(50)


@needs_chromium()
def test_typed_in_the_page_and_watched_as_it_goes(browser, served, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors, failed = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    page.goto(f"{served.base}/?token={served.token}")
    page.fill("#live-prompt", PROMPT)
    page.fill("#live-steps", "20")
    page.fill("#live-seed", "5")
    from explorer.generation.settings import SCHEDULERS

    offered = page.eval_on_selector_all("#live-scheduler option", "options => options.map(o => o.value)")
    assert offered == list(SCHEDULERS) and page.input_value("#live-scheduler") == "pndm"  # micro's own, first chosen
    page.select_option("#live-scheduler", "ddim")
    page.click("#live-go")
    page.wait_for_selector("#run img#preview[src*='/steps/']", timeout=30000)
    assert page.eval_on_selector("#live-status", "e => e.dataset.state") == "running"  # a step shown while it runs
    until(page, "#run img#preview", "e => e.naturalWidth > 0")
    until(page, "#live-status", "e => e.dataset.state === 'done'")
    assert page.locator("#run #result").count() == 1
    name = page.eval_on_selector("#live-status", "e => e.dataset.folder")
    assert json.loads((served.runs / name / "trace.json").read_text())["settings"]["scheduler"] == "ddim"
    result = CliRunner().invoke(app, ["generate", "--model", "micro", "-p", PROMPT, "--steps", "20", "--seed", "5",
                                      "--scheduler", "ddim", "-o", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert (served.runs / name / "image.png").read_bytes() == (tmp_path / "cli" / "image.png").read_bytes()
    assert not errors and not failed
    page.close()


@needs_chromium()
def test_a_block_switched_off_from_the_page_shows_both_runs(browser, served):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{served.base}/?token={served.token}#unet")
    page.fill("#live-prompt", PROMPT)
    page.fill("#live-steps", "6")
    page.hover('#diagram [data-path="up_blocks.2"]')  # a block that cannot be off: only another prompt, and the sweep
    assert page.locator("#info button[data-edit=off]").count() == 0
    assert page.locator("#info button[data-edit=prompt_at]").count() == 1
    page.hover('#diagram [data-path="mid_block"]')
    page.click("#info button[data-edit=off]")
    until(page, "#live-status", "e => e.dataset.state === 'done'", 120)
    page.wait_for_selector("#tabs button[data-tab=experiment]:not([hidden])")
    page.click("#tabs button[data-tab=experiment]")
    assert page.locator('#experiment figure.result[data-run="edited"] img').count() == 1
    assert "mid_block" in page.inner_text("#experiment")
    page.close()


@needs_chromium()
def test_a_sweep_from_the_page_colours_the_u_and_runs_reopen(browser, served):
    kept, _ = served.generate(steps=2)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{served.base}/?token={served.token}#unet")
    page.fill("#live-prompt", PROMPT)
    page.fill("#live-steps", "3")
    page.hover('#diagram [data-path="up_blocks.3"]')
    page.click("#info button[data-edit=sweep]")
    until(page, "#live-status", "e => e.dataset.state === 'done'", 120)
    page.wait_for_selector("#live-runs option[data-kind=sweep]", state="attached")
    assert page.locator("#sweepbar").count() == 1 and page.locator("#diagram .sd-node.painted").count() >= 4
    runs = page.eval_on_selector_all("#live-runs option", "options => options.map(o => [o.value, o.dataset.kind])")
    assert [kept, "generate"] in runs and any(kind == "sweep" for _, kind in runs)
    page.select_option("#live-runs", kept)  # a run kept under --runs, reopened
    page.wait_for_selector("#run #result")
    page.close()


def test_the_pages_editable_kinds_are_the_edits_own():
    from explorer.edits import BRANCHES, PASS_THROUGH

    script = (Path(__file__).resolve().parent.parent / "explorer" / "views" / "assets" / "live.js").read_text()
    listed = set(re.findall(r'"(\w+)"', re.search(r"const EDITABLE = \[(.*?)\];", script, re.S).group(1)))
    assert listed == set(BRANCHES) | set(PASS_THROUGH)


def test_the_studio_leaves_a_core_to_the_browser_and_gives_it_back(tmp_path):
    import torch

    from explorer.studio import Studio

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        studio = Studio("micro", tmp_path / "runs")
        assert torch.get_num_threads() == 1
        studio.close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_runs_list_reads_a_record_again_once_it_changed(served):
    folder, _ = served.generate(steps=1)
    entry = next(e for e in served.studio.listing() if e["name"] == folder)
    assert entry["status"] == "done"
    record_file = served.runs / folder / "trace.json"
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, "status": "interrupted"}))
    assert next(e for e in served.studio.listing() if e["name"] == folder)["status"] == "interrupted"
