"""The capacity search: the highest rate meeting the SLO, against a known threshold and through the CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cli_helpers import TESTS

from simulator.serving.capacity import highest_rate


def threshold_run(limit: float, saturated: float = 10.0, calls: list[float | None] | None = None):
    """A configuration that meets its SLO exactly at rates up to ``limit`` (all at once: never)."""
    def run_at(rate: float | None) -> dict[str, Any]:
        if calls is not None:
            calls.append(rate)
        met = rate is not None and rate <= limit
        return {"slo_attained": 1.0 if met else 0.5, "throughput_requests_per_s": saturated}
    return run_at


@pytest.mark.parametrize("limit", [0.2, 3.7, 4.9999, 5.0, 9.5])
def test_the_rate_found_is_within_the_tolerance_below_the_threshold(limit: float) -> None:
    calls: list[float | None] = []
    found = highest_rate(threshold_run(limit, calls=calls), 0.99, tolerance=0.05)
    assert found.rate <= limit < found.rate * 1.05
    assert calls[0] is None and found.best is not None and found.best.rate == found.rate
    assert [p.rate for p in found.probes] == calls


def test_the_rates_tried() -> None:
    """All at once, then halving from the saturated throughput, then geometric midpoints to 5%."""
    calls: list[float | None] = []
    found = highest_rate(threshold_run(3.0, calls=calls), 0.99)
    assert calls[:4] == [None, 5.0, 2.5, pytest.approx(12.5 ** 0.5)]
    rates = [rate for rate in calls if rate is not None]
    assert found.rate == max(rate for rate in rates if rate <= 3.0)
    assert min(rate for rate in rates if rate > 3.0) / found.rate <= 1.05
    assert len(calls) == 7


def test_no_capacity_and_all_at_once() -> None:
    never = highest_rate(threshold_run(0.001), 0.99)  # 10/1024 is the last rate tried: 11 runs, none met
    assert never.rate == 0.0 and never.best is None and [p.rate for p in never.probes][-1] == 10 / 1024
    assert len(never.probes) == 11
    always = highest_rate(lambda rate: {"slo_attained": 1.0, "throughput_requests_per_s": 7.0}, 0.99)
    assert always.rate == 7.0 and len(always.probes) == 1
    assert always.best is always.probes[0]  # the run at the capacity: all at once (it was None)
    assert highest_rate(lambda rate: {"slo_attained": 0.995, "throughput_requests_per_s": 7.0}, 0.99).rate == 7.0
    assert highest_rate(lambda rate: {"slo_attained": 0.99, "throughput_requests_per_s": 7.0}, 0.99).rate == 7.0
    lowest = highest_rate(threshold_run(10 / 1000), 0.99)  # met from 10/1024 on: the last rate tried
    assert lowest.rate == 10 / 1024 and lowest.probes[10].rate == 10 / 1024  # the tenth halving
    none_served = highest_rate(lambda rate: {"slo_attained": 0.0, "throughput_requests_per_s": None}, 0.99)
    assert none_served.rate == 0.0 and len(none_served.probes) == 1 and none_served.best is None


def test_a_search_whose_requests_never_fit_finds_no_capacity(tmp_path, accelsim_here) -> None:
    """None of the requests fits the cache: no rate meets the SLO (it ended in an internal error); the rate
    tried is reported, with n/a for the latencies no request gives, and --out writes it alone."""
    from test_serving import small_dram_preset

    result = accelsim_here("serve", "int8", "--model", str(TESTS / "configs" / "llama-serve-6.json"), "--hardware",
                           str(small_dram_preset(tmp_path, 8)), "--num-requests", "3", "--prompt-tokens", "400",
                           "--output-tokens", "100", "--slo", "ttft=5", "--capacity", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["  rate  all at once: 0.0% met, TTFT p99 n/a, TPOT p99 n/a"]
    assert "0 requests/s (1 runs)" in result.stdout
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["capacity.csv"]


def test_capacity_through_the_cli(accelsim_here) -> None:
    """Every rate tried is reported with its attainment; the capacity's own run meets the SLO and the
    lowest rate tried above it does not."""
    result = accelsim_here("serve", "int8", "--model", str(TESTS / "configs" / "llama-serve-6.json"),
                           "--hardware", "tpu_v5e_like", "--num-requests", "40", "--prompt-tokens", "uniform:8,200",
                           "--output-tokens", "uniform:1,40", "--slo", "ttft=0.3,tpot=0.08", "--capacity",
                           "--attainment", "0.9", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rate, probes = report["capacity_requests_per_s"], report["probes"]
    assert rate > 0 and report["summary"]["slo_attained"] >= 0.9
    above = [p for p in probes if p["rate_requests_per_s"] is None or p["rate_requests_per_s"] > rate]
    assert above and all(p["slo_attained"] < 0.9 for p in above)
    below = [p["rate_requests_per_s"] for p in probes if p["rate_requests_per_s"] is not None]
    assert max(r for r in below if r <= rate) == rate
