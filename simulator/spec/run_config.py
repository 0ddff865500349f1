"""Run configs: which precision and sparsity every op gets (pydantic schema + pure resolution).

```yaml
name: int4_sp
hardware: rapid_like            # preset under configs/hardware/ or a path
precision:                      # formats per side and their scales: see precision_config.py
  default: int4                 # weights and input activations of every op not matched below
  ops: {bmm_av: int8}           # per op role (a format, or {weights: .., activations: ..})
  groups: {}                    # per layer group
  layers: {"0-7": int2}         # per block index range (inclusive)
  bias: int32                   # biases (default: their layer's weight format)
  scale_bits: 16                # one scale factor per output channel of integer weights
sparsity:
  weights: {pattern: "2:4", roles: [q, k, v, attn_out, ffn1, ffn2]}
  attention: {probabilities: "2:8", keys: "2:4"}   # N:M selected at run time on the attention operands
outliers: {dims: 8, precision: fp16}
baseline: int4                  # dense config speedups are measured against (file next to this one)
```

A more specific setting wins: layers > groups > ops > default.
"""

from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from simulator.formats.precision import Precision, parse_precision
from simulator.formats.scales import takes_scales
from simulator.formats.sparsity import SparsityPattern
from simulator.spec.config_io import StrictModel, read_yaml_mapping, validate
from simulator.spec.precision_config import NATIVE, PrecisionConfig, check_format, parse_layer_range, resolve_side
from simulator.spec.system import ParallelPlan
from workloads.errors import InputError
from workloads.ops import MAX_SIZE, Op, Trace

if TYPE_CHECKING:
    from simulator.spec.hardware import Hardware
from workloads.vocabulary import PRUNED_LINEAR_ROLES, WEIGHT_MATRIX_ROLES


class WeightSparsityConfig(StrictModel):
    pattern: str | None = Field(None, description="structured N:M along K, e.g. '2:4'")
    density: float | None = Field(None, gt=0, le=1, description="unstructured: seeded magnitude pruning")
    mask: str | None = Field(None, description="masks from .npy, .npz or .safetensors keyed by op name, or a "
                                               "checkpoint directory; with pattern, masks that must follow it")
    mask_layout: str = Field("out_in", description="out_in (PyTorch Linear weight, N x K) or in_out (K x N)")
    seed: int = 0
    through_masks: bool = Field(False, description="with pattern: time seeded N:M masks with the mask kernel "
                                                   "instead of the closed form (a cross-check)")
    roles: list[str] = Field(default_factory=lambda: list(PRUNED_LINEAR_ROLES))

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, text: str | None) -> str | None:
        return _check_pattern(text)

    @field_validator("roles")
    @classmethod
    def _roles(cls, roles: list[str]) -> list[str]:
        for role in roles:
            if role not in WEIGHT_MATRIX_ROLES:
                raise ValueError(f"role {role!r} has no weight matrix to prune; "
                                 f"roles: {', '.join(WEIGHT_MATRIX_ROLES)}")
        return roles

    @field_validator("mask_layout")
    @classmethod
    def _layout(cls, text: str) -> str:
        if text not in ("out_in", "in_out"):
            raise ValueError(f"mask_layout must be out_in or in_out, got {text!r}")
        return text

    @model_validator(mode="after")
    def _exactly_one(self) -> WeightSparsityConfig:
        given = [key for key in ("pattern", "density", "mask") if getattr(self, key) is not None]
        if len(given) != 1 and given != ["pattern", "mask"]:
            raise ValueError("give exactly one of pattern, density or mask (or a pattern and the mask that "
                             "follows it)")
        if self.through_masks and (self.pattern is None or self.mask is not None):
            raise ValueError("through_masks applies to a pattern's seeded masks (density and mask always use masks)")
        return self

    @property
    def uses_masks(self) -> bool:
        return self.pattern is None or self.through_masks or self.mask is not None


def _check_pattern(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return str(SparsityPattern.parse_pruning(text))
    except InputError as exc:
        raise ValueError(str(exc)) from None


class AttentionSparsityConfig(StrictModel):
    """N:M patterns on the attention products' operands, chosen at run time by the vector unit (seed 002's
    GEMM-MHA): the N largest of every M consecutive values along the product's reduction dimension."""

    probabilities: str | None = Field(None, description="softmax output, along each row's keys (softmax x V)")
    keys: str | None = Field(None, description="each key vector, along head_dim (Q x K^T); a KV cache keeps "
                                               "them compressed")

    @field_validator("probabilities", "keys")
    @classmethod
    def _patterns(cls, text: str | None) -> str | None:
        return _check_pattern(text)

    @model_validator(mode="after")
    def _any(self) -> AttentionSparsityConfig:
        if self.probabilities is None and self.keys is None:
            raise ValueError("give probabilities, keys or both")
        return self

    def pattern(self, role: str) -> SparsityPattern | None:
        """The pattern on the pruned operand of the attention product ``role`` (bmm_qk or bmm_av), if any."""
        text = {"bmm_qk": self.keys, "bmm_av": self.probabilities}.get(role)
        return SparsityPattern.parse(text) if text is not None else None


# The operand of each attention product that a pattern prunes (0: A, 1: B), along the product's K.
PRUNED_OPERAND = {"bmm_qk": 1, "bmm_av": 0}


class SparsityConfig(StrictModel):
    weights: WeightSparsityConfig | None = None
    attention: AttentionSparsityConfig | None = None


class AttentionKernelConfig(StrictModel):
    """How attention runs (docs/engine.md, "Attention kernels"): ``materialized`` writes each head's score
    matrix out, soft-maxes it and reads it back; ``fused`` tiles queries and keys, keeps scores on chip with
    an online softmax and skips the blocks a causal mask or a window removes. Without ``kernel``, decoder
    attention runs fused and encoder attention materialized. ``block_q`` (query positions) and ``block_k``
    (keys) pin the fused kernel's blocks; without them the simulator picks the fastest that fit."""

    kernel: Literal["fused", "materialized"] | None = None
    block_q: int | None = Field(None, gt=0, le=MAX_SIZE, description="query positions per block (fused)")
    block_k: int | None = Field(None, gt=0, le=MAX_SIZE, description="keys per block (fused)")

    @model_validator(mode="after")
    def _blocks_need_fused(self) -> AttentionKernelConfig:
        if self.kernel == "materialized" and (self.block_q is not None or self.block_k is not None):
            raise ValueError("block_q and block_k apply to the fused kernel, not to materialized")
        return self


class OutlierConfig(StrictModel):
    dims: int = Field(gt=0, description="input dimensions (rows of K) of each weight matrix kept at high precision")
    precision: str = "fp16"

    @field_validator("precision")
    @classmethod
    def _p(cls, text: str) -> str:
        return check_format(text)


class RunConfig(StrictModel):
    name: str
    description: str = ""
    hardware: str
    precision: PrecisionConfig
    sparsity: SparsityConfig = Field(default_factory=SparsityConfig)
    outliers: OutlierConfig | None = None
    attention: AttentionKernelConfig = Field(default_factory=AttentionKernelConfig)
    baseline: str | None = Field(None, description="dense run config that speedups are measured against")
    parallel: ParallelPlan | None = Field(None, description="optional: the split over a system's chips "
                                                            "(command-line options and sweeps override it)")

    @property
    def is_sparse(self) -> bool:
        return self.sparsity.weights is not None or self.sparsity.attention is not None

    def simulation_key(self, native: str | None = None) -> str:
        """JSON of what changes a chip's results (names, hardware, baseline and the parallel plan, which the
        workload carries, left out); with
        ``native``, the hardware's vector-unit format, "native" formats read as that format (the only
        string value "native" can be in a config is a format)."""
        key = json.dumps(self.model_dump(exclude={"name", "description", "hardware", "baseline", "parallel"}),
                         sort_keys=True)
        return key if native is None else key.replace(f'"{NATIVE}"', json.dumps(native))

    def same_simulation(self, other: RunConfig, native: str | None = None) -> bool:
        """True when both configs give the same results on the same hardware (only names differ), on a
        hardware whose vector-unit format is ``native`` when given."""
        return self.simulation_key(native) == other.simulation_key(native)


@dataclass(frozen=True)
class Policy:
    """A run config resolved for lookups: precision, bias precision and sparsity of any op."""

    config: RunConfig
    source: Path | None = None

    native: Precision | None = None  # the hardware's activation format, once known (see ``on``)
    # (side, layer, group, role) -> the format name that side gets (memoised resolve_side)
    _resolved: dict[tuple[str, int, str, str], str] = field(default_factory=dict, compare=False, repr=False)

    def on(self, hardware: Hardware) -> Policy:
        """This policy on ``hardware``: "native" formats resolve to its vector unit's format."""
        return replace(self, native=hardware.sfu_precision, _resolved={})

    def _format(self, name: str) -> Precision:
        if name != NATIVE:
            return parse_precision(name)
        if self.native is None:
            raise InputError(f"{self.name}: a 'native' format needs the hardware it runs on")
        return self.native

    def _side(self, side: str, op: Op) -> str:
        key = (side, op.layer, op.group, op.role)
        name = self._resolved.get(key)
        if name is None:
            name = self._resolved[key] = resolve_side(self.config.precision, side, op.layer, op.group, op.role)
        return name

    def weight_precision(self, op: Op) -> Precision:
        """Stored format of the op's weights."""
        return self._format(self._side("weights", op))

    def activation_precision(self, op: Op) -> Precision:
        """Format of the op's activation operands ("native": the chip's, in which they travel between ops)."""
        return self._format(self._side("activations", op))

    def kv_cache_precision(self, bmm: Op) -> Precision:
        """Stored format of the KV cache that the attention BMM ``bmm`` reads."""
        kv_cache = self.config.precision.kv_cache
        return parse_precision(kv_cache) if kv_cache is not None else self.activation_precision(bmm)

    def bias_precision(self, op: Op) -> Precision:
        bias = self.config.precision.bias
        return parse_precision(bias) if bias is not None else self.weight_precision(op)

    def prunes(self, op: Op) -> bool:
        """True when this op's weight matrix is sparse under the policy."""
        weights = self.config.sparsity.weights
        if weights is None or not op.has_weight_operand or op.weight_params == 0:
            return False
        return op.role in weights.roles or (op.role == "qkv" and {"q", "k", "v"} <= set(weights.roles))

    @functools.cached_property
    def pattern(self) -> SparsityPattern | None:
        weights = self.config.sparsity.weights
        return SparsityPattern.parse(weights.pattern) if weights is not None and weights.pattern else None

    def attention_pattern(self, bmm: Op) -> SparsityPattern | None:
        """The N:M pattern on the pruned operand of the attention product ``bmm``, if any."""
        attention = self.config.sparsity.attention
        return attention.pattern(bmm.role) if attention is not None and bmm.kind == "bmm" else None

    def running_attention_as(self, other: Policy) -> Policy:
        """This policy with ``other``'s attention kernel settings (a comparison compares formats, not
        kernels)."""
        if self.config.attention == other.config.attention:
            return self
        return replace(self, config=self.config.model_copy(update={"attention": other.config.attention}),
                       _resolved={})

    def attention_kernel(self, op: Op) -> str:
        """The kernel the attention op ``op`` runs in: the config's, else fused in decoders and
        materialized in encoders (an op without attention geometry, from a traced model, runs
        materialized: ``check_against`` refuses ``fused`` for it)."""
        geometry = op.attention
        if geometry is None:
            return "materialized"
        given = self.config.attention.kernel
        return given if given is not None else ("fused" if geometry.decoder else "materialized")

    def check_against(self, trace: Trace) -> None:
        """Errors for settings that cannot apply to this model (a layer range beyond its blocks)."""
        self._check_attention(trace)
        attention = self.config.sparsity.attention
        for role, given in (("bmm_qk", "keys"), ("bmm_av", "probabilities")) if attention is not None else ():
            if getattr(attention, given) is not None and not any(op.role == role for op in trace):
                raise InputError(f"{self.name}: sparsity.attention.{given} does not apply to {trace.model}: it has no "
                                 f"attention product ({role})")
        if self.config.precision.kv_cache is not None and not any(
                tensor.kind == "state" for tensor in trace.tensors.values()):
            raise InputError(f"{self.name}: precision.kv_cache does not apply to {trace.model}: this pass keeps no KV "
                             "cache (decoder models' prefill and decode passes do)")
        outliers = self.config.outliers
        for op in trace.ops if outliers is not None else ():
            if (outliers is not None and op.is_matrix and op.has_weight_operand and op.weight_params
                    and outliers.dims >= op.k):
                raise InputError(f"{self.name}: outliers.dims {outliers.dims} must be below the {op.k} input "
                                 f"dimensions of {op.name}")
        if self.config.precision.weight_scales is not None and not any(
                op.weight_params and takes_scales(self.weight_precision(op)) for op in trace):
            raise InputError(f"{self.name}: precision.weight_scales does not apply: no weights of {trace.model} are "
                             "in an integer or FP8 format")
        blocks = max((op.layer for op in trace), default=-1) + 1
        for key in self.config.precision.layers:
            first, last = parse_layer_range(key)
            if last >= blocks:
                raise InputError(f"{self.name}: precision.layers: range {key!r} is outside {trace.model} "
                                 f"(blocks 0-{blocks - 1})")

    def _check_attention(self, trace: Trace) -> None:
        kernel = self.config.attention
        if kernel.kernel == "fused" and not any(op.attention for op in trace):
            raise InputError(f"{self.name}: attention.kernel fused does not apply to {trace.model}: it has no "
                             "attention whose queries, keys and mask the simulator knows (a traced model's "
                             "attention runs materialized)")
        if (kernel.block_q or kernel.block_k) and not any(self.attention_kernel(op) == "fused" for op in trace):
            raise InputError(f"{self.name}: attention.block_q/block_k apply to the fused kernel, and no attention of "
                             f"{trace.model} runs fused (encoders run materialized unless attention.kernel is fused)")

    @property
    def name(self) -> str:
        return self.config.name


def load_run_config(name_or_path: str | Path) -> Policy:
    """A run config: a YAML path, or the name of a shipped one (``int8``, ``int8.yaml``)."""
    path = Path(name_or_path)
    if not path.exists() and len(path.parts) == 1:  # a bare name: a shipped config
        path = resolve_run_config(str(name_or_path), None, "run config")
    return Policy(validate(RunConfig, read_yaml_mapping(path), str(path)), path)


def resolve_run_config(name: str, base_dir: Path | None, what: str = "config") -> Path:
    """A run config given as a path, or a name (with or without .yaml) next to ``base_dir`` or in configs/."""
    from simulator.spec.shipped import CONFIG_DIR

    directories = [d for d in (base_dir, CONFIG_DIR) if d is not None]
    candidates = [Path(name)] + [d / n for d in directories for n in (name, f"{name}.yaml")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    where = " and ".join(str(d) for d in directories)
    shipped = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if p.stem != "reproduce")
    close = difflib.get_close_matches(name.removesuffix(".yaml"), shipped, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; shipped: {', '.join(shipped)}"
    raise InputError(f"{what} {name!r} not found (looked in {where}){hint}")


def load_baseline(policy: Policy) -> Policy | None:
    """The config's dense baseline: a path, or a name next to the config file or in configs/."""
    name = policy.config.baseline
    if name is None:
        return None
    base_dir = policy.source.parent if policy.source else None
    baseline = load_run_config(resolve_run_config(name, base_dir, f"{policy.name}: baseline"))
    if baseline.config.is_sparse:
        raise InputError(f"{policy.name}: baseline {name!r} is itself sparse; a baseline must be dense")
    return baseline


def load_references(policy: Policy) -> Policy | None:
    """The config's baseline (:func:`load_baseline`), once its ``hardware`` is known to name a chip or a
    system: a command refuses a name in the config that resolves to nothing even where it does not use it
    (``--hardware`` replaces the chip; ``memory`` and ``serve`` use no baseline)."""
    from simulator.spec.system import load_target

    try:
        load_target(policy.config.hardware)
    except InputError as exc:
        raise InputError(f"{policy.name}: hardware: {exc}") from None
    return load_baseline(policy)


def policy_from_dict(data: dict[str, Any], source: str = "config") -> Policy:
    return Policy(validate(RunConfig, data, source))
