"""Closed-form traces equal the ops that real Hugging Face models execute (hf extra; never skipped).

Matrix ops (GEMM / BMM / convolution) must match one for one, in order. Vector ops are compared as
element totals per role: a traced model also runs element-wise index arithmetic (position buckets,
mask construction) that the closed form does not model, so scalar multiplies (``mul``) are left out
of the comparison and the roles below are compared. Grouped-query attention is compared after folding
Hugging Face's copies of each key/value head (``repeat_kv``) into one product per key/value head with
its group's queries stacked, as the closed form runs it.
"""

from collections import defaultdict
from pathlib import Path

import pytest
from cli_helpers import ROOT, TESTS

from workloads.hf_model import hf_num_parameters
from workloads.hf_trace import trace_hf
from workloads.models import Workload, load_model, zoo_names

pytestmark = pytest.mark.hf
QWEN2 = str(TESTS / "configs" / "qwen2-0.5b.json")
OPT_POST_LN = str(TESTS / "configs" / "opt-350m.json")
OPT_SERVE = [str(TESTS / "configs" / f"opt-serve{name}-6.json") for name in ("", "-post-ln", "-plain")]
MISTRAL_W8 = str(TESTS / "configs" / "mistral-window-8.json")
QWEN2_W8 = str(TESTS / "configs" / "qwen2-window-8.json")
COMPARED_VECTOR_ROLES = ("softmax", "layernorm", "rmsnorm", "groupnorm", "gelu", "relu", "tanh", "silu", "rope",
                         "rope_table", "add", "embedding")


def matrix_shapes(trace, kv_group=1):
    """(kind, batch, m, k, n) per matrix op; ``kv_group`` query heads per key/value head folds a traced
    model's per-query-head attention products into per-key/value-head ones."""
    return [(op.kind, op.batch // kv_group, op.m * kv_group, op.k, op.n) if op.kind == "bmm" else
            (op.kind, op.batch, op.m, op.k, op.n) for op in trace if op.is_matrix]


def kv_group(spec):
    cfg = spec.config
    return cfg.get("num_attention_heads", 1) // (cfg.get("num_key_value_heads") or cfg.get("num_attention_heads", 1))


def vector_totals(trace):
    totals = defaultdict(int)
    for op in trace:
        if op.kind == "vector" and op.role in COMPARED_VECTOR_ROLES and op.elements:  # not parameter holders
            totals[op.role] += op.elements
    return dict(totals)


def small(name):
    """Workloads small enough to trace every zoo model in seconds, with shapes that are all distinct."""
    if name.startswith("vit"):
        return Workload(batch=2, image_size=64)
    if name.startswith("wav2vec2"):
        return Workload(batch=2, audio_samples=8000)
    if name in ("t5-3b", "transformer-base"):
        return Workload(batch=2, tokens=11, decoder_tokens=7)
    return Workload(batch=2, tokens=13)


MOE = ("mixtral-8x7b",)  # routing is data-dependent: compared in test_moe_trace.py
CASES = [(name, small(name)) for name in zoo_names() if name not in MOE] + [
    ("gpt2", Workload(batch=2, tokens=13, phase="decode")),
    ("llama-2-7b", Workload(batch=2, tokens=13, phase="decode")),
    ("llama-3-8b", Workload(batch=2, tokens=13, phase="decode")),
    ("llama-3-8b", Workload(batch=1, tokens=9, head="none")),
    ("llama-2-7b", Workload(batch=2, tokens=13, logits_to_keep=1)),  # generate()'s prefill: the last position
    ("gpt2", Workload(batch=2, tokens=13, logits_to_keep=3)),
    (QWEN2, Workload(batch=2, tokens=13)),  # q/k/v biases, an unbiased output projection, a tied head
    (QWEN2, Workload(batch=2, tokens=13, phase="decode")),
    ("opt-1.3b", Workload(batch=2, tokens=13, phase="decode")),
    (OPT_POST_LN, Workload(batch=2, tokens=13)),  # post-LN, embeddings projected in and out
    (OPT_POST_LN, Workload(batch=1, tokens=9, phase="decode")),
    (MISTRAL_W8, Workload(batch=2, tokens=12)),  # a prefill longer than the window: every score, masked
    (MISTRAL_W8, Workload(batch=2, tokens=12, phase="decode")),  # the step attends to the last 8 keys
    (MISTRAL_W8, Workload(batch=1, tokens=5, phase="decode")),  # within the window
    (QWEN2_W8, Workload(batch=2, tokens=12)),  # block 0 full attention, block 1 through the window
    (QWEN2_W8, Workload(batch=2, tokens=12, phase="decode")),
    ("gpt2", Workload(batch=1, tokens=9, head="none")),
    ("bert-base", Workload(batch=1, tokens=9, head="pooler")),
    ("bert-base", Workload(batch=1, tokens=9, head="none")),
    ("roberta-base", Workload(batch=1, tokens=9, head="pooler")),
    ("vit-base", Workload(batch=1, image_size=48, head="pooler")),
    ("vit-base", Workload(batch=1, head="none")),
    ("wav2vec2-large", Workload(batch=1, tokens=20, head="none")),
    ("t5-3b", Workload(batch=1, tokens=5, decoder_tokens=9, head="none")),
    ("transformer-base", Workload(batch=1, tokens=6)),
    # encoder-decoder decode steps: the decoder alone, self-attention cache appended, cross-attention cache read
    ("t5-3b", Workload(batch=2, tokens=11, decoder_tokens=7, phase="decode")),
    ("t5-3b", Workload(batch=1, tokens=5, decoder_tokens=9, head="none", phase="decode")),
    ("transformer-base", Workload(batch=2, tokens=11, decoder_tokens=7, phase="decode")),
    # The paper's workloads at full size (meta tensors make this cheap).
    ("bert-base", Workload()),
    ("vit-base", Workload()),
    ("wav2vec2-large", Workload()),
]


def ops_match(closed, traced, spec):
    """The matrix ops one for one, in order; the vector ops' element totals per compared role."""
    assert matrix_shapes(closed) == matrix_shapes(traced, kv_group(spec))
    assert vector_totals(closed) == vector_totals(traced)


def ops_named_placed_and_owned(closed, traced, spec, resolved):
    """Traced ops get module-path names, and the same roles, blocks and groups as the closed form for
    every matrix op (so policies and pruning apply alike); they own every parameter exactly once."""
    placed = [(op.role, op.layer, op.group) for op in traced if op.is_matrix]
    assert placed == [(op.role, op.layer, op.group) for op in closed if op.is_matrix]
    assert traced.params == hf_num_parameters(spec, resolved)
    assert not [op.name for op in traced if op.name.startswith("traced.")]
    assert len({op.name for op in traced}) == len(traced)


def operand_graph(trace):
    """Per matrix op (in order): the earlier matrix ops reading the same operand tensors (A, and a BMM's
    B), the role of the op that wrote each operand, and whether a weight operand is another op's
    (tied). Names differ between closed and traced traces; this structure is what must agree."""
    writer = {name: op for op in trace for name in op.writes}
    matrix = [op for op in trace if op.is_matrix]
    graph = []
    for i, op in enumerate(matrix):
        operands = op.reads[:2] if op.kind == "bmm" else op.reads[:1]
        shared = tuple(tuple(j for j in range(i) if name in matrix[j].reads[:2]) for name in operands)
        made_by = tuple(writer[name].role if name in writer else trace.tensors[name].kind for name in operands)
        weights = [name for name in op.reads[1:] if trace.tensors[name].kind == "weight"]
        tied = op.kind != "bmm" and bool(weights) and not op.weight_params
        graph.append((op.role, shared, made_by, tied))
    return graph


@pytest.mark.parametrize(("name", "workload"), CASES, ids=[f"{Path(n).stem}-{i}" for i, (n, _) in enumerate(CASES)])
def test_closed_form_equals_traced(name, workload):
    """The real model, traced once, against the closed form: its ops (:func:`ops_match`), their names,
    places and parameters (:func:`ops_named_placed_and_owned`), and its tensors with identity (q, k and v
    read one tensor; cross-attention k and v read the encoder output, not the decoder's; BMMs read the
    projections or, in a decode step, the KV cache as state; a tied head reads the embedding table)."""
    spec = load_model(name)
    resolved = spec.resolve(workload)
    closed = spec.trace(workload)
    traced = trace_hf(spec, resolved)
    ops_match(closed, traced, spec)
    ops_named_placed_and_owned(closed, traced, spec, resolved)
    assert operand_graph(closed) == operand_graph(traced)


def test_transformer_base_shares_one_embedding_table():
    """Vaswani et al.'s base model shares one 37000 x 512 table between the encoder input, the decoder
    input and the pre-softmax projection: 63,082,496 parameters (the paper rounds its count to 65M)."""
    spec = load_model("transformer-base")
    assert spec.trace().params == 63_082_496
    assert hf_num_parameters(spec, spec.resolve(Workload())) - spec.family.hf_non_trace_params(spec.config) == (
        63_082_496)


@pytest.mark.parametrize("name", [*zoo_names(), OPT_POST_LN, *OPT_SERVE])
def test_parameter_totals_equal_hf(name):
    spec = load_model(name)
    for head in spec.family.heads:
        wl = spec.resolve(Workload(head=head))
        expected = hf_num_parameters(spec, wl) - spec.family.hf_non_trace_params(spec.config)
        assert spec.trace(wl).params == expected, head


@pytest.mark.parametrize(("name", "workload"), [
    ("bert-base", Workload(tokens=64)), ("vit-base", Workload(image_size=224)),
    ("gpt2", Workload(tokens=64, phase="decode")), ("t5-3b", Workload(tokens=16, decoder_tokens=4)),
    ("wav2vec2-large", Workload(audio_samples=32000)), ("transformer-base", Workload(tokens=12))])
def test_simulating_the_traced_model_agrees_with_the_closed_form(name, workload):
    """`run --trace`: the array does the same work (exactly; 2:4 pruning finds the same six roles), and
    the whole run agrees to 0.01% (the closed form leaves out a few scalar multiplies HF runs)."""
    from simulator.analysis.paper import model_trace
    from simulator.engine import simulate
    from simulator.spec.hardware import load_hardware
    from simulator.spec.run_config import load_run_config

    hardware, policy = load_hardware("rapid_like"), load_run_config("int8_sp")
    closed = simulate(model_trace(name, workload), hardware, policy)
    traced = simulate(model_trace(name, workload, traced=True), hardware, policy)

    def array(results):
        rows = results[results.unit == "array"]
        return int(rows["compute_cycles"].sum()), int(rows["macs"].sum())

    assert array(traced) == array(closed)
    assert traced.totals["total_cycles"] == pytest.approx(closed.totals["total_cycles"], rel=1e-4)
    # Same tensors, so the same data movement: to the byte, but for ViT's class token (770 bytes), which
    # HF joins with a concatenation (not a vector-unit op) and the closed form with a ``concat`` op, and
    # for the caches a prefill fills, which HF stores without an op (int8: a byte per element written).
    cls_token = 770 if name.startswith("vit") else 0
    states = model_trace(name, workload).tensors.values()
    filled = 0 if workload.phase == "decode" else sum(t.appended for t in states if t.kind == "state")
    assert filled > 0 or name not in ("t5-3b", "transformer-base")
    assert closed.totals["dram_bytes"] - traced.totals["dram_bytes"] == cls_token + filled


def test_sweep_over_traced_models(tmp_path):
    from cli_helpers import accelsim

    for traced in ("false", "true"):
        (tmp_path / f"{traced}.yaml").write_text(f"name: t\nhardware: rapid_like\nconfigs: [int8_sp]\ntrace: {traced}\n"
                                                 "models: [{name: bert-base, tokens: 32}]\n")
        result = accelsim("sweep", str(tmp_path / f"{traced}.yaml"), "--out", str(tmp_path / traced), "--workers", "1")
        assert result.returncode == 0, result.stderr
    closed, traced = ((tmp_path / d / "results.csv").read_text().splitlines()[1] for d in ("false", "true"))
    assert closed.split(",")[3:] == traced.split(",")[3:]  # same numbers; the point id differs with the plan


BIGCODE_TINY = {"model_type": "gpt_bigcode", "vocab_size": 1000, "n_embd": 64, "n_layer": 2, "n_head": 4,
                "n_positions": 128, "multi_query": True, "bos_token_id": 0, "eos_token_id": 0}
GEMMA_TINY = {"model_type": "gemma", "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 176,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
              "max_position_embeddings": 128}


def test_a_family_without_closed_form_is_traced_or_refused(tmp_path):
    """Any model transformers builds on the meta device can be simulated with --trace, as long as its
    element-wise work maps to vector-unit roles; otherwise it is refused, naming the ops."""
    import json

    from cli_helpers import accelsim, accelsim_leaving_nothing

    bigcode, gemma = tmp_path / "bigcode.json", tmp_path / "gemma.json"
    bigcode.write_text(json.dumps(BIGCODE_TINY))
    gemma.write_text(json.dumps(GEMMA_TINY))
    closed = accelsim("run", "int8", "--model", str(bigcode), "--tokens", "8")
    assert closed.returncode == 2 and "add --trace" in closed.stderr
    spec = load_model(str(bigcode))
    for head in ("none", "lm"):
        workload = spec.resolve(Workload(tokens=8, head=head))
        traced = trace_hf(spec, workload)
        assert traced.params == hf_num_parameters(spec, workload)
        roles = [op.role for op in traced if op.is_matrix and op.layer == 1]
        assert roles == ["qkv", "bmm_qk", "bmm_av", "attn_out", "ffn1", "ffn2"]  # StarCoder: one shared K/V head
    # the run's temporary directory: torch's compiler cache goes there, and away
    run = accelsim_leaving_nothing(tmp_path / "scratch", "run", "int8_sp", "--model", str(bigcode), "--tokens", "8",
                                   "--trace", "--format", "json")
    assert json.loads(run.stdout)["speedup_vs_baseline"] > 1
    refused = accelsim("run", "int8", "--model", str(gemma), "--tokens", "8", "--trace")
    assert refused.returncode == 2 and "aten.pow" in refused.stderr and len(refused.stderr.splitlines()) == 1


ZOO = ROOT / "workloads" / "zoo"


@pytest.mark.parametrize(("base", "change", "stage"), [  # each ended in an internal error (--trace)
    (ZOO / "gpt2.json", {"pad_token_id": -0.5}, "cannot build model_type 'gpt2'"),  # its config validation
    (TESTS / "configs" / "opt-350m.json", {"layer_types": []}, "cannot build model_type 'opt'"),
    (ZOO / "bert-base.json", {"hidden_dropout_prob": 1.5}, "cannot build the model from its config"),  # torch
    (ZOO / "gpt2.json", {"sliding_window": -0.5}, "cannot run the model of its config"),  # torch, in the forward
])
def test_a_config_transformers_refuses_is_bad_input(tmp_path, base, change, stage):
    import json

    from workloads.errors import InputError

    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads(Path(base).read_text()), **change}))
    spec = load_model(str(path))
    with pytest.raises(InputError, match=f"transformers {stage}"):
        trace_hf(spec, spec.resolve(Workload(tokens=8)))


def test_an_error_of_accelsims_own_recorder_stays_an_internal_error(monkeypatch):
    """Only what transformers or torch raise is the config's: accelsim's recorder runs inside their calls, and
    a defect of its own must not read as bad input."""
    import workloads.hf_trace as hf_trace

    def broken(self, *args, **kwargs):
        return hf_trace._prod(None)  # raises in accelsim's code, as a defect of the recorder would

    monkeypatch.setattr(hf_trace._Recorder, "follow", broken)
    spec = load_model("gpt2")
    with pytest.raises(TypeError):
        trace_hf(spec, spec.resolve(Workload(tokens=8)))


def test_a_label_count_transformers_would_name_out_of_memory_is_refused(tmp_path):
    """transformers writes a name for every label of a config: a RoBERTa of 2^40 labels (its head is not a
    classifier) exhausted the machine's memory under --trace; past 2^31 - 1 it is not a size."""
    import json

    from workloads.errors import InputError
    from workloads.hf_model import MAX_LABELS

    base = json.loads((ZOO / "roberta-base.json").read_text())
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**base, "num_labels": 2**40}))
    with pytest.raises(InputError, match="key 'num_labels' = 1099511627776 exceeds the largest accepted size"):
        load_model(str(path))
    path.write_text(json.dumps({**base, "num_labels": MAX_LABELS + 1}))
    spec = load_model(str(path))
    with pytest.raises(InputError, match="num_labels 1048577 is more than --trace builds"):
        trace_hf(spec, spec.resolve(Workload(tokens=8)))
