"""A mixed batch's attention (workloads.blocks.mixed_attention) is wired as the uniform passes' attention is:
one kind alone runs the ops a prefill or a decode step of it runs (the same products, score ops and geometry,
its keys read from its own new tokens or from its cache), and the projections all read the block's input."""

from __future__ import annotations

import re

import pytest
from cli_helpers import TESTS

from workloads.blocks import AttentionShape, mixed_attention
from workloads.builder import OpBuilder
from workloads.errors import InputError
from workloads.mixed import MixedBatch, Sequence
from workloads.models import Workload, load_model
from workloads.ops import Op, Trace

MODELS = [str(TESTS / "configs" / f"{name}.json") for name in
          ("llama-serve-6", "mistral-window-8", "opt-serve-6", "opt-serve-post-ln-6", "opt-serve-plain-6")]
OPT = str(TESTS / "configs" / "opt-serve-6.json")
ACTIVATIONS = {"llama-serve-6": "silu", "mistral-window-8": "silu", "opt-serve-6": "relu",
               "opt-serve-post-ln-6": "gelu", "opt-serve-plain-6": "relu"}
_UNIFORM = re.compile(r"^layers\.0\.self_attn\.(qk|score_scale|causal_mask_add|softmax|av)$")
_MIXED = re.compile(r"^layers\.0\.self_attn\.seq0\.(qk|score_scale|causal_mask_add|softmax|av)$")


def kind_ops(trace: Trace, pattern: re.Pattern[str]) -> list[tuple[object, ...]]:
    """The first block's attention ops of one kind: what each is (its name's last part, sizes, geometry) and
    whether each operand is a cache (a state) or an activation."""
    return [(match.group(1), op.role, op.kind, op.batch, op.m, op.k, op.n, op.elements, op.attention,
             tuple(trace.tensors[name].kind for name in op.reads))
            for op in trace.ops if (match := pattern.match(op.name))]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kind, workload", [(Sequence(9, 0, True), Workload(tokens=9, phase="prefill")),
                                            (Sequence(1, 30, True), Workload(tokens=30, phase="decode")),
                                            (Sequence(1, 12, True), Workload(tokens=12, phase="decode"))])
def test_one_kind_alone_runs_the_attention_its_uniform_pass_runs(model: str, kind: Sequence,
                                                                  workload: Workload) -> None:
    spec = load_model(model)
    mixed = spec.mixed_trace(MixedBatch((kind,)), as_mixed=True)
    uniform = spec.trace(workload)
    expected = kind_ops(uniform, _UNIFORM)
    assert [op[0] for op in expected][:1] == ["qk"] and expected[-1][0] == "av"
    assert kind_ops(mixed, _MIXED) == expected
    # a prefill's keys and values are its own new ones (activations), a decode step's its cache (states)
    qk = next(op for op in expected if op[0] == "qk")
    assert qk[-1] == ("activation", "state" if kind.cached else "activation")
    # the cache it keeps (a window keeps W - 1 entries), and no gather of a lone kind's output
    for name in ("k_cache", "v_cache"):
        kept = uniform.tensors[f"layers.0.self_attn.{name}"].elements
        assert mixed.tensors[f"layers.0.self_attn.seq0.{name}"].elements == kept
    assert not any(op.name.endswith(".gather") for op in mixed.ops)


@pytest.mark.parametrize("model", MODELS)
def test_the_projections_read_the_blocks_input_and_each_kind_its_own_rows(model: str) -> None:
    spec = load_model(model)
    batch = MixedBatch((Sequence(1, 30, True), Sequence(7, 0, True), Sequence(4, 10, False)))
    trace = spec.mixed_trace(batch)
    ops = {op.name: op for op in trace.ops}
    prefix = "layers.0.self_attn"
    assert trace.params == spec.trace(Workload(tokens=8)).params  # the same weights and biases, whatever the batch
    activation = ACTIVATIONS[model.rsplit("/", 1)[1].removesuffix(".json")]
    assert activation in {op.role for op in trace.ops if op.layer == 0 and op.group == "ffn" and not op.is_matrix}
    projections = [ops[f"{prefix}.{name}"] for name in ("q", "k", "v")]
    assert len({op.reads[0] for op in projections}) == 1
    assert trace.tensors[projections[0].reads[0]].kind == "activation"
    rotated = "rotary_emb" in ops
    gathers = [op for op in trace.ops if op.name.endswith(".gather")]
    assert len(gathers) == spec.config["num_hidden_layers"] and all(len(op.reads) == 3 for op in gathers)
    for index, (sequence, _) in enumerate(batch.key):
        qk, av = ops[f"{prefix}.seq{index}.qk"], ops[f"{prefix}.seq{index}.av"]
        k_cache, v_cache = (trace.tensors[f"{prefix}.seq{index}.{name}_cache"] for name in "kv")
        assert k_cache.source == f"{prefix}.{'k_rope' if rotated else 'k'}.seq{index}"
        assert v_cache.source == f"{prefix}.v.seq{index}"
        assert qk.reads[0].endswith(f".seq{index}")
        keys, values = (k_cache.name, v_cache.name) if sequence.cached else (k_cache.source, v_cache.source)
        assert (qk.reads[1], av.reads[1]) == (keys, values)


def first_attention(trace: Trace) -> list[tuple[object, ...]]:
    """The first block's ops up to its attention's output projection (its norm before it, if any), as they are."""
    ops = []
    for op in trace.ops:
        if op.layer == 0:
            ops.append((op.name, op.role, op.kind, op.batch, op.m, op.k, op.n, op.elements, op.params, op.attention))
            if op.name == "layers.0.self_attn.out":
                break
    return ops


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("batch", [MixedBatch((Sequence(9, 0, True),) * 2), MixedBatch((Sequence(1, 30, True),) * 3),
                                   MixedBatch((Sequence(1, 30, True), Sequence(7, 0, True), Sequence(4, 10, False)))])
def test_the_first_blocks_attention_alone_is_the_passes(model: str, batch: MixedBatch) -> None:
    """What serving probes kinds on (ModelSpec.attention_trace) runs the pass's first attention sublayer."""
    spec = load_model(model)
    alone_trace = spec.attention_trace(batch)
    alone, whole = first_attention(alone_trace), first_attention(spec.mixed_trace(batch))
    first = next(op for op in alone_trace.ops if op.layer == 0)
    assert alone_trace.tensors[first.reads[0]].elements == batch.tokens * spec.config["hidden_size"]
    assert alone == whole and whole[-1][0] == "layers.0.self_attn.out"
    assert [op[0] for op in whole if op[1] in ("norm", "layernorm", "rmsnorm")][:1] == (
        [] if spec.config.get("do_layer_norm_before") is False else [whole[0][0]])


@pytest.mark.parametrize(("kind", "refused"), [(Sequence(62, 450, True), False), (Sequence(63, 450, True), True),
                                               (Sequence(1, 511, True), False), (Sequence(1, 512, True), True)])
def test_a_kind_past_the_models_positions_is_refused(kind: Sequence, refused: bool) -> None:
    """A kind of N new tokens after C cached ones needs C + N positions (the last new token's included)."""
    spec = load_model(OPT)
    batch = MixedBatch((kind, Sequence(3, 0, True)))
    if refused:
        with pytest.raises(InputError, match="exceeds the model's 512 positions \\(max_position_embeddings\\)"):
            spec.mixed_trace(batch)
    else:
        assert spec.mixed_trace(batch).ops


def test_without_a_head_no_lm_head_runs() -> None:
    spec = load_model(OPT)
    assert not [op for op in spec.trace(Workload(head="none", tokens=8)).ops if op.role == "head"]
    assert [op.m for op in spec.trace(Workload(tokens=8)).ops if op.role == "head"] == [8]  # every position, as HF


def test_a_tied_head_is_not_probed_alone() -> None:
    with pytest.raises(InputError, match="^opt: an LM head tied to the embedding is not probed alone$"):
        load_model(OPT).head_trace(10, 2)


def _one_kind(rope: bool, scale: str) -> Trace:
    b = OpBuilder()
    b.input("hidden_states", 5 * 64)
    table = b.vector("rotary_emb", -1, "rope_table", "embedding", 2 * 5 * 16, reads=()) if rope else None
    b.current = "hidden_states"
    shape = AttentionShape(1, 5, 5, 64, 4, 16)
    mixed_attention(b, "layers.0.self_attn", 0, (shape,), (True,), bias=False, rope=table, out_bias=False,
                    scale=scale)
    return b.build_trace("one kind", {"batch": 1, "tokens": 5, "phase": "mixed"})


@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("scale", ["scores", "query"])
def test_queries_rotated_and_scaled_in_any_combination_reach_their_kind(rope: bool, scale: str) -> None:
    """The kind reads the queries after every op the block applies to them, split into its rows; scaled
    queries leave the scores unscaled."""
    trace = _one_kind(rope, scale)
    ops: dict[str, Op] = {op.name: op for op in trace.ops}
    last = "query_scale" if scale == "query" else "q_rope" if rope else "q"
    assert ops["layers.0.self_attn.seq0.qk"].reads[0] == f"layers.0.self_attn.{last}.seq0"
    assert ops["layers.0.self_attn.seq0.qk"].reads[1] == f"layers.0.self_attn.{'k_rope' if rope else 'k'}.seq0"
    assert ("layers.0.self_attn.seq0.score_scale" in ops) == (scale == "scores")
    if rope:
        assert ops["layers.0.self_attn.q_rope"].reads[0] == "layers.0.self_attn.q"


def test_an_unknown_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scale 'Scores'"):
        _one_kind(False, "Scores")
