"""The DRAM capacity check sees the grouping the engine runs (issue 30.4): every sample's cache, one
group's activations; generation sees the largest cache it reaches."""

from __future__ import annotations

import pytest

from simulator.analysis.generation import generate
from simulator.engine import Simulator, simulate
from simulator.engine.capacity import Footprint
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import load_run_config
from workloads.errors import InputError
from workloads.families.base import Workload
from workloads.models import load_model

TPU = load_hardware("tpu_v5e_like")
CAPACITY = TPU.memory.dram_capacity_bytes


def test_a_batch_that_fits_only_in_groups_runs_in_groups():
    spec = load_model("llama-2-7b")
    trace = spec.trace(Workload(batch=16, tokens=2000))
    sim = Simulator(TPU, load_run_config("int8"))
    whole = sim.prepare(trace).footprint
    one = sim.prepare(spec.trace(Workload(batch=1, tokens=2000))).footprint
    assert whole.total_bytes > CAPACITY  # 16 samples' activations at once do not fit
    res = sim.run(trace)
    assert res.footprint == Footprint(one.weight_bytes, 16 * one.state_bytes, one.peak_activation_bytes)
    assert res.footprint.total_bytes <= CAPACITY
    assert any("16 groups of 1" in note for note in res.notes)


def test_generation_holds_the_cache_at_its_longest_and_one_groups_activations():
    """The issue's example: refused at 16.44 GB before; weights + cache + one sample's activations fit."""
    spec = load_model("llama-2-7b")
    sim = Simulator(TPU, load_run_config("int8"))
    generation = generate(spec, Workload(batch=16, tokens=2000), 2, sim)
    last_step = sim.prepare(spec.trace(Workload(batch=16, tokens=2000, phase="decode"))).footprint
    assert generation.kv_cache_bytes == last_step.state_bytes
    one = sim.prepare(spec.trace(Workload(batch=1, tokens=2000, logits_to_keep=1))).footprint  # as prefilled
    assert generation.peak_activation_bytes == max(one.peak_activation_bytes, last_step.peak_activation_bytes)
    assert generation.weight_bytes + generation.kv_cache_bytes + generation.peak_activation_bytes <= CAPACITY


def test_a_cache_that_only_outgrows_the_chip_while_decoding_is_refused():
    """The prefill fits; the cache after many new tokens does not: refused, not reported."""
    spec = load_model("llama-2-7b")
    sim = Simulator(TPU, load_run_config("int8"))
    simulate(spec.trace(Workload(batch=16, tokens=2000)), TPU, load_run_config("int8"))  # the prefill fits
    with pytest.raises(InputError, match="more than hardware tpu_v5e_like's DRAM"):
        generate(spec, Workload(batch=16, tokens=2000), 200, sim)


def test_no_group_fits_is_refused_with_one_samples_footprint():
    spec = load_model("llama-2-7b")
    trace = spec.trace(Workload(batch=16, tokens=4000))
    with pytest.raises(InputError, match=r"take [\d,]+ bytes \([\d,]+ \+ [\d,]+ \+ [\d,]+\)"):
        simulate(trace, TPU, load_run_config("int8"))


def test_a_footprint_that_fills_the_dram_exactly_fits():
    exact = Footprint(CAPACITY - 10, 6, 4)
    assert exact.fits(TPU) and not Footprint(CAPACITY - 10, 6, 5).fits(TPU)
    assert exact.for_passes(3) == Footprint(CAPACITY - 10, 18, 4)
