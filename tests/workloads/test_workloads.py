"""Closed-form traces: shapes of the paper's workloads and published FLOP totals."""

import pytest

from workloads.errors import InputError
from workloads.models import Workload, load_model, zoo_names
from workloads.vocabulary import GROUPS


def matrix_ops(trace, kind):
    return [op for op in trace if op.kind == kind]


def test_bert_base_linear_and_bmm_shapes():
    trace = load_model("bert-base").trace()
    linear = [op for op in matrix_ops(trace, "gemm") if op.group != "head"]
    assert len(linear) == 12 * 6
    per_layer = [(op.m, op.k, op.n) for op in linear[:6]]
    assert per_layer == [(384, 768, 768)] * 4 + [(384, 768, 3072), (384, 3072, 768)]
    assert [op.role for op in linear[:6]] == ["q", "k", "v", "attn_out", "ffn1", "ffn2"]
    bmms = matrix_ops(trace, "bmm")
    assert len(bmms) == 12 * 2
    assert {(op.batch, op.m, op.k, op.n, op.role) for op in bmms} == {
        (12, 384, 64, 384, "bmm_qk"), (12, 384, 384, 64, "bmm_av")}
    softmax = [op for op in trace if op.role == "softmax"]
    assert len(softmax) == 12 and softmax[0].elements == 12 * 384 * 384


# Published totals (2 x MACs), stated to 0.01 GFLOP.
@pytest.mark.parametrize(("name", "workload", "gflop"), [
    ("bert-base", Workload(tokens=384, head="pooler"), 70.67),
    ("vit-base", Workload(image_size=384, head="pooler"), 110.97),
    ("wav2vec2-large", Workload(audio_samples=224000, head="none"), 551.40),
])
def test_known_flop_totals(name, workload, gflop):
    assert load_model(name).trace(workload).flops / 1e9 == pytest.approx(gflop, abs=0.005)


def test_vit_tokens_and_patch_embedding():
    trace = load_model("vit-base").trace()
    assert trace.workload["tokens"] == 577
    patch = trace.ops[0]
    assert (patch.kind, patch.m, patch.k, patch.n) == ("conv", 576, 3 * 16 * 16, 768)


@pytest.mark.parametrize(("samples", "frames"), [(224000, 699), (400, 1), (719, 1), (720, 2), (16000, 49)])
def test_wav2vec2_frames(samples, frames):
    assert load_model("wav2vec2-large").resolve(Workload(audio_samples=samples)).tokens == frames


def test_wav2vec2_default_length_inside_paper_range_and_pos_conv():
    trace = load_model("wav2vec2-large").trace()
    assert 600 <= trace.workload["tokens"] <= 800
    pos = next(op for op in trace if op.role == "pos_conv")
    assert (pos.batch, pos.m, pos.k, pos.n) == (16, 700, 64 * 128, 64)
    convs = [op for op in trace if op.role == "conv"]
    assert [(op.m, op.k) for op in convs[:2]] == [(44799, 10), (22399, 512 * 3)]


def test_gpt2_decode_step_attends_to_cache():
    trace = load_model("gpt2").trace(Workload(tokens=100, phase="decode"))
    qk = next(op for op in trace if op.role == "bmm_qk")
    assert (qk.batch, qk.m, qk.k, qk.n) == (12, 1, 64, 101)
    assert next(op for op in trace if op.role == "qkv").m == 1


@pytest.mark.parametrize(("name", "kv_bytes_per_token"), [("llama-2-7b", 524_288), ("llama-3-8b", 131_072)])
def test_llama_kv_cache_holds_two_tensors_per_layer_of_kv_heads(name, kv_bytes_per_token):
    """KV-cache elements = 2 x layers x batch x tokens x kv_heads x head_dim (design notes: FP16 bytes per
    token 524,288 for Llama-2-7B, 131,072 for Llama-3-8B); a decode step's cache holds tokens + 1."""
    spec = load_model(name)
    cfg = spec.config
    kv, dim = cfg["num_key_value_heads"], cfg["hidden_size"] // cfg["num_attention_heads"]
    for batch, tokens in ((1, 512), (3, 100)):
        trace = spec.trace(Workload(batch=batch, tokens=tokens, phase="decode"))
        state = [t for t in trace.tensors.values() if t.kind == "state"]
        elements = sum(t.elements for t in state)
        assert len(state) == 2 * cfg["num_hidden_layers"]
        assert elements == 2 * cfg["num_hidden_layers"] * batch * (tokens + 1) * kv * dim
        assert elements * 2 == batch * (tokens + 1) * kv_bytes_per_token
        assert sum(t.appended for t in state) == elements // (tokens + 1)  # one new token per sequence


@pytest.mark.parametrize("name", ["llama-2-7b", "llama-3-8b"])
def test_llama_decode_macs_per_token(name):
    """Design notes: MACs per decode token = (params - vocab x hidden - norm weights) + 2 x layers x heads x
    keys x head_dim, whatever the key/value head count (grouped queries share keys, not MACs)."""
    spec = load_model(name)
    cfg = spec.config
    hidden, layers, heads = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    keys = 300
    trace = spec.trace(Workload(tokens=keys - 1, phase="decode"))
    norms = (2 * layers + 1) * hidden
    linear = trace.params - cfg["vocab_size"] * hidden - norms
    assert trace.macs == linear + 2 * layers * heads * keys * (hidden // heads)
    qk = next(op for op in trace if op.role == "bmm_qk")
    group = heads // cfg["num_key_value_heads"]
    assert (qk.batch, qk.m, qk.k, qk.n) == (heads // group, group, hidden // heads, keys)


def test_t5_inner_dim_differs_from_model_width():
    trace = load_model("t5-3b").trace(Workload(tokens=10, decoder_tokens=4))
    q = next(op for op in trace if op.role == "q")
    assert (q.k, q.n, q.bias_params) == (1024, 4096, 0)
    cross_qk = [op for op in trace if op.role == "bmm_qk" and op.name.startswith("decoder") and "cross" in op.name]
    assert (cross_qk[0].m, cross_qk[0].n) == (4, 10)
    assert {op.layer for op in trace if op.name.startswith("decoder.block")} == set(range(24, 48))


@pytest.mark.parametrize("name", zoo_names())
def test_every_op_is_well_formed(name):
    trace = load_model(name).trace()
    assert trace.params > 0 and trace.macs > 0
    for op in trace:
        assert op.group in GROUPS
        assert op.layer >= -1


def test_batch_scales_macs_linearly():
    spec = load_model("bert-base")
    assert spec.trace(Workload(batch=3)).macs == 3 * spec.trace(Workload(batch=1)).macs


@pytest.mark.parametrize(("name", "workload", "message"), [
    ("bert-base", Workload(tokens=513), "positions"),
    ("vit-base", Workload(image_size=390), "divisible"),
    ("wav2vec2-large", Workload(audio_samples=399), "shorter"),
    ("bert-base", Workload(batch=0), "positive"),
    ("bert-base", Workload(head="ctc"), "head"),
    ("gpt2", Workload(tokens=1024, phase="decode"), "positions"),
    ("llama-2-7b", Workload(tokens=4096, phase="decode"), "positions"),
    ("llama-2-7b", Workload(image_size=224), "does not apply"),
])
def test_bad_workloads(name, workload, message):
    with pytest.raises(InputError, match=message):
        load_model(name).trace(workload)


def test_a_resolved_workload_resolves_to_itself():
    for name in zoo_names():
        spec = load_model(name)
        for head in spec.family.heads:
            resolved = spec.resolve(Workload(head=head))
            assert spec.resolve(resolved) == resolved, name


def test_llama_3_1_takes_its_long_context_and_refuses_beyond_it():
    """Llama-3.1-8B: Llama-3-8B's shapes (the same parameter count) with 131,072 positions."""
    spec = load_model("llama-3.1-8b")
    assert spec.trace().params == load_model("llama-3-8b").trace().params == 8_030_261_248
    assert spec.resolve(Workload(tokens=131_072)).tokens == 131_072
    assert spec.resolve(Workload(tokens=131_071, phase="decode")).tokens == 131_071
    with pytest.raises(InputError, match="131073 tokens exceeds the model's 131072 positions"):
        spec.resolve(Workload(tokens=131_072, phase="decode"))


def test_a_scoped_prefill_keeps_the_cache_it_fills():
    """Leaving the head out of a decoder's prefill keeps the KV cache its attention fills (a prefill's cache
    is read by no op of the pass, yet written by it)."""
    trace = load_model("llama-3-8b").trace(Workload(tokens=16))
    scoped = trace.select(exclude=["head"])
    caches = {name for name, tensor in trace.tensors.items() if tensor.kind == "state"}
    assert len(caches) == 64
    assert caches == {name for name, tensor in scoped.tensors.items() if tensor.kind == "state"}


@pytest.mark.parametrize("groups, exclude", [(["fnn"], ()), (None, ["heads"])])
def test_a_group_name_that_names_no_group_is_refused(groups, exclude):
    """A misspelt group selected nothing (or excluded nothing) without a word."""
    trace = load_model("bert-base").trace(Workload(tokens=8))
    assert {op.group for op in trace.select(["ffn"])} == {"ffn"}
    with pytest.raises(InputError, match="^unknown op group '(fnn|heads)'; groups: " + ", ".join(GROUPS) + "$"):
        trace.select(groups, exclude)


def test_evolve_is_replace_without_the_checks() -> None:
    """The engine's fast copy: the same object dataclasses.replace makes, for tensors and ops; an unknown
    field is refused."""
    from dataclasses import replace

    from workloads.ops import Op, Tensor, evolve

    tensor = Tensor("x", "activation", 100, bits=8, scale_group=32, scale_bits=16)
    op = Op("fc", 3, "ffn1", "ffn", "gemm", batch=1, m=4, k=8, n=16, weight_params=128, reads=("x",))
    assert evolve(tensor, bits=4, elements=7) == replace(tensor, bits=4, elements=7)
    assert evolve(op, reads=("y",), writes=("z",), m=9) == replace(op, reads=("y",), writes=("z",), m=9)
    assert evolve(tensor) == tensor and evolve(tensor) is not tensor
    with pytest.raises(TypeError, match="Tensor has no field 'bitz'"):
        evolve(tensor, bitz=4)


def test_the_engines_step_copy_is_replace() -> None:
    """Steps are copied as tensors and ops are (workloads.copying): the same step replace makes."""
    from dataclasses import replace

    from simulator.engine.steps import Step, evolve_step
    from simulator.formats.precision import parse_precision
    from workloads.copying import copier
    from workloads.ops import Op

    op = Op("fc", 3, "ffn1", "ffn", "gemm", batch=1, m=4, k=8, n=16, weight_params=128, reads=("x",))
    step = Step(op, "array", False, parse_precision("int8"), ("x", "fc.weight"), ("y",), operands="int8")
    for copy in (evolve_step, copier(Step)):  # the engine's, made at import, and one made here
        grown = copy(step, op=replace(op, m=9), writes=("z",))
        assert grown == replace(step, op=replace(op, m=9), writes=("z",)) and grown.operands == "int8"
        assert type(grown) is Step and copy(step) == step and copy(step) is not step
        with pytest.raises(TypeError, match="^Step has no field 'unitt'$"):
            copy(step, unitt="sfu")
        with pytest.raises(TypeError, match="positional"):
            copy(step, op)  # fields by keyword only
