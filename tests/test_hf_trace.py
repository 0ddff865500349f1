"""Closed-form traces equal the ops that real Hugging Face models execute (hf extra; never skipped).

Matrix ops (GEMM / BMM / convolution) must match one for one, in order. Vector ops are compared as
element totals per role: a traced model also runs element-wise index arithmetic (position buckets,
mask construction) that the closed form does not model, so scalar multiplies (``mul``) are left out
of the comparison and the roles below are compared.
"""

from collections import defaultdict

import pytest

from workloads.hf_trace import hf_num_parameters, trace_hf
from workloads.models import Workload, load_model, zoo_names

pytestmark = pytest.mark.hf
COMPARED_VECTOR_ROLES = ("softmax", "layernorm", "groupnorm", "gelu", "relu", "tanh", "add", "embedding")


def matrix_shapes(trace):
    return [(op.kind, op.batch, op.m, op.k, op.n) for op in trace if op.is_matrix]


def vector_totals(trace):
    totals = defaultdict(int)
    for op in trace:
        if op.kind == "vector" and op.role in COMPARED_VECTOR_ROLES:
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


CASES = [(name, small(name)) for name in zoo_names()] + [
    ("gpt2", Workload(batch=2, tokens=13, phase="decode")),
    ("gpt2", Workload(batch=1, tokens=9, head="none")),
    ("bert-base", Workload(batch=1, tokens=9, head="pooler")),
    ("bert-base", Workload(batch=1, tokens=9, head="none")),
    ("roberta-base", Workload(batch=1, tokens=9, head="pooler")),
    ("vit-base", Workload(batch=1, image_size=48, head="pooler")),
    ("vit-base", Workload(batch=1, head="none")),
    ("wav2vec2-large", Workload(batch=1, tokens=20, head="none")),
    ("t5-3b", Workload(batch=1, tokens=5, decoder_tokens=9, head="none")),
    ("transformer-base", Workload(batch=1, tokens=6)),
    # The paper's workloads at full size (meta tensors make this cheap).
    ("bert-base", Workload()),
    ("vit-base", Workload()),
    ("wav2vec2-large", Workload()),
]


@pytest.mark.parametrize(("name", "workload"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_closed_form_equals_traced(name, workload):
    spec = load_model(name)
    closed = spec.trace(workload)
    traced = trace_hf(spec, spec.resolve(workload))
    assert matrix_shapes(closed) == matrix_shapes(traced)
    assert vector_totals(closed) == vector_totals(traced)


def test_transformer_base_shares_one_embedding_table():
    """Vaswani et al.'s base model shares one 37000 x 512 table between the encoder input, the decoder
    input and the pre-softmax projection: 63,082,496 parameters (the paper rounds its count to 65M)."""
    spec = load_model("transformer-base")
    assert spec.trace().params == 63_082_496
    assert hf_num_parameters(spec, spec.resolve(Workload())) - spec.family.hf_non_trace_params(spec.config) == (
        63_082_496)


@pytest.mark.parametrize("name", zoo_names())
def test_parameter_totals_equal_hf(name):
    spec = load_model(name)
    for head in spec.family.heads:
        wl = spec.resolve(Workload(head=head))
        expected = hf_num_parameters(spec, wl) - spec.family.hf_non_trace_params(spec.config)
        assert spec.trace(wl).params == expected, head
