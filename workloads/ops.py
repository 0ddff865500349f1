"""Op trace: the pure-data description of one forward pass that every later stage consumes.

A matrix op computes ``batch`` independent products C[m x n] = A[m x k] B[k x n]; convolutions are
their im2col GEMM (grouped convolutions as batch = groups). A vector op touches ``elements``
elements on the vector unit. Ops also carry the parameters they own, so that memory can be
accounted from the trace alone and the trace's parameter total equals the model's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields

# Largest size accepted for one dimension or knob (tokens, batch, m, k, n, rows, ...): 31 bits. Products of
# sizes are computed exactly (Python integers) and must fit the 64-bit columns of results.
MAX_SIZE = 2**31 - 1
INT64_MAX = 2**63 - 1

MATRIX_KINDS = ("gemm", "bmm", "conv")
VECTOR_KIND = "vector"
KINDS = (*MATRIX_KINDS, VECTOR_KIND)
GROUPS = ("attention", "ffn", "embedding", "frontend", "norm", "head")

# Roles of the per-block linear layers (q/k/v may be fused into one "qkv" GEMM, as in GPT-2).
LINEAR_ROLES = ("q", "k", "v", "qkv", "attn_out", "ffn1", "ffn2")
BMM_ROLES = ("bmm_qk", "bmm_av")
# The six per-block linear layers that the paper prunes 2:4 (GPT-2's fused qkv stands for q, k, v).
PRUNED_LINEAR_ROLES = ("q", "k", "v", "attn_out", "ffn1", "ffn2")
OTHER_MATRIX_ROLES = ("conv", "feature_proj", "pos_conv", "patch_embed", "pooler", "head")
VECTOR_ROLES = ("embedding", "add", "mul", "concat", "mask_embed", "layernorm", "groupnorm", "softmax",
                "gelu", "relu", "tanh")
ROLES = (*LINEAR_ROLES, *BMM_ROLES, *OTHER_MATRIX_ROLES, *VECTOR_ROLES)


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a forward pass. Sizes are element counts; parameters are counts of values."""

    name: str
    layer: int  # block index (decoder blocks numbered after encoder blocks), or -1 outside blocks
    role: str
    group: str
    kind: str
    batch: int = 0
    m: int = 0
    k: int = 0
    n: int = 0
    elements: int = 0
    weight_params: int = 0
    bias_params: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"op {self.name}: unknown kind {self.kind!r}")
        if self.group not in GROUPS:
            raise ValueError(f"op {self.name}: unknown group {self.group!r}")
        if self.kind in MATRIX_KINDS:
            if min(self.batch, self.m, self.k, self.n) <= 0:
                raise ValueError(f"op {self.name}: matrix sizes must be positive")
        elif self.elements < 0:
            raise ValueError(f"op {self.name}: negative element count")

    @property
    def is_matrix(self) -> bool:
        return self.kind in MATRIX_KINDS

    @property
    def macs(self) -> int:
        return self.batch * self.m * self.k * self.n if self.is_matrix else 0

    @property
    def params(self) -> int:
        return self.weight_params + self.bias_params

    @property
    def has_weight_operand(self) -> bool:
        """True when the B operand is a weight (linear layers, convolutions), not an activation."""
        return self.kind in ("gemm", "conv")


COLUMNS = tuple(f.name for f in fields(Op))


@dataclass(frozen=True)
class Trace:
    """An ordered list of ops for one forward pass, with the workload that produced it."""

    model: str
    ops: tuple[Op, ...]
    workload: Mapping[str, int | str] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def params(self) -> int:
        return sum(op.params for op in self.ops)

    def select(self, groups: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> Trace:
        keep = set(groups) if groups is not None else set(GROUPS)
        keep -= set(exclude)
        return Trace(self.model, tuple(op for op in self.ops if op.group in keep), self.workload)

    def records(self) -> list[dict[str, int | str]]:
        return [asdict(op) for op in self.ops]


class OpBuilder:
    """Accumulates ops in execution order with a shared name prefix and layer index."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def gemm(self, name: str, layer: int, role: str, group: str, m: int, k: int, n: int, *,
             bias: bool = True, batch: int = 1, owns_weight: bool = True, kind: str = "gemm") -> None:
        """A linear layer or convolution: ``batch`` weight matrices of k x n, each with n biases."""
        self.ops.append(Op(name, layer, role, group, kind, batch=batch, m=m, k=k, n=n,
                           weight_params=batch * k * n if owns_weight else 0,
                           bias_params=batch * n if bias else 0))

    def bmm(self, name: str, layer: int, role: str, group: str, batch: int, m: int, k: int, n: int) -> None:
        self.ops.append(Op(name, layer, role, group, "bmm", batch=batch, m=m, k=k, n=n))

    def vector(self, name: str, layer: int, role: str, group: str, elements: int, *,
               weight_params: int = 0, bias_params: int = 0) -> None:
        self.ops.append(Op(name, layer, role, group, VECTOR_KIND, elements=elements,
                           weight_params=weight_params, bias_params=bias_params))

    def layernorm(self, name: str, layer: int, group: str, rows: int, width: int, *, bias: bool = True) -> None:
        self.vector(name, layer, "layernorm", group, rows * width,
                    weight_params=width, bias_params=width if bias else 0)
