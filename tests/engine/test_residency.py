"""Data movement across ops: residency, per-level access counts, sample groups (hand-checked cases and
invariants over the shipped models)."""

import math

import pandas as pd
import pytest
from conftest import preset_with
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.engine import Simulator, simulate
from simulator.engine.timing import gemm_cycles
from simulator.formats.storage import parameter_storage
from simulator.spec.hardware import Hardware, load_hardware
from simulator.spec.precision_config import KvScales
from simulator.spec.run_config import Policy, load_run_config
from workloads.builder import OpBuilder
from workloads.models import Workload, load_model, zoo_names

FP16 = load_run_config("configs/fp16.yaml")
INT8 = load_run_config("configs/int8.yaml")
RUNS_ON = {"rapid_like": ("fp32", "int8_sp", "int4"),  # the widest, a sparse and the narrowest format
           "tpu_v1_like": ("int8", "int4")}  # the TPU has INT8 MACs, no sparsity


def hardware(ifmap: int = 2**24, filter_: int = 2**24, ofmap: int = 2**24, bandwidth: float = 16.0,
             **memory) -> Hardware:
    return preset_with("rapid_like", memory={"ifmap_buffer_bytes": ifmap, "filter_buffer_bytes": filter_,
                                             "ofmap_buffer_bytes": ofmap, "dram_bytes_per_cycle": bandwidth, **memory},
                       sfu={"fusion": False, "overlap_with_array": False})


def norm_gemm_gelu(rows: int = 64, width: int = 128, out: int = 256):
    """x -> layernorm -> linear (no bias) -> gelu: a chain a reader can follow byte by byte."""
    b = OpBuilder()
    b.input("x", rows * width)
    b.layernorm("norm", 0, "norm", rows, width)
    b.gemm("proj", 0, "ffn1", "ffn", rows, width, out, bias=False)
    b.vector("act", 0, "gelu", "ffn", rows * out)
    return b.build_trace("chain", {"batch": 1})


def by_name(results):
    return results.set_index("name")


def test_a_chain_that_fits_moves_only_its_input_weights_and_output():
    rows, width, out = 64, 128, 256
    res = by_name(simulate(norm_gemm_gelu(rows, width, out), hardware(), FP16))
    x, gamma_beta, weights, y = rows * width * 2, 2 * width * 2, width * out * 2, rows * out * 2
    assert res.loc["norm", "dram_read_bytes"] == x + gamma_beta and res.loc["norm", "dram_write_bytes"] == 0
    assert res.loc["norm", "residency"] == "chip"
    assert res.loc["norm", "ifmap_write_bytes"] == x + gamma_beta + x  # what it read from DRAM, then its output
    assert res.loc["proj", "dram_read_bytes"] == weights  # A stays on chip
    assert res.loc["proj", "residency"] == "stream"  # straight into the GELU
    assert res.loc["act", "dram_write_bytes"] == y  # the pass's output leaves the chip
    assert res["dram_bytes"].sum() == x + gamma_beta + weights + y


def test_a_chain_that_spills_writes_once_and_reads_once_per_sweep():
    rows, width, out = 64, 128, 256
    hw = hardware(ifmap=rows * width * 2 - 1)  # the normalised tensor no longer fits
    res = by_name(simulate(norm_gemm_gelu(rows, width, out), hw, FP16))
    a = rows * width * 2
    sweeps = math.ceil(out / hw.array.cols)  # ws streams A once per column tile, from DRAM when it does not fit
    assert res.loc["norm", "residency"] == "dram" and res.loc["norm", "dram_write_bytes"] == a
    assert res.loc["proj", "dram_read_bytes"] == a * sweeps + width * out * 2
    compute = gemm_cycles(rows, width, out, hw.array.rows, hw.array.cols, "ws", pack=2)
    transfer = math.ceil(res.loc["proj", "dram_bytes"] / hw.memory.dram_bytes_per_cycle)
    assert res.loc["proj", "transfer_cycles"] == transfer
    exposed = math.ceil(min(transfer, compute.compute_cycles) / compute.folds)  # one fold does not overlap
    assert res.loc["proj", "stall_cycles"] == exposed + max(0, transfer - compute.compute_cycles)


def skip_chain(rows: int = 64, width: int = 128):
    """x -> norm -> linear -> gelu -> mix(gelu, norm) -> add(mix, gelu): the norm output lives from step
    0 to 3, the gelu output from 2 to 4 (both materialised: two readers each)."""
    b = OpBuilder()
    b.input("x", rows * width)
    skip = b.layernorm("norm", 0, "norm", rows, width)
    b.gemm("proj", 0, "ffn1", "ffn", rows, width, width, bias=False)
    act = b.vector("act", 0, "gelu", "ffn", rows * width)
    b.vector("mix", 0, "mul", "ffn", rows * width, reads=(act, skip))
    b.add("residual", 0, "ffn", rows * width, act)
    return b.build_trace("skip", {"batch": 1})


def test_a_long_lived_tensor_keeps_its_room_until_its_last_reader():
    """The norm output is read by proj and, three steps later, by mix: while it lives, the gelu output
    must fit beside it. With room for one tensor only, the later one spills."""
    rows, width = 64, 128
    size = rows * width * 2
    roomy = by_name(simulate(skip_chain(rows, width), hardware(ifmap=2 * size), FP16))
    assert (roomy.loc["norm", "residency"], roomy.loc["act", "residency"]) == ("chip", "chip")
    tight = simulate(skip_chain(rows, width), hardware(ifmap=2 * size - 1), FP16)
    rows_of = by_name(tight)
    assert (rows_of.loc["norm", "residency"], rows_of.loc["act", "residency"]) == ("chip", "dram")
    assert rows_of.loc["act", "dram_write_bytes"] == size and rows_of.loc["mix", "dram_read_bytes"] == size
    assert rows_of.loc["residual", "dram_read_bytes"] == size


def test_a_tensor_frees_its_room_after_its_last_reader():
    """With room for one tensor, the norm output holds it from step 0 to its last reader (3); the residual
    output, born at step 4, takes the room then (a lifetime counted one step long would spill it)."""
    from simulator.engine.lowering import lower
    from simulator.engine.residency import place
    from simulator.plan.binding import bind

    rows, width = 64, 128
    chip = hardware(ifmap=rows * width * 2)
    placement = place(lower(skip_chain(rows, width), bind(FP16, chip)), chip)
    assert placement.lifetimes == {"norm": (0, 3), "act": (2, 4), "residual": (4, 4)}
    assert [placement.home[name] for name in placement.lifetimes] == ["chip", "dram", "chip"]


def test_peak_live_bytes_counts_every_materialised_tensor_over_its_life():
    from simulator.engine.lowering import lower
    from simulator.engine.residency import place
    from simulator.plan.binding import bind

    rows, width = 64, 128
    size = rows * width * 2
    for ifmap in (2 * size, size):  # on chip or spilled, alive all the same
        chip = hardware(ifmap=ifmap)
        placement = place(lower(skip_chain(rows, width), bind(FP16, chip)), chip)
        assert placement.peak_live_bytes == 2 * size  # norm and gelu outputs, at steps 2 and 3
        assert placement.peak_bytes == (2 * size if ifmap == 2 * size else size)


def test_preloaded_weights_move_no_dram_bytes():
    rows, width, out = 64, 128, 256
    streamed = simulate(norm_gemm_gelu(rows, width, out), hardware(), FP16)
    preloaded = simulate(norm_gemm_gelu(rows, width, out), hardware(weights_streamed=False), FP16)
    weights = width * out * 2 + 2 * width * 2  # the linear layer's and the norm's
    assert streamed.totals["dram_bytes"] - preloaded.totals["dram_bytes"] == weights


@pytest.mark.parametrize(("dataflow", "a_sweeps", "b_sweeps"), [("ws", 4, 1), ("os", 4, 16), ("is", 1, 2)])
def test_each_dataflow_reads_its_operands_once_per_sweep(dataflow, a_sweeps, b_sweeps):
    """On an 8 x 64 array, a 128 x 128 x 256 GEMM: ws streams A once per column tile (256/64) and holds
    B; os re-streams A per column tile and B per row tile (128/8); is holds A and streams B once per
    tile of M over the columns (128/64)."""
    rows, width, out = 128, 128, 256
    data = hardware().model_dump()
    data["array"]["dataflow"] = dataflow
    res = by_name(simulate(norm_gemm_gelu(rows, width, out), Hardware.model_validate(data), FP16))
    assert res.loc["proj", "ifmap_read_bytes"] == rows * width * 2 * a_sweeps
    assert res.loc["proj", "filter_read_bytes"] == width * out * 2 * b_sweeps


def attention_core(batch_heads: int, q: int, d: int):
    b = OpBuilder()
    b.input("q", batch_heads * q * d)
    b.input("k", batch_heads * q * d)
    b.input("v", batch_heads * q * d)
    b.bmm("qk", 0, "bmm_qk", "attention", batch_heads, q, d, q, reads=("q", "k"))
    b.vector("softmax", 0, "softmax", "attention", batch_heads * q * q)
    b.bmm("av", 0, "bmm_av", "attention", batch_heads, q, q, d, reads=("softmax", "v"))
    return b.build_trace("attention", {"batch": 1})


def test_a_batched_bmm_keeps_one_heads_scores_on_chip():
    heads, q, d = 12, 128, 64
    scores = heads * q * q * 2
    hw = hardware(ifmap=scores // heads + 1024)  # one head's scores fit, all twelve do not
    res = by_name(simulate(attention_core(heads, q, d), hw, FP16))
    assert res.loc["softmax", "residency"] == "chip"
    assert res.loc["softmax", "dram_write_bytes"] == 0 and res.loc["softmax", "dram_read_bytes"] == 0
    assert res.loc["av", "dram_read_bytes"] == heads * q * d * 2  # only v, an input
    # The same scores as one product do not fit: written once, read back by the AV product.
    one = by_name(simulate(attention_core(1, heads * q, d), hardware(ifmap=scores // heads + 1024), FP16))
    assert one.loc["softmax", "residency"] == "dram" and one.loc["softmax", "dram_write_bytes"] == (heads * q) ** 2 * 2


def test_a_tied_head_reads_the_embedding_table():
    trace = load_model("gpt2").trace(Workload(tokens=512, phase="decode", head="lm"))
    res = by_name(simulate(trace, load_hardware("tpu_v1_like"), INT8))
    wte = next(row for row in parameter_storage(trace, INT8).ops if row.name == "wte")
    stored = math.ceil((wte.weight_bits + wte.scale_bits) / 8)
    assert res.loc["lm_head", "weight_bits"] == 0  # stored once, by wte
    assert res.loc["lm_head", "dram_read_bytes"] >= stored and res.loc["lm_head", "transfer_cycles"] > 0


@pytest.mark.parametrize("tokens", [64, 512])
def test_decode_reads_the_kv_cache_once_at_its_stored_precision(tokens):
    batch, hidden, layers = 2, 768, 12
    trace = load_model("gpt2").trace(Workload(batch=batch, tokens=tokens, phase="decode", head="none"))
    res = simulate(trace, load_hardware("rapid_like"), INT8)
    context = tokens + 1
    bmm = res[res.role.isin(["bmm_qk", "bmm_av"])]
    cache_bytes = batch * context * hidden  # int8: one byte per element
    filter_fits = cache_bytes // (batch * 12) <= load_hardware("rapid_like").memory.filter_buffer_bytes
    assert filter_fits
    assert (bmm["dram_read_bytes"] == cache_bytes).all()  # k for QK^T, v for AV: once each
    # Only the new token's keys and values are quantized (appended), not the cache.
    appended = res[res.name.str.endswith(".qk.quantize_b") | res.name.str.endswith(".av.quantize_b")]
    assert len(appended) == 2 * layers and (appended["elements"] == batch * hidden).all()
    assert (appended["dram_write_bytes"] == batch * hidden).all()


def test_decode_quantize_work_does_not_grow_with_the_cache():
    """What is quantized in a decode step is the new token's activations (and its attention scores,
    one per cached token and head), never the cache itself."""
    def quantized(tokens):
        trace = load_model("gpt2").trace(Workload(tokens=tokens, phase="decode"))
        res = simulate(trace, load_hardware("rapid_like"), INT8)
        scores = res.name.str.endswith(".av.quantize_a")
        return res[(res.role == "quantize") & ~scores]["elements"].sum(), res[scores]["elements"].sum()

    (short, short_scores), (long, long_scores) = quantized(64), quantized(1000)
    assert short == long
    assert long_scores - short_scores == 12 * 12 * (1000 - 64)  # layers x heads x extra cached tokens


def kv_cache_bytes(spec, batch, tokens, bits):
    """2 x layers x batch x tokens x kv_heads x head_dim x bits / 8 (the issue's closed form)."""
    cfg = spec.config
    heads, layers = cfg.get("num_attention_heads", cfg.get("n_head")), cfg.get("num_hidden_layers", cfg.get("n_layer"))
    kv_heads, head_dim = cfg.get("num_key_value_heads", heads), (cfg.get("hidden_size") or cfg["n_embd"]) // heads
    return 2 * layers * batch * tokens * kv_heads * head_dim * bits // 8


@pytest.mark.parametrize("model", ["llama-3-8b", "opt-1.3b", "gpt2"])
def test_prefill_writes_the_kv_cache_once_and_nothing_else(model):
    """A prefill whose activations stay on chip writes to DRAM exactly its KV cache (int8: the copies
    quantized for the attention BMMs, no extra conversion) and its output."""
    spec = load_model(model)
    batch, tokens = 2, 64
    res = simulate(spec.trace(Workload(batch=batch, tokens=tokens, head="none")), load_hardware("rapid_like"), INT8)
    hidden = spec.config.get("hidden_size") or spec.config["n_embd"]
    output = batch * tokens * hidden * 2  # fp16
    assert res.totals["dram_write_bytes"] == kv_cache_bytes(spec, batch, tokens, 8) + output
    assert not res.name.str.endswith("_cache").any()  # the cache is the BMMs' int8 operand, stored as is


def test_kv_cache_precision_sets_what_is_stored_and_read():
    """precision.kv_cache: int4 (one scale per tensor) under int8 attention halves the cache bytes a decode
    step reads and its prefill writes; the appended entries get their own int4 conversion."""
    spec = load_model("llama-3-8b")
    hw = load_hardware("rapid_like")
    precision = INT8.config.precision.model_copy(update={"kv_cache": "int4", "kv_scales": KvScales(per="tensor")})
    config = INT8.config.model_copy(update={"precision": precision})
    int4_cache = Policy(config)
    step = spec.trace(Workload(batch=2, tokens=100, phase="decode", head="none"))
    int8_run, int4_run = simulate(step, hw, INT8), simulate(step, hw, int4_cache)
    saved = int8_run.totals["dram_read_bytes"] - int4_run.totals["dram_read_bytes"]
    assert saved == kv_cache_bytes(spec, 2, 101, 8) - kv_cache_bytes(spec, 2, 101, 4)
    kv_quantize = int4_run[int4_run.name.str.endswith("quantize_b")]
    assert (kv_quantize["elements"] == 2 * 8 * 128).all() and len(kv_quantize) == 2 * 32
    prefill = spec.trace(Workload(batch=2, tokens=64, head="none"))
    written = simulate(prefill, hw, int4_cache)
    assert written[written.name.str.endswith("_cache")]["dram_write_bytes"].sum() == kv_cache_bytes(spec, 2, 64, 4)


def test_cross_attention_quantizes_the_encoder_output_separately():
    """Decoder and encoder lengths equal: q reads the decoder stream, k and v the encoder output."""
    trace = load_model("transformer-base").trace(Workload(tokens=16, decoder_tokens=16))
    res = simulate(trace, load_hardware("rapid_like"), INT8)
    cross = res[res.name.str.startswith("decoder.layers.0.encoder_attn.") & (res.role == "quantize")]
    prefix = "decoder.layers.0.encoder_attn."
    assert set(cross["name"]) == {prefix + name for name in (
        "k.quantize", "q.quantize", "qk.quantize_a", "qk.quantize_b", "av.quantize_a", "av.quantize_b", "out.quantize")}


@pytest.mark.parametrize("model", zoo_names())
def test_every_stored_weight_bit_is_read_each_pass(model):
    """Streamed weights: values, indices, scales and biases all come from DRAM at least once (lookup
    tables, read only at the rows gathered, and training-only vectors excepted)."""
    trace = load_model(model).trace()
    for config in ("int8_sp", "int4"):
        policy = load_run_config(config)
        res = simulate(trace, load_hardware("rapid_like"), policy)
        unused = {op.name for op in trace if not op.output_elements or op.role == "embedding"}
        stored = sum(row.weight_bits + row.scale_bits + row.bias_bits
                     for row in parameter_storage(trace, policy).ops if row.name not in unused)
        assert res["dram_read_bytes"].sum() >= stored / 8


def test_the_accumulator_buffer_gives_back_what_it_takes():
    """ofmap: every partial sum written is read back (for the next fold along K, or to drain)."""
    for dataflow in ("ws", "os", "is"):
        data = load_hardware("rapid_like").model_dump()
        data["array"]["dataflow"] = dataflow
        res = simulate(load_model("bert-base").trace(Workload(tokens=64)), Hardware.model_validate(data), INT8)
        array = res[res.unit == "array"]
        assert (array["ofmap_write_bytes"] == array["ofmap_read_bytes"]).all()
        rows = data["array"]["rows"]
        packed = (array["k"] + 7) // 8  # int8: 8 MACs per PE along K
        k_folds = 1 if dataflow == "os" else (packed + rows - 1) // rows
        assert (array["ofmap_write_bytes"] == array["batch"] * array["m"] * array["n"] * 4 * k_folds).all()
        updates = -(-array["macs"] // array["macs_per_pe"])  # packed products reduce into one partial sum
        assert (array["array_psum_updates"] == updates).all()
        assert (array["filter_read_bytes"] >= array["filter_write_bytes"] - 0).all()


def test_whole_run_is_never_faster_than_its_dram_traffic():
    trace = load_model("bert-base").trace(Workload(batch=4))
    hw = hardware(ifmap=2**20, bandwidth=1.0)
    totals = simulate(trace, hw, INT8).totals
    assert totals["total_cycles"] >= totals["dram_bytes"] / hw.memory.dram_bytes_per_cycle


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["rapid_like", "tpu_v1_like"])
def test_batching_never_hurts_shipped_models(preset):
    """One zoo model per family (the smallest: the larger ones repeat the same blocks)."""
    hw = load_hardware(preset)
    smallest = {}
    for model in zoo_names():
        spec = load_model(model)
        kept = smallest.get(spec.config["model_type"])
        if kept is None or spec.trace().params < kept.trace().params:
            smallest[spec.config["model_type"]] = spec
    for spec in smallest.values():
        model = spec.name
        tokens = 128 if spec.family.phases else None  # decoder LLMs: a 128-token prompt keeps this test short
        for config in RUNS_ON[preset]:
            policy = load_run_config(config)
            runs = {b: simulate(spec.trace(Workload(batch=b, tokens=tokens)), hw, policy).totals for b in (1, 2, 4)}
            for b in (1, 2):
                assert runs[2 * b]["total_cycles"] <= 2 * runs[b]["total_cycles"] * 1.01, (model, config, b)
            for b in (2, 4):
                assert runs[b]["dram_bytes"] <= b * runs[1]["dram_bytes"], (model, config, b)


def random_model(widths: list[int], rows: int):
    def trace(batch: int):
        b = OpBuilder()
        b.input("x", batch * rows * widths[0])
        for i, (k, n) in enumerate(zip(widths, widths[1:], strict=False)):
            b.gemm(f"l{i}", i, "ffn1", "ffn", batch * rows, k, n)
            b.vector(f"a{i}", i, "gelu", "ffn", batch * rows * n)
        return b.build_trace("random", {"batch": batch}, trace)

    return trace


@settings(max_examples=30, deadline=None)
@given(widths=st.lists(st.integers(8, 300), min_size=2, max_size=4), rows=st.integers(1, 200),
       buffer=st.integers(256, 2**18), batch=st.sampled_from([1, 2, 3, 4]))
def test_batching_never_hurts_random_traces(widths, rows, buffer, batch):
    model = random_model(widths, rows)
    hw = hardware(ifmap=buffer, filter_=buffer, bandwidth=8.0)
    one, b, twice = (simulate(model(n), hw, INT8).totals for n in (1, batch, 2 * batch))
    assert twice["total_cycles"] <= 2 * b["total_cycles"]
    assert b["dram_bytes"] <= batch * one["dram_bytes"]


@pytest.mark.parametrize("preset", ["rapid_like", "tpu_v1_like"])
def test_repeated_blocks_cost_what_they_cost_when_evaluated_one_by_one(preset):
    """The engine evaluates each distinct step once (repeated blocks share a record): the frame must be
    identical to evaluating every step on its own."""
    hw = load_hardware(preset)
    for model in ("bert-base", "gpt2", "transformer-base", "wav2vec2-large", "vit-base"):
        trace = load_model(model).trace(Workload(batch=2))
        for config in RUNS_ON[preset]:
            policy = load_run_config(config)
            shared = Simulator(hw, policy).run(trace)
            alone = Simulator(hw, policy)
            alone.step_key = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no memo: every step costed
            pd.testing.assert_frame_equal(shared, alone.run(trace))
            assert not alone._step_records  # nothing was memoised: each step was costed on its own


def test_a_concatenation_of_several_activations_streams_none_of_them():
    """Two products' outputs joined by a concat: the one written just before it stays in the buffer (the
    concat reads both from there); a concat of one activation (ViT's class token) streams it."""
    b = OpBuilder()
    b.input("x", 64 * 32)
    first = b.gemm("a", 0, "ffn1", "ffn", 64, 32, 32, bias=False, reads="x")
    second = b.gemm("b", 0, "ffn1", "ffn", 64, 32, 32, bias=False, reads="x")
    b.vector("join", 0, "concat", "ffn", 2 * 64 * 32, reads=(first, second))
    b.gemm("c", 0, "ffn2", "ffn", 128, 32, 16, bias=False)
    results = simulate(b.build_trace("t", {"batch": 1}), hardware(), FP16)
    homes = dict(zip(results["name"], results["residency"], strict=True))
    assert homes["a"] == homes["b"] == "chip"
    single = OpBuilder()
    single.input("x", 64 * 32)
    single.gemm("a", 0, "ffn1", "ffn", 64, 32, 32, bias=False, reads="x")
    single.vector("cls", 0, "concat", "ffn", 65 * 32, weight_params=32)
    single.gemm("c", 0, "ffn2", "ffn", 65, 32, 16, bias=False)
    results = simulate(single.build_trace("t", {"batch": 1}), hardware(), FP16)
    assert dict(zip(results["name"], results["residency"], strict=True))["a"] == "stream"
