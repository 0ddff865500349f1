"""Serving over a system's chips (`serve --tp`): an iteration's cost summed from parts equals the whole
pass with its collectives, a lone request is `generate` over the same chips, and the energy is every chip's."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cli_helpers import TESTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.analysis.generation import generate, generation_summary
from simulator.engine import Simulator
from simulator.serving.iteration import IterationCoster
from simulator.serving.metrics import request_rows
from simulator.serving.metrics import summary as summarize
from simulator.serving.requests import Request
from simulator.serving.server import ServeSettings
from simulator.serving.session import run_serving
from simulator.spec.run_config import load_run_config
from simulator.spec.system import Interconnect, System, load_target
from workloads.errors import InputError
from workloads.mixed import MixedBatch, Sequence
from workloads.models import Workload, load_model

MODEL = str(TESTS / "configs" / "llama-serve-6.json")
CHIP = load_target("tpu_v5e_like").hardware
TWO = System(name="two", chip="tpu_v5e_like", chips=2,
             interconnect=Interconnect(topology="ring", links_per_chip=2, link_gb_per_s=50, link_latency_us=1,
                                       link_pj_per_bit=5))


def split(model: str = MODEL):
    return replace(load_model(model), tp=2)


sequences = st.one_of(
    st.builds(Sequence, st.just(1), st.integers(1, 200), st.just(True)),
    st.builds(Sequence, st.integers(1, 120), st.just(0), st.booleans()),
    st.builds(Sequence, st.integers(1, 64), st.integers(1, 200), st.booleans()),
)
batches = st.lists(sequences, min_size=1, max_size=5).map(lambda s: MixedBatch(tuple(s)))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=batches, second=batches)
def test_split_iterations_equal_the_whole_pass(first: MixedBatch, second: MixedBatch) -> None:
    costs = IterationCoster(split(), Simulator(CHIP, load_run_config("int8"), system=TWO))
    for batch in (first, second, MixedBatch(first.sequences + second.sequences)):
        assert costs.cost(batch) == costs.direct(batch), batch.key


def test_a_split_iteration_has_its_collectives() -> None:
    trace = split().mixed_trace(MixedBatch((Sequence(8, 0, True), Sequence(1, 40, True))))
    reduces = [op for op in trace if op.role == "all_reduce"]
    hidden = load_model(MODEL).config["hidden_size"]
    assert len(reduces) == 2 * 6 + 1 and {op.elements for op in reduces} == {9 * hidden}
    assert trace.workload["tp"] == 2


@pytest.mark.parametrize("scheduler", ["static", "continuous", "chunked"])
def test_one_request_over_two_chips_is_generate(scheduler: str) -> None:
    simulator = Simulator(CHIP, load_run_config("int8"), system=TWO)
    expected = generation_summary(generate(load_model(MODEL), Workload(tokens=37, tp=2), 9, simulator), CHIP)
    serving = run_serving(split(), simulator, [Request(0, 0.0, 37, 9)], ServeSettings(scheduler, 64, 512), 16)
    row = request_rows(serving.served, serving.clock_hz)[0]
    assert (row["ttft_ms"], row["tpot_ms"]) == (expected["ttft_ms"], expected["tpot_ms"])
    energy = summarize(serving.served, [row], serving.clock_hz, None, True)["energy_j"]
    assert energy == pytest.approx(expected["energy"]["total_pj"] * 1e-12, rel=1e-9)


def test_serving_a_split_model_needs_its_chips() -> None:
    with pytest.raises(InputError, match="hardware tpu_v5e_like is one chip"):
        run_serving(split(), Simulator(CHIP, load_run_config("int8")), [Request(0, 0.0, 8, 2)],
                    ServeSettings("continuous", 8, 64), 16)


def test_serve_over_a_v5e_slice(run_cli) -> None:
    import json

    summary = json.loads(run_cli("serve", "configs/int8.yaml", "--model", "llama-2-70b", "--hardware", "tpu_v5e_x8",
                                 "--tp", "8", "--num-requests", "6", "--rate", "2", "--prompt-tokens", "128",
                                 "--output-tokens", "8", "--json"))
    assert (summary["hardware"], summary["chips"], summary["completed"]) == ("tpu_v5e_x8", 8, 6)
