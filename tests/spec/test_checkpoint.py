"""Bring your own checkpoint: a checkpoint's quantization_config becomes the run config its recipe means,
equal to the hand-written accelsim config of the same scheme, and its safetensors headers must agree."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from simulator.engine import simulate
from simulator.spec.checkpoint import checkpoint_run
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import policy_from_dict
from workloads.errors import InputError
from workloads.models import Workload, load_model

TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 1000, "hidden_size": 256,
        "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 512, "tie_word_embeddings": False}


def group(weights: dict | None, activations: dict | None = None, targets=("Linear",)) -> dict:
    return {"targets": list(targets), "weights": weights, "input_activations": activations}


def compressed(groups: dict, fmt: str, ignore=("lm_head",), **extra) -> dict:
    return {"quant_method": "compressed-tensors", "format": fmt, "config_groups": groups, "ignore": list(ignore),
            **extra}


W4A16 = compressed({"group_0": group({"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group",
                                      "group_size": 128})}, "pack-quantized")
W8A8 = compressed({"group_0": group({"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"},
                                    {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token",
                                     "dynamic": True})}, "int-quantized")
FP8 = compressed({"group_0": group({"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel"},
                                   {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "token",
                                    "dynamic": True})}, "float-quantized")
NVFP4 = compressed({"group_0": group({"num_bits": 4, "type": "float", "symmetric": True, "strategy": "tensor_group",
                                      "group_size": 16},
                                     {"num_bits": 4, "type": "float", "symmetric": True, "strategy": "tensor_group",
                                      "group_size": 16, "dynamic": "local"})}, "nvfp4-pack-quantized")
SPARSE_W4A16 = {**W4A16, "sparsity_config": {"format": "sparse-24-bitmask", "sparsity_structure": "2:4",
                                              "targets": ["Linear"], "ignore": ["lm_head"]}}
FP8_BLOCK = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True, "desc_act": False}
AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}

# The accelsim config a user would write by hand for each scheme (attention products native: the
# recipes quantize the inputs of linear layers only).
NATIVE_ATTENTION = {"bmm_qk": "native", "bmm_av": "native"}
BY_HAND = {
    "w4a16": {"precision": {"weights": "int4", "activations": "native", "ops": {"head": "native", **NATIVE_ATTENTION},
                            "weight_scales": {"per": "group", "group_size": 128, "scale_bits": 16}}},
    "w8a8": {"precision": {"weights": "int8", "activations": "int8", "ops": {"head": "native", **NATIVE_ATTENTION},
                           "weight_scales": {"per": "channel", "scale_bits": 16},
                           "activation_scales": {"per": "token", "scale_bits": 16}}},
    "fp8": {"precision": {"weights": "fp8_e4m3", "activations": "fp8_e4m3",
                          "ops": {"head": "native", **NATIVE_ATTENTION},
                          "weight_scales": {"per": "channel", "scale_bits": 16},
                          "activation_scales": {"per": "token", "scale_bits": 16}}},
    "nvfp4": {"precision": {"weights": "nvfp4", "activations": "nvfp4", "ops": {"head": "native", **NATIVE_ATTENTION}}},
    "sparse_w4a16": {"precision": {"weights": "int4", "activations": "native",
                                   "ops": {"head": "native", **NATIVE_ATTENTION},
                                   "weight_scales": {"per": "group", "group_size": 128, "scale_bits": 16}},
                     "sparsity": {"weights": {"pattern": "2:4", "roles": ["attn_out", "ffn1", "ffn2", "k", "q",
                                                                          "v"]}}},
    "gptq": {"precision": {"weights": "int4", "activations": "native", "ops": {"head": "native", **NATIVE_ATTENTION},
                           "weight_scales": {"per": "group", "group_size": 128, "scale_bits": 16,
                                             "zero_point_bits": 4}}},
    "fp8_block_ct": {"precision": {"weights": "fp8_e4m3", "activations": "fp8_e4m3",
                                   "ops": {"head": "native", **NATIVE_ATTENTION},
                                   "weight_scales": {"per": "block", "block_size": [128, 128], "scale_bits": 16},
                                   "activation_scales": {"per": "token", "group_size": 128, "scale_bits": 16}}},
    "fp8_block_hf": {"precision": {"weights": "fp8_e4m3", "activations": "fp8_e4m3",
                                   "ops": {"head": "native", **NATIVE_ATTENTION},
                                   "weight_scales": {"per": "block", "block_size": [128, 128], "scale_bits": 32},
                                   "activation_scales": {"per": "token", "group_size": 128, "scale_bits": 32}}},
    "nf4": {"precision": {"weights": "nf4", "activations": "native", "ops": {"head": "native", **NATIVE_ATTENTION}}},
    "nf4_dq": {"precision": {"weights": "nf4_dq", "activations": "native",
                             "ops": {"head": "native", **NATIVE_ATTENTION}}},
    "awq": {"precision": {"weights": "int4", "activations": "native", "ops": {"head": "native", **NATIVE_ATTENTION},
                          "weight_scales": {"per": "group", "group_size": 128, "scale_bits": 16,
                                            "zero_point_bits": 4}}},
}
SCHEMES = {"w4a16": W4A16, "w8a8": W8A8, "fp8": FP8, "nvfp4": NVFP4, "sparse_w4a16": SPARSE_W4A16, "gptq": GPTQ,
           "awq": AWQ, "fp8_block_hf": FP8_BLOCK}
LINEARS = {"self_attn.q_proj": (256, 256), "self_attn.k_proj": (256, 128), "self_attn.v_proj": (256, 128),
           "self_attn.o_proj": (256, 256), "mlp.gate_proj": (256, 512), "mlp.up_proj": (256, 512),
           "mlp.down_proj": (512, 256)}  # (K, N)


def checkpoint(directory: Path, quantization: dict | None, headers: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = {**TINY, **({"quantization_config": quantization} if quantization else {})}
    (directory / "config.json").write_text(json.dumps(config))
    if headers is not None:
        write_safetensors_header(directory / "model.safetensors", headers)
    return directory


def write_safetensors_header(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A safetensors file's header (offsets included; the data is not needed to read the header)."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset]}
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text)


def gptq_headers(bits: int = 4, group_size: int = 128) -> dict:
    tensors = {}
    for layer in range(2):
        for leaf, (k, n) in LINEARS.items():
            name = f"model.layers.{layer}.{leaf}"
            tensors[f"{name}.qweight"] = ("I32", [k * bits // 32, n])
            tensors[f"{name}.scales"] = ("F16", [k // group_size, n])
            tensors[f"{name}.qzeros"] = ("I32", [k // group_size, n * bits // 32])
    tensors["lm_head.weight"] = ("F16", [1000, 256])
    return tensors


def packed_headers(bits: int = 4, group_size: int = 128) -> dict:
    tensors = {}
    for layer in range(2):
        for leaf, (k, n) in LINEARS.items():
            name = f"model.layers.{layer}.{leaf}"
            tensors[f"{name}.weight_packed"] = ("I32", [n, k * bits // 32])
            tensors[f"{name}.weight_scale"] = ("BF16", [n, k // group_size])
            tensors[f"{name}.weight_shape"] = ("I64", [2])
    return tensors


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("workload", [Workload(tokens=64), Workload(tokens=64, phase="decode", batch=2)])
def test_a_checkpoints_recipe_runs_as_the_hand_written_config_of_its_scheme(tmp_path, scheme, workload):
    path = checkpoint(tmp_path / scheme, SCHEMES[scheme])
    derived = checkpoint_run(path, "tpu_v5e_like")
    by_hand = policy_from_dict({"name": scheme, "hardware": "tpu_v5e_like", **BY_HAND[scheme]})
    assert derived.policy.config.simulation_key() == by_hand.config.simulation_key()
    trace = load_model(str(path)).trace(workload)
    hardware = load_hardware("tpu_v5e_like")
    ours, theirs = simulate(trace, hardware, derived.policy), simulate(trace, hardware, by_hand)
    assert ours.drop(columns=["name"]).equals(theirs.drop(columns=["name"]))
    assert any("no safetensors weights" in source for source in derived.sources)


def test_every_decision_names_its_source(tmp_path):
    sources = checkpoint_run(checkpoint(tmp_path / "c", W4A16), "tpu_v5e_like").sources
    assert sources[0] == "checkpoint: weights and activations weights int4 g128, activations native: " \
                         "compressed-tensors group_0"
    assert "checkpoint: head native: ignore" in sources


@pytest.mark.parametrize(("quantization", "headers"), [(GPTQ, gptq_headers()), (W4A16, packed_headers())])
def test_headers_that_agree_with_the_recipe_pass(tmp_path, quantization, headers):
    derived = checkpoint_run(checkpoint(tmp_path / "c", quantization, headers), "tpu_v5e_like")
    assert not any("no safetensors weights" in source for source in derived.sources)


@pytest.mark.parametrize(("quantization", "headers", "refusal"), [
    (GPTQ, {**gptq_headers(), "model.layers.1.mlp.down_proj.qweight": ("I32", [32, 256])},
     r"model.layers.1.mlp.down_proj.qweight has shape \[32, 256\], the quantization config implies \[64, 256\]"),
    (GPTQ, gptq_headers(group_size=64), r"scales has shape \[4, 256\], the quantization config implies \[2, 256\]"),
    (W4A16, {k: v for k, v in packed_headers().items() if "layers.0.self_attn.q_proj.weight_packed" not in k},
     "model.layers.0.self_attn.q_proj.weight_packed is missing"),
    (W4A16, {**packed_headers(), "model.layers.0.mlp.up_proj.weight_packed": ("I8", [512, 32])},
     "up_proj.weight_packed is I8, the quantization config implies I32"),
])
def test_headers_that_contradict_the_recipe_are_refused_naming_the_tensor(tmp_path, quantization, headers, refusal):
    with pytest.raises(InputError, match=refusal):
        checkpoint_run(checkpoint(tmp_path / "c", quantization, headers), "tpu_v5e_like")


@pytest.mark.parametrize(("quantization", "refusal"), [
    ({"quant_method": "hqq"}, "quant_method 'hqq' is not supported"),
    ({"quant_method": "bitsandbytes", "load_in_8bit": True}, "load_in_8bit: LLM.int8"),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "fp4"}, "accelsim models nf4"),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
      "llm_int8_skip_modules": ["router"]}, "'router' matches no weight matrix"),
    ({**W4A16, "ignore": ["lm_head", "model.layers.7.mlp.down_proj"]}, "'model.layers.7.mlp.down_proj' matches no"),
    (compressed({"group_0": group({"num_bits": 6, "type": "float", "strategy": "group", "group_size": 16})},
                "float-quantized"), "6-bit floats"),
    ({**GPTQ, "desc_act": True}, "desc_act true"),
    (compressed({"group_0": group({"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128},
                                  targets=["model.layers.0.self_attn.q_proj"])}, "pack-quantized", ignore=()),
     "the q layers are not all quantized alike"),
    ({**W4A16, "kv_cache_scheme": {"num_bits": 8, "type": "float", "strategy": "channel"}}, "kv_cache_scheme.strategy"),
])
def test_a_recipe_accelsim_cannot_represent_is_refused_naming_the_field(tmp_path, quantization, refusal):
    with pytest.raises(InputError, match=refusal):
        checkpoint_run(checkpoint(tmp_path / "c", quantization), "tpu_v5e_like")


def test_a_missing_shard_is_refused(tmp_path):
    path = checkpoint(tmp_path / "c", W4A16)
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model-00001-of-00002"
                                                                                   ".safetensors"}}))
    with pytest.raises(InputError, match="model-00001-of-00002.safetensors: the shard the checkpoint's index lists"):
        checkpoint_run(path, "tpu_v5e_like")


def test_config_from_checkpoint_prints_a_config_run_accepts_with_the_same_numbers(tmp_path, run_cli):
    path = checkpoint(tmp_path / "c", W8A8)
    text = run_cli("config", "--from-checkpoint", str(path), "--hardware", "tpu_v5e_like")
    assert text.startswith("# weights and activations weights int8 per channel, activations int8")
    (tmp_path / "derived.yaml").write_text(text)
    args = ["--model", str(path), "--tokens", "64", "--hardware", "tpu_v5e_like", "--format", "csv"]
    assert run_cli("run", str(tmp_path / "derived.yaml"), *args) == run_cli("run", "checkpoint", *args)


def test_reading_a_checkpoint_leaves_nothing_in_the_temporary_directory(tmp_path):
    """compressed-tensors imports torch's compiler, which makes a cache folder in the temporary directory
    (workloads/torch_cache.py): the run's own, removed at its end."""
    from cli_helpers import accelsim_leaving_nothing

    path = checkpoint(tmp_path / "c", W8A8)
    accelsim_leaving_nothing(tmp_path / "scratch", "config", "--from-checkpoint", str(path),
                             "--hardware", "tpu_v5e_like")


def test_a_group_for_some_roles_becomes_their_per_role_format(tmp_path):
    """Quantizing only the q projections (a regex over their module names): per role, so representable."""
    quantization = compressed({"group_0": group({"num_bits": 4, "type": "int", "strategy": "group",
                                                 "group_size": 128}, targets=["re:.*q_proj$"])}, "pack-quantized",
                              ignore=())
    derived = checkpoint_run(checkpoint(tmp_path / "c", quantization), "tpu_v5e_like")
    precision = derived.config["precision"]
    assert (precision["weights"], precision["ops"]["q"]) == ("native", {"weights": "int4", "activations": "native"})


# --- checkpoints saved by compressed-tensors itself (tests/fixtures/checkpoints/make_checkpoints.py) ----------

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints"
SAVED = {"ct_w4a16": "w4a16", "ct_w8a8": "w8a8", "ct_fp8": "fp8", "ct_nvfp4": "nvfp4", "bnb_nf4": "nf4",
         "bnb_nf4_dq": "nf4_dq", "ct_fp8_block": "fp8_block_ct"}
# What accelsim does not count among a layer's weights: the packed weights' shape (metadata), NVFP4's
# static per-tensor scale of the activations, bitsandbytes' code tables (16 and 256 FP32 values per
# tensor) and its quant_state blob (a JSON record, which holds the double quantization's FP32 offset:
# accelsim counts that offset, 32 bits per tensor, as a scale).
NOT_COUNTED = ("weight_shape", "input_global_scale", "quant_map", "nested_quant_map", "bitsandbytes__nf4")
IN_THE_BLOB = {"bnb_nf4_dq": 32}
BYTES = {"I32": 4, "I64": 8, "I8": 1, "U8": 1, "BF16": 2, "F16": 2, "F32": 4, "F8_E4M3": 1}


@pytest.mark.parametrize("folder", sorted(SAVED))
def test_a_saved_checkpoint_runs_as_its_scheme_and_stores_what_its_tensors_hold(folder):
    """The derived run equals the hand-written config of its scheme, the headers agree with it, and the bits
    accelsim stores for each quantized layer (values, scales, NVFP4's per-tensor FP32 scale) are those of
    the layer's tensors in the file, less what it does not count (``NOT_COUNTED``)."""
    from simulator.engine import Simulator

    derived = checkpoint_run(FIXTURES / folder, "tpu_v5e_like")
    by_hand = policy_from_dict({"name": folder, "hardware": "tpu_v5e_like", **BY_HAND[SAVED[folder]]})
    assert derived.policy.config.simulation_key() == by_hand.config.simulation_key()
    assert not any("no safetensors weights" in source for source in derived.sources)
    from simulator.spec.checkpoint_files import read_checkpoint
    from simulator.spec.checkpoint_schemes import module_namer

    headers = read_checkpoint(FIXTURES / folder).headers
    simulator = Simulator(load_hardware("tpu_v5e_like"), derived.policy)
    trace = load_model(str(FIXTURES / folder)).trace(Workload(tokens=8))
    for op in (op for op in trace if op.kind == "gemm" and op.weight_params and op.role != "head"):
        module = module_namer("llama")(op)
        stored = simulator.storage(op)
        in_file = sum(BYTES[header.dtype] * 8 * _count(header.shape) for name, header in headers.items()
                      if name.startswith(module + ".") and not name.endswith(NOT_COUNTED))
        assert stored.weight_bits + stored.scale_bits == in_file + IN_THE_BLOB.get(folder, 0), module


def _count(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def test_block_wise_fp8_scales_per_block_of_weights_and_per_group_of_each_tokens_channels(tmp_path):
    """Transformers' fine-grained FP8 (DeepSeek-V3 style): a 32-bit scale per 128 x 128 weight block, and per
    token and 128 channels of the activations (the absmax pass finds them)."""
    headers = {}
    for layer in range(2):
        for leaf, (k, n) in LINEARS.items():
            name = f"model.layers.{layer}.{leaf}"
            headers[f"{name}.weight"] = ("F8_E4M3", [n, k])
            headers[f"{name}.weight_scale_inv"] = ("F32", [-(-n // 128), -(-k // 128)])
    path = checkpoint(tmp_path / "fp8", FP8_BLOCK, headers)
    derived = checkpoint_run(path, "tpu_v5e_like")
    trace = load_model(str(path)).trace(Workload(tokens=64))
    res = simulate(trace, load_hardware("tpu_v5e_like"), derived.policy)
    down = res[res.name == "layers.0.mlp.down_proj"].iloc[0]
    assert down.scale_bits == 2 * 4 * 32  # 256 x 512: 2 x 4 blocks
    scales = res[res.name == "layers.0.mlp.down_proj.quantize_absmax"]
    assert len(scales) == 1  # its input's scales: 64 tokens x 512 channels / 128 per scale, 32 bits each
    headers["model.layers.0.mlp.down_proj.weight_scale_inv"] = ("F32", [2, 2])
    path = checkpoint(tmp_path / "bad", FP8_BLOCK, headers)
    with pytest.raises(InputError, match=r"down_proj.weight_scale_inv has shape \[2, 2\], the quantization "
                                         r"config implies \[2, 4\]"):
        checkpoint_run(path, "tpu_v5e_like")


def test_opt_checkpoints_are_read_by_opts_module_names(tmp_path):
    """OPT names its modules model.decoder.layers.N.self_attn.q_proj ... fc1, fc2: a GPTQ checkpoint's
    headers are found under those names, and an ignore entry naming fc2 leaves the ffn2 layers native."""
    config = json.loads((Path(__file__).resolve().parents[1] / "configs" / "opt-350m.json").read_text())
    hidden, inner, layers = config["hidden_size"], config["ffn_dim"], config["num_hidden_layers"]
    shapes = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, hidden),
              "self_attn.v_proj": (hidden, hidden), "self_attn.out_proj": (hidden, hidden), "fc1": (hidden, inner),
              "fc2": (inner, hidden)}
    headers = {}
    for layer in range(layers):
        for leaf, (k, n) in shapes.items():
            headers[f"model.decoder.layers.{layer}.{leaf}.qweight"] = ("I32", [k * 4 // 32, n])
            headers[f"model.decoder.layers.{layer}.{leaf}.scales"] = ("F16", [k // 128, n])
    directory = tmp_path / "opt"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({**config, "quantization_config": GPTQ}))
    write_safetensors_header(directory / "model.safetensors", headers)
    derived = checkpoint_run(directory, "tpu_v5e_like")
    assert derived.config["precision"]["weights"] == "int4"
    quantization = compressed({"group_0": group({"num_bits": 8, "type": "int", "strategy": "channel"})},
                              "int-quantized", ignore=["lm_head", "re:.*fc2$"])
    (directory / "config.json").write_text(json.dumps({**config, "quantization_config": quantization}))
    (directory / "model.safetensors").unlink()
    derived = checkpoint_run(directory, "tpu_v5e_like")
    assert derived.config["precision"]["ops"]["ffn2"] == "native"


@pytest.mark.parametrize(("quantization", "expected"), [
    ({**GPTQ, "sym": False}, {"weight_scales": {"per": "group", "group_size": 128, "scale_bits": 16,
                                                "zero_point_bits": 4}}),
    ({**GPTQ, "group_size": -1, "bits": 8}, {"weights": "int8", "weight_scales": {"per": "channel", "scale_bits": 16,
                                                                                  "zero_point_bits": 8}}),
    ({"quant_method": "gptq", "bits": 3}, {"weights": "int3", "weight_scales": {"per": "channel", "scale_bits": 16,
                                                                               "zero_point_bits": 3}}),
    ({**AWQ, "zero_point": False}, {"weight_scales": {"per": "group", "group_size": 128, "scale_bits": 16,
                                                      "zero_point_bits": 0}}),
    ({"quant_method": "awq", "bits": 4, "group_size": 64}, {"weight_scales": {"per": "group", "group_size": 64,
                                                                              "scale_bits": 16,
                                                                              "zero_point_bits": 4}}),
    ({**W4A16, "kv_cache_scheme": {"num_bits": 8, "type": "float"}},
     {"kv_cache": "fp8_e4m3", "kv_scales": {"per": "tensor", "scale_bits": 16}}),
    ({**W4A16, "kv_cache_scheme": {"num_bits": 8, "strategy": "attn_head"}},
     {"kv_cache": "int8", "kv_scales": {"per": "head", "scale_bits": 16}}),
    ({**W4A16, "kv_cache_scheme": {"num_bits": 4, "type": "int", "strategy": "token", "dynamic": True}},
     {"kv_cache": "int4", "kv_scales": {"per": "token", "scale_bits": 16}}),
    (compressed({"group_0": group({"num_bits": 4, "type": "int", "symmetric": False, "strategy": "group",
                                   "group_size": 32})}, "pack-quantized"),
     {"weights": "int4", "weight_scales": {"per": "group", "scale_bits": 16, "group_size": 32, "zero_point_bits": 4}}),
    (compressed({"group_0": group({"num_bits": 4, "type": "float", "strategy": "group", "group_size": 32})},
                "mxfp4-pack-quantized"), {"weights": "mxfp4"}),
    (compressed({"group_0": group({"num_bits": 8, "type": "int", "strategy": "tensor"},
                                  {"num_bits": 8, "type": "int", "strategy": "tensor", "dynamic": False})},
                "int-quantized"),
     {"weights": "int8", "activations": "int8", "weight_scales": {"per": "tensor", "scale_bits": 16},
      "activation_scales": {"per": "tensor", "scale_bits": 16}}),
])
def test_each_recipe_field_becomes_its_accelsim_setting(tmp_path, quantization, expected):
    precision = checkpoint_run(checkpoint(tmp_path / "c", quantization), "tpu_v5e_like").config["precision"]
    assert {key: precision.get(key) for key in expected} == expected


@pytest.mark.parametrize(("quantization", "refusal"), [
    ({"quant_method": "gptq", "bits": 5}, "quantization_config.bits 5: gptq stores 2, 3, 4 or 8-bit weights"),
    ({**W4A16, "kv_cache_scheme": {"num_bits": 16, "type": "float"}}, "compressed-tensors refuses it"),
    ({**W4A16, "kv_cache_scheme": {"num_bits": 2, "type": "int"}},
     "kv_cache_scheme: int 2-bit caches are not modelled"),
    ({**W4A16, "sparsity_config": {"format": "sparse-bitmask", "sparsity_structure": "unstructured"}},
     "sparsity_structure 'unstructured': accelsim reads 2:4 checkpoints"),
    (compressed({"group_0": group({"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128},
                                  targets=["re:.*self_attn.*"]),
                 "group_1": group({"num_bits": 8, "type": "int", "strategy": "channel"},
                                  targets=["re:.*mlp.*"])}, "mixed-precision"),
     r"the groups' weight scales differ \(\{'per': 'channel'"),
    ({"quant_method": "bitsandbytes"}, "neither load_in_4bit nor load_in_8bit"),
    ({**FP8_BLOCK, "weight_block_size": [128]}, "weight_block_size \\[128\\]: give two positive sizes"),
    ({**FP8_BLOCK, "activation_scheme": "static"}, "activation_scheme 'static'"),
    (compressed({"group_0": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "int", "strategy": "channel"},
                             "output_activations": {"num_bits": 8, "type": "int", "strategy": "token",
                                                    "dynamic": True}}},
                "int-quantized"), "output_activations: quantized outputs are not modelled"),
])
def test_recipe_fields_accelsim_cannot_represent_are_refused_by_name(tmp_path, quantization, refusal):
    with pytest.raises(InputError, match=refusal):
        checkpoint_run(checkpoint(tmp_path / "c", quantization), "tpu_v5e_like")


NF4 = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
SPARSE_24 = {"format": "sparse-24-bitmask", "sparsity_structure": "2:4", "targets": ["Linear"], "ignore": ["lm_head"]}


@pytest.mark.parametrize(("quantization", "refusal"), [  # each was read by its truthiness or failed inside
    ({**W4A16, "sparsity_config": {**SPARSE_24, "targets": [1.5]}},
     r"sparsity_config.targets must be a list of module names, got \[1.5\]"),  # AttributeError
    ({**W4A16, "sparsity_config": {**SPARSE_24, "ignore": 16}}, "sparsity_config.ignore must be a list"),
    ({**W4A16, "sparsity_config": {**SPARSE_24, "ignore": ["lm_head", "group"]}},  # as the quantization's ignore
     "sparsity_config.ignore: 'group' matches no weight matrix"),
    ({**W4A16, "sparsity_config": {**SPARSE_24, "targets": ["re:.*q_prj"]}}, "sparsity_config.targets: 're:.*q_prj'"),
    ({"quant_method": "compressed-tensors", "sparsity_config": "2:4"},
     "quantization_config.sparsity_config must be an object, got '2:4'"),  # AttributeError
    ({**W4A16, "kv_cache_scheme": {"num_bits": 8.0, "type": "float"}}, "kv_cache_scheme.num_bits must be an integer"),
    ({**NF4, "llm_int8_skip_modules": 32}, "llm_int8_skip_modules must be a list"),  # TypeError
    ({**NF4, "bnb_4bit_use_double_quant": "no"}, "bnb_4bit_use_double_quant must be true or false"),
    ({**NF4, "bnb_4bit_compute_dtype": 16}, "bnb_4bit_compute_dtype must be a string"),
    ({"quant_method": "bitsandbytes", "load_in_4bit": "true", "bnb_4bit_quant_type": "nf4"},
     "load_in_4bit must be true or false"),
    ({**GPTQ, "sym": "false"}, "sym must be true or false"),  # "false" was symmetric
    ({**GPTQ, "bits": 4.0}, "bits must be an integer"),
    ({**GPTQ, "group_size": "128"}, "group_size must be an integer"),
    ({**FP8_BLOCK, "modules_to_not_convert": "lm_head"}, "modules_to_not_convert must be a list"),  # iterated letters
    ({"quant_method": 7}, "quant_method must be a string"),
    ({"bits": 4}, "quant_method None is not supported"),  # absent: named as such
])
def test_recipe_fields_of_another_type_are_refused_by_name(tmp_path, quantization, refusal):
    with pytest.raises(InputError, match=refusal):
        checkpoint_run(checkpoint(tmp_path / "c", quantization), "tpu_v5e_like")


@pytest.mark.parametrize(("compute", "said"), [("float32", "native (bnb_4bit_compute_dtype float32 is not applied)"),
                                               (None, "native")])
def test_bitsandbytes_compute_dtype_is_said_not_applied(tmp_path, compute, said):
    """Activations run in the chip's format, whatever dtype bitsandbytes would dequantize to on a GPU: the
    derived config says so instead of reading past the field."""
    derived = checkpoint_run(checkpoint(tmp_path / "c", {**NF4, "bnb_4bit_compute_dtype": compute}), "tpu_v5e_like")
    assert derived.config["precision"]["activations"] == "native"
    assert derived.sources[0].endswith(f"bnb_4bit_use_double_quant); activations {said}")


def test_a_mixed_recipe_sets_formats_per_role(tmp_path):
    """Two groups with the same scale granularity: int4 attention projections, int8 MLP, both per channel."""
    quantization = compressed({
        "group_0": group({"num_bits": 4, "type": "int", "strategy": "channel"}, targets=["re:.*self_attn.*"]),
        "group_1": group({"num_bits": 8, "type": "int", "strategy": "channel"}, targets=["re:.*mlp.*"])},
        "mixed-precision")
    derived = checkpoint_run(checkpoint(tmp_path / "c", quantization), "tpu_v5e_like")
    precision = derived.config["precision"]
    formats = {role: precision["ops"].get(role, {"weights": precision["weights"]}) for role in ("q", "ffn1", "ffn2")}
    weights = {role: setting if isinstance(setting, str) else setting["weights"] for role, setting in formats.items()}
    assert weights == {"q": "int4", "ffn1": "int8", "ffn2": "int8"}
    assert "checkpoint: head native: ignore" in derived.sources


def awq_headers(bits: int = 4, group_size: int = 128) -> dict:
    tensors = {}
    for layer in range(2):
        for leaf, (k, n) in LINEARS.items():
            name = f"model.layers.{layer}.{leaf}"
            tensors[f"{name}.qweight"] = ("I32", [k, n * bits // 32])  # AWQ packs along the outputs
            tensors[f"{name}.scales"] = ("F16", [k // group_size, n])
    return tensors


def test_awq_packs_along_the_outputs(tmp_path):
    checkpoint_run(checkpoint(tmp_path / "ok", AWQ, awq_headers()), "tpu_v5e_like")
    with pytest.raises(InputError, match=r"qweight has shape \[32, 256\], the quantization config implies "
                                         r"\[256, 32\]"):
        checkpoint_run(checkpoint(tmp_path / "bad", AWQ, gptq_headers()), "tpu_v5e_like")


def test_a_checkpoint_without_a_recipe_runs_natively(tmp_path):
    derived = checkpoint_run(checkpoint(tmp_path / "c", None), "tpu_v5e_like")
    assert derived.config["precision"] == {"default": "native"}
    assert derived.sources[0] == "checkpoint: weights and activations native: config.json has no quantization_config"


@pytest.mark.parametrize(("data", "refusal"), [
    (b"\x00" * 4, "not a safetensors file"),  # too short for the length
    (struct.pack("<Q", 200) + b"{}", "header is cut short \\(2 of 200 bytes\\)"),  # shorter than it says
    (struct.pack("<Q", 3) + b"{x}", "its safetensors header is not JSON"),
    (struct.pack("<Q", 0), "not a safetensors file \\(header length 0\\)"),
])
def test_a_file_that_is_not_safetensors_is_refused(tmp_path, data, refusal):
    path = checkpoint(tmp_path / "c", W4A16)
    (path / "model.safetensors").write_bytes(data)
    with pytest.raises(InputError, match=refusal):
        checkpoint_run(path, "tpu_v5e_like")


@pytest.mark.parametrize(("folder", "tensor", "wrong"), [
    ("ct_nvfp4", "model.layers.1.mlp.up_proj.weight_packed", ("U8", [512, 64])),
    ("ct_nvfp4", "model.layers.1.mlp.up_proj.weight_scale", ("BF16", [512, 16])),
    ("bnb_nf4_dq", "model.layers.0.self_attn.k_proj.weight.absmax", ("F32", [512])),
    ("bnb_nf4", "model.layers.0.self_attn.k_proj.weight", ("U8", [16384, 2])),
    ("ct_fp8_block", "model.layers.0.mlp.down_proj.weight_scale", ("BF16", [4, 2])),
])
def test_a_saved_checkpoint_with_a_tensor_changed_is_refused_naming_it(tmp_path, folder, tensor, wrong):
    from simulator.spec.checkpoint_files import read_header

    headers = {name: (h.dtype, list(h.shape)) for name, h in read_header(FIXTURES / folder / "model.safetensors")
               .items()}
    assert tensor in headers and headers[tensor] != wrong
    config = json.loads((FIXTURES / folder / "config.json").read_text())
    directory = tmp_path / folder
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    write_safetensors_header(directory / "model.safetensors", {**headers, tensor: wrong})
    with pytest.raises(InputError, match=f"safetensors: {re.escape(tensor)} "):
        checkpoint_run(directory, "tpu_v5e_like")


def test_block_fp8_modules_not_converted_stay_native(tmp_path):
    quantization = {**FP8_BLOCK, "modules_to_not_convert": ["lm_head", "down_proj"]}
    precision = checkpoint_run(checkpoint(tmp_path / "c", quantization), "tpu_v5e_like").config["precision"]
    assert precision["ops"]["ffn2"] == "native" and precision["ops"]["head"] == "native"
    assert precision["weights"] == precision["activations"] == "fp8_e4m3"
    with pytest.raises(InputError, match="give two positive sizes"):
        checkpoint_run(checkpoint(tmp_path / "d", {**FP8_BLOCK, "weight_block_size": [0, 128]}), "tpu_v5e_like")


def test_a_2_4_recipe_without_targets_prunes_every_linear_but_the_ignored(tmp_path):
    sparse = {**W4A16, "sparsity_config": {"format": "sparse-24-bitmask", "sparsity_structure": "2:4",
                                          "ignore": ["re:.*mlp.*", "lm_head"]}}
    config = checkpoint_run(checkpoint(tmp_path / "c", sparse), "tpu_v5e_like").config
    assert config["sparsity"]["weights"]["roles"] == ["attn_out", "k", "q", "v"]


@pytest.mark.parametrize(("saved", "chip"), [("ct_w4a16", "tpu_v5e_like"), ("ct_24_bitmask", "rapid_like"),
                                             ("bnb_nf4_dq", "tpu_v5e_like")])
def test_memory_of_a_checkpoint_is_the_memory_of_its_derived_config(tmp_path, run_cli, saved, chip):
    """`memory checkpoint` stores the weights as the recipe it derives on --hardware says, exactly as the
    derived config written out does (2:4 masks read from the checkpoint's own weights alike), and lists where
    each decision came from."""
    path = str(FIXTURES / saved)
    derived = tmp_path / "derived.yaml"
    derived.write_text(run_cli("config", "--from-checkpoint", path, "--hardware", chip))
    args = ["--model", path, "--hardware", chip, "--json"]
    of_checkpoint = json.loads(run_cli("memory", "checkpoint", *args))
    assert of_checkpoint.pop("sources")[0].startswith("checkpoint: weights ")
    assert of_checkpoint == json.loads(run_cli("memory", str(derived), *args))
    assert of_checkpoint["total"]["bits"] < of_checkpoint["total"]["params"] * 16  # compressed
