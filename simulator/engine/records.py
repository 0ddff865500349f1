"""A step's cost as the engine returns it: one typed record per step, the rows of the results frame.

Fields are in the results' column order. Counts are per level (see costs.py); energy fields (pJ, see
energy/accounting.py) are NaN where the hardware has no energy section. The additive fields add up
over passes and decode steps; the others describe the step or are ratios.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any


@dataclass(slots=True)
class StepRecord:
    name: str
    layer: int
    role: str
    group: str
    kind: str
    unit: str  # "array", "sfu" or "link" (a collective)
    inserted: bool
    category: str
    precision: str
    compute_precision: str
    macs_per_pe: int
    sparsity: str
    dequantized: bool  # the B operand reaches the array dequantized by the vector unit
    batch: int
    m: int
    k: int
    n: int
    elements: int
    macs: int
    folds: int
    array_split: str
    compute_cycles: int
    dense_compute_cycles: int
    transfer_cycles: int
    stall_cycles: int
    total_cycles: int
    launch_cycles: int  # kernel launches this step starts (hardware dispatch), outside total_cycles
    utilization: float
    weight_bits: int
    index_bits: int
    scale_bits: int
    bias_bits: int
    dram_bytes: int
    dram_read_bytes: int
    dram_write_bytes: int
    ifmap_read_bytes: int
    ifmap_write_bytes: int
    filter_read_bytes: int
    filter_write_bytes: int
    ofmap_read_bytes: int
    ofmap_write_bytes: int
    array_weight_loads: int
    array_activation_hops: int
    array_psum_updates: int
    skip_selects: int
    pe_dequantized_loads: int
    decompressed_weights: int
    link_bytes: int  # bytes this chip sends to other chips (a collective)
    residency: str
    bound: str
    fused_into: str
    kernel: str  # attention ops: "fused" or "materialized"; "" elsewhere
    block_q: int  # a fused kernel's query positions per block (0 elsewhere)
    block_k: int  # its keys per block
    key_chunks: int  # the key chunks a decode step splits its keys into (1: not split)
    closed_form_dram_bytes: int  # on a fused kernel's P V row: the kernel's DRAM bytes by its closed form
    mac_pj: float = float("nan")
    idle_pj: float = float("nan")
    register_pj: float = float("nan")
    ifmap_pj: float = float("nan")
    filter_pj: float = float("nan")
    ofmap_pj: float = float("nan")
    dram_pj: float = float("nan")
    vector_pj: float = float("nan")
    link_pj: float = float("nan")
    energy_pj: float = float("nan")

    def row(self) -> tuple[Any, ...]:
        """The field values in column order (a results row)."""
        return _ROW(self)

    def copy(self) -> StepRecord:
        return StepRecord(*_ROW(self))

    def zeroed(self) -> StepRecord:
        """This record's description with every additive field 0: a sum to add records into."""
        return self.scaled(0, self)

    def renamed(self, name: str, layer: int, fused_into: str) -> StepRecord:
        """A copy for another step with the same cost (built positionally: this runs once per step)."""
        values = list(_ROW(self))
        values[_NAME], values[_LAYER], values[_FUSED_INTO] = name, layer, fused_into
        return StepRecord(*values)

    def scaled(self, passes: int, shape: StepRecord) -> StepRecord:
        """This record run ``passes`` times, with ``shape``'s sizes (a batch run as groups)."""
        values = list(_ROW(self))
        for index in _ADDITIVE:
            values[index] *= passes
        sizes = _ROW(shape)
        for index in _SHAPE:
            values[index] = sizes[index]
        return StepRecord(*values)

    def with_sums(self, sums: StepRecord) -> StepRecord:
        """This record's description and ratios with ``sums``' additive fields."""
        values, summed = list(_ROW(self)), _ROW(sums)
        for index in _ADDITIVE:
            values[index] = summed[index]
        return StepRecord(*values)

    def add(self, other: StepRecord, times: int = 1) -> None:
        """Add ``times`` x ``other``'s additive fields to this one's, in place."""
        for name, mine, theirs in zip(ADDITIVE_COLUMNS, _ADDITIVE_VALUES(self), _ADDITIVE_VALUES(other), strict=True):
            setattr(self, name, mine + theirs * times)


RESULT_COLUMNS = tuple(field.name for field in fields(StepRecord))
ENERGY_COLUMNS = RESULT_COLUMNS[RESULT_COLUMNS.index("mac_pj"):]
ACCESS_COLUMNS = RESULT_COLUMNS[RESULT_COLUMNS.index("dram_read_bytes"):RESULT_COLUMNS.index("residency")]
# Fields that add up over passes (the others describe the step or are ratios), and the sizes of one.
ADDITIVE_COLUMNS = ("macs", "folds", "compute_cycles", "dense_compute_cycles", "transfer_cycles", "stall_cycles",
                    "total_cycles", "launch_cycles", "dram_bytes", *ACCESS_COLUMNS, "closed_form_dram_bytes",
                    *ENERGY_COLUMNS)
SHAPE_COLUMNS = ("batch", "m", "k", "n", "elements")
_ROW = attrgetter(*RESULT_COLUMNS)
_NAME, _LAYER, _FUSED_INTO = (RESULT_COLUMNS.index(name) for name in ("name", "layer", "fused_into"))
_ADDITIVE = tuple(RESULT_COLUMNS.index(name) for name in ADDITIVE_COLUMNS)
_SHAPE = tuple(RESULT_COLUMNS.index(name) for name in SHAPE_COLUMNS)
_ADDITIVE_VALUES = attrgetter(*ADDITIVE_COLUMNS)
