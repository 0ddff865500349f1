"""Pipeline parallelism: stages of blocks, the send between them, microbatches through the stages and the
bubble (workloads/parallel.py, simulator/analysis/pipeline.py)."""

from __future__ import annotations

import json

import pytest
from cli_helpers import assert_one_line_error

from simulator.analysis.generation import generate, generation_summary, stage_generation
from simulator.engine import Simulator
from simulator.engine.collectives import collective_cost
from simulator.spec.run_config import load_run_config
from simulator.spec.system import Interconnect, System, load_target
from workloads.errors import InputError
from workloads.models import Workload, load_model

INT8 = load_run_config("int8")
CHIP = load_target("tpu_v5e_like").hardware
SPEC = load_model("llama-2-7b")


def chips(count: int) -> System:
    return System(name=f"test_{count}", chip="tpu_v5e_like", chips=count,
                  interconnect=Interconnect(topology="switch", links_per_chip=1, link_gb_per_s=50,
                                            link_latency_us=1, link_pj_per_bit=5))


def run(pp: int, microbatches: int = 1, batch: int = 4, tp: int = 1, new: int = 4):
    simulator = Simulator(CHIP, INT8, system=chips(pp * tp) if pp * tp > 1 else None)
    generation = generate(SPEC, Workload(tokens=32, batch=batch, pp=pp if pp > 1 else None, tp=tp if tp > 1 else None),
                          new, simulator, microbatches=microbatches)
    return generation, generation_summary(generation, CHIP)


def test_stages_hold_the_blocks_once():
    """Every parameter and MAC of the model is on exactly one stage; each stage but the last ends in a send."""
    whole = SPEC.trace(Workload(tokens=16))
    stages = [SPEC.trace(Workload(tokens=16, pp=4, stage=index)) for index in range(4)]
    assert sum(trace.params for trace in stages) == whole.params
    assert sum(trace.macs for trace in stages) == whole.macs
    assert [{op.layer for op in trace if op.layer >= 0} for trace in stages] == [
        set(range(8 * index, 8 * index + 8)) for index in range(4)]
    assert [trace.ops[-1].role for trace in stages] == ["send", "send", "send", "head"]
    assert stages[1].ops[-1].elements == 16 * 4096 and "hidden_states" in stages[1].tensors


def test_a_tied_embedding_gets_a_copy_on_the_last_stage():
    """Megatron's copy: the last stage's head holds its own table (replicated, counted once more)."""
    cfg = dict(SPEC.config, tie_word_embeddings=True)
    from workloads.models import ModelSpec

    tied = ModelSpec("tied", cfg)
    whole = tied.trace(Workload(tokens=8))
    stages = [tied.trace(Workload(tokens=8, pp=2, stage=index)) for index in range(2)]
    assert sum(trace.params for trace in stages) == whole.params + 32000 * 4096


def test_one_stage_is_todays_generation():
    plain, summary = run(1)
    assert summary["ttft_ms"] == generation_summary(generate(SPEC, Workload(tokens=32, batch=4), 4,
                                                             Simulator(CHIP, INT8)), CHIP)["ttft_ms"]
    assert plain.stages is None and "pipeline" not in summary


@pytest.mark.parametrize("microbatches", [1, 2, 4])
def test_the_pipeline_times_are_gpipes(microbatches):
    """TTFT = sum of the stages' prefills + (m - 1) x the slowest; a decode step max(sum, m x slowest), each
    stage's time one microbatch's pass through it (its send included)."""
    generation, summary = run(2, microbatches)
    stages = [stage_generation(SPEC, Workload(tokens=32, batch=4 // microbatches, pp=2, stage=index), 4,
                               Simulator(CHIP, INT8, system=chips(2))) for index in range(2)]
    prefills = [int(stage.prefill.totals["total_cycles"]) for stage in stages]
    assert generation.first_token_cycles == sum(prefills) + (microbatches - 1) * max(prefills)
    for number in range(3):
        times = [int(stage.steps.iloc[number]["total_cycles"]) for stage in stages]
        assert generation.steps.iloc[number]["total_cycles"] == max(sum(times), microbatches * max(times))
    pipeline = summary["pipeline"]
    assert (pipeline["stages"], pipeline["microbatches"]) == (2, microbatches)
    assert 0 <= pipeline["bubble_share"] < 1


def test_more_microbatches_shrink_the_bubble():
    bubbles = [run(4, m, batch=8)[1]["pipeline"]["bubble_share"] for m in (1, 2, 4, 8)]
    assert bubbles == sorted(bubbles, reverse=True) and bubbles[0] > 0.7


def test_the_send_is_one_link_hop():
    """A stage's hidden states (bf16) cross one link: B / link bandwidth + one latency."""
    generation, _ = run(2)
    row = generation.prefill[generation.prefill.role == "send"].iloc[0]
    buffer = 4 * 32 * 4096 * 2
    cost = collective_cost("send", buffer, 2, chips(2).interconnect)
    assert cost.link_bytes == buffer and cost.seconds == pytest.approx(buffer / 50e9 + 1e-6, rel=1e-12)
    assert row.link_bytes == buffer  # one microbatch (of one) through the pipeline


def test_a_pipelines_energy_is_its_stages_chips():
    """Each op once on one chip of its stage, for every microbatch, plus every chip's leakage."""
    generation, summary = run(2, 2, tp=2)
    dynamic = generation.prefill["energy_pj"].sum() + generation.decode["energy_pj"].sum()
    leakage = generation.prefill.totals.energy["static_mw"] * summary["e2e_ms"] * 1e6
    assert summary["chips"] == 4
    assert summary["energy"]["total_pj"] == pytest.approx(2 * dynamic + 4 * leakage, rel=1e-9)
    assert summary["tokens_per_s_per_chip"] == pytest.approx(summary["tokens_per_s"] / 4)


@pytest.mark.parametrize(("pp", "microbatches", "message"), [
    (3, 1, "--pp 3 does not divide num_hidden_layers = 32"),
    (2, 3, "--microbatches must divide the batch (4), got 3"),
    (1, 2, "--microbatches 2 applies to a pipeline (--pp)"),
])
def test_bad_pipelines(pp, microbatches, message):
    simulator = Simulator(CHIP, INT8, system=chips(pp) if pp > 1 else None)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        generate(SPEC, Workload(tokens=8, batch=4, pp=pp if pp > 1 else None), 2, simulator,
                 microbatches=microbatches)
    with pytest.raises(InputError, match="a pass is one stage's"):
        SPEC.trace(Workload(pp=2))
    with pytest.raises(InputError, match="stage 2 does not exist in a pipeline of 2 stages"):
        SPEC.trace(Workload(pp=2, stage=2))


def test_run_refuses_stages(accelsim_here):
    result = accelsim_here("run", "configs/int8.yaml", "--model", "llama-2-7b", "--hardware", "tpu_v5e_x4",
                           "--tp", "2", "--pp", "2")
    assert_one_line_error(result, "pipeline stages run in `accelsim generate`")


def test_70b_over_two_stages_of_four(run_cli):
    summary = json.loads(run_cli("generate", "configs/int8.yaml", "--model", "llama-2-70b", "--prompt", "128",
                                 "--new-tokens", "4", "--batch", "2", "--hardware", "tpu_v5e_x8", "--tp", "4",
                                 "--pp", "2", "--microbatches", "2", "--format", "json"))
    assert summary["parallel"] == {"tp": 4, "ep": 1, "pp": 2, "microbatches": 2}
    assert [row["first_layer"] for row in summary["pipeline"]["per_stage"]] == [0, 40]
    assert summary["weight_bytes"] < summary["dram_capacity_bytes"]


def test_the_pipelines_rows_are_its_stages():
    """Each stage's row: its blocks, its prefill and mean decode step for one microbatch (ms), its busy share;
    each step's latency and energy (one chip of each stage: the microbatches' dynamic energy, every stage's
    leakage over the step) from the stages' own steps."""
    microbatches, pp = 2, 2
    generation, summary = run(pp, microbatches)
    stages = [stage_generation(SPEC, Workload(tokens=32, batch=2, pp=pp, stage=index), 4,
                               Simulator(CHIP, INT8, system=chips(2))) for index in range(pp)]
    per_ms = CHIP.array.clock_mhz * 1e3
    e2e = generation.first_token_cycles + int(generation.steps["total_cycles"].sum())
    for row, stage in zip(summary["pipeline"]["per_stage"], stages, strict=True):
        prefill = int(stage.prefill.totals["total_cycles"])
        assert (row["first_layer"], row["last_layer"]) == ((0, 15) if row["stage"] == 0 else (16, 31))
        assert row["prefill_ms"] == prefill / per_ms
        assert row["decode_step_ms"] == pytest.approx(stage.steps["total_cycles"].mean() / per_ms, rel=1e-12)
        assert row["busy_share"] == pytest.approx(
            microbatches * (prefill + stage.steps["total_cycles"].sum()) / e2e, rel=1e-12)
    static = generation.prefill.totals.energy["static_mw"]
    for number, step in generation.steps.iterrows():
        assert step["latency_ms"] == step["total_cycles"] / per_ms
        dynamic = sum(stage.steps.iloc[number]["energy_pj"] - static * stage.steps.iloc[number]["latency_ms"] * 1e6
                      for stage in stages)
        assert step["energy_pj"] == pytest.approx(microbatches * dynamic + static * pp * step["latency_ms"] * 1e6,
                                                  rel=1e-12)
        assert step["link_cycles"] == microbatches * sum(stage.steps.iloc[number]["link_cycles"] for stage in stages)


def test_beams_run_through_the_pipeline():
    """Beam search through the stages: each stage's decode steps run its microbatch's beams."""
    simulator = Simulator(CHIP, INT8, system=chips(2))
    generation = generate(SPEC, Workload(tokens=32, batch=2, pp=2), 3, simulator, beams=2)
    stages = [stage_generation(SPEC, Workload(tokens=32, batch=2, pp=2, stage=index), 3, simulator, beams=2)
              for index in range(2)]
    times = [int(stage.steps.iloc[0]["total_cycles"]) for stage in stages]
    assert generation.steps.iloc[0]["total_cycles"] == sum(times)
    assert generation.beams == 2


def test_generate_writes_the_stages(tmp_path, run_cli):
    import pandas as pd

    run_cli("generate", "configs/int8.yaml", "--model", "llama-2-7b", "--prompt", "16", "--new-tokens", "3",
            "--batch", "2", "--hardware", "tpu_v5e_x4", "--tp", "2", "--pp", "2", "--microbatches", "2",
            "--out", str(tmp_path / "g"))
    stages = pd.read_csv(tmp_path / "g" / "stages.csv")
    assert list(stages["stage"]) == [0, 1] and list(stages["first_layer"]) == [0, 16]


def test_a_pipelines_generation_record():
    """The record a pipeline returns: each stage's bytes (every microbatch's KV cache held), the fullest stage's
    as the chip's, the steps' and stages' columns, the frames' notes, a single token's empty decode."""
    from simulator.analysis.generation import STEP_COLUMNS
    from simulator.analysis.pipeline import STAGE_COLUMNS

    microbatches = 2
    generation, summary = run(2, microbatches, new=3)
    stages = [stage_generation(SPEC, Workload(tokens=32, batch=2, pp=2, stage=index), 3,
                               Simulator(CHIP, INT8, system=chips(2))) for index in range(2)]
    rows = summary["pipeline"]["per_stage"]
    for row, stage in zip(rows, stages, strict=True):
        assert (row["weight_bytes"], row["kv_cache_bytes"]) == (stage.weight_bytes, microbatches * stage.kv_cache_bytes)
    fullest = max(rows, key=lambda r: r["weight_bytes"] + r["kv_cache_bytes"] + r["peak_activation_bytes"])
    assert (generation.weight_bytes, generation.kv_cache_bytes) == (fullest["weight_bytes"], fullest["kv_cache_bytes"])
    assert fullest["stage"] == 1  # the last stage holds the LM head
    assert generation.prompt_tokens == 32 and list(generation.steps.columns) == list(STEP_COLUMNS)
    assert list(generation.stages.columns) == list(STAGE_COLUMNS)
    assert generation.prefill.index.is_unique and isinstance(generation.prefill.notes, list)
    one, one_summary = run(2, microbatches, new=1)
    assert one.decode is None and one_summary["pipeline"]["per_stage"][0]["decode_step_ms"] is None


def test_every_microbatchs_cache_must_fit():
    """A stage holds all m microbatches' KV caches: a batch whose one microbatch fits, but not all of them, is
    refused with each chip's bytes."""

    tight = CHIP.model_copy(update={"memory": CHIP.memory.model_copy(update={"dram_capacity_bytes": 3_800_000_000})})
    simulator = Simulator(tight, INT8, system=chips(2))
    generate(SPEC, Workload(tokens=2000, batch=1, pp=2), 2, simulator)
    with pytest.raises(InputError, match="on each of 2 chips"):
        generate(SPEC, Workload(tokens=2000, batch=64, pp=2), 2, simulator, microbatches=64)


def test_the_pipelines_frames_and_steps_count_every_microbatch():
    """The joined frames hold each stage's work for all m microbatches; the steps are numbered from 1 at the
    prompt's cache length."""
    microbatches = 4
    generation, _ = run(2, microbatches, batch=4, new=4)
    stages = [stage_generation(SPEC, Workload(tokens=32, batch=1, pp=2, stage=index), 4,
                               Simulator(CHIP, INT8, system=chips(2))) for index in range(2)]
    for column in ("macs", "dram_bytes", "energy_pj"):
        expected = microbatches * sum(float(stage.prefill[column].sum()) for stage in stages)
        assert float(generation.prefill[column].sum()) == pytest.approx(expected, rel=1e-12)
        expected = microbatches * sum(float(stage.decode[column].sum()) for stage in stages)
        assert float(generation.decode[column].sum()) == pytest.approx(expected, rel=1e-12)
    assert list(generation.steps["step"]) == [1, 2, 3] and list(generation.steps["cache_tokens"]) == [32, 33, 34]
