"""Hardware description of a systolic-array accelerator (pydantic; unknown keys are rejected).

A preset is a YAML file under ``configs/hardware/``. Sizes carry their unit in the field name
(``*_bytes``, ``*_bytes_per_cycle``, ``clock_mhz``); throughput is MACs per PE per cycle, packed
along the reduction dimension K (a PE doing 2 INT4 MACs per cycle covers 2 elements of K).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from simulator.formats.precision import Precision, compute_format, parse_precision
from simulator.formats.sparsity import SparsityPattern
from simulator.spec.config_io import StrictModel, read_yaml_mapping, reject_unknown_keys, validate
from simulator.spec.shipped import HARDWARE_DIR
from workloads.errors import InputError
from workloads.ops import INT64_MAX, MAX_SIZE
from workloads.vocabulary import INSERTED_SFU_OPS, SFU_OPS


class ArrayConfig(StrictModel):
    rows: int = Field(gt=0, le=MAX_SIZE, description="PE rows")
    cols: int = Field(gt=0, le=MAX_SIZE, description="PE columns")
    dataflow: Literal["ws", "os", "is"]
    clock_mhz: float = Field(gt=0, allow_inf_nan=False)
    count: int = Field(1, gt=0, le=4096, description="arrays per core, each rows x cols (TPU v5e: 4 MXUs)")
    double_buffered: bool = Field(
        True, description="ws/is: each PE holds its next stationary value in a shadow register, so a tile shifts "
                          "in behind the running fold (TPU v1); false: a fold waits for its tile's load, T + R "
                          "cycles a fold (simulator/engine/timing.py)")

    @model_validator(mode="after")
    def _check_buffering(self) -> ArrayConfig:
        if not self.double_buffered and self.dataflow == "os":
            raise ValueError("double_buffered applies to a stationary operand (ws or is), not to dataflow os")
        return self


class SparseSupport(StrictModel):
    patterns: list[str] = Field(default_factory=list, description="N:M patterns the PEs can skip, e.g. ['2:4']")
    unstructured: bool = Field(False, description="PEs skip arbitrary zero weights (lanes wait for the slowest)")
    decompressor: bool = Field(
        False, description="weights stored compressed (N:M or bitmap) are expanded on their way into the array: "
                           "sparsity the PEs cannot skip still streams compressed bytes from DRAM")
    mode: Literal["skip", "gate"] = Field(
        "skip", description="skip: zero MACs are not issued (cycles drop); gate: they take their slot clock-gated "
                            "(cycles unchanged, each costs the gated MAC energy)")

    @field_validator("patterns")
    @classmethod
    def _parse_patterns(cls, patterns: list[str]) -> list[str]:
        for text in patterns:
            try:
                SparsityPattern.parse_pruning(text)
            except InputError as exc:
                raise ValueError(str(exc)) from None
        return patterns

    def skip_pattern(self, pattern: SparsityPattern) -> SparsityPattern | None:
        """The pattern the PEs run ``pattern`` at: itself if listed, else the sparsest listed N':M' whose
        groups ``pattern`` never overfills (M a multiple of M', N <= N': 1:4, 2:8 and 1:8 run as 2:4);
        None if there is none."""
        listed = [SparsityPattern.parse(text) for text in self.patterns]
        if pattern in listed:
            return pattern
        fits = [p for p in listed if pattern.m % p.m == 0 and pattern.n <= p.n]
        return min(fits, key=lambda p: (p.density, p.m)) if fits else None


class MemoryConfig(StrictModel):
    ifmap_buffer_bytes: int = Field(gt=0, le=INT64_MAX, description="buffer for the streamed activation operand")
    filter_buffer_bytes: int = Field(gt=0, le=INT64_MAX, description="buffer for weights (or the second operand)")
    ofmap_buffer_bytes: int = Field(gt=0, le=INT64_MAX, description="buffer for outputs")
    dram_bytes_per_cycle: float = Field(gt=0, allow_inf_nan=False, description="DRAM bytes per array clock cycle")
    dram_efficiency: float = Field(1.0, gt=0, le=1, allow_inf_nan=False,
                                   description="the fraction of dram_bytes_per_cycle a transfer sustains (1: peak)")
    weights_streamed: bool = Field(True, description="weights are fetched from DRAM for every op that uses them")
    whole_weight_tiles: bool = Field(
        False, description="weights move from DRAM in whole rows x cols tiles, zero-padded where a matrix's depth "
                           "or columns do not fill the last (TPU v1's weight FIFO moves 64 KiB tiles); off: only "
                           "the weights' own bytes")
    loop_blocking: bool = Field(
        False, description="a matrix product larger than its buffers runs blocked, in the schedule and tile shape "
                           "that fetch the fewest DRAM bytes (a compiler's choice; simulator/engine/blocking.py); "
                           "off: an operand that does not fit its buffer is fetched again every sweep")
    dram_capacity_bytes: int | None = Field(
        None, gt=0, le=INT64_MAX,
        description="optional: DRAM size; a workload whose weights, state and peak activations exceed it is refused")

    @property
    def sustained_bytes_per_cycle(self) -> float:
        """DRAM bytes per cycle a transfer moves: the peak times the sustained fraction."""
        return self.dram_bytes_per_cycle * self.dram_efficiency


class SfuConfig(StrictModel):
    lanes: int = Field(gt=0, le=MAX_SIZE, description="elements processed in parallel by the vector unit")
    precision: str = Field("fp16", description="number format of the SFU and of activations between ops")
    cycles_per_element: dict[str, float] = Field(
        description="cycles one lane spends per element, for every vector op the workloads use")
    fusion: bool = Field(
        False, description="element-wise ops (quantize, dequantize, bias, mul, add) next to a softmax, norm or "
                           "activation on a same-size tensor run inside that op's pass, at no cost of their own")
    overlap_with_array: bool = Field(
        False, description="SFU work overlaps array work (ideal bound: total = max of the two), else serial")

    @field_validator("precision")
    @classmethod
    def _check_precision(cls, text: str) -> str:
        try:
            return parse_precision(text).name
        except InputError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("cycles_per_element")
    @classmethod
    def _check_costs(cls, costs: dict[str, float]) -> dict[str, float]:
        for op, cost in costs.items():
            if not math.isfinite(cost) or cost < 0:
                raise ValueError(f"{op}: cycles per element must be a finite number >= 0, got {cost}")
        reject_unknown_keys(costs, SFU_OPS, "SFU op")
        missing = [op for op in INSERTED_SFU_OPS if op not in costs]
        if missing:
            raise ValueError(f"missing cost for {', '.join(missing)} (inserted by the simulator)")
        return costs


class DispatchConfig(StrictModel):
    """What launching work costs beyond the chip's own cycles (host dispatch and synchronisation)."""

    kernel_us: float = Field(0.0, ge=0, allow_inf_nan=False,
                             description="fixed cost of each launched kernel, microseconds (0: none)")
    execution: Literal["graph", "per_op"] = Field(
        "graph", description="graph: one compiled program per pass is one kernel; per_op: every op not fused into "
                             "another is a kernel of its own (as op-by-op measurements run)")


class HostLinkConfig(StrictModel):
    """The chip's link to its host's memory (PCIe or the like): what swapping a KV cache out and in moves
    over."""

    gb_per_s: float = Field(gt=0, allow_inf_nan=False, description="one direction, GB/s (1e9 B/s)")
    pj_per_bit: float = Field(ge=0, allow_inf_nan=False, description="energy of one bit moved over it, pJ")


class EnergyConfig(StrictModel):
    """Which tables price this hardware's actions, and the technology they are carried to."""

    table: str = Field(description="action table under configs/energy/ (or a path), e.g. horowitz_45nm")
    node_nm: float = Field(gt=0, allow_inf_nan=False, description="technology node of this hardware, nm")
    vdd_v: float = Field(gt=0, allow_inf_nan=False, description="supply voltage, V")
    dram: str = Field(description="DRAM technology: lpddr4, ddr3, gddr5 or hbm2")
    sram_cell: Literal["itrs-hp", "itrs-lstp"] = Field(description="SRAM cell type of the buffers (CACTI's names)")
    sram_port_bits: int = Field(gt=0, le=MAX_SIZE, description="port width of each buffer, bits per access")
    sram_bank_bytes: int | None = Field(
        None, gt=0, le=INT64_MAX, description="optional: each buffer is built of banks of this size (an access "
                                             "reaches one bank; all banks leak); none: one bank per buffer")
    uncore_mw: float = Field(0.0, ge=0, allow_inf_nan=False,
                             description="power drawn whenever the chip is on beyond the leakage of its PEs, buffers "
                                         "and vector unit: clock tree, control, I/O, mW (0: none)")

    @field_validator("dram")
    @classmethod
    def _check_dram(cls, name: str) -> str:
        from simulator.energy.tables import DRAM_TECHNOLOGIES

        reject_unknown_keys({name: None}, DRAM_TECHNOLOGIES, "DRAM technology")
        return name


class Hardware(StrictModel):
    name: str
    description: str = ""
    array: ArrayConfig
    macs_per_pe: dict[str, int] = Field(
        description="MACs per PE per cycle for each precision the array computes in, e.g. {fp16: 1, int8: 4}")
    accumulator_bits: int = Field(32, gt=0, description="width of partial sums")
    dequantize_in_pe: list[str] = Field(
        default_factory=list, description="stored formats whose group or block scales the PEs apply as they "
                                          "compute (no dequantization step on the vector unit), e.g. [int4]")
    sparse: SparseSupport = Field(default_factory=SparseSupport)
    memory: MemoryConfig
    sfu: SfuConfig
    cores: int = Field(1, gt=0, le=4096, description="cores, each with array.count arrays and its own vector unit; "
                                                    "buffers and DRAM bandwidth are the chip's, shared")
    energy: EnergyConfig | None = Field(None, description="optional: energy and area tables (none: not modelled)")
    dispatch: DispatchConfig = Field(default_factory=DispatchConfig)
    host_link: HostLinkConfig | None = Field(
        None, description="optional: the link to the host's memory (serving's swap-to-host preemption needs it)")
    fitted: list[str] = Field(default_factory=list, description="fields fitted to measured silicon (dotted "
                                                                "paths, e.g. memory.dram_efficiency)")

    @field_validator("macs_per_pe")
    @classmethod
    def _check_macs(cls, table: dict[str, int]) -> dict[str, int]:
        if not table:
            raise ValueError("at least one precision is needed")
        normalised = {}
        for text, macs in table.items():
            try:
                name = parse_precision(text).name
            except InputError as exc:
                raise ValueError(str(exc)) from None
            if isinstance(macs, bool) or not 0 < macs <= MAX_SIZE:
                raise ValueError(f"{text}: MACs per PE per cycle must be a positive integer up to {MAX_SIZE}")
            normalised[name] = macs
        return normalised

    @field_validator("dequantize_in_pe")
    @classmethod
    def _check_dequantize(cls, names: list[str]) -> list[str]:
        try:
            return [parse_precision(text).name for text in names]
        except InputError as exc:
            raise ValueError(str(exc)) from None

    @property
    def arrays(self) -> int:
        """Systolic arrays on the chip."""
        return self.cores * self.array.count

    @property
    def pes(self) -> int:
        """PEs on the chip (all arrays)."""
        return self.array.rows * self.array.cols * self.arrays

    @model_validator(mode="after")
    def _check_fitted(self) -> Hardware:
        for path in self.fitted:
            node: Any = self
            for part in path.split("."):
                table = node if isinstance(node, dict) else dict(node) if isinstance(node, StrictModel) else None
                if table is None or part not in table:
                    raise ValueError(f"fitted: {path!r} names no field of the preset")
                node = table[part]
        return self

    @property
    def launch_cycles(self) -> int:
        """Cycles one kernel launch costs (dispatch.kernel_us at the array clock)."""
        return math.ceil(self.dispatch.kernel_us * self.array.clock_mhz)

    @property
    def sfu_lanes(self) -> int:
        """Vector-unit lanes on the chip (one vector unit per core)."""
        return self.sfu.lanes * self.cores

    @property
    def supported_precisions(self) -> list[Precision]:
        return [parse_precision(name) for name in self.macs_per_pe]

    def compute_precision(self, requested: Precision, activations: Precision | None = None) -> Precision:
        """The format the array computes a product of ``requested`` (weights) and ``activations`` (default:
        the same) in: the narrowest one it has that holds both."""
        activations = activations or requested
        chosen = compute_format(requested, activations, self.supported_precisions)
        if chosen is None:
            operands = str(requested) if activations == requested else f"{requested} x {activations}"
            raise InputError(f"hardware {self.name}: cannot compute {operands} "
                             f"(supports {', '.join(self.macs_per_pe)}, none of which holds {operands} exactly)")
        return chosen

    def sfu_cost(self, op: str) -> float:
        try:
            return self.sfu.cycles_per_element[op]
        except KeyError:
            raise InputError(f"hardware {self.name}: sfu.cycles_per_element has no cost for vector op {op!r}") from None

    @property
    def sfu_precision(self) -> Precision:
        return parse_precision(self.sfu.precision)


def preset_names() -> list[str]:
    return sorted(p.stem for p in HARDWARE_DIR.glob("*.yaml"))


def load_hardware(name_or_path: str | Path) -> Hardware:
    """A preset name from configs/hardware/ or a path to a hardware YAML file."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or path.exists()):
        path = HARDWARE_DIR / f"{text}.yaml"
        if not path.exists():
            import difflib

            if (HARDWARE_DIR.parent / "systems" / f"{text}.yaml").is_file():
                raise _a_system(text)

            close = difflib.get_close_matches(text, preset_names(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; presets: {', '.join(preset_names())}"
            raise InputError(f"unknown hardware preset {text!r}{hint}")
    data = read_yaml_mapping(path)
    if "chips" in data:  # what load_target reads as a system
        raise _a_system(text)
    return validate(Hardware, data, str(path))


def _a_system(text: str) -> InputError:
    return InputError(f"{text} is a system of several chips; this command runs one chip: a preset "
                      f"({', '.join(preset_names())}) or a chip's YAML")
