"""Building an op trace: ops appended in execution order, each naming the tensors it reads and writes
(the trace itself is :mod:`workloads.ops`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from workloads.attention_geometry import AttentionGeometry
from workloads.ops import Op, Tensor, Trace, evolve
from workloads.vocabulary import COLLECTIVE_KIND, VECTOR_KIND


class OpBuilder:
    """Accumulates ops in execution order, naming the tensors they read and write.

    Each op writes one activation named after itself and, unless told otherwise, reads the activation
    written last (``current``); ops that own parameters read their own ``<name>.weight`` and
    ``<name>.bias``, and an op that uses another op's weights (a tied head) names them with ``weight=``.
    """

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.tensors: dict[str, Tensor] = {}
        self.current = ""

    def input(self, name: str, elements: int, *, bits: int = 0) -> str:
        """A model input (token ids, pixels, audio), arriving from DRAM."""
        self.tensors[name] = Tensor(name, "input", elements, bits=bits)
        self.current = name
        return name

    def constant(self, name: str, elements: int) -> str:
        """A fixed table the model stores but does not learn (sinusoidal positions): a weight tensor no op owns."""
        self.tensors[name] = Tensor(name, "weight", elements)
        return name

    def state(self, name: str, elements: int, source: str = "", sequences: int = 0) -> str:
        """State that outlives the pass (a KV cache of ``elements``, of ``sequences`` sequences when not the
        pass's batch), appended with the activation ``source`` (none: state this pass only reads)."""
        appended = self.tensors[source].elements if source else 0
        self.tensors[name] = Tensor(name, "state", elements, appended=appended, source=source, sequences=sequences)
        return name

    def _add(self, op: Op, reads: tuple[str, ...] | None, weight: str | None, parts: tuple[str, ...] = (),
             part_elements: tuple[int, ...] = ()) -> None:
        """Append ``op``; with ``parts`` its output is that many tensors ``<name>.<part>``, equal (a fused
        q/k/v projection writes q, k and v) or of ``part_elements`` each (the rows of each sequence of a
        mixed batch)."""
        operands = list(reads if reads is not None else (self.current,))
        if weight is not None:
            operands.append(weight)
        for suffix, count in ((".weight", op.weight_params), (".bias", op.bias_params)):
            if count:
                self.tensors[op.name + suffix] = Tensor(op.name + suffix, "weight", count)
                operands.append(op.name + suffix)
        outputs = tuple(f"{op.name}.{part}" for part in parts) or (op.name,)
        sizes = part_elements or (op.output_elements // len(outputs),) * len(outputs)
        if len(sizes) != len(outputs) or sum(sizes) != op.output_elements:
            raise ValueError(f"op {op.name}: parts of {sizes} elements do not make its {op.output_elements}")
        for name, elements in zip(outputs, sizes, strict=True):
            if name in self.tensors:
                raise ValueError(f"tensor name {name!r} is used twice")
            self.tensors[name] = Tensor(name, "activation", elements)
        self.ops.append(evolve(op, reads=tuple(operands), writes=outputs))
        self.current = outputs[-1]

    def gemm(self, name: str, layer: int, role: str, group: str, m: int, k: int, n: int, *,
             bias: bool = True, batch: int = 1, weight: str | None = None, kind: str = "gemm",
             reads: str | None = None, parts: tuple[str, ...] = (), part_elements: tuple[int, ...] = ()) -> str:
        """A linear layer or convolution: ``batch`` weight matrices of k x n, each with n biases; its own
        weights unless ``weight`` names another op's (tied: no parameters of its own)."""
        op = Op(name, layer, role, group, kind, batch=batch, m=m, k=k, n=n,
                weight_params=batch * k * n if weight is None else 0, bias_params=batch * n if bias else 0)
        self._add(op, None if reads is None else (reads,), weight, parts, part_elements)
        return name

    def held(self, name: str, layer: int, role: str, group: str, batch: int, k: int, n: int) -> None:
        """``batch`` weight matrices of k x n that the model stores but this pass does not read (see
        ``Op.held``); the current activation is unchanged."""
        weight = f"{name}.weight"
        self.tensors[weight] = Tensor(weight, "weight", batch * k * n)
        self.ops.append(Op(name, layer, role, group, "gemm", batch=batch, m=0, k=k, n=n, weight_params=batch * k * n,
                           reads=(weight,)))

    def bmm(self, name: str, layer: int, role: str, group: str, batch: int, m: int, k: int, n: int, *,
            reads: tuple[str, str], attention: AttentionGeometry | None = None) -> str:
        self._add(Op(name, layer, role, group, "bmm", batch=batch, m=m, k=k, n=n, attention=attention), reads, None)
        return name

    def vector(self, name: str, layer: int, role: str, group: str, elements: int, *,
               weight_params: int = 0, bias_params: int = 0, reads: tuple[str, ...] | None = None,
               weight: str | None = None, attention: AttentionGeometry | None = None,
               parts: tuple[str, ...] = (), part_elements: tuple[int, ...] = ()) -> str:
        op = Op(name, layer, role, group, VECTOR_KIND, elements=elements,
                weight_params=weight_params, bias_params=bias_params, attention=attention)
        self._add(op, reads, weight, parts, part_elements)
        return name

    def collective(self, name: str, layer: int, role: str, group: str, elements: int, ranks: int) -> str:
        """A collective over ``ranks`` chips on the current activation, ending with ``elements`` on each."""
        self._add(Op(name, layer, role, group, COLLECTIVE_KIND, elements=elements, ranks=ranks), None, None)
        return name

    def layernorm(self, name: str, layer: int, group: str, rows: int, width: int, *, bias: bool = True) -> str:
        return self.vector(name, layer, "layernorm", group, rows * width,
                           weight_params=width, bias_params=width if bias else 0)

    def add(self, name: str, layer: int, group: str, elements: int, other: str, *,
            weight_params: int = 0) -> str:
        """Element-wise sum of the current activation and ``other`` (a residual, a position embedding)."""
        return self.vector(name, layer, "add", group, elements, weight_params=weight_params,
                           reads=(self.current, other))

    def build_trace(self, model: str, workload: Mapping[str, int | str],
                    rebatch: Callable[[int], Trace] | None = None) -> Trace:
        return Trace(model, tuple(self.ops), workload, dict(self.tensors), rebatch)
