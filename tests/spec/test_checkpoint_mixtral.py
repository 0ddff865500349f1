"""Mixtral checkpoints are read by their own module names: block_sparse_moe.gate for the router, and each
expert's gate (w1), up (w3) and down (w2) projections apart, where the trace fuses gate and up."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from simulator.spec.checkpoint import checkpoint_run
from simulator.spec.checkpoint_masks import CheckpointMasks
from simulator.spec.checkpoint_schemes import module_namer, stored_parts
from workloads.errors import InputError
from workloads.models import Workload, load_model

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mixtral-window-8.json"
HIDDEN, INNER, EXPERTS, LAYERS, KV = 64, 176, 4, 3, 32  # KV: 2 heads of 16
FP8_SCHEME = {"num_bits": 8, "type": "float", "symmetric": True}
FP8 = {"quant_method": "compressed-tensors", "format": "float-quantized",
       "ignore": ["lm_head", "re:.*block_sparse_moe.gate"],
       "config_groups": {"group_0": {"targets": ["Linear"], "weights": {**FP8_SCHEME, "strategy": "channel"},
                                     "input_activations": {**FP8_SCHEME, "strategy": "token", "dynamic": True}}}}


def shapes() -> dict[str, list[int]]:
    """Every weight matrix a Mixtral checkpoint stores, by Hugging Face's names (out x in)."""
    tensors = {}
    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}"
        for leaf, out in (("q_proj", HIDDEN), ("k_proj", KV), ("v_proj", KV), ("o_proj", HIDDEN)):
            tensors[f"{prefix}.self_attn.{leaf}"] = [out, HIDDEN]
        tensors[f"{prefix}.block_sparse_moe.gate"] = [EXPERTS, HIDDEN]
        for expert in range(EXPERTS):
            for leaf, shape in (("w1", [INNER, HIDDEN]), ("w3", [INNER, HIDDEN]), ("w2", [HIDDEN, INNER])):
                tensors[f"{prefix}.block_sparse_moe.experts.{expert}.{leaf}"] = shape
    return tensors


def checkpoint(directory: Path, quantization: dict | None, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    from safetensors.torch import save_file

    directory.mkdir(parents=True)
    config = json.loads(CONFIG.read_text())
    (directory / "config.json").write_text(json.dumps({**config, **({"quantization_config": quantization}
                                                                     if quantization else {})}))
    if tensors is not None:
        save_file(tensors, str(directory / "model.safetensors"))
    return directory


def fp8_tensors(changed: dict[str, list[int]] | None = None) -> dict[str, torch.Tensor]:
    tensors = {}
    for module, shape in {**shapes(), **(changed or {})}.items():
        if module.endswith("block_sparse_moe.gate"):
            tensors[f"{module}.weight"] = torch.zeros(shape, dtype=torch.bfloat16)
        else:
            tensors[f"{module}.weight"] = torch.zeros(shape, dtype=torch.float8_e4m3fn)
            tensors[f"{module}.weight_scale"] = torch.ones(shape[0], 1)
    return tensors


def test_experts_are_named_as_the_checkpoint_stores_them():
    trace = load_model(str(CONFIG)).trace(Workload(batch=64, tokens=8))
    namer = module_namer("mixtral")
    fused = next(op for op in trace if op.name == "layers.1.mlp.experts.2.gate_up_proj")
    parts = stored_parts("mixtral", fused)
    assert [(namer(p), p.k, p.n) for p in parts] == [
        ("model.layers.1.block_sparse_moe.experts.2.w1", HIDDEN, INNER),
        ("model.layers.1.block_sparse_moe.experts.2.w3", HIDDEN, INNER)]
    assert sum(p.weight_params for p in parts) == fused.weight_params
    down = next(op for op in trace if op.name == "layers.1.mlp.experts.2.down_proj")
    assert stored_parts("mixtral", down) == [down] and namer(down) == "model.layers.1.block_sparse_moe.experts.2.w2"
    router = next(op for op in trace if op.role == "router" and op.layer == 0)
    assert namer(router) == "model.layers.0.block_sparse_moe.gate"
    assert stored_parts("llama", fused) == [fused]  # only Mixtral's checkpoints store it apart


def test_an_fp8_mixtral_checkpoint_ignoring_its_router_runs_as_its_recipe(tmp_path):
    derived = checkpoint_run(checkpoint(tmp_path / "c", FP8, fp8_tensors()), "tpu_v5e_like")
    precision = derived.config["precision"]
    assert precision["weights"] == precision["activations"] == "fp8_e4m3"
    assert precision["ops"]["router"] == "native" and precision["ops"]["head"] == "native"
    assert "checkpoint: router native: ignore" in derived.sources


def test_a_stored_part_that_contradicts_the_recipe_is_refused_naming_it(tmp_path):
    w3 = "model.layers.2.block_sparse_moe.experts.3.w3"
    with pytest.raises(InputError, match=re.escape(f"safetensors: {w3}.weight has shape [88, 64], the quantization "
                                                   "config implies [176, 64]")):
        checkpoint_run(checkpoint(tmp_path / "c", FP8, fp8_tensors({w3: [88, HIDDEN]})), "tpu_v5e_like")
    half = {**FP8, "ignore": ["lm_head", "re:.*block_sparse_moe.gate", "re:.*experts\\.0\\.w3"]}
    with pytest.raises(InputError, match="the ffn1 layers are not all quantized alike"):
        checkpoint_run(checkpoint(tmp_path / "d", half, fp8_tensors()), "tpu_v5e_like")


def test_a_fused_projections_mask_is_its_stored_parts_side_by_side(tmp_path):
    """A 2:4 Mixtral with dense weights: the fused gate/up op's K x N mask is w1's then w3's."""
    torch.manual_seed(0)
    tensors = {}
    for module, shape in shapes().items():
        weight = torch.randn(shape, dtype=torch.bfloat16)
        if not module.endswith("block_sparse_moe.gate"):
            weight.view(-1, 4)[:, torch.randint(0, 2, (1,)).item()::2] = 0  # 2 of every 4 along the inputs
        tensors[f"{module}.weight"] = weight
    sparse = {"quant_method": "compressed-tensors", "sparsity_config": {
        "format": "dense", "sparsity_structure": "2:4", "targets": ["Linear"],
        "ignore": ["lm_head", "re:.*block_sparse_moe.gate"]}}
    directory = checkpoint(tmp_path / "s", sparse, tensors)
    derived = checkpoint_run(directory, "rapid_like")
    assert derived.config["sparsity"]["weights"]["mask"] == str(directory.resolve())
    trace = load_model(str(directory)).trace(Workload(batch=64, tokens=8))
    fused = next(op for op in trace if op.name == "layers.0.mlp.experts.1.gate_up_proj")
    mask = CheckpointMasks(directory, None)(fused)
    w1 = tensors["model.layers.0.block_sparse_moe.experts.1.w1.weight"] != 0
    w3 = tensors["model.layers.0.block_sparse_moe.experts.1.w3.weight"] != 0
    assert mask.shape == (fused.k, fused.n) and (mask == torch.cat([w1, w3]).numpy().T).all()
    from simulator.engine import simulate
    from simulator.spec.hardware import load_hardware
    from simulator.spec.weight_masks import weight_masks

    masked = simulate(trace, load_hardware("rapid_like"), derived.policy, mask_for=weight_masks(derived.policy))
    experts = masked[masked.name.str.contains(r"experts\.\d+\.(?:gate_up|down)_proj$") & (masked.unit == "array")]
    assert len(experts) == LAYERS * EXPERTS * 2 and (experts.sparsity == "2:4").all()
    assert (experts.macs == experts.m * experts.k * experts.n // 2).all()  # exactly half of every expert kept
    shutil.rmtree(directory)


def test_a_sparse_mixtral_decodes_generates_and_sweeps_through_its_masks(tmp_path, run_cli):
    """A decode step routes its few tokens to some experts: the others are held (stored, never run) and
    need no mask; generate and sweeps read the checkpoint's masks as run does."""
    tensors = {}
    for module, shape in shapes().items():
        weight = torch.ones(shape, dtype=torch.bfloat16)
        if not module.endswith("block_sparse_moe.gate"):
            weight.view(-1, 4)[:, 1::2] = 0
        tensors[f"{module}.weight"] = weight
    sparse = {"quant_method": "compressed-tensors", "sparsity_config": {
        "format": "dense", "sparsity_structure": "2:4", "targets": ["Linear"],
        "ignore": ["lm_head", "re:.*block_sparse_moe.gate"]}}
    directory = checkpoint(tmp_path / "s", sparse, tensors)
    decode = json.loads(run_cli("run", "checkpoint", "--model", str(directory), "--hardware", "rapid_like",
                                "--phase", "decode", "--tokens", "16", "--json"))
    assert decode["total_cycles"] > 0
    generated = json.loads(run_cli("generate", "checkpoint", "--model", str(directory), "--hardware", "rapid_like",
                                   "--prompt", "16", "--new-tokens", "3", "--json"))
    assert generated["tpot_ms"] > 0
    (tmp_path / "s.yaml").write_text(f"name: s\nhardware: rapid_like\nconfigs: [checkpoint]\n"
                                     f"models: [{{name: {directory}, tokens: 16}}]\n")
    run_cli("sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out"), "--workers", "1", "--no-progress")
    import pandas as pd

    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert table["error"].isna().all() and (table["total_cycles"] > 0).all()
