"""Mixtral: a Mistral-style decoder whose feed-forward sublayer is a mixture of experts.

Each block's feed-forward is a router and E SwiGLU experts. The router is a GEMM to E logits per token,
a softmax, a top-k selection (k passes over the E scores) and a renormalisation of the k kept scores.
Each token then runs through its k experts: the expert's fused gate/up projection, SiLU (``hidden_act``) of the gate
times the up projection, the down projection, and a multiply by the token's routing weight; the k
weighted outputs of a token are summed. Hugging Face stores an expert's gate and up projections as one
matrix (``gate_up_proj``) and so does this trace.

Routing depends on the data; the trace uses the expected routing of independent, uniformly routed
tokens:

- **Experts touched.** R routed tokens (batch x new tokens) reach E (1 - (1 - k/E)^R) distinct experts
  on average: k for one decode token, E for a long prompt. A whole number of experts runs in each layer:
  layer l runs round((l + 1) D) - round(l D) of them, so that the model as a whole runs the expected
  count D per layer (to within one expert over all layers). Only those experts' weights are read; the
  others are stored (``Op.held``) but cost no traffic and no time.
- **Tokens per expert.** The R k token-expert pairs spread evenly over the touched experts, unless
  ``expert_imbalance`` f > 1: the busiest expert then takes f times the mean load (at most every token,
  and leaving one token to each other touched expert), and the rest spread evenly over the others.
  f runs from 1 (even) to E / k (the busiest expert takes every token when all are touched).

Each expert reads the whole routed activation (the rows it gathers are not modelled apart).

Split over ``ep`` chips (workloads/parallel.py), each chip runs its batch / ep sequences' tokens through the
router, sends the routed copies to the experts' chips (an all-to-all), runs its E / ep experts on 1 / ep of
the expected experts touched by all chips' tokens (at least one) and of their token-expert pairs, gathers
the weighted results (one copy on the vector unit) and returns them (a second all-to-all).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from workloads.builder import OpBuilder
from workloads.errors import InputError
from workloads.families.base import Workload
from workloads.families.config_keys import activation
from workloads.families.llama import LlamaFamily, tensor_parallel
from workloads.parallel import ExpertParallel


def expected_experts(routed: int, experts: int, top_k: int) -> float:
    """Expected distinct experts that ``routed`` tokens reach, each picking ``top_k`` of ``experts``."""
    return experts * (1.0 - (1.0 - top_k / experts) ** routed)


def experts_touched(layer: int, expected: float) -> int:
    """Whole experts layer ``layer`` runs, so that layers 0..L-1 together run round(L x expected)."""
    return math.floor((layer + 1) * expected + 0.5) - math.floor(layer * expected + 0.5)


def expert_loads(routed: int, top_k: int, touched: int, imbalance: float = 1.0, chips: int = 1) -> list[int]:
    """Tokens each of the ``touched`` experts computes (busiest first); they sum to routed x top_k / chips
    (the share of one of ``chips`` chips holding the experts, ``routed`` the tokens of all of them)."""
    pairs = routed * top_k // chips
    mean = pairs / touched
    busiest = max(math.ceil(mean), math.floor(imbalance * mean + 0.5))
    busiest = min(busiest, routed, pairs - (touched - 1))
    rest, others = pairs - busiest, touched - 1
    return [busiest, *(rest // others + (1 if index < rest % others else 0) for index in range(others))]


def imbalance_of(cfg: Mapping[str, Any], wl: Workload) -> float:
    value = 1.0 if wl.expert_imbalance is None else wl.expert_imbalance
    most = cfg["num_local_experts"] / cfg["num_experts_per_tok"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 1.0 <= value <= most:
        raise InputError(f"--expert-imbalance must be a number from 1 (even) to num_local_experts / "
                         f"num_experts_per_tok = {most:g}, got {value!r}")
    return float(value)


class MixtralFamily(LlamaFamily):
    model_types = ("mixtral",)
    expert_parallel = True
    required = (*LlamaFamily.required, "num_local_experts", "num_experts_per_tok")
    knobs = ("tokens", "expert_imbalance")

    def blocks_alike(self, cfg: Mapping[str, Any]) -> bool:
        """Never: each block routes its tokens to its own experts."""
        return False

    def resolve(self, cfg: Mapping[str, Any], wl: Workload) -> Workload:
        experts, top_k = cfg["num_local_experts"], cfg["num_experts_per_tok"]
        if top_k > experts:
            raise InputError(f"num_experts_per_tok={top_k} exceeds num_local_experts={experts}")
        wl = super().resolve(cfg, wl)
        imbalance_of(cfg, wl)
        return wl

    def feed_forward(self, b: OpBuilder, cfg: Mapping[str, Any], wl: Workload, prefix: str, layer: int,
                     rows: int) -> None:
        hidden = cfg["hidden_size"]
        inner = tensor_parallel(wl).columns(cfg["intermediate_size"], "intermediate_size")  # each expert split
        experts, top_k = cfg["num_local_experts"], cfg["num_experts_per_tok"]
        act_fn = activation(cfg, "hidden_act", "silu")
        ep = ExpertParallel(wl.ep or 1)
        x = b.current
        router = b.gemm(f"{prefix}.gate", layer, "router", "ffn", rows, hidden, experts, bias=False, reads=x)
        b.vector(f"{prefix}.gate.softmax", layer, "softmax", "ffn", rows * experts, reads=(router,))
        b.vector(f"{prefix}.gate.topk", layer, "topk", "ffn", rows * experts * top_k)
        # the k kept scores summed and divided by their sum
        weights = b.vector(f"{prefix}.gate.normalize", layer, "mul", "ffn", 2 * rows * top_k)
        if ep.split:  # each routed token copy to its expert's chip
            x = b.collective(f"{prefix}.dispatch", layer, "all_to_all", "ffn", rows * top_k * hidden, ep.degree)
        # this chip's experts: 1 / ep of the expected experts touched and of the token-expert pairs of all chips
        local = ep.experts(experts)
        touched = experts_touched(layer, expected_experts(rows * ep.degree, experts, top_k) / ep.degree)
        touched = min(max(touched, 1), rows * top_k)  # a share of the pairs below one expert still runs one
        routed = []
        for e, load in enumerate(expert_loads(rows * ep.degree, top_k, touched, imbalance_of(cfg, wl), ep.degree)):
            p = f"{prefix}.experts.{e}"
            b.gemm(f"{p}.gate_up_proj", layer, "ffn1", "ffn", load, hidden, 2 * inner, bias=False, reads=x,
                   parts=("gate", "up"))
            act = b.vector(f"{p}.{act_fn}", layer, act_fn, "ffn", load * inner, reads=(f"{p}.gate_up_proj.gate",))
            b.vector(f"{p}.gate_mul", layer, "mul", "ffn", load * inner, reads=(act, f"{p}.gate_up_proj.up"))
            down = b.gemm(f"{p}.down_proj", layer, "ffn2", "ffn", load, inner, hidden, bias=False)
            routed.append(b.vector(f"{p}.route", layer, "mul", "ffn", load * hidden, reads=(down, weights)))
        if ep.split:  # the weighted results back to their tokens' chips
            b.vector(f"{prefix}.experts.gather", layer, "concat", "ffn", rows * top_k * hidden, reads=tuple(routed))
            routed = [b.collective(f"{prefix}.combine", layer, "all_to_all", "ffn", rows * top_k * hidden, ep.degree)]
        b.vector(f"{prefix}.experts.combine", layer, "add", "ffn", rows * top_k * hidden, reads=tuple(routed))
        if touched < local:
            b.held(f"{prefix}.experts.held.gate_up_proj", layer, "ffn1", "ffn", local - touched, hidden, 2 * inner)
            b.held(f"{prefix}.experts.held.down_proj", layer, "ffn2", "ffn", local - touched, inner, hidden)
