"""Op trace: the pure-data description of one forward pass that every later stage consumes.

A matrix op computes ``batch`` independent products C[m x n] = A[m x k] B[k x n]; convolutions are
their im2col GEMM (grouped convolutions as batch = groups). A vector op touches ``elements``
elements on the vector unit. A collective moves data between the ``ranks`` chips of a system: each chip
ends with ``elements`` (the reduced tensor of an all-reduce, the gathered one of an all-gather). Ops also
carry the parameters they own, so that memory can be accounted from the trace alone and the trace's
parameter total equals the model's; a GEMM of no rows (``Op.held``) owns weights that the pass stores but
does not read.

Tensors have identity: every op names the tensors it reads and writes (``reads``/``writes``), and the
trace declares each one once (``Trace.tensors``): model inputs, activations (written by exactly one
op, read by later ones), weights (a tied weight is one tensor read by several ops) and state that
outlives the pass (a KV cache, read in full and appended to, or only read: a cross-attention cache).
A matrix op reads its A operand first, then its B operand (a BMM's second activation or state; a
GEMM's weight), then its bias. A trace built without tensor names gets a plain chain (each op reads
the previous op's output).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, TypeVar, cast

from workloads.attention_geometry import AttentionGeometry
from workloads.copying import copier
from workloads.errors import InputError
from workloads.vocabulary import COLLECTIVE_KIND, COLLECTIVE_ROLES, GROUPS, KINDS, MATRIX_KINDS, TENSOR_KINDS

_Slotted = TypeVar("_Slotted", "Tensor", "Op")

# Largest size accepted for one dimension or knob (tokens, batch, m, k, n, rows, ...): 31 bits. Products of
# sizes are computed exactly (Python integers) and must fit the 64-bit columns of results.
MAX_SIZE = 2**31 - 1
INT64_MAX = 2**63 - 1



def nm_kept(depth: int, n: int, m: int) -> int:
    """Values left of ``depth`` along an N:M-pruned row: N of every whole group of M, min(N, r) of a
    trailing group of r."""
    full, tail = divmod(depth, m)
    return n * full + min(n, tail)


def index_bits_per_value(group: int) -> int:
    """Bits that locate one kept value inside an N:M group of ``group`` values: ceil(log2 M)."""
    return (group - 1).bit_length()


def evolve(obj: _Slotted, **changes: Any) -> _Slotted:
    """A copy of ``obj`` (a :class:`Tensor` or an :class:`Op`) with ``changes``, without re-running its
    checks: for the engine's hot paths, whose new values come from checked objects (see
    :mod:`workloads.copying`)."""
    return cast(_Slotted, _COPIERS[type(obj)](obj, **changes))


@dataclass(frozen=True, slots=True)
class Tensor:
    """A tensor of the pass. ``elements`` of a state tensor count all of it (the whole cache after this step);
    ``appended`` are the elements this pass adds to it, taken from the activation ``source`` (none for state an
    earlier pass filled and this one only reads: a cross-attention cache). ``bits`` fixes the stored width of an
    input (token ids); 0 means "decided by the simulator". A quantized tensor may also store one ``scale_bits``
    scale per ``scale_group`` elements (per token; a block format's block scales) and, a KV cache, a coarser
    level on top: one ``coarse_scale_bits`` scale per ``coarse_scale_group`` elements (per token and head, or
    per token). A pruned one (attention N:M) keeps ``nm_kept`` of every ``nm_group`` elements along each row of
    ``nm_row``, each kept value with its position; ``elements`` still counts the dense tensor."""

    name: str
    kind: str
    elements: int
    bits: int = 0
    appended: int = 0
    source: str = ""
    scale_group: int = 0
    scale_bits: int = 0
    nm_kept: int = 0
    nm_group: int = 0
    nm_row: int = 0
    coarse_scale_group: int = 0
    coarse_scale_bits: int = 0
    sequences: int = 0  # state: the sequences whose entries it holds, when not the pass's batch (0)

    def values_of(self, elements: int) -> int:
        """Values stored of ``elements`` (dense count) of this tensor: the kept ones, when pruned."""
        if not self.nm_group:
            return elements
        rows, rest = divmod(elements, self.nm_row)
        return rows * nm_kept(self.nm_row, self.nm_kept, self.nm_group) + nm_kept(rest, self.nm_kept, self.nm_group)

    def bytes_of(self, elements: int) -> int:
        """Stored bytes of ``elements`` (dense count) of this tensor: its values (the kept ones and their
        positions, when pruned), plus the scales of whole scale groups."""
        bits = elements * self.bits
        if self.nm_group:
            bits = self.values_of(elements) * (self.bits + index_bits_per_value(self.nm_group))
        if self.scale_group:
            bits += -(-elements // self.scale_group) * self.scale_bits
        if self.coarse_scale_group:
            bits += -(-elements // self.coarse_scale_group) * self.coarse_scale_bits
        return -(-bits // 8)

    @property
    def stored_bytes(self) -> int:
        return self.bytes_of(self.elements)

    @property
    def layout(self) -> tuple[int, ...]:
        """Its size and how it is stored (everything its bytes depend on)."""
        return (self.elements, self.bits, self.scale_group, self.scale_bits, self.nm_kept, self.nm_group, self.nm_row,
                self.coarse_scale_group, self.coarse_scale_bits)

    def __post_init__(self) -> None:
        if self.kind not in TENSOR_KINDS:
            raise ValueError(f"tensor {self.name}: unknown kind {self.kind!r}")
        if min(self.elements, self.appended, self.bits, self.scale_group, self.scale_bits, self.nm_kept,
               self.coarse_scale_group, self.coarse_scale_bits) < 0:
            raise ValueError(f"tensor {self.name}: negative size")
        # a row shorter than M is one short group (a decode step's first keys): min(N, row) of it kept
        if (self.nm_kept or self.nm_group or self.nm_row) and not (0 < self.nm_kept <= self.nm_group
                                                                   and self.nm_row > 0):
            raise ValueError(f"tensor {self.name}: N:M fields need 0 < N <= M and a positive row length")
        if self.source and self.kind != "state":
            raise ValueError(f"tensor {self.name}: only state names an activation it appends")
        if bool(self.appended) != bool(self.source):
            raise ValueError(f"tensor {self.name}: state appends (``appended``) the activation it names (``source``)")


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
    reads: tuple[str, ...] = ()  # tensor names: activation/state operands first, then weights, then biases
    writes: tuple[str, ...] = ()
    attention: AttentionGeometry | None = None  # the ops of an attention's scores: Q K^T, score ops, P V
    ranks: int = 0  # a collective: the chips it spans (each holds ``elements`` when it ends)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"op {self.name}: unknown kind {self.kind!r}")
        if self.group not in GROUPS:
            raise ValueError(f"op {self.name}: unknown group {self.group!r}")
        if self.kind in MATRIX_KINDS:
            held = self.kind == "gemm" and self.m == 0 and self.weight_params > 0
            if min(self.batch, self.k, self.n) <= 0 or (self.m <= 0 and not held):
                raise ValueError(f"op {self.name}: matrix sizes must be positive")
        elif self.elements < 0:
            raise ValueError(f"op {self.name}: negative element count")
        if (self.kind == COLLECTIVE_KIND) != (self.ranks > 0):
            raise ValueError(f"op {self.name}: a collective, and only a collective, spans ranks")
        if self.kind == COLLECTIVE_KIND and (self.ranks < 2 or self.params or self.role not in COLLECTIVE_ROLES):
            raise ValueError(f"op {self.name}: a collective spans at least 2 chips, owns no parameters and is one "
                             f"of {', '.join(COLLECTIVE_ROLES)}")

    @property
    def is_matrix(self) -> bool:
        return self.kind in MATRIX_KINDS

    @property
    def macs(self) -> int:
        return self.batch * self.m * self.k * self.n if self.is_matrix else 0

    @property
    def held(self) -> bool:
        """A GEMM of no rows: weights the model stores that no work of this pass reads (the experts no token
        was routed to). It counts in the parameters and the stored bytes, and the simulator runs nothing."""
        return self.kind == "gemm" and self.m == 0

    @property
    def params(self) -> int:
        return self.weight_params + self.bias_params

    @property
    def has_weight_operand(self) -> bool:
        """True when the B operand is a weight (linear layers, convolutions), not an activation."""
        return self.kind in ("gemm", "conv")

    @property
    def output_elements(self) -> int:
        return self.batch * self.m * self.n if self.is_matrix else self.elements


COLUMNS = tuple(f.name for f in fields(Op))
_COPIERS: dict[type, Callable[..., Any]] = {Tensor: copier(Tensor), Op: copier(Op)}


@dataclass(frozen=True)
class Trace:
    """An ordered list of ops for one forward pass, with the workload that produced it and its tensors.

    Without ``tensors`` the ops are read as a chain (see the module docstring). Activations whose
    producer is not in the trace (a scoped trace without its frontend) become inputs. ``rebatch(g)``,
    when the trace's builder provides it, is the same trace for ``g`` samples instead of
    ``workload["batch"]`` (the simulator may run a batch as groups of samples).
    """

    model: str
    ops: tuple[Op, ...]
    workload: Mapping[str, int | str] = field(default_factory=dict)
    tensors: Mapping[str, Tensor] = field(default_factory=dict)
    rebatch: Callable[[int], Trace] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.tensors:
            ops, tensors = _chain(self.ops)
            object.__setattr__(self, "ops", ops)
            object.__setattr__(self, "tensors", tensors)
        _check_graph(self.ops, self.tensors)

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
        """The ops of ``groups`` (all when None) bar those of ``exclude``; a group name not in GROUPS is
        refused (it would select nothing, or exclude nothing, without a word)."""
        keep = set(groups) if groups is not None else set(GROUPS)
        excluded = set(exclude)
        unknown = sorted((keep | excluded) - set(GROUPS))
        if unknown:
            raise InputError(f"unknown op group {unknown[0]!r}; groups: {', '.join(GROUPS)}")
        keep -= excluded
        return self.subset(lambda op: op.group in keep)

    def subset(self, keep: Callable[[Op], bool]) -> Trace:
        """The ops ``keep`` accepts, in order; tensors whose producer is left out arrive as inputs."""
        ops = tuple(op for op in self.ops if keep(op))
        written = {name for op in ops for name in op.writes}
        used = {name for op in ops for name in (*op.reads, *op.writes)}
        # state a kept op fills (a prefill's KV cache) stays, though no op of the pass reads it
        used |= {name for name, tensor in self.tensors.items() if tensor.kind == "state" and tensor.source in written}
        tensors = {}
        for name in sorted(used):
            tensor = self.tensors[name]
            if tensor.kind == "activation" and name not in written:
                tensor = replace(tensor, kind="input")  # its producer was left out: it arrives from DRAM
            tensors[name] = tensor
        rebatch = self.rebatch
        regrouped = None if rebatch is None else (lambda g: rebatch(g).subset(keep))
        return Trace(self.model, ops, self.workload, tensors, regrouped)

    def records(self) -> list[dict[str, int | str]]:
        return [{**asdict(op), "reads": " ".join(op.reads), "writes": " ".join(op.writes),
                 "attention": str(op.attention or "")} for op in self.ops]

    def readers(self) -> dict[str, list[int]]:
        """Tensor name -> indices of the ops that read it, in order."""
        readers: dict[str, list[int]] = {}
        for index, op in enumerate(self.ops):
            for name in dict.fromkeys(op.reads):
                readers.setdefault(name, []).append(index)
        return readers


def _chain(ops: tuple[Op, ...]) -> tuple[tuple[Op, ...], dict[str, Tensor]]:
    """Tensor names for ops given without them: each op reads the previous op's output (the first op a
    model input) and its own weights, and writes one activation named after itself."""
    tensors: dict[str, Tensor] = {}
    named = []
    previous = None
    for op in ops:
        if op.reads or op.writes:
            raise ValueError(f"op {op.name}: a trace without tensors cannot have ops that name some")
        if previous is None:
            first_in = op.batch * op.m * op.k if op.is_matrix else op.elements
            previous = "input"
            tensors[previous] = Tensor(previous, "input", first_in)
        reads = [previous]
        if op.kind == "bmm":  # both operands of a BMM are activations: the chain gives it a second input
            second = f"{op.name}.b_operand"
            tensors[second] = Tensor(second, "input", op.batch * op.k * op.n)
            reads.append(second)
        for suffix, count in ((".weight", op.weight_params), (".bias", op.bias_params)):
            if count:
                tensors[op.name + suffix] = Tensor(op.name + suffix, "weight", count)
                reads.append(op.name + suffix)
        if op.name in tensors:
            raise ValueError(f"op name {op.name!r} appears twice in the trace")
        tensors[op.name] = Tensor(op.name, "activation", op.output_elements)
        named.append(replace(op, reads=tuple(reads), writes=(op.name,)))
        previous = op.name
    return tuple(named), tensors


def _check_graph(ops: tuple[Op, ...], tensors: Mapping[str, Tensor]) -> None:
    """Every tensor named is declared; activations are written once, before they are read."""
    written: set[str] = set()
    for op in ops:
        _check_op_tensors(op, tensors, written)
    for tensor in tensors.values():
        if tensor.kind == "state" and tensor.source and tensor.source not in written:
            raise ValueError(f"state {tensor.name!r} appends {tensor.source!r}, which no op writes")


def _check_op_tensors(op: Op, tensors: Mapping[str, Tensor], written: set[str]) -> None:
    """One op's reads and writes against the tensors declared and those written so far (updated)."""
    for name in (*op.reads, *op.writes):
        if name not in tensors:
            raise ValueError(f"op {op.name}: tensor {name!r} is not declared")
    for name in op.reads:
        if tensors[name].kind == "activation" and name not in written:
            raise ValueError(f"op {op.name} reads {name!r} before any op writes it")
    for name in op.writes:
        if tensors[name].kind != "activation":
            raise ValueError(f"op {op.name} writes {name!r}, a {tensors[name].kind} tensor")
        if name in written:
            raise ValueError(f"tensor {name!r} is written twice")
        written.add(name)
