"""The serving summary's arithmetic on a hand-made run: percentiles, goodput, attainment, energy, KV use."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.engine import Simulator
from simulator.serving.metrics import (
    REQUEST_COLUMNS,
    check_slo,
    distribution,
    iteration_rows,
    parse_slo,
    request_rows,
    summary,
)
from simulator.serving.requests import Request, generate_requests, parse_lengths
from simulator.serving.schedulers import Active
from simulator.serving.server import IterationRow, Served, ServeSettings
from simulator.serving.session import ServingRunner
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import load_run_config
from workloads.errors import InputError
from workloads.models import load_model

CLOCK = 2000.0  # cycles per second: two cycles a millisecond


def active(request_id: int, arrival: float, outputs: int, scheduled: int, first: int, finish: int,
           energy_pj: float = 1e12, preemptions: int = 0) -> Active:
    done = Active(Request(request_id, arrival, 10, outputs), 10, first_scheduled=scheduled, first_token=first,
                  finish=finish, preemptions=preemptions, energy_pj=energy_pj)
    done.generated = outputs
    return done


def run() -> Served:
    """Requests arriving at 50, 150 and 250 ms (cycles 100, 300, 500), iterations from cycle 100 to 1900."""
    requests = [active(0, 0.05, 3, 100, 300, 700), active(1, 0.15, 1, 300, 500, 500, preemptions=2),
                active(2, 0.25, 5, 700, 1100, 1900)]
    iterations = [IterationRow(100, 200, 1, 10, 0, 1, 4, 1e12), IterationRow(300, 200, 1, 10, 1, 2, 8, 2e12),
                  IterationRow(700, 1200, 1, 10, 1, 6, 2, 3e12)]
    return Served(requests, [Request(3, 0.3, 5000, 5)], iterations, 1900, 10, 8, 0.5e12)


def test_request_rows() -> None:
    rows = request_rows(run(), CLOCK)
    assert [tuple(row) for row in rows] == [REQUEST_COLUMNS] * 3
    assert rows[1] == {"request_id": 1, "arrival_s": 0.15, "prompt_tokens": 10, "output_tokens": 1,
                       "first_scheduled_s": 0.15, "first_token_s": 0.25, "finish_s": 0.25, "queueing_ms": 0.0,
                       "ttft_ms": 100.0, "tpot_ms": rows[1]["tpot_ms"], "e2e_ms": 100.0, "preemptions": 2,
                       "energy_j": 1.0, "samples": 1, "beam_search": False, "swaps": 0}
    assert math.isnan(rows[1]["tpot_ms"])
    assert [row["ttft_ms"] for row in rows] == [100.0, 100.0, 300.0]
    assert [row["tpot_ms"] for row in rows[::2]] == [100.0, 100.0]
    assert [row["queueing_ms"] for row in rows] == [0.0, 0.0, 100.0]
    assert [row["e2e_ms"] for row in rows] == [300.0, 100.0, 700.0]
    assert [row["first_scheduled_s"] for row in rows] == [0.05, 0.15, 0.35]
    assert iteration_rows(run(), CLOCK)[2] == {"iteration": 3, "start_s": 0.35, "duration_ms": 600.0,
                                               "prefill_sequences": 1, "prefill_tokens": 10, "decode_sequences": 1,
                                               "tokens": 11, "emitted": 6, "kv_blocks_in_use": 2, "energy_j": 3.0,
                                                   "swapped_blocks": 0}


def test_summary() -> None:
    served = run()
    result = summary(served, request_rows(served, CLOCK), CLOCK, {"ttft": 150.0, "tpot": 100.0}, True)
    assert (result["requests"], result["completed"], result["rejected"]) == (4, 3, 1)
    assert result["duration_s"] == pytest.approx(0.9) and result["iterations"] == 3
    assert result["throughput_tokens_per_s"] == pytest.approx(9 / 0.9)
    assert result["throughput_requests_per_s"] == pytest.approx(3 / 0.9)
    assert result["ttft_ms"] == distribution([100.0, 100.0, 300.0])
    assert result["queueing_ms"] == distribution([0.0, 0.0, 100.0])
    assert result["tpot_ms"]["mean"] == 100.0  # the one-token request has none
    assert result["slo_ms"] == {"ttft": 150.0, "tpot": 100.0}
    assert result["slo_attained"] == 0.5 and result["goodput_requests_per_s"] == pytest.approx(2 / 0.9)
    assert result["energy_j"] == 6.5 and result["energy_per_token_j"] == pytest.approx(6.5 / 9)
    assert result["energy_per_request_j"] == pytest.approx(6.5 / 3)
    assert result["mean_power_w"] == pytest.approx(6.5 / 0.9)
    assert result["busy_fraction"] == pytest.approx(1600 / 1800) and result["preemptions"] == 2
    assert result["kv_cache"] == {"capacity_blocks": 10, "peak_blocks": 8, "peak_utilization": 0.8,
                                  "mean_utilization": pytest.approx((4 * 200 + 8 * 200 + 2 * 1200) / 1600 / 10)}
    plain = summary(served, request_rows(served, CLOCK), CLOCK, None, False)
    assert "goodput_requests_per_s" not in plain and plain["energy_j"] is None and plain["energy_per_token_j"] is None


def test_distribution() -> None:
    values = [4.0, 1.0, math.nan, 2.0, 3.0]
    p50, p90, p99 = np.percentile([1.0, 2.0, 3.0, 4.0], [50, 90, 99])
    assert distribution(values) == {"mean": 2.5, "p50": p50, "p90": p90, "p99": p99}
    assert distribution([math.nan]) == {"mean": None, "p50": None, "p90": None, "p99": None}


def test_slo() -> None:
    assert parse_slo("ttft=200, tpot=50") == {"ttft": 200.0, "tpot": 50.0}
    assert parse_slo("tpot=0.5") == {"tpot": 0.5}
    for text, needle in (("e2e=5", "unknown key 'e2e'"), ("ttft=1,ttft=2", "give each of ttft, tpot once as KEY=MS"),
                         ("ttft", "once"), ("ttft=x", "'x' is not a number"), ("ttft=0", "positive"),
                         ("tpot=inf", "positive")):
        with pytest.raises(InputError, match=needle):
            parse_slo(text)


@pytest.mark.parametrize("slo, needle", [({"ttfb": 100.0}, r"unknown key 'ttfb'; choose from ttft, tpot \(as "),
                                         ({"ttft": -3.0}, "positive"),
                                         ({"tpot": math.nan}, "positive"), ({"ttft": True}, "positive"),
                                         ({"ttft": "100"}, "positive"), ({}, "give ttft or tpot")])
def test_objectives_given_to_the_python_api_are_checked_as_the_option_is(slo, needle):
    assert check_slo({"ttft": 200, "tpot": 50.5}) == {"ttft": 200.0, "tpot": 50.5}
    runner = ServingRunner(load_model("llama-2-7b"), Simulator(load_hardware("tpu_v5e_like"), load_run_config("int8")),
                           ServeSettings("continuous", 8, 512), 16, "int8")
    with pytest.raises(InputError, match=needle):
        runner.run(generate_requests(2, None, parse_lengths("32", "p"), parse_lengths("4", "o"), 0), slo)
