"""Prefills costed ahead in a forked copy of the coster change nothing a run reports, and the copy ends with
the run (simulator/serving/prefetch.py)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import TESTS

from simulator.engine import Simulator
from simulator.serving import prefetch
from simulator.serving.iteration import IterationCoster
from simulator.serving.requests import Request
from simulator.serving.server import ServeSettings
from simulator.serving.session import ServingRunner
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import load_run_config
from workloads.models import load_model

MODEL = str(TESTS / "configs" / "llama-serve-6.json")
# arrivals spread out, prompts of 16 distinct lengths (some repeated), a few long enough to preempt nothing
REQUESTS = [Request(i, 0.002 * i, 20 + (7 * i) % 16 * 3, 2 + i % 5) for i in range(24)]


def run(config: str = "mxfp4", requests: list[Request] = REQUESTS, model: str = MODEL,
        imbalance: float | None = None) -> tuple[ServingRunner, str]:
    """A run's every output: its request and iteration rows and its summary, as text."""
    runner = ServingRunner(load_model(model), Simulator(load_hardware("tpu_v5e_like"), load_run_config(config)),
                           ServeSettings("continuous", 8, 4096, imbalance), 16, config)
    result = runner.run(requests, {"ttft": 50.0})
    summary = {**result.summary, "costed": result.serving.costed}
    return runner, json.dumps([result.requests, result.iterations, summary], sort_keys=True, default=str)


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Prefetch on from 4 distinct prompts; each take of a prefill the copy was given recorded (whether the copy
    had sent its cost)."""
    monkeypatch.setattr(prefetch, "MIN_PROMPTS", 4)
    takes: list[bool] = []
    take = prefetch.Prefetch.take

    def recorded(self: prefetch.Prefetch, batch: Any) -> Any:
        asked = batch.key in self.pending  # a prefill the copy was given
        fetched = take(self, batch)
        if asked:
            takes.append(fetched is not None)
        return fetched

    monkeypatch.setattr(prefetch.Prefetch, "take", recorded)
    return takes


@pytest.mark.parametrize("model, config, imbalance", [(MODEL, "mxfp4", None),
                                                      (str(TESTS / "configs" / "mixtral-window-8.json"), "int8", 2.0)])
def test_a_run_with_prefills_costed_ahead_reports_exactly_what_it_reports_without(
        taken: list[bool], monkeypatch: pytest.MonkeyPatch, model: str, config: str, imbalance: float | None) -> None:
    """Also for a mixture of experts at a routing imbalance, which the prefills ahead must run at."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.fail("this check needs two CPUs (prefetching is off on one)")
    runner, ahead = run(config, model=model, imbalance=imbalance)
    assert len(taken) == 16 and any(taken)  # every distinct prompt asked for; costs taken from the copy
    assert runner.coster.prefetch is None and not multiprocessing.active_children()
    monkeypatch.setattr(prefetch, "MIN_PROMPTS", 10**9)
    _, alone = run(config, model=model, imbalance=imbalance)
    assert ahead == alone


def test_a_loop_that_catches_up_with_the_copy_costs_the_next_prefills_itself_meanwhile(
        taken: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    """With a copy slower than the loop, the loop waits for the prefill the copy is costing and costs the
    ones after it meanwhile: every prefill is still costed once, and every output is the same."""
    parent, costed_alone = os.getpid(), IterationCoster.costed_alone

    def slow_in_the_copy(self: IterationCoster, *args: Any) -> Any:
        if os.getpid() != parent:
            time.sleep(0.05)
        return costed_alone(self, *args)

    here: list[Any] = []
    cost_here = prefetch.Prefetch._cost_here
    monkeypatch.setattr(IterationCoster, "costed_alone", slow_in_the_copy)
    monkeypatch.setattr(prefetch.Prefetch, "_cost_here", lambda self, batch: (here.append(batch.key),
                                                                              cost_here(self, batch)))
    _, ahead = run()
    assert here and len(set(here)) == len(here) and any(taken)
    monkeypatch.setattr(prefetch, "MIN_PROMPTS", 10**9)
    assert run()[1] == ahead


def test_a_prefill_the_loop_fails_to_cost_ahead_is_left_to_it(taken: list[bool],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Costing ahead in the loop's process may fail (a rejected request's prompt, which the loop never
    runs): the failure is not raised there, and the loop costs that prefill if it ever needs it."""
    parent, costed_alone = os.getpid(), IterationCoster.costed_alone
    ahead: list[bool] = [False]
    failed: list[Any] = []

    def slow_in_the_copy_failing_ahead(self: IterationCoster, batch: Any, layout: Any) -> Any:
        if os.getpid() != parent:
            time.sleep(0.05)
        elif ahead[0]:
            failed.append(batch.key)
            raise RuntimeError("cannot cost this one ahead")
        return costed_alone(self, batch, layout)

    cost_here = prefetch.Prefetch._cost_here

    def flagged(self: prefetch.Prefetch, batch: Any) -> None:
        ahead[0] = True
        try:
            cost_here(self, batch)
        finally:
            ahead[0] = False

    monkeypatch.setattr(IterationCoster, "costed_alone", slow_in_the_copy_failing_ahead)
    monkeypatch.setattr(prefetch.Prefetch, "_cost_here", flagged)
    _, outputs = run()
    assert failed
    monkeypatch.setattr(prefetch, "MIN_PROMPTS", 10**9)
    assert run()[1] == outputs


def test_a_copy_that_fails_leaves_the_loop_to_cost_every_prefill(taken: list[bool],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    parent = os.getpid()
    costed_alone = IterationCoster.costed_alone

    def failing_in_the_copy(self: IterationCoster, *args: Any) -> Any:
        if os.getpid() != parent:
            raise RuntimeError("the copy fails")
        return costed_alone(self, *args)

    monkeypatch.setattr(IterationCoster, "costed_alone", failing_in_the_copy)
    _, failed = run("int8")
    assert taken and not any(taken)
    monkeypatch.setattr(prefetch, "MIN_PROMPTS", 10**9)
    assert run("int8")[1] == failed


def test_no_copy_is_forked_for_few_prompts_or_inside_another_processs_worker(
        taken: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    run("int8", REQUESTS[:3])  # 3 distinct prompts, below MIN_PROMPTS
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())  # a pool's or Dask's worker
    run("int8")
    assert taken == []


def test_the_copy_ends_when_the_loops_process_is_killed(tmp_path: Path) -> None:
    """A run killed outright (SIGKILL: nothing of it runs after) leaves no copy behind: the copy stops at its
    next batch. The copy here takes 0.5 s a batch and the run is killed once it has started."""
    script = tmp_path / "killed.py"
    script.write_text(f"""
import os, signal, sys, time
sys.path[:0] = [{str(TESTS / "serving")!r}, {str(TESTS)!r}, {str(TESTS.parent)!r}]
from simulator.serving import prefetch
from simulator.serving.iteration import IterationCoster
prefetch.MIN_PROMPTS = 4
costed_alone = IterationCoster.costed_alone
def slow(self, *args):
    time.sleep(0.5)
    return costed_alone(self, *args)
IterationCoster.costed_alone = slow
start = prefetch.Prefetch.__init__
def started(self, *args):
    start(self, *args)
    print(self.process.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
prefetch.Prefetch.__init__ = started
from test_prefetch import run
run("int8")
""")
    output, errors = tmp_path / "pid", tmp_path / "errors"
    with output.open("w") as out, errors.open("w") as err:  # files, not pipes: the copy holds them too
        done = subprocess.run([sys.executable, str(script)], stdout=out, stderr=err, timeout=120)
    assert done.returncode == -signal.SIGKILL, errors.read_text()
    copy = Path(f"/proc/{int(output.read_text())}")
    deadline = time.monotonic() + 4  # its 16 batches would take 8 s: it must end long before
    while copy.exists() and "zombie" not in (copy / "status").read_text().lower() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not copy.exists() or "zombie" in (copy / "status").read_text().lower()
