"""A checkpoint as a run: its directory read (checkpoint_files), its recipe derived (checkpoint_schemes),
its headers checked against the recipe, and the run config with where each decision came from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulator.plan.binding import bind
from simulator.spec.checkpoint_files import check_headers, read_checkpoint
from simulator.spec.checkpoint_schemes import derive, module_namer, stored_parts
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import Policy, policy_from_dict
from workloads.errors import InputError
from workloads.models import Workload, load_model
from workloads.ops import Op
from workloads.torch_cache import own_torch_cache

CHECKPOINT = "checkpoint"  # the run config name that reads the model's own recipe


@dataclass(frozen=True)
class CheckpointRun:
    policy: Policy
    config: dict[str, Any]  # the derived run config, as `accelsim config --from-checkpoint` prints it
    sources: tuple[str, ...]  # where each decision came from, for the run's notes


def checkpoint_run(directory: str | Path, hardware: str) -> CheckpointRun:
    """The run config of the checkpoint in ``directory`` on ``hardware`` (a preset name or path)."""
    checkpoint = read_checkpoint(directory)
    spec = load_model(str(directory))
    # The weight matrices, a head tied to the embedding included (a Linear module in the checkpoint too).
    # Enough tokens (64 prompts of 8) that every expert of a mixture is routed some (none is only held).
    model_type = str(spec.config.get("model_type"))
    linears = [part for op in spec.trace(Workload(batch=64, tokens=8) if spec.family.default_tokens else Workload())
               if op.kind == "gemm" and (op.weight_params or op.role == "head")
               for part in stored_parts(model_type, op)]
    name = Path(directory).resolve().name or "checkpoint"
    namer = module_namer(model_type)
    derived = derive(checkpoint.quantization, linears, namer, name, hardware, _parse_compressed_tensors)
    sparsity = (checkpoint.quantization or {}).get("sparsity_config") or {}
    weights = derived.config.get("sparsity", {}).get("weights")
    if weights is not None and checkpoint.has_weights:
        weights["mask"] = str(Path(directory).resolve())
    policy = policy_from_dict(derived.config, f"{directory}: the config derived from its quantization_config")
    chip = load_hardware(hardware)
    if weights is not None and bind(policy, chip).skips:
        derived.sources.append("2:4 masks: read from the weights, one tensor at a time, and timed with the mask "
                               "kernel" if checkpoint.has_weights else
                               "2:4 masks: none read (no weights in the checkpoint): every group of 4 keeps 2")
    bitmasked = frozenset(op.name for op in linears if weights is not None and op.role in weights["roles"]
                          and sparsity.get("format") == "sparse-24-bitmask")
    check_headers(checkpoint, _weight_formats(policy.on(chip), linears), linears, namer,
                  bitmasked)
    sources = [f"checkpoint: {source}" for source in derived.sources]
    if checkpoint.headers is None:
        sources.append("checkpoint: no safetensors weights: the formats come from config.json alone")
    return CheckpointRun(policy, derived.config, tuple(sources))


def _weight_formats(policy: Policy, linears: list[Op]) -> dict[str, str]:
    """Op name -> its stored weight format and scale group (``int4/128``; blocks: ``fp8_e4m3/128x128``), what
    the headers must show."""
    scales = policy.config.precision.effective_weight_scales
    group = f"/{scales.group_size}" if scales.per == "group" else ""
    if scales.block_size is not None:
        group = f"/{scales.block_size[0]}x{scales.block_size[1]}"
    formats = {op.name: policy.weight_precision(op).name for op in linears}
    return {name: f"{fmt}{group}" if fmt.startswith(("int", "fp8")) else fmt for name, fmt in formats.items()}


def _parse_compressed_tensors(quantization: Mapping[str, Any]) -> Any:
    """compressed-tensors' own model of the config (the package comes with the hf extra: it needs torch)."""
    own_torch_cache()
    try:
        from compressed_tensors.quantization import QuantizationConfig
    except ImportError:
        raise InputError("reading a compressed-tensors checkpoint needs the compressed-tensors package: "
                         "pip install 'accelsim[hf]'") from None
    from pydantic import ValidationError

    try:
        return QuantizationConfig.model_validate(dict(quantization))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise InputError(f"quantization_config.{where}: {error['msg']}") from None
    except (ValueError, TypeError, NotImplementedError) as exc:  # the package's own checks raise these too
        raise InputError(f"quantization_config: compressed-tensors refuses it: {exc}") from None
