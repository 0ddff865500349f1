"""The engine: cycle-stepping reference vs closed forms and the Numba kernel, and simulate() invariants."""


import numpy as np
import pytest
from conftest import preset_with
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.engine import Simulator, simulate
from simulator.engine.masks import magnitude_mask, masked_cycles, masked_cycles_reference, nm_mask
from simulator.engine.timing import gemm_cycles
from simulator.formats.sparsity import SparsityPattern
from simulator.plan.binding import footprint
from simulator.spec.hardware import Hardware, load_hardware
from simulator.spec.mask_files import MaskProvider
from simulator.spec.run_config import load_run_config, policy_from_dict
from verification.cycle_reference import simulate_product
from workloads.errors import InputError
from workloads.models import Workload, load_model

small = st.integers(1, 7)


@settings(max_examples=80, deadline=None)
@given(m=small, k=st.integers(1, 12), n=small, rows=st.integers(1, 4), cols=st.integers(1, 4),
       dataflow=st.sampled_from(["ws", "os", "is"]), pack=st.integers(1, 3), batch=st.integers(1, 3),
       timing=st.sampled_from(["default", "scalesim"]), seed=st.integers(0, 10**6))
def test_cycle_stepping_equals_closed_form(m, k, n, rows, cols, dataflow, pack, batch, timing, seed):
    """The machine decides when each fold starts; the closed form must agree (batches are more folds)."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(-4, 5, (batch, m, k)), rng.integers(-4, 5, (batch, k, n))
    product, cycles = simulate_product(a, b, rows, cols, dataflow, pack=pack, timing=timing)
    assert np.array_equal(product, a @ b)
    assert cycles == gemm_cycles(m, k, n, rows, cols, dataflow, batch=batch, pack=pack,
                                 timing=timing).compute_cycles


@settings(max_examples=80, deadline=None)
@given(m=small, k=st.integers(1, 12), n=small, rows=st.integers(1, 4), cols=st.integers(1, 4),
       dataflow=st.sampled_from(["ws", "os"]), pack=st.integers(1, 2), density=st.floats(0.0, 1.0),
       timing=st.sampled_from(["default", "scalesim"]), seed=st.integers(0, 10**6))
def test_cycle_stepping_zero_skipping_equals_mask_kernel(m, k, n, rows, cols, dataflow, pack, density, timing,
                                                         seed):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(-4, 5, (m, k)), rng.integers(-4, 5, (k, n))
    mask = magnitude_mask(k, n, density, seed)
    product, cycles = simulate_product(a, b, rows, cols, dataflow, pack=pack, mask=mask, timing=timing)
    assert np.array_equal(product, a @ (b * mask))
    assert cycles == masked_cycles(mask, m, rows, cols, dataflow, pack=pack, timing=timing)[0]


@settings(max_examples=60, deadline=None)
@given(m=small, k=st.integers(1, 12), n=small, rows=st.integers(1, 4), cols=st.integers(1, 4),
       dataflow=st.sampled_from(["ws", "is"]), pack=st.integers(1, 3), batch=st.integers(1, 3),
       seed=st.integers(0, 10**6))
def test_single_buffered_stepping_equals_closed_form(m, k, n, rows, cols, dataflow, pack, batch, seed):
    """Without shadow registers the machine's loaders trail each fold's last activation (it checks that no
    weight is overwritten in use); every fold after the first then waits T + R: the closed form agrees, and
    is never faster than the double-buffered one."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(-4, 5, (batch, m, k)), rng.integers(-4, 5, (batch, k, n))
    product, cycles = simulate_product(a, b, rows, cols, dataflow, pack=pack, double_buffered=False)
    assert np.array_equal(product, a @ b)
    closed = gemm_cycles(m, k, n, rows, cols, dataflow, batch=batch, pack=pack, double_buffered=False)
    assert cycles == closed.compute_cycles
    folds = closed.folds
    assert cycles - gemm_cycles(m, k, n, rows, cols, dataflow, batch=batch, pack=pack).compute_cycles == (
        (folds - 1) * (rows + (m if dataflow == "ws" else n) - max(rows, m if dataflow == "ws" else n)))


def test_double_buffering_is_a_stationary_operands_and_refused_for_os():
    """os holds outputs, not a stationary operand: its timing ignores the flag, and a preset naming it for os
    is refused; ws pays each fold's load on top of its stream (T + R) when it is off."""
    assert gemm_cycles(9, 8, 7, 4, 4, "os", double_buffered=False) == gemm_cycles(9, 8, 7, 4, 4, "os")
    ws = gemm_cycles(9, 8, 7, 4, 4, "ws", double_buffered=False)
    assert ws.compute_cycles == 4 + (ws.folds - 1) * (9 + 4) + 9 + 4 + 4 - 2
    with pytest.raises(ValueError, match="double_buffered applies to a stationary operand"):
        preset_with("rapid_like", array={"dataflow": "os", "double_buffered": False})


@settings(max_examples=60, deadline=None)
@given(m=small, k=st.integers(1, 12), n=small, rows=st.integers(1, 4), cols=st.integers(1, 4),
       pack=st.integers(1, 2), density=st.floats(0.0, 1.0), seed=st.integers(0, 10**6))
def test_single_buffered_zero_skipping_equals_mask_kernel(m, k, n, rows, cols, pack, density, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(-4, 5, (m, k)), rng.integers(-4, 5, (k, n))
    mask = magnitude_mask(k, n, density, seed)
    product, cycles = simulate_product(a, b, rows, cols, "ws", pack=pack, mask=mask, double_buffered=False)
    assert np.array_equal(product, a @ (b * mask))
    assert cycles == masked_cycles(mask, m, rows, cols, "ws", pack=pack, double_buffered=False)[0]
    assert cycles == masked_cycles_reference(mask, m, rows, cols, "ws", pack=pack, double_buffered=False)[0]


def test_cycle_stepping_os_short_fold_waits_for_the_drain():
    """os, 4 x 1 array: a 5-deep column tile then a 1-deep one; the second fold's result would reach
    the drain port while the first tile's 4 results are leaving, so it starts 5 + (4 - 1) cycles in."""
    mask = np.zeros((5, 2), dtype=bool)
    mask[:, 0] = True
    mask[0, 1] = True
    a, b = np.arange(1, 21).reshape(4, 5), np.arange(1, 11).reshape(5, 2)
    product, cycles = simulate_product(a, b, 4, 1, "os", mask=mask)
    assert np.array_equal(product, a @ (b * mask))
    assert cycles == (5 + 3) + 1 + (4 + 1 - 2) == masked_cycles(mask, 4, 4, 1, "os")[0]


def test_cycle_stepping_structured_nm_matches_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.integers(-4, 5, (6, 16)), rng.integers(-4, 5, (16, 5))
    mask = nm_mask(16, 5, 2, 4, seed=3)
    for dataflow in ("ws", "os"):
        _, cycles = simulate_product(a, b, 3, 2, dataflow, mask=mask)
        assert cycles == gemm_cycles(6, 16, 5, 3, 2, dataflow, sparsity=SparsityPattern(2, 4)).compute_cycles


@pytest.fixture(scope="module")
def rapid():
    return load_hardware("rapid_like")


@pytest.fixture(scope="module")
def bert():
    return load_model("bert-base").trace()


def test_macs_and_params_conserved(rapid, bert):
    results = simulate(bert, rapid, load_run_config("configs/int8.yaml"))
    assert results.totals["macs"] == bert.macs
    trace_ops = results[~results["inserted"]]
    assert list(trace_ops["name"]) == [op.name for op in bert]
    assert (results["total_cycles"] == results["compute_cycles"] + results["stall_cycles"]).all()
    assert results.totals["total_cycles"] == int(results["total_cycles"].sum())
    assert ((results["utilization"] > 0) & (results["utilization"] <= 1))[results["compute_cycles"] > 0].all()


def test_sparse_halves_linear_compute_and_keeps_the_rest(rapid, bert):
    dense = simulate(bert, rapid, load_run_config("configs/int8.yaml"))
    sparse = simulate(bert, rapid, load_run_config("configs/int8_sp.yaml"))
    linear = dense["category"] == "linear"
    ratio = dense.loc[linear, "compute_cycles"].sum() / sparse.loc[linear, "compute_cycles"].sum()
    assert ratio == pytest.approx(2.0, rel=0.01)
    assert (sparse["compute_cycles"] <= dense["compute_cycles"]).all()
    assert sparse.loc[~linear, "compute_cycles"].sum() == dense.loc[~linear, "compute_cycles"].sum()
    assert sparse.totals["weight_bits"] < dense.totals["weight_bits"]


def with_memory(hardware: Hardware, **changes) -> Hardware:
    return preset_with(hardware, memory=changes)


def test_bandwidth_and_buffers_are_monotone(rapid, bert):
    policy = load_run_config("configs/int8.yaml")
    stalls = [simulate(bert, with_memory(rapid, dram_bytes_per_cycle=bw), policy).totals["stall_cycles"]
              for bw in (4, 16, 64, 256)]
    assert stalls == sorted(stalls, reverse=True) and stalls[0] > stalls[-1]
    traffic = [simulate(bert, with_memory(rapid, ifmap_buffer_bytes=size, filter_buffer_bytes=size,
                                          ofmap_buffer_bytes=size), policy).totals["dram_bytes"]
               for size in (2**14, 2**18, 2**22)]
    assert traffic == sorted(traffic, reverse=True) and traffic[0] > traffic[-1]
    starved = simulate(bert, with_memory(rapid, dram_bytes_per_cycle=1), policy)
    assert (starved["bound"] == "memory").any()


def test_precision_fallback_is_reported(bert):
    tpu = load_hardware("tpu_v1_like")
    results = simulate(bert, tpu, load_run_config("configs/int4.yaml"))
    assert any("int4 runs at int8" in note for note in results.notes)
    assert set(results.loc[results["unit"] == "array", "compute_precision"]) == {"int8"}
    with pytest.raises(InputError, match="cannot compute fp16"):
        simulate(bert, tpu, load_run_config("configs/fp16.yaml"))



@pytest.mark.parametrize("decompressor", [False, True])
def test_sparsity_the_pes_cannot_skip_computes_dense(bert, decompressor):
    """2:4 INT8 on the TPU v1-like array (no zero-skipping): the array does every MAC; the weights stream
    dense, or compressed when the hardware declares a decompressor (fewer DRAM bytes, same compute)."""
    tpu = preset_with("tpu_v1_like", sparse={"decompressor": decompressor})
    dense = simulate(bert, tpu, load_run_config("configs/int8.yaml"))
    sparse = simulate(bert, tpu, load_run_config("configs/int8_sp.yaml"))
    assert any("cannot skip 2:4 sparsity" in note and "computes dense" in note for note in sparse.notes)
    assert (sparse["compute_cycles"] == dense["compute_cycles"]).all() and (sparse["macs"] == dense["macs"]).all()
    linear = sparse["category"] == "linear"
    if decompressor:
        assert (sparse.loc[linear, "dram_bytes"] < dense.loc[linear, "dram_bytes"]).all()
        assert (sparse.loc[linear, "index_bits"] > 0).all()
        assert sparse.totals["energy"]["by_component"]["dram"] < dense.totals["energy"]["by_component"]["dram"]
    else:
        assert sparse["dram_bytes"].equals(dense["dram_bytes"]) and (sparse["index_bits"] == 0).all()
        assert sparse.totals["total_cycles"] == dense.totals["total_cycles"]


def test_quantize_inserted_only_where_precision_changes(rapid, bert):
    fp16 = simulate(bert, rapid, load_run_config("configs/fp16.yaml"))
    int8 = simulate(bert, rapid, load_run_config("configs/int8.yaml"))
    assert not fp16["role"].isin(["quantize", "dequantize"]).any()
    quantized = int8[int8["role"] == "quantize"]
    # One shared quantize for q, k, v per block, one per other GEMM, one (two operands) per BMM.
    assert len(quantized[quantized["name"].str.contains(r"attention\.q\.quantize")]) == 12
    assert not int8["name"].str.contains(r"attention\.[kv]\.quantize").any()
    assert (int8["role"] == "dequantize").sum() == (int8["unit"] == "array").sum()


def test_unstructured_masks_generated_and_from_files(tmp_path, rapid):
    trace = load_model("bert-base").trace().select(groups=["attention"])
    density = policy_from_dict({"name": "u", "hardware": "rapid_like", "precision": {"default": "int8"},
                                "sparsity": {"weights": {"density": 0.5, "roles": ["q"]}}})
    masks = MaskProvider(density.config.sparsity.weights)
    results = simulate(trace, rapid, density, mask_for=masks)
    q = results[results["role"] == "q"]
    dense = gemm_cycles(384, 768, 768, rapid.array.rows, rapid.array.cols, "ws", pack=8).compute_cycles
    # Load imbalance: lanes wait for the slowest, so 50% density is well short of a 2x gain.
    assert dense / 2 < q["compute_cycles"].iloc[0] < dense
    assert (q["macs"] == 384 * 768 * 768 // 2).all()
    mask = nm_mask(768, 768, 2, 4, seed=0)
    np.savez(tmp_path / "m.npz", **{"encoder.layer.0.attention.q.weight": mask.T})
    np.save(tmp_path / "m.npy", mask.T)
    from safetensors.numpy import save_file

    save_file({"bert.encoder.layer.0.attention.q": np.ascontiguousarray(mask.T, dtype=np.uint8)},
              str(tmp_path / "m.safetensors"))
    one_layer = load_model("bert-base").trace().select(groups=["attention"])
    one_layer = one_layer.subset(lambda op: op.layer == 0)
    structured = gemm_cycles(384, 768, 768, rapid.array.rows, rapid.array.cols, "ws", pack=8,
                             sparsity=SparsityPattern(2, 4)).compute_cycles
    for name in ("m.npz", "m.npy", "m.safetensors"):
        policy = policy_from_dict({"name": "f", "hardware": "rapid_like", "precision": {"default": "int8"},
                                   "sparsity": {"weights": {"mask": str(tmp_path / name), "roles": ["q"]}}})
        result = simulate(one_layer, rapid, policy, mask_for=MaskProvider(policy.config.sparsity.weights))
        assert result.loc[result["role"] == "q", "compute_cycles"].iloc[0] == structured, name
    np.save(tmp_path / "bad.npy", np.ones((3, 3)))
    policy = policy_from_dict({"name": "f", "hardware": "rapid_like", "precision": {"default": "int8"},
                               "sparsity": {"weights": {"mask": str(tmp_path / "bad.npy"), "roles": ["q"]}}})
    with pytest.raises(InputError, match=r"shape \(3, 3\), expected \(768, 768\)"):
        simulate(one_layer, rapid, policy, mask_for=MaskProvider(policy.config.sparsity.weights))
    (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match="cannot read masks"):
        MaskProvider(policy_from_dict({"name": "f", "hardware": "x", "precision": {"default": "int8"},
                                       "sparsity": {"weights": {"mask": str(tmp_path / "trunc.npz")}}}
                                      ).config.sparsity.weights)


def test_a_mask_file_given_with_a_pattern_must_follow_it(tmp_path, rapid):
    """pattern + mask: the file's masks are timed with the mask kernel (a 2:4 mask: as the closed form) and
    stored as the pattern; a mask keeping 3 of some 4 is refused naming where."""
    one_layer = load_model("bert-base").trace().select(groups=["attention"]).subset(lambda op: op.layer == 0)
    mask = nm_mask(768, 768, 2, 4, seed=0)
    np.save(tmp_path / "m.npy", mask.T)

    def policy(path):
        return policy_from_dict({"name": "f", "hardware": "rapid_like", "precision": {"default": "int8"},
                                 "sparsity": {"weights": {"pattern": "2:4", "mask": str(path), "roles": ["q"]}}})

    closed = policy_from_dict({"name": "f", "hardware": "rapid_like", "precision": {"default": "int8"},
                               "sparsity": {"weights": {"pattern": "2:4", "roles": ["q"]}}})
    read = policy(tmp_path / "m.npy")
    assert read.config.sparsity.weights.uses_masks
    masked = simulate(one_layer, rapid, read, mask_for=MaskProvider(read.config.sparsity.weights))
    assert masked.to_csv(index=False) == simulate(one_layer, rapid, closed).to_csv(index=False)
    mask[4:8, 700] = True
    np.save(tmp_path / "bad.npy", mask.T)
    bad = policy(tmp_path / "bad.npy")
    with pytest.raises(InputError, match=r"the mask of encoder.layer.0.attention.q is not 2:4: output 700 keeps "
                                         r"more than 2 of inputs 4..7"):
        simulate(one_layer, rapid, bad, mask_for=MaskProvider(bad.config.sparsity.weights))
    with pytest.raises(InputError, match="give exactly one of pattern, density or mask"):
        policy_from_dict({"name": "f", "hardware": "rapid_like", "precision": {"default": "int8"},
                          "sparsity": {"weights": {"density": 0.5, "mask": str(tmp_path / "m.npy")}}})


def test_missing_sfu_cost_is_an_error(rapid, bert):
    data = rapid.model_dump()
    del data["sfu"]["cycles_per_element"]["softmax"]
    with pytest.raises(InputError, match="no cost for vector op 'softmax'"):
        simulate(bert, Hardware.model_validate(data), load_run_config("configs/int8.yaml"))


def test_same_inputs_same_cycles(rapid, bert):
    policy = load_run_config("configs/int4_sp.yaml")
    first = simulate(bert, rapid, policy)
    second = simulate(bert, rapid, policy)
    assert first.to_csv(index=False) == second.to_csv(index=False)


def test_generated_nm_masks_through_the_kernel_equal_the_closed_form(rapid, bert):
    closed = simulate(bert, rapid, load_run_config("configs/int4_sp.yaml"))
    config = load_run_config("configs/int4_sp.yaml").config.model_dump()
    config["sparsity"]["weights"]["through_masks"] = True
    policy = policy_from_dict(config)
    masked = simulate(bert, rapid, policy, mask_for=MaskProvider(policy.config.sparsity.weights))
    assert masked.to_csv(index=False) == closed.to_csv(index=False)


def test_sfu_fusion_folds_neighbouring_elementwise_work(rapid, bert):
    assert rapid.sfu.fusion
    fused = simulate(bert, rapid, load_run_config("configs/int8.yaml"))
    layer = fused[fused["layer"] == 0].set_index("name")
    prefix = "encoder.layer.0."
    for name in ("attention.qk.dequantize", "attention.score_scale", "attention.av.quantize_a"):
        assert layer.loc[prefix + name, "fused_into"] == prefix + "attention.softmax"
        assert layer.loc[prefix + name, "compute_cycles"] == 0
    for name in ("ffn.ffn2.dequantize", "ffn.ffn2.bias", "ffn.residual_add"):
        assert layer.loc[prefix + name, "fused_into"] == prefix + "ffn.layernorm"
    # V's operand quantize has another size than the probabilities: not fused.
    assert layer.loc[prefix + "attention.av.quantize_b", "fused_into"] == ""
    assert layer.loc[prefix + "attention.av.quantize_b", "compute_cycles"] > 0
    data = rapid.model_dump()
    data["sfu"]["fusion"] = False
    unfused = simulate(bert, Hardware.model_validate(data), load_run_config("configs/int8.yaml"))
    assert (unfused["fused_into"] == "").all()
    assert unfused.totals["sfu_cycles"] > fused.totals["sfu_cycles"]
    assert unfused.totals["array_cycles"] == fused.totals["array_cycles"]




def test_an_unknown_timing_model_is_refused_when_the_simulator_is_made(rapid):
    with pytest.raises(InputError, match="unknown timing 'scalsim'; choose from default, scalesim"):
        Simulator(rapid, load_run_config("int8"), timing="scalsim")


def test_a_name_given_where_the_python_api_takes_a_loaded_object_is_refused(rapid):
    trace = load_model("bert-base").trace(Workload(tokens=8))
    with pytest.raises(InputError, match=r"^expected a Hardware \(from load_hardware\), got str 'rapid_like'$"):
        simulate(trace, "rapid_like", load_run_config("int8"))
    with pytest.raises(InputError, match=r"^expected a Policy \(from load_run_config\), got str 'int8'$"):
        Simulator(rapid, "int8")
    with pytest.raises(InputError, match="expected a Hardware"):
        footprint(trace, load_run_config("int8"), hardware="rapid_like")
