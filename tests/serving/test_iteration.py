"""A serving iteration's cost: every way IterationCoster.cost gets it (parts summed, a three- or four-block
probe, the whole model) equals the whole model's direct pass, bit for bit, on random mixed batches; and the mixed
batch's trace has the work its closed form says."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from cli_helpers import TESTS
from conftest import preset_with
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.engine import Prepared, Simulator
from simulator.engine.records import StepRecord
from simulator.serving import iteration
from simulator.serving.iteration import IterationCoster
from simulator.serving.parts import KindPart, Sums, TokenPart, certified, harvest, head_alone, total
from simulator.spec.hardware import Hardware, load_hardware
from simulator.spec.run_config import load_run_config
from workloads.errors import InputError
from workloads.mixed import MixedBatch, Sequence
from workloads.models import Workload, load_model

MODEL = str(TESTS / "configs" / "llama-serve-6.json")
OPT_MODELS = [str(TESTS / "configs" / f"{name}.json") for name in ("opt-serve-6", "opt-serve-post-ln-6")]


def small_buffers() -> Hardware:
    """tpu_v5e_like with a 256 KiB activation buffer: the test model's prompts spill."""
    return preset_with("tpu_v5e_like", memory={"ifmap_buffer_bytes": 262144})


def coster(config: str = "int8", hardware: str = "tpu_v5e_like", model: str = MODEL) -> IterationCoster:
    chip = load_hardware(hardware) if hardware != "small" else small_buffers()
    simulator = Simulator(chip, load_run_config(f"configs/{config}.yaml" if "/" not in config else config))
    return IterationCoster(load_model(model), simulator)


sequences = st.one_of(
    st.builds(Sequence, st.just(1), st.integers(1, 200), st.just(True)),  # decode steps
    st.builds(Sequence, st.integers(1, 120), st.just(0), st.booleans()),  # fresh prompts (or their first chunk)
    st.builds(Sequence, st.integers(1, 64), st.integers(1, 200), st.booleans()),  # later chunks
)
batches = st.lists(sequences, min_size=1, max_size=6).map(lambda s: MixedBatch(tuple(s)))


@pytest.mark.parametrize("config, hardware", [("int8", "tpu_v5e_like"), ("w4a16_g128_kv4", "rapid_like_4core"),
                                              ("int8_sp_attn", "rapid_like_4core"), ("native", "small")])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=batches, second=batches)
def test_cost_equals_the_whole_models_pass(config: str, hardware: str, first: MixedBatch, second: MixedBatch) -> None:
    """Two batches on one coster (the second reuses the first's parts where it can): each equals its direct
    pass exactly (cycles, DRAM bytes, energy)."""
    costs = coster(config, hardware)
    for batch in (first, second, MixedBatch(first.sequences + second.sequences)):
        assert costs.cost(batch) == costs.direct(batch), batch.key


@pytest.mark.parametrize("model", OPT_MODELS)
@pytest.mark.parametrize("hardware", ["tpu_v5e_like", "small"])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=batches, second=batches)
def test_an_opt_decoders_cost_equals_its_whole_pass(model: str, hardware: str, first: MixedBatch,
                                                    second: MixedBatch) -> None:
    """OPT (pre-LN, and post-LN with its embeddings projected in and out; queries scaled, no rotations, a
    tied head that is never probed alone): the same exactness as Llama's."""
    costs = coster("int8", hardware, model)
    for batch in (first, second, MixedBatch(first.sequences + second.sequences)):
        assert costs.cost(batch) == costs.direct(batch), batch.key


@pytest.mark.parametrize("model", OPT_MODELS)
def test_an_opt_decoders_parts_are_used(model: str) -> None:
    """Its blocks are alike, so decode steps at new cache lengths are summed from parts, not run whole."""
    costs = coster(model=model)
    for length in range(40, 46):
        batch = MixedBatch((Sequence(1, length, True), Sequence(1, 2 * length, True), Sequence(5, 0, True)))
        assert costs.cost(batch) == costs.direct(batch)
    assert costs.counts["whole"] == 0 and costs.counts["summed"] >= 4


def test_the_parts_are_used_and_exact() -> None:
    """Decode steps of three sequences growing together: after the first, every iteration is summed from
    its parts, and equal to the whole model's pass."""
    costs = coster()
    for length in range(40, 80):
        batch = MixedBatch((Sequence(1, length, True), Sequence(1, length + 30, True), Sequence(5, length, False)))
        cost = costs.cost(batch)
        if length % 9 == 0:
            assert cost == costs.direct(batch)
    assert costs.counts["summed"] >= 38 and costs.counts["whole"] == 0
    assert len(costs.memo) == costs.counts["probed"]  # sums are not kept: the memory does not grow with the run


def test_a_chip_without_an_energy_model_is_probed_too() -> None:
    """No energy model: every record's energy is NaN (not equal to itself), and the probe's blocks still
    compare alike; time and bytes equal the direct pass."""
    chip = load_hardware("tpu_v5e_like").model_copy(update={"energy": None})
    costs = IterationCoster(load_model(MODEL), Simulator(chip, load_run_config("configs/int8.yaml")))
    for batch in (MixedBatch((Sequence(100, 0, True), Sequence(60, 0, True))),
                  MixedBatch((Sequence(1, 40, True), Sequence(1, 70, True), Sequence(5, 40, False)))):
        cost, direct = costs.cost(batch), costs.direct(batch)
        assert (cost.cycles, cost.dram_bytes) == (direct.cycles, direct.dram_bytes)
        assert math.isnan(cost.energy_pj) and math.isnan(direct.energy_pj)
    assert costs.counts == {"summed": 2, "probed": 0, "whole": 0}  # from parts its probes harvested


def test_a_probed_batch_is_costed_once() -> None:
    costs = coster("native", "small")
    batch = MixedBatch((Sequence(100, 0, True), Sequence(60, 0, True), Sequence(1, 90, True)))
    first = costs.cost(batch)
    again = costs.cost(MixedBatch(tuple(reversed(batch.sequences))))  # the same composition
    assert first == again and costs.counts == {"summed": 0, "probed": 1, "whole": 0} and len(costs.memo) == 1


def test_lone_decode_steps_are_summed_as_generate_runs_them() -> None:
    costs = coster()
    for length in range(100, 140):
        batch = MixedBatch((Sequence(1, length, True),) * 3)
        assert batch.uniform() == Workload(batch=3, tokens=length, phase="decode")
        cost = costs.cost(batch)
        if length % 13 == 0:
            assert cost == costs.direct(batch)
    assert costs.counts["summed"] >= 38


def test_spills_are_costed_whole_or_probed() -> None:
    """On a chip whose activation buffer spills, no part is summed unless certified: costs still equal."""
    costs = coster("native", "small")
    batch = MixedBatch((Sequence(100, 0, True), Sequence(60, 0, True), Sequence(1, 90, True)))
    assert costs.sim.prepare(costs.spec.mixed_trace(batch)).spilled
    assert costs.cost(batch) == costs.direct(batch)
    assert costs.counts["summed"] == 0


def test_the_probe_compares_its_first_two_blocks_else_a_four_block_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A three-block copy stands for the model when its first two blocks repeat; when they do not (made so
    here), a four-block copy, its second and third compared; when neither repeats, the whole model. Each
    equals the direct pass."""
    compared: list[tuple[int, int]] = []
    repeats = iteration._repeats
    differs = {0}  # blocks told apart from the next

    def recorded(prepared: Prepared, records: list[StepRecord], first: int, second: int) -> bool:
        compared.append((first, second))
        return first not in differs and repeats(prepared, records, first, second)

    monkeypatch.setattr(iteration, "_repeats", recorded)
    batch = MixedBatch((Sequence(100, 0, True), Sequence(60, 0, True), Sequence(1, 90, True)))
    differs.clear()
    costs = coster("native", "small")
    assert costs.cost(batch) == costs.direct(batch) and set(compared) == {(0, 1)}
    assert costs.counts["probed"] == 1
    differs.add(0)
    for attempt in (coster("native", "small"), coster()):
        compared.clear()
        assert attempt.cost(batch) == attempt.direct(batch) and set(compared) == {(0, 1), (1, 2)}
        assert attempt.counts["whole"] == 0
    differs.add(1)
    costs = coster("native", "small")
    assert costs.cost(batch) == costs.direct(batch) and costs.counts["whole"] == 1


@pytest.mark.parametrize("model", ["qwen2-window-8", "mixtral-window-8", "mistral-window-8"])
def test_models_whose_blocks_differ_or_are_small(model: str) -> None:
    """Qwen2 with windowed and full blocks and Mixtral (different experts per block) run whole; a two-block
    Mistral is no bigger than its probe."""
    costs = coster(model=str(TESTS / "configs" / f"{model}.json"))
    batch = MixedBatch((Sequence(1, 20, True), Sequence(3, 9, False)))
    assert costs.cost(batch) == costs.direct(batch)
    assert costs.counts["whole"] == 1


def test_blocks_given_their_own_precision_run_whole(tmp_path: Path) -> None:
    """precision.layers makes blocks 3-5 int4 and the rest int8: no copy with fewer blocks can stand for the
    model (it would be refused, or cost every block as the first), so each pass runs whole."""
    config = tmp_path / "late_int4.yaml"
    config.write_text("name: late_int4\nhardware: tpu_v5e_like\nprecision:\n  default: int8\n  layers:\n"
                      "    '3-5': int4\n")
    costs = coster(str(config))
    batch = MixedBatch((Sequence(1, 20, True), Sequence(3, 9, False)))
    assert costs.cost(batch) == costs.direct(batch) and costs.counts == {"summed": 0, "probed": 0, "whole": 1}
    assert costs.cost(batch) != coster().cost(batch)  # the int4 blocks cost otherwise


def test_mixed_trace_work_closed_form() -> None:
    """The token-wise products run over all new tokens once; each kind's products over its own keys."""
    spec = load_model(MODEL)
    cfg = spec.config
    batch = MixedBatch((Sequence(1, 50, True), Sequence(1, 50, True), Sequence(7, 0, True), Sequence(4, 10, False)))
    trace = spec.mixed_trace(batch)
    hidden, inner, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    head_dim = hidden // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * head_dim
    tokens = 2 + 7 + 4
    per_token = hidden * (hidden + 2 * kv + hidden) + 3 * hidden * inner  # q, k, v, o; gate, up, down
    linear = sum(op.macs for op in trace if op.role in ("q", "k", "v", "attn_out", "ffn1", "ffn2"))
    assert linear == layers * tokens * per_token
    keys = {(1, 50): 51, (7, 0): 7, (4, 10): 14}
    counts = {(1, 50): 2, (7, 0): 1, (4, 10): 1}
    attention = sum(op.macs for op in trace if op.role in ("bmm_qk", "bmm_av"))
    heads = cfg["num_attention_heads"]
    assert attention == layers * 2 * sum(counts[k] * heads * k[0] * keys[k] * head_dim for k in keys)
    head = next(op for op in trace if op.role == "head")
    assert head.m == 3  # the two decode steps and the prompt that ends: the chunk that does not emits nothing
    states = [t for t in trace.tensors.values() if t.kind == "state"]
    assert sum(t.elements for t in states) == layers * 2 * kv * sum(counts[k] * keys[k] for k in keys)
    assert sum(t.appended for t in states) == layers * 2 * kv * tokens
    assert sum(op.params for op in trace) == sum(op.params for op in spec.trace(Workload(tokens=8)))


@pytest.mark.parametrize("model", OPT_MODELS)
def test_an_opt_mixed_trace_work_closed_form(model: str) -> None:
    """OPT's mixed batch: projections and feed-forward over all new tokens once, a position looked up for each,
    each kind's products over its own keys, the tied head on the emitting sequences."""
    spec = load_model(model)
    cfg = spec.config
    batch = MixedBatch((Sequence(1, 50, True), Sequence(1, 50, True), Sequence(7, 0, True), Sequence(4, 10, False)))
    trace = spec.mixed_trace(batch)
    hidden, ffn, heads = cfg["hidden_size"], cfg["ffn_dim"], cfg["num_attention_heads"]
    layers = cfg["num_hidden_layers"]
    tokens = 2 + 7 + 4
    linear = sum(op.macs for op in trace if op.role in ("q", "k", "v", "attn_out", "ffn1", "ffn2"))
    assert linear == layers * tokens * (4 * hidden * hidden + 2 * hidden * ffn)
    keys, counts = {(1, 50): 51, (7, 0): 7, (4, 10): 14}, {(1, 50): 2, (7, 0): 1, (4, 10): 1}
    attention = sum(op.macs for op in trace if op.role in ("bmm_qk", "bmm_av"))
    assert attention == layers * 2 * sum(counts[k] * heads * k[0] * keys[k] * (hidden // heads) for k in keys)
    assert sum(op.elements for op in trace if op.name == "embed_positions") == tokens * hidden
    assert sum(op.elements for op in trace if op.name.endswith("query_scale")) == layers * tokens * hidden
    head = next(op for op in trace if op.role == "head")
    assert head.m == 3 and head.weight_params == 0  # tied: it reads the token embedding
    states = [t for t in trace.tensors.values() if t.kind == "state"]
    assert sum(t.elements for t in states) == layers * 2 * hidden * sum(counts[k] * keys[k] for k in keys)
    assert sum(op.params for op in trace) == sum(op.params for op in spec.trace(Workload(tokens=8)))


def test_one_kind_of_batch_is_generates_workload() -> None:
    spec = load_model(MODEL)
    prefill = MixedBatch((Sequence(9, 0, True),) * 2)
    decode = MixedBatch((Sequence(1, 30, True),) * 4)
    assert spec.mixed_trace(prefill) == spec.trace(Workload(batch=2, tokens=9, phase="prefill", logits_to_keep=1))
    assert spec.mixed_trace(decode) == spec.trace(Workload(batch=4, tokens=30, phase="decode"))
    for mixed in (MixedBatch((Sequence(9, 0, False),)), MixedBatch((Sequence(3, 5, True),))):
        assert mixed.uniform() is None


def test_energy_is_nan_without_an_energy_model() -> None:
    data = load_hardware("tpu_v5e_like").model_dump()
    data["energy"] = None
    chip = Hardware.model_validate(data)
    costs = IterationCoster(load_model(MODEL), Simulator(chip, load_run_config("configs/int8.yaml")))
    batch = MixedBatch((Sequence(1, 20, True), Sequence(3, 0, True)))
    cost = costs.cost(batch)
    assert math.isnan(cost.energy_pj) and cost.cycles == costs.direct(batch).cycles


def test_per_token_kv_scales(tmp_path) -> None:
    """A KV cache with one scale per token (all heads): each kind's cache holds its own sequences."""
    config = tmp_path / "kv.yaml"
    config.write_text("name: kv\nhardware: tpu_v5e_like\nprecision: {weights: int8, activations: native, "
                      "kv_cache: int8, kv_scales: {per: token, scale_bits: 16}}\n")
    costs = coster(str(config))
    for batch in (MixedBatch((Sequence(1, 20, True), Sequence(3, 0, True), Sequence(2, 5, False))),
                  MixedBatch((Sequence(1, 20, True),) * 2)):
        assert costs.cost(batch) == costs.direct(batch)
    trace = costs.spec.mixed_trace(MixedBatch((Sequence(1, 20, True), Sequence(2, 5, False))))
    state = trace.tensors["layers.0.self_attn.seq1.k_cache"]
    assert state.sequences == 1 and state.elements == 7 * 2 * 32


def test_per_token_kv_scales_of_a_windowed_cache(tmp_path) -> None:
    """A decode step past Mistral's window keeps W - 1 tokens but reads W keys: each token's scale still
    covers its kv_heads x head_dim entries (it covered (W - 1) / W of them before)."""
    config = tmp_path / "kv.yaml"
    config.write_text("name: kv\nhardware: tpu_v5e_like\nprecision: {weights: int8, activations: native, "
                      "kv_cache: int8, kv_scales: {per: token, scale_bits: 16}}\n")
    simulator = Simulator(load_hardware("tpu_v5e_like"), load_run_config(str(config)))
    spec = load_model(str(TESTS / "configs" / "mistral-window-8.json"))
    lowered = simulator.prepare(spec.trace(Workload(batch=2, tokens=20, phase="decode"))).lowered
    cache = lowered.tensors["layers.0.self_attn.k_cache"]
    assert cache.elements == 2 * 7 * 32 and cache.coarse_scale_group == 32


def three_block_probe(costs: IterationCoster, batch: MixedBatch) -> tuple[Prepared, list[StepRecord]]:
    spec = next(probe for blocks, probe in costs.probes if blocks == 3)
    prepared = costs.sim.prepare(spec.mixed_trace(batch))
    return prepared, [record.copy() for record in costs.sim.records(prepared)]


def test_blocks_that_differ_do_not_repeat() -> None:
    """The comparison behind every probe: blocks 0 and 1 repeat; one value, one tensor's home or whether it is
    written to DRAM differing in block 1 tells them apart; NaN energies (no energy model) repeat when they
    are not the same float object."""
    costs = coster()
    prepared, records = three_block_probe(costs, MixedBatch((Sequence(20, 0, True), Sequence(1, 30, True))))
    assert iteration._repeats(prepared, records, 0, 1)
    step = next(index for index, record in enumerate(records) if record.layer == 1 and record.unit == "array")
    changed = [record.copy() for record in records]
    changed[step].compute_cycles += 1
    assert not iteration._repeats(prepared, changed, 0, 1)
    nan = [record.copy() for record in records]
    for record in nan:
        record.energy_pj = float("nan")  # a new NaN object each
    assert iteration._repeats(prepared, nan, 0, 1)
    nan[step].compute_cycles += 1
    assert not iteration._repeats(prepared, nan, 0, 1)
    placement = prepared.placement
    tensor = next(name for name, home in placement.home.items() if name.startswith("layers.1.") and home == "chip")
    moved = replace(prepared, placement=replace(placement, home={**placement.home, tensor: "dram"}))
    assert not iteration._repeats(moved, records, 0, 1)
    written = replace(prepared, placement=replace(placement, written=placement.written | {tensor}))
    assert not iteration._repeats(written, records, 0, 1)


def test_which_spilled_prefills_are_probed() -> None:
    """A prefill of one prompt that spills is probed; two alike run whole (the engine may split them into
    sample groups, decided on the whole model); each probed batch is counted."""
    costs = coster("native", "small")
    for length in (300, 301):
        batch = MixedBatch((Sequence(length, 0, True),))
        assert costs.sim.prepare(costs.spec.mixed_trace(batch)).spilled
        assert costs.cost(batch) == costs.direct(batch)
    assert costs.counts == {"summed": 0, "probed": 2, "whole": 0}
    pair = MixedBatch((Sequence(300, 0, True),) * 2)
    assert costs.cost(pair) == costs.direct(pair) and costs.counts["whole"] == 1


def test_a_probed_pass_keeps_its_parts() -> None:
    costs = coster()
    batch = MixedBatch((Sequence(5, 10, False),))  # one kind: probed, its parts kept
    assert costs.cost(batch) == costs.direct(batch) and costs.counts["probed"] == 1
    assert set(costs.tokens) == {("mixed", 5, 0, True)}
    assert set(costs.kinds) == {("mixed", Sequence(5, 10, False), 1, "only")}


def test_parts_add_up_field_by_field() -> None:
    first, second = Sums(1, 2, 3, 4, 5, 6), Sums(10, 20, 30, 40, 50, 60)
    assert total([first, second]) == Sums(11, 22, 33, 44, 55, 66)
    assert total([first, Sums(10, 20, 30, 40, None, 60)]) == Sums(11, 22, 33, 44, None, 66)
    assert total([Sums(energy=None), first]).energy is None
    assert total([]) == Sums()


def test_parts_certify_a_pass_whose_live_bytes_never_exceed_the_buffer() -> None:
    """A token step holds at most the token part's peak; an attention step the token tensors across it, the
    kinds' outputs and the largest kind's own."""
    token = TokenPart(Sums(), peak=10, cross=3, outputs=4)
    kinds = [KindPart(Sums(), 2), KindPart(Sums(), 5)]
    assert certified(token, kinds, 12) and not certified(token, kinds, 11)  # 3 + 4 + 5
    assert certified(token, [], 10) and not certified(token, [], 9)  # the token peak; attention 3 + 4
    assert not certified(token._replace(peak=20), kinds, 19)
    small = token._replace(peak=5)  # no kind: the token tensors across the attention and its outputs, 3 + 4
    assert certified(small, [], 7) and not certified(small, [], 6)


def test_a_batch_is_keyed_by_its_kinds_and_knows_the_workload_it_is() -> None:
    batch = MixedBatch((Sequence(1, 9, True), Sequence(4, 0, True), Sequence(1, 9, True)), 1.5)
    assert batch.key == ((Sequence(1, 9, True), 2), (Sequence(4, 0, True), 1))
    assert (batch.tokens, batch.emitting, batch.uniform()) == (6, 3, None)
    prefill = MixedBatch((Sequence(4, 0, True),) * 2, 1.5).uniform()
    assert prefill == Workload(batch=2, tokens=4, phase="prefill", logits_to_keep=1, expert_imbalance=1.5)
    decode = MixedBatch((Sequence(1, 9, True),) * 3).uniform()
    assert decode == Workload(batch=3, tokens=9, phase="decode")
    assert MixedBatch((Sequence(4, 0, False),)).uniform() is None
    with pytest.raises(InputError, match="^an iteration runs at least one sequence$"):
        MixedBatch(())


@pytest.mark.parametrize("config, hardware", [("int8", "tpu_v5e_like"), ("int8_sp", "rapid_like_4core")])
def test_a_head_alone_costs_what_it_costs_in_the_pass(config: str, hardware: str) -> None:
    """The steps after the last block of a three-block probe equal the same head's pass alone, for several
    token and emitting counts (T, E)."""
    costs = coster(config, hardware)
    for tokens, emitting in ((60, 1), (60, 5), (60, 20), (121, 3)):
        stand_in = MixedBatch((Sequence(tokens - emitting + 1, 0, True),) + (Sequence(1, 1, True),) * (emitting - 1))
        prepared, records = three_block_probe(costs, stand_in)
        harvested = harvest(prepared, records, [costs.layers - 2 if r.layer == 1 else 1 for r in records])
        alone = costs.sim.prepare(costs.spec.head_trace(tokens, emitting))
        assert harvested.head == head_alone(alone, costs.sim.records(alone))


def test_a_known_body_takes_a_head_probed_alone() -> None:
    """A second batch with the first's new tokens and attention ending but other emitting sequences: its
    token part is the first's body and its own head, probed alone; exact."""
    costs = coster()
    first = MixedBatch((Sequence(30, 0, True), Sequence(1, 40, True)))  # T 31, E 2: a stand-in probed
    second = MixedBatch((Sequence(29, 10, False), Sequence(1, 40, True), Sequence(1, 50, True)))  # the same T, E
    third = MixedBatch((Sequence(28, 0, True), Sequence(1, 40, True), Sequence(1, 50, True),
                        Sequence(1, 9, True)))  # T 31, E 4: the body known, the head probed alone
    for batch in (first, second, third):
        assert costs.cost(batch) == costs.direct(batch)
    assert set(costs.bodies) == {(31, False)} and set(costs.heads) == {(31, 2), (31, 4)}


def test_a_policy_that_refuses_a_head_alone_probes_the_stand_in() -> None:
    """A KV cache format is refused on a pass that keeps no cache, as a head alone is: such runs probe a
    stand-in for every new (T, E), and stay exact."""
    costs = coster("w4a16_g128_kv4", "rapid_like_4core")
    for batch in (MixedBatch((Sequence(30, 0, True), Sequence(1, 40, True))),
                  MixedBatch((Sequence(28, 0, True), Sequence(1, 40, True), Sequence(1, 50, True),
                              Sequence(1, 9, True)))):
        assert costs.cost(batch) == costs.direct(batch)
    assert not costs.heads_alone and set(costs.heads) == {(31, 2), (31, 4)}
