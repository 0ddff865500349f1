"""Masks read from a sparse checkpoint's own weights: decoded as compressed-tensors decodes them, checked
against the 2:4 pattern, and timed with the mask kernel (tests/fixtures/checkpoints/make_checkpoints.py made
the two fixtures with their weights)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from simulator.cli.main import cli
from simulator.engine import simulate
from simulator.spec.checkpoint import checkpoint_run
from simulator.spec.checkpoint_files import read_checkpoint
from simulator.spec.checkpoint_masks import CheckpointMasks
from simulator.spec.checkpoint_schemes import module_namer
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import policy_from_dict
from workloads.errors import InputError
from workloads.models import Workload, load_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints"
BITMASK, PACKED = FIXTURES / "ct_24_bitmask", FIXTURES / "ct_w4a16_24"


def linears(directory: Path) -> list:
    trace = load_model(str(directory)).trace(Workload(tokens=8))
    return [op for op in trace if op.kind == "gemm" and op.weight_params and op.role != "head"]


def tensors(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def test_bitmask_masks_are_compressed_tensors_own_unpacking():
    from compressed_tensors.utils import tensor_follows_mask_structure, unpack_bitmasks

    masks, stored = CheckpointMasks(BITMASK, None), tensors(BITMASK)
    for op in linears(BITMASK):
        module = module_namer("llama")(op)
        reference = unpack_bitmasks(stored[f"{module}.bitmask"], [op.n, op.k]).numpy()
        assert (masks(op) == reference.T).all(), module
        assert tensor_follows_mask_structure(torch.from_numpy(masks(op).T.copy()).float(), "2:4")
        assert masks(op).sum() == stored[f"{module}.compressed"].numel()  # every kept value, once


def test_packed_masks_are_the_nonzero_codes_compressed_tensors_unpacks():
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    masks, stored = CheckpointMasks(PACKED, None), tensors(PACKED)
    for op in linears(PACKED):
        module = module_namer("llama")(op)
        codes = unpack_from_int32(stored[f"{module}.weight_packed"], 4, torch.Size([op.n, op.k]))
        assert (masks(op) == (codes != 0).numpy().T).all(), module
        kept = masks(op).reshape(op.k // 4, 4, op.n).sum(axis=1)
        assert kept.max() == 2 and kept.min() < 2  # 2:4, and some kept weights rounded to int4 zero


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float8_e4m3fn", "int8"])
def test_dense_weights_keep_every_value_but_zero(tmp_path, dtype):
    from safetensors.torch import save_file

    directory = tmp_path / "dense"
    shutil.copytree(PACKED, directory)
    stored = tensors(PACKED)
    op = linears(PACKED)[0]
    module = module_namer("llama")(op)
    weight = torch.randn(op.n, op.k)
    weight[:, 0::4] = 0.0
    weight[:, 1::4] = -0.0  # a negative zero is not a kept weight
    if dtype == "int8":
        weight = (weight * 50).clamp(-127, 127).to(torch.int8)
        weight[weight == 0] = 1  # every other value kept
        weight[:, 0::4] = weight[:, 1::4] = 0
    weight = weight.to(getattr(torch, dtype))
    stored = {name: tensor for name, tensor in stored.items() if not name.startswith(module + ".")}
    save_file({**stored, f"{module}.weight": weight}, str(directory / "model.safetensors"))
    mask = CheckpointMasks(directory, None)(op)
    assert (mask == (weight.float() != 0).numpy().T).all()  # -0.0 == 0 in float arithmetic
    assert not mask[0::4].any() and not mask[1::4].any() and mask.sum() > op.n * op.k // 4


def run(directory: Path, hardware: str, mask: bool) -> tuple:
    derived = checkpoint_run(directory, hardware)
    config = json.loads(json.dumps(derived.config))
    if not mask:
        del config["sparsity"]["weights"]["mask"]
    policy = policy_from_dict(config)
    from simulator.spec.weight_masks import weight_masks

    trace = load_model(str(directory)).trace(Workload(tokens=64))
    return simulate(trace, load_hardware(hardware), policy, mask_for=weight_masks(policy)), derived


@pytest.mark.parametrize("hardware", ["rapid_like", "rapid_like_4core"])
def test_exact_2_4_masks_time_as_the_closed_form_and_rounded_zeros_never_slow_a_layer(hardware):
    """Every column of an exactly 2:4 mask keeps K/2 weights, so its layers take the closed form's cycles;
    int4 rounding that zeroes kept weights can only shorten the widest lane of a tile."""
    masked, derived = run(BITMASK, hardware, mask=True)
    closed, _ = run(BITMASK, hardware, mask=False)
    assert derived.config["sparsity"]["weights"]["mask"] == str(BITMASK.resolve())
    assert any("read from the weights" in source for source in derived.sources)
    columns = ["name", "compute_cycles", "folds", "macs", "total_cycles", "dram_bytes", "weight_bits",
               "index_bits"]
    assert (masked[columns] == closed[columns]).all().all()
    masked, _ = run(PACKED, hardware, mask=True)
    closed, _ = run(PACKED, hardware, mask=False)
    assert (masked.compute_cycles <= closed.compute_cycles).all()
    assert (masked.macs < closed.macs).any()  # the rounded-away weights are not multiplied


def test_a_bitmask_checkpoint_stores_what_its_tensors_hold():
    """On a chip that keeps 2:4 weights compressed, the stored bits of each layer are its file's kept values
    and bitmask (a bit per dense weight = 2 index bits per kept value); the dense shape is metadata."""
    from simulator.engine import Simulator
    from simulator.spec.weight_masks import weight_masks

    derived = checkpoint_run(BITMASK, "rapid_like")
    headers = read_checkpoint(BITMASK).headers
    simulator = Simulator(load_hardware("rapid_like"), derived.policy, mask_for=weight_masks(derived.policy))
    for op in linears(BITMASK):
        module = module_namer("llama")(op)
        stored = simulator.storage(op)
        in_file = sum(8 * (header.data[1] - header.data[0]) for name, header in headers.items()
                      if name.startswith(module + ".") and not name.endswith(".shape"))
        assert stored.weight_bits == in_file and stored.index_bits == op.n * op.k, module  # values + indices


def test_the_printed_config_reads_the_same_masks(tmp_path):
    runner = CliRunner()
    printed = runner.invoke(cli, ["config", "--from-checkpoint", str(BITMASK), "--hardware", "rapid_like"])
    assert printed.exit_code == 0, printed.output
    assert yaml.safe_load(printed.output)["sparsity"]["weights"]["mask"] == str(BITMASK.resolve())
    (tmp_path / "c.yaml").write_text(printed.output)
    args = ["--model", str(BITMASK), "--hardware", "rapid_like", "--json"]
    kept = runner.invoke(cli, ["run", str(tmp_path / "c.yaml"), *args])
    derived = runner.invoke(cli, ["run", "checkpoint", *args])
    assert kept.exit_code == derived.exit_code == 0, kept.output + derived.output
    assert json.loads(kept.output)["total_cycles"] == json.loads(derived.output)["total_cycles"]


def test_a_checkpoint_without_its_weights_is_timed_by_the_closed_form(tmp_path):
    directory = tmp_path / "headers"
    shutil.copytree(BITMASK, directory)
    data = (directory / "model.safetensors").read_bytes()
    (directory / "model.safetensors").write_bytes(data[:8 + int.from_bytes(data[:8], "little")])
    derived = checkpoint_run(directory, "rapid_like")
    assert "mask" not in derived.config["sparsity"]["weights"]
    assert any("none read (no weights in the checkpoint)" in source for source in derived.sources)
    tpu = checkpoint_run(BITMASK, "tpu_v5e_like")  # no 2:4 skipping: no masks to speak of
    assert not any("2:4 masks" in source for source in tpu.sources)


def edited(tmp_path: Path, change) -> Path:
    from safetensors.torch import save_file

    directory = tmp_path / "edited"
    shutil.copytree(BITMASK, directory)
    stored = tensors(BITMASK)
    change(stored)
    save_file(stored, str(directory / "model.safetensors"))
    return directory


def three_of_four(stored: dict) -> None:
    stored["model.layers.0.mlp.up_proj.bitmask"][5, 0] = 0b0111


def test_masks_that_break_2_4_are_refused_naming_the_tensor(tmp_path):
    directory = edited(tmp_path, three_of_four)
    masks = CheckpointMasks(directory, load_pattern("2:4"))
    op = next(op for op in linears(directory) if op.name.endswith("up_proj"))
    with pytest.raises(InputError, match=r"model.layers.0.mlp.up_proj.bitmask: not 2:4: output 5 keeps more than "
                                         r"2 of inputs 0..3"):
        masks(op)
    assert masks.__class__(directory, None)(op)[:4, 5].sum() == 3  # without a pattern: read as stored


def load_pattern(text: str):
    from simulator.formats.sparsity import SparsityPattern

    return SparsityPattern.parse(text)


@pytest.mark.parametrize(("change", "refusal"), [
    (lambda s: s.pop("model.layers.0.self_attn.q_proj.bitmask"), "q_proj.bitmask is missing"),
    (lambda s: s.update({"model.layers.0.self_attn.q_proj.bitmask": torch.zeros(64, 4, dtype=torch.uint8)}),
     r"q_proj.bitmask has shape \[64, 4\], the quantization config implies \[64, 8\]"),
])
def test_a_bitmask_checkpoint_missing_or_misshaping_a_tensor_is_refused(tmp_path, change, refusal):
    with pytest.raises(InputError, match=refusal):
        checkpoint_run(edited(tmp_path, change), "rapid_like")


def test_masks_from_weights_that_are_not_there_are_refused(tmp_path):
    directory = edited(tmp_path, lambda s: [s.pop(name) for name in list(s) if "q_proj" in name])
    op = linears(directory)[0]
    with pytest.raises(InputError, match="q_proj stores no weights to read the mask of op"):
        CheckpointMasks(directory, None).check_ops([op])
    asymmetric = tmp_path / "asymmetric"
    shutil.copytree(PACKED, asymmetric)
    from safetensors.torch import save_file

    stored = tensors(PACKED)
    stored["model.layers.0.self_attn.q_proj.weight_zero_point"] = torch.zeros(64, 2, dtype=torch.int8)
    save_file(stored, str(asymmetric / "model.safetensors"))
    with pytest.raises(InputError, match="asymmetric packed weights"):
        CheckpointMasks(asymmetric, None)(op)


@pytest.mark.parametrize(("sparsity", "refusal"), [
    ({"pattern": "2:4", "mask": str(BITMASK), "mask_layout": "in_out"}, "a checkpoint stores its weights out_in"),
])
def test_a_knob_a_checkpoints_masks_cannot_take_is_refused(sparsity, refusal):
    from simulator.spec.weight_masks import weight_masks

    policy = policy_from_dict({"name": "x", "hardware": "rapid_like", "precision": {"default": "native"},
                               "sparsity": {"weights": sparsity}})
    with pytest.raises(InputError, match=refusal):
        weight_masks(policy)


def test_through_masks_with_a_mask_is_refused():
    with pytest.raises(InputError, match="through_masks applies to a pattern's seeded masks"):
        policy_from_dict({"name": "x", "hardware": "rapid_like", "precision": {"default": "native"},
                          "sparsity": {"weights": {"pattern": "2:4", "mask": str(BITMASK), "through_masks": True}}})


def test_8_bit_packed_codes_give_their_nonzero_weights(tmp_path):
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32
    from safetensors.torch import save_file

    op = linears(PACKED)[0]
    module = module_namer("llama")(op)
    codes = torch.randint(-128, 128, (op.n, op.k), dtype=torch.int8, generator=torch.Generator().manual_seed(0))
    codes[:, 0::4] = 0
    stored = tensors(PACKED)
    stored[f"{module}.weight_packed"] = pack_to_int32(codes, 8)
    directory = tmp_path / "int8"
    shutil.copytree(PACKED, directory)
    save_file(stored, str(directory / "model.safetensors"))
    assert (CheckpointMasks(directory, None)(op) == (codes != 0).numpy().T).all()


def replaced(tmp_path: Path, name: str, tensor) -> Path:
    from safetensors.torch import save_file

    directory = tmp_path / "replaced"
    shutil.copytree(PACKED, directory)
    stored = {key: value for key, value in tensors(PACKED).items() if not key.startswith(name.rpartition(".")[0])}
    stored[name] = tensor
    save_file(stored, str(directory / "model.safetensors"))
    return directory


Q = "model.layers.0.self_attn.q_proj"


@pytest.mark.parametrize(("name", "tensor", "refusal"), [
    (f"{Q}.bitmask", torch.zeros(64, 8, dtype=torch.int8), r"q_proj.bitmask: I8 \[64, 8\], a 2:4 bitmask of 64 "
                                                          r"inputs is U8 \[N, 8\]"),
    (f"{Q}.bitmask", torch.zeros(64, 9, dtype=torch.uint8), r"is U8 \[N, 8\]"),
    (f"{Q}.bitmask", torch.zeros(64, dtype=torch.uint8), r"q_proj.bitmask: U8 \[64\]"),
    (f"{Q}.bitmask", torch.zeros(32, 8, dtype=torch.uint8), r"its mask is \[32, 64\], op layers.0.self_attn.q "
                                                           r"needs \[64, 64\]"),
    (f"{Q}.weight_packed", torch.zeros(64, 8, dtype=torch.int64), r"I64 \[64, 8\] is not 4- or 8-bit codes of 64"),
    (f"{Q}.weight_packed", torch.zeros(64, 4, dtype=torch.int32), r"I32 \[64, 4\] is not 4- or 8-bit codes"),
    (f"{Q}.weight_packed", torch.zeros(64, dtype=torch.int32), r"I32 \[64\] is not 4- or 8-bit codes"),
    (f"{Q}.weight", torch.zeros(64, 64, dtype=torch.int32), r"masks are read from BF16, F16, F32, F8_E4M3, I8 "
                                                           r"weights, not I32"),
    (f"{Q}.weight", torch.zeros(64, 64, 1, dtype=torch.bfloat16), r"shape \[64, 64, 1\], expected a 2-D weight"),
])
def test_tensors_a_mask_cannot_be_read_from_are_refused_naming_them(tmp_path, name, tensor, refusal):
    op = linears(PACKED)[0]
    with pytest.raises(InputError, match=refusal):
        CheckpointMasks(replaced(tmp_path, name, tensor), None)(op)


def test_a_checkpoint_without_weights_gives_no_masks(tmp_path):
    config_only = tmp_path / "config"
    config_only.mkdir()
    shutil.copy(PACKED / "config.json", config_only / "config.json")
    with pytest.raises(InputError, match="config: the checkpoint has no safetensors weights to read masks from"):
        CheckpointMasks(config_only, None)
    headers = tmp_path / "headers"
    shutil.copytree(PACKED, headers)
    data = (headers / "model.safetensors").read_bytes()
    (headers / "model.safetensors").write_bytes(data[:8 + int.from_bytes(data[:8], "little")])
    with pytest.raises(InputError, match=r"q_proj.weight_packed has no data \(a header kept without its weights\)"):
        CheckpointMasks(headers, None)(linears(PACKED)[0])


def test_a_run_configs_mask_is_found_beside_it_and_a_checkpoints_masks_keep_its_pattern(tmp_path, monkeypatch):
    """A relative mask path is the run config's neighbour (wherever the run starts); a checkpoint's masks read
    through a config with a pattern are held to it."""
    import numpy as np

    from simulator.spec.run_config import load_run_config
    from simulator.spec.weight_masks import weight_masks

    op = linears(PACKED)[0]
    np.save(tmp_path / "m.npy", np.ones((op.n, op.k)))
    (tmp_path / "c.yaml").write_text("name: c\nhardware: rapid_like\nprecision: {default: native}\n"
                                     "sparsity: {weights: {mask: m.npy, roles: [q]}}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert weight_masks(load_run_config(tmp_path / "c.yaml"))(op).all()
    directory = edited(tmp_path, three_of_four)
    policy = policy_from_dict({"name": "x", "hardware": "rapid_like", "precision": {"default": "native"},
                               "sparsity": {"weights": {"pattern": "2:4", "mask": str(directory)}}})
    up = next(op for op in linears(directory) if op.name.endswith("up_proj"))
    with pytest.raises(InputError, match="up_proj.bitmask: not 2:4: output 5"):
        weight_masks(policy)(up)
