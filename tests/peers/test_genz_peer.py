"""Tensor parallelism's collectives against GenZ (``genz-llm`` 0.0.16), run as a subprocess in its own venv.

On the same model, prompt, batch and tensor-parallel degree, accelsim's trace carries the collectives GenZ
models, with the same tensors: an all-reduce after the vocabulary-parallel embedding, two per block (after
attention and after the feed-forward), an all-gather of the logits. Their times follow the same ring closed
form, 2 (n - 1) / n x B / bandwidth + 2 (n - 1) x latency for an all-reduce, (n - 1) / n x B / bandwidth +
(n - 1) x latency for an all-gather, on accelsim's switch system with one link per chip (GenZ's ring runs at
one link's bandwidth, and reads "GB/s" as 2^30 B/s), but for the fixed 5 us GenZ adds to every collective.
A missing GenZ fails the test.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from simulator.engine.collectives import collective_cost
from simulator.spec.system import Interconnect
from verification.genz_peer import GIB, genz_collectives
from workloads.models import Workload, load_model

pytestmark = pytest.mark.slow

GENZ_START_S = 5e-6  # GenZ's fixed start of every collective (collective_times.py)
NAMES = {"Emb_AR": "embed_tokens.all_reduce", "MHA AR": "layers.0.self_attn.all_reduce",
         "FFN AR": "layers.0.mlp.all_reduce", "classifier_AG": "lm_head.all_gather"}


@pytest.mark.parametrize(("tp", "batch", "tokens"), [(2, 1, 512), (4, 2, 256), (8, 1, 512)])
def test_collectives_equal_genz(tp, batch, tokens, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"  # the driver's temporary directory: GenZ writes the model's layers there
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    started = time.time()
    theirs = genz_collectives("llama2_70b", tokens, batch, tp, link_gb=100, latency_us=1.0)
    assert not list(scratch.iterdir())  # nothing of the peer's run outlives it
    genz_default = Path("/tmp/genz/data/model")  # where GenZ writes when not told otherwise
    assert not genz_default.exists() or all(path.stat().st_mtime < started for path in genz_default.iterdir())
    assert [row["name"] for row in theirs] == list(NAMES)
    trace = load_model("llama-2-70b").trace(Workload(tokens=tokens, batch=batch, tp=tp))
    ops = {op.name: op for op in trace if op.kind == "collective"}
    assert len(ops) == 2 * 80 + 2  # GenZ lists one block's two, repeated 80 times
    links = Interconnect(topology="switch", links_per_chip=1, link_gb_per_s=100 * GIB / 1e9, link_latency_us=1.0,
                         link_pj_per_bit=0)
    for row in theirs:
        op = ops[NAMES[row["name"]]]
        assert op.elements == batch * math.prod(row["dims"][1:]) and row["dims"][0] == batch, row
        ours = collective_cost(op.role, 2 * op.elements, tp, links)  # bf16 activations
        assert ours.seconds + GENZ_START_S == pytest.approx(row["time_ms"] / 1e3, rel=1e-12), row
