"""accelsim against measured silicon: the reference data is read strictly, every point is predicted as it
was measured, and the envelope is the geometric mean and worst error of predicted / measured per regime."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from cli_helpers import assert_one_line_error

from simulator.analysis.validation import Compared, compare, envelopes
from simulator.spec.hardware import load_hardware
from simulator.spec.silicon import COUNTERS, SILICON_DIR, load_silicon
from workloads.errors import InputError

TPU_V3 = SILICON_DIR / "tpu_v3.yaml"


@pytest.fixture(scope="module")
def v3():
    data = load_silicon(TPU_V3)
    return data, {point.key: point for point in compare(data, load_hardware(data.preset))}


def test_the_tpu_v3_data_is_what_the_artifact_measured():
    """20 GEMMs whose latency gives the artifact's own TFLOPS column, never above one core's public peak
    (123 TFLOPS bf16 per chip of two cores); the GPT-3 layer's ops per phase, the all-reduces kept apart."""
    data = load_silicon(TPU_V3)
    gemms = [p for p in data.points if p.regime == "gemm"]
    assert len(gemms) == 20 and all(p.calibration and p.per_call_ms for p in gemms)
    for point in gemms:
        w = point.workload
        assert 2 * w.m * w.k * w.n / (point.measured * 1e-3) < 123e12 / 2
    big = next(p for p in gemms if p.key == "v3.gemm.8192x32768x32768")
    assert 2 * 8192 * 32768 * 32768 / (big.measured * 1e-3) / 1e12 == pytest.approx(60.2523, rel=1e-4)
    layer = {p.key: p for p in data.points}["v3.gpt3.prefill.layer"]
    parts = [p for p in data.points if p.key in layer.workload.of]
    assert len(parts) == 10 and layer.measured == pytest.approx(sum(p.measured for p in parts), rel=1e-5)
    assert sorted(p.key for p in data.points if p.calibration and p.regime != "gemm") == [
        "v3.gpt3.prefill.gelu", "v3.gpt3.prefill.layernorm_ffn", "v3.gpt3.prefill.layernorm_mha",
        "v3.gpt3.prefill.softmax"]  # the one LayerNorm measurement, listed for both norms
    assert len(data.not_simulated) == 4


SWEEP_SIZES = [2 ** e for e in range(5, 16)]


def test_the_tpu_v3_vector_sweeps_are_what_the_artifact_measured():
    """Softmax and LayerNorm over widths 32..32768 at 4096 rows and rows 32..32768 at width 4096 (4096 x 4096
    twice), GELU over 2^10..2^29 elements; each latency gives the artifact's own elements-per-second column.
    All are predictions; only softmax's per-call cost was measured apart."""
    data = load_silicon(TPU_V3)
    for op in ("softmax", "layernorm"):
        points = [p for p in data.points if p.regime == f"{op}_sweep"]
        shapes = [(p.workload.rows, p.workload.width) for p in points]
        assert shapes == [(4096, n) for n in SWEEP_SIZES] + [(m, 4096) for m in SWEEP_SIZES]
        assert all(p.workload.op == op and not p.calibration for p in points)
        assert all((p.per_call_ms is not None) == (op == "softmax") for p in points)
    gelus = [p for p in data.points if p.regime == "gelu_sweep"]
    assert [(p.workload.rows, p.workload.width) for p in gelus] == [(1, 2 ** e) for e in range(10, 30)]
    assert not any(p.calibration or p.per_call_ms for p in gelus)
    by_key = {p.key: p for p in data.points}
    for key, elements_per_s in (("v3.softmax.width_sweep.4096x32768", 10.5895e9),
                                ("v3.layernorm.rows_sweep.32768x4096", 21.7305e9), ("v3.gelu.536870912", 40.9095e9)):
        workload = by_key[key].workload
        assert workload.rows * workload.width / (by_key[key].measured * 1e-3) == pytest.approx(elements_per_s,
                                                                                             rel=1e-4)


def test_the_vector_costs_fitted_on_the_layer_predict_the_sweeps_large_tensors(v3):
    """Fitted on the GPT-3 layer's three prefill ops alone, the vector unit's per-element costs predict every
    standalone softmax, LayerNorm and GELU of 2^26 elements or more within 15% (small ones are dominated by
    per-call costs: docs/validation.md)."""
    data, compared = v3
    large = [p for p in data.points if p.regime.endswith("_sweep") and p.workload.rows * p.workload.width >= 2 ** 26]
    assert len(large) == 12
    for point in large:
        assert abs(compared[point.key].ratio - 1) <= 0.15, point.key


def test_no_model_charging_the_measured_call_cost_comes_within_40_percent_of_decode_qkv():
    """Why decode's Q/K/V stays outside issue 26's 40% (docs/validation.md): one projection measures less
    than streaming its bf16 weights at HBM's peak plus the smallest per-call cost the artifact measured."""
    data = load_silicon(TPU_V3)
    qkv = next(p for p in data.points if p.key == "v3.gpt3.decode.qkv")
    core = load_hardware("tpu_v3_core")
    peak_bytes_per_ms = core.memory.dram_bytes_per_cycle * core.array.clock_mhz * 1e3
    smallest_call_ms = min(p.per_call_ms for p in data.points if p.regime == "gemm")
    floor_ms = 2 * qkv.workload.k * qkv.workload.n / peak_bytes_per_ms + smallest_call_ms
    assert floor_ms / (qkv.measured / qkv.workload.calls) > 1.4


def test_the_tpu_v3_core_preset_is_half_a_chip_of_public_numbers():
    core = load_hardware("tpu_v3_core")
    clock = core.array.clock_mhz * 1e6
    assert 2 * core.pes * core.macs_per_pe["bf16"] * clock / 1e12 == pytest.approx(123 / 2, rel=0.001)
    assert core.memory.dram_bytes_per_cycle * clock / 1e9 == pytest.approx(900 / 2, rel=0.001)
    assert core.memory.dram_capacity_bytes == 16 << 30


def test_a_point_is_predicted_as_it_was_measured(v3):
    """Never faster than the array's peak; three calls take three times one; a layer is its ops' sum."""
    data, compared = v3
    core = load_hardware("tpu_v3_core")
    peak_flops_per_ms = 2 * core.pes * core.array.clock_mhz * 1e3
    for point in data.points:
        if point.workload.op == "gemm":
            w = point.workload
            assert compared[point.key].predicted >= w.calls * 2 * w.m * w.k * w.n / peak_flops_per_ms
    assert compared["v3.gpt3.prefill.qkv"].workload == "3 x gemm 16384x12288x1536"
    assert compared["v3.gemm.64x12288x12288"].workload == "gemm 64x12288x12288"  # bf16 goes unsaid
    assert compared["v3.gemm.64x12288x12288"].metric == "latency" and compared["v3.gemm.64x12288x12288"].calibration
    assert not compared["v3.gpt3.prefill.w1"].calibration
    assert compared["v3.gpt3.prefill.w1"].source == data.sources["llmcompass_gpt3_prefill"].title
    qkv = compared["v3.gpt3.prefill.qkv"].predicted
    one = compare(data.model_copy(update={"points": [
        p.model_copy(update={"workload": p.workload.model_copy(update={"calls": 1})})
        for p in data.points if p.key == "v3.gpt3.prefill.qkv"]}), core)[0].predicted
    assert qkv == pytest.approx(3 * one)
    for phase in ("prefill", "decode"):
        layer = compared[f"v3.gpt3.{phase}.layer"]
        parts = [c for key, c in compared.items() if key.startswith(f"v3.gpt3.{phase}.") and key != layer.key]
        assert layer.predicted == pytest.approx(sum(c.predicted for c in parts))
        assert layer.measured == pytest.approx(sum(c.measured for c in parts), rel=1e-5)


def test_the_envelope_is_the_geometric_mean_and_the_worst_error_per_regime():
    def point(regime: str, measured: float, predicted: float) -> Compared:
        return Compared("k", "p", "w", "latency", "ms", measured, predicted, regime, False, False, "s")

    envelope = envelopes([point("a", 1.0, 2.0), point("a", 4.0, 2.0), point("b", 2.0, 1.5), point("a", 1.0, 1.1)])
    assert [(e.regime, e.n) for e in envelope] == [("a", 3), ("b", 1)]
    a, b = envelope
    assert a.geomean_ratio == pytest.approx(math.exp((math.log(2) + math.log(0.5) + math.log(1.1)) / 3))
    assert a.worst_error == pytest.approx(1.0) and b.worst_error == pytest.approx(0.25)
    assert b.geomean_ratio == pytest.approx(0.75)


def write(tmp_path: Path, change) -> Path:
    data = yaml.safe_load(TPU_V3.read_text())
    change(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("change", "refusal"), [
    (lambda d: d["sources"]["llmcompass_gemm"].pop("url"), "sources.llmcompass_gemm.url: required field is missing"),
    (lambda d: d["points"][0].pop("source"), "points.0.source: required field is missing"),
    (lambda d: d["points"][0].update(source="nowhere"), "unknown source 'nowhere'"),
    (lambda d: d["points"][0].update(unit="s"), "latency is given in ms, not 's'"),
    (lambda d: d["points"][0].pop("unit"), "points.0.unit: required field is missing"),
    (lambda d: d["points"][0]["workload"].pop("m"), "points.0.workload.gemm.m: required field is missing"),
    (lambda d: d["points"][0].update(measured=0), "greater than 0"),
    (lambda d: d["points"][0].update(key=d["points"][1]["key"]), "a point key is given twice"),
    (lambda d: d["points"][-1]["workload"]["of"].append("v3.nothing"), "sums 'v3.nothing'"),
    (lambda d: d["sources"]["llmcompass_gemm"].update(quality=""), "llmcompass_gemm.quality: String should have"),
    (lambda d: d["points"][0].update(metric="power"), "power is given in W, not 'ms'"),
    (lambda d: d["points"][0].update(metric="efficiency", unit="TOPS/W", workload={"op": "idle"}),
     "efficiency is measured on gemm, not idle"),
    (lambda d: d["points"][-1].update(metric="power", unit="W"), "power is measured on gemm, idle, not sum"),
    (lambda d: d["points"][0].update(metric="throughput", unit="TOPS"), "throughput is measured on network, not gemm"),
    (lambda d: d["points"][0].update(metric="throughput"), "throughput is given in TOPS, not 'ms'"),
])
def test_a_reference_file_missing_a_source_unit_or_shape_is_refused_by_name(tmp_path, change, refusal):
    path = write(tmp_path, change)
    with pytest.raises(InputError, match=refusal) as refused:
        load_silicon(path)
    assert str(refused.value).startswith(f"{path}: ")


def test_validate_prints_the_points_and_the_envelope(accelsim_here, tmp_path):
    result = accelsim_here("validate", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    keys = {"key", "preset", "workload", "metric", "unit", "measured", "predicted", "ratio", "regime", "fitted",
            "source"}
    assert len(record["points"]) == 130 and all(keys <= set(point) for point in record["points"])
    assert {point["unit"] for point in record["points"]} == {"ms", "W", "TOPS/W", "TOPS", "%", "inferences/s"}
    assert set(record["envelope"]["gemm"]) == {"n", "geomean_ratio", "worst_error"}
    for point in record["points"]:
        assert point["ratio"] == pytest.approx(point["predicted"] / point["measured"])
    table = accelsim_here("validate", "--preset", "tpu_v3_core", "--out", str(tmp_path / "v"))
    assert table.returncode == 0 and "geomean ratio" in table.stdout and "not simulated" in table.stdout
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["envelope.csv", "points.csv", "validation.png",
                                                                  "validation.svg"]
    assert_one_line_error(accelsim_here("validate", "--preset", "rapid_like"), "no measured silicon for it")
    assert len(json.loads(accelsim_here("validate", "--preset", "tpu_v1_like", "--json").stdout)["points"]) == 23


@pytest.mark.parametrize("page", ["docs/validation.md", "README.md"])
def test_the_published_envelope_is_what_validate_computes(v3, page):
    from cli_helpers import ROOT

    _, compared = v3
    text = (ROOT / page).read_text()
    for e in envelopes(list(compared.values())):
        assert f"| {e.regime} | {e.n} | {e.geomean_ratio:.3f} | {100 * e.worst_error:.0f}% |" in text, e.regime


def fit_script():
    import importlib.util

    from cli_helpers import ROOT

    spec = importlib.util.spec_from_file_location("fit_tpu_v3_core", ROOT / "calibration" / "fit_tpu_v3_core.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_fitted_values_are_what_the_calibration_script_fits():
    """calibration/fit_tpu_v3_core.py refits the preset from its calibration points alone; the preset holds
    exactly what it fits, and names those fields (and only those) as fitted."""
    fit = fit_script()
    preset = load_hardware("tpu_v3_core")
    fitted = fit.fit(load_silicon(TPU_V3), fit.unfitted(preset))
    assert fitted == fit.preset_values(preset)
    assert sorted(preset.fitted) == sorted(fitted)


def test_the_targets_this_model_meets(v3):
    """The regimes issue 26's targets name that the fitted preset meets (the others are in the docs' list of
    what still parts from silicon): each prefill matrix op within 10%, the prefill layer within 10%, each
    prefill vector op within 25%, the decode layer within 25%; the large GEMMs within 5%."""
    _, compared = v3
    for point in compared.values():
        if point.regime == "prefill_matrix":
            assert abs(point.ratio - 1) <= 0.10, point.key
        if point.regime == "prefill_vector":
            assert abs(point.ratio - 1) <= 0.25, point.key
    assert abs(compared["v3.gpt3.prefill.layer"].ratio - 1) <= 0.10
    assert abs(compared["v3.gpt3.decode.layer"].ratio - 1) <= 0.25
    for key in ("v3.gemm.8192x12288x12288", "v3.gemm.32768x12288x12288", "v3.gemm.8192x32768x32768"):
        assert abs(compared[key].ratio - 1) <= 0.05, key
    # the exposed weight loads (array.double_buffered: false) put the GEMMs of 256-2048 rows within 10%
    for rows in (256, 512, 1024, 2048):
        assert abs(compared[f"v3.gemm.{rows}x12288x12288"].ratio - 1) <= 0.10, rows
    assert all(point.fitted == point.calibration for point in compared.values())


def test_tpu_v1s_apps_are_table_1s_and_predicted_from_their_simulated_time():
    """The apps' assumed shapes hold Table 1's weights (20M, 5M, 52M, 34M, within 0.1%) and batch sizes;
    each is predicted as 2 x its MACs (FC layers x batch x width^2) over the simulated time of its layers,
    below the chip's peak (92 TOPS); MLP0 and LSTM0 land within issue 26's 15% (a prediction: nothing was
    fitted to them); MLP1 (its assumed 1118-wide layers padded to whole 256 x 256 tiles, 31% more bytes)
    and LSTM1 do not (docs/validation.md says why)."""
    from simulator.engine import simulate
    from simulator.spec.run_config import policy_from_dict

    data = load_silicon(SILICON_DIR / "tpu_v1.yaml")
    chip = load_hardware(data.preset)
    compared = {point.key: point for point in compare(data, chip)}
    table_1 = {"v1.app.mlp0": (20e6, 200), "v1.app.mlp1": (5e6, 168), "v1.app.lstm0": (52e6, 64),
               "v1.app.lstm1": (34e6, 96)}
    policy = policy_from_dict({"name": "int8", "hardware": chip.name, "precision": {"default": "int8"}})
    for point in data.points:
        if point.key not in table_1:
            continue
        app, (weights, batch) = point.workload, table_1[point.key]
        assert app.fc_layers * app.width**2 == pytest.approx(weights, rel=1e-3) and app.batch == batch
        from simulator.analysis.validation import _trace

        totals = simulate(_trace(app), chip, policy).totals
        macs = app.fc_layers * app.batch * app.width**2
        assert int(totals.macs) == macs
        assert compared[point.key].predicted == pytest.approx(2 * macs / (float(totals.latency_ms) * 1e9))
        assert compared[point.key].predicted < 2 * chip.pes * chip.macs_per_pe["int8"] * chip.array.clock_mhz * 1e-6
        assert not compared[point.key].fitted
    for key in ("v1.app.mlp0", "v1.app.lstm0"):
        assert abs(compared[key].ratio - 1) <= 0.15, key
    assert compared["v1.app.mlp1"].ratio < 0.85 and compared["v1.app.lstm1"].ratio > 1.15


def test_tpu_v1s_counters_are_shares_of_its_cycles_and_its_rate_is_its_throughput():
    """Table 3's rows 1, 4, 5 and 6 total 100% per app (as measured, to rounding), and so do the predicted
    shares, each from its own columns: folds x streamed rows (active), the rest of the array's compute
    cycles (shift), the array's stalls and the vector unit's cycles. MLP0's rate is its batch over the
    time its TOPS are computed on. Nothing was fitted to them."""
    data = load_silicon(SILICON_DIR / "tpu_v1.yaml")
    compared = {point.key: point for point in compare(data, load_hardware(data.preset))}
    for app in ("mlp0", "mlp1", "lstm0", "lstm1"):
        rows = [compared[f"v1.counters.{app}.{metric}"] for metric in COUNTERS]
        assert sum(point.measured for point in rows) == pytest.approx(100, abs=0.11)
        assert sum(point.predicted for point in rows) == pytest.approx(100, abs=1e-9)
        assert all(not point.fitted and point.unit == "%" for point in rows)
    macs_per_inference = 5 * 2000**2
    rate = compared["v1.app.mlp0"].predicted * 1e12 / (2 * macs_per_inference)
    assert compared["v1.app.mlp0.rate"].predicted == pytest.approx(rate)


def test_only_the_energy_metrics_need_an_energy_model():
    """Throughput, rates and counters come from time alone: a preset without its energy section predicts
    them as the shipped one does; power is refused by name."""
    data = load_silicon(SILICON_DIR / "tpu_v1.yaml")
    chip = load_hardware(data.preset)
    timeless = chip.model_copy(update={"energy": None})
    timed = [p for p in data.points if p.metric not in ("power", "efficiency")]
    shipped = {p.key: p.predicted for p in compare(data.model_copy(update={"points": timed}), chip)}
    bare = {p.key: p.predicted for p in compare(data.model_copy(update={"points": timed}), timeless)}
    assert bare == shipped and len(bare) == 21
    power = [p for p in data.points if p.metric == "power"]
    with pytest.raises(InputError, match="has no energy section to predict power"):
        compare(data.model_copy(update={"points": power}), timeless)
    rapid = load_silicon(SILICON_DIR / "rapid.yaml")
    bare_rapid = load_hardware(rapid.preset).model_copy(update={"energy": None})
    with pytest.raises(InputError, match="has no energy section to predict efficiency"):
        compare(rapid, bare_rapid)


def test_the_counters_shares_by_closed_form():
    """tpu_v1_like, a 256 x 256 weight-stationary array fed by DDR3. An int8 product of 512 x 1024 x 1024 waits
    for DRAM: 16 folds of 512 rows (active 16 x 512), each tile shifted in once its weights arrive (16 x 256
    cycles), the rest of its time stalled. A product of 2048 x 4096 x 4096 (A fits the 12 MiB activation
    buffer) keeps up: 256 folds of 2,048 rows, its compute 256 + 255 x 2,048 + 2,048 + 510 cycles, the rest
    of which (the first load, fill and drain) is shifting; its stall is what its transfers add (the first
    tile's). A chip of several arrays is refused."""
    from simulator.analysis.validation import _trace, counter_shares
    from simulator.engine import simulate
    from simulator.spec.run_config import policy_from_dict
    from simulator.spec.silicon import Gemm

    chip = load_hardware("tpu_v1_like")
    policy = policy_from_dict({"name": "int8", "hardware": chip.name, "precision": {"default": "int8"}})
    for m, k, folds, waits in ((512, 1024, 16, True), (2048, 4096, 256, False)):
        results = simulate(_trace(Gemm(op="gemm", m=m, k=k, n=k, precision="int8")), chip, policy)
        row = results[results.unit == "array"].iloc[0]
        assert (row.folds, row.transfer_cycles > row.compute_cycles) == (folds, waits)
        busy = int(row.compute_cycles) + int(row.stall_cycles)
        total = busy + int(results[results.unit == "sfu"].total_cycles.sum())
        shift = folds * 256 if waits else 256 + (folds - 1) * m + m + 510 - folds * m
        if not waits:
            assert int(row.compute_cycles) == 256 + (folds - 1) * m + m + 510
        shares = counter_shares(results, chip)
        assert shares["array_active"] == pytest.approx(folds * m / total)
        assert shares["weight_shift"] == pytest.approx(shift / total)
        assert shares["weight_stall"] == pytest.approx((busy - folds * m - shift) / total)
    with pytest.raises(InputError, match="one weight-stationary array"):
        counter_shares(results, load_hardware("tpu_v5e_like"))


def test_the_counters_add_up_over_steps_and_a_shift_never_outlasts_the_step():
    """Array steps of one run add up; a step that waits for DRAM but only just (its time beyond streaming
    shorter than its folds' shifts) shifts for that time and stalls for none; a step whose transfers last
    exactly as long as its compute keeps up."""
    import pandas as pd

    from simulator.analysis.validation import counter_shares

    rows = [  # unit, folds, m, compute, stall, transfer, total
        ("array", 16, 512, 8958, 500, 9458, 9458),  # waits: 766 + 500 cycles beyond streaming < 16 x 256
        ("array", 4, 300, 2000, 0, 100, 2000),  # keeps up: 2000 - 1200 shifting
        ("array", 2, 100, 700, 1000, 1700, 1700),  # waits: 2 x 256 shifting, 1700 - 200 - 512 stalled
        ("array", 1, 100, 400, 0, 400, 400),  # transfers as long as compute: keeps up, 400 - 100 shifting
        ("array", 1, 50, 300, 900, 1200, 1200),  # waits: 256 shifting, 1200 - 50 - 256 stalled
        ("sfu", 0, 0, 700, 0, 0, 700),
    ]
    frame = pd.DataFrame(rows, columns=["unit", "folds", "m", "compute_cycles", "stall_cycles", "transfer_cycles",
                                        "total_cycles"])
    shares = counter_shares(frame, load_hardware("tpu_v1_like"))
    total = 9458 + 2000 + 1700 + 400 + 1200 + 700
    assert shares == pytest.approx({"array_active": (8192 + 1200 + 200 + 100 + 50) / total,
                                    "weight_shift": (1266 + 800 + 512 + 300 + 256) / total,
                                    "weight_stall": (988 + 894) / total, "non_matrix": 700 / total})


def test_a_run_says_whether_its_preset_is_validated_and_how_well(run_cli):
    from conftest import preset_with

    from simulator.analysis.validation import accuracy_line
    from simulator.spec.silicon import measured_silicon

    data = measured_silicon()
    line = accuracy_line(load_hardware("tpu_v3_core"), data, ["prefill", "decode"])
    assert line.startswith("validated on silicon against TPU v3, one TensorCore")
    assert "prefill layer 0.97x measured, matrix ops within 8%, vector ops fitted" in line
    assert accuracy_line(load_hardware("rapid_like_4core"), data, ["decode"]) == (
        "validated on silicon against RaPiD, 4 cores, 7 nm EUV: die efficiency 3.73x measured (accelsim validate)")
    assert accuracy_line(load_hardware("tpu_v1_like"), data, ["prefill"]).endswith(
        ": die power 0.95x measured (accelsim validate)")
    assert "decode layer 0.82x measured, matrix ops within 127%, vector ops within 63%" in line
    assert accuracy_line(load_hardware("tpu_v5e_like"), data, ["prefill"]) == (
        "not validated on silicon: no measured chip for tpu_v5e_like (accelsim validate)")
    variant = preset_with("tpu_v3_core", memory={"dram_efficiency": 0.9})
    assert accuracy_line(variant, data, ["prefill"]).startswith("not validated on silicon: a variant of tpu_v3_core")
    summary = json.loads(run_cli("run", "configs/native.yaml", "--model", "gpt2", "--tokens", "32", "--hardware",
                                 "tpu_v3_core", "--format", "json"))
    assert summary["silicon"] == accuracy_line(load_hardware("tpu_v3_core"), data, ["prefill"])
    text = run_cli("generate", "configs/native.yaml", "--model", "gpt2", "--prompt", "16", "--new-tokens", "2",
                   "--hardware", "tpu_v3_core")
    assert accuracy_line(load_hardware("tpu_v3_core"), data, ["prefill", "decode"]) in text


def test_a_line_for_a_validated_preset_without_points_for_the_runs_phases():
    """A preset validated only on points of other regimes says so for the phases run; several files for one
    preset name every chip measured."""
    from simulator.analysis.validation import accuracy_line

    data = load_silicon(TPU_V3)
    gemms = data.model_copy(update={"points": [p for p in data.points if p.regime == "gemm"]})
    assert accuracy_line(load_hardware("tpu_v3_core"), [gemms], ["prefill", "decode"]) == (
        f"validated on silicon against {data.chip}: no measured point for prefill or decode (accelsim validate)")
    other = gemms.model_copy(update={"chip": "another TPU v3 core"})
    assert accuracy_line(load_hardware("tpu_v3_core"), [gemms, other], ["decode"]).startswith(
        f"validated on silicon against {data.chip} and another TPU v3 core: no measured point for decode")


def test_each_point_is_simulated_as_the_trace_of_its_workload():
    """A product reads inputs of its operands' sizes and has no bias; an app's trace has its FC layers and
    its vector layers interleaved, as many of each as it says, without biases; a LayerNorm carries its
    scale and shift."""
    from simulator.analysis.validation import _trace
    from simulator.spec.silicon import Bmm, Gemm, Network, RowOp

    trace = _trace(Gemm(op="gemm", m=4, k=5, n=6))
    (op,) = trace
    assert [t.elements for t in trace.tensors.values() if t.kind == "input"] == [4 * 5]
    assert (op.kind, op.m, op.k, op.n, op.bias_params, op.weight_params) == ("gemm", 4, 5, 6, 0, 30)
    trace = _trace(Bmm(op="bmm", batch=3, m=4, k=5, n=6))
    (op,) = trace
    assert (op.kind, op.batch, op.m, op.k, op.n) == ("bmm", 3, 4, 5, 6)
    inputs = sorted(t.elements for t in trace.tensors.values() if t.kind == "input")
    assert inputs == [3 * 4 * 5, 3 * 5 * 6]
    for fc_layers, vector_layers in ((3, 1), (2, 4)):
        trace = _trace(Network(op="network", batch=2, width=8, fc_layers=fc_layers, vector_layers=vector_layers))
        assert [t.elements for t in trace.tensors.values() if t.kind == "input"] == [2 * 8]
        ops = list(trace)
        kinds = [op.kind for op in ops]
        assert kinds.count("gemm") == fc_layers and kinds.count("vector") == vector_layers
        assert kinds[:2 * min(fc_layers, vector_layers)] == ["gemm", "vector"] * min(fc_layers, vector_layers)
        assert all(op.bias_params == 0 for op in ops)
    (op,) = _trace(RowOp(op="layernorm", rows=2, width=8))
    assert (op.role, op.elements, op.weight_params, op.bias_params) == ("layernorm", 16, 8, 8)
    (op,) = _trace(RowOp(op="gelu", rows=2, width=8))
    assert (op.role, op.elements, op.weight_params) == ("gelu", 16, 0)


def test_a_sweep_that_varies_a_validated_preset_says_its_points_are_not(tmp_path):
    from simulator.analysis.sweep import load_sweep
    from simulator.cli.sweep_command import _silicon_line

    (tmp_path / "s.yaml").write_text("name: s\nhardware: tpu_v3_core\nconfigs: [configs/native.yaml]\n"
                                     "models: [{name: gpt2, tokens: 16}]\naxes: {product: {array.rows: [64, 128]}}\n")
    _, plan = load_sweep(tmp_path / "s.yaml")
    assert _silicon_line(plan).startswith("not validated on silicon: the sweep varies tpu_v3_core (array.rows); "
                                          "as shipped it is validated on silicon against TPU v3")
    (tmp_path / "t.yaml").write_text("name: t\nhardware: tpu_v3_core\nconfigs: [configs/native.yaml]\n"
                                     "models: [{name: gpt2, tokens: 16}]\naxes: {product: {model.batch: [1, 2]}}\n")
    _, plan = load_sweep(tmp_path / "t.yaml")
    assert _silicon_line(plan).startswith("validated on silicon against TPU v3")


def test_power_and_efficiency_are_the_dies_in_closed_form():
    """Idle power is the preset's static power; busy power is the run's energy less DRAM's over its time;
    efficiency is 2 x MACs per pJ of the die: each from the engine's own totals."""
    from simulator.analysis.validation import _trace
    from simulator.energy.accounting import static_mw
    from simulator.energy.action_costs import action_costs
    from simulator.engine import simulate
    from simulator.spec.run_config import policy_from_dict
    from simulator.spec.silicon import measured_silicon

    data = {d.preset: d for d in measured_silicon()}
    v1 = {p.key: p for p in compare(data["tpu_v1_like"], load_hardware("tpu_v1_like"))}
    hw = load_hardware("tpu_v1_like")
    assert v1["v1.power.idle"].predicted == pytest.approx(static_mw(action_costs(hw)) / 1e3)
    busy = next(p for p in data["tpu_v1_like"].points if p.key == "v1.power.busy")
    totals = simulate(_trace(busy.workload), hw, policy_from_dict(
        {"name": "i", "hardware": hw.name, "precision": {"default": "int8"}})).totals
    die_joules = (totals.energy["total_pj"] - totals.energy["by_component"]["dram"]) * 1e-12
    assert v1["v1.power.busy"].predicted == pytest.approx(die_joules / (totals.latency_ms * 1e-3))
    assert totals.utilization > 0.4  # the assumed workload keeps the array as busy as this preset gets
    rapid_hw = load_hardware("rapid_like_4core")
    rapid = compare(data["rapid_like_4core"], rapid_hw)[0]
    peak = data["rapid_like_4core"].points[0]
    run = simulate(_trace(peak.workload), rapid_hw, policy_from_dict(
        {"name": "i", "hardware": rapid_hw.name, "precision": {"default": "int4"}})).totals
    die_pj = run.energy["total_pj"] - run.energy["by_component"]["dram"]
    assert rapid.predicted == pytest.approx(2 * run.macs / die_pj) and rapid.unit == "TOPS/W"
    assert run.macs == 4096**3 and rapid.metric == "efficiency" and not rapid.fitted and not rapid.calibration
    assert rapid.source.startswith("Venkataramani et al., RaPiD") and rapid.workload == "gemm 4096x4096x4096 int4"
    assert v1["v1.power.idle"].workload == "idle" and v1["v1.power.idle"].fitted
    from simulator.spec.hardware import Hardware

    unpriced = Hardware.model_validate({**hw.model_dump(), "energy": None, "fitted": []})
    with pytest.raises(InputError, match="has no energy section to predict power"):
        compare(data["tpu_v1_like"], unpriced)


@pytest.mark.slow
def test_tpu_v1_likes_uncore_power_is_what_its_calibration_script_fits():
    import importlib.util

    from cli_helpers import ROOT

    spec = importlib.util.spec_from_file_location("fit_tpu_v1_like", ROOT / "calibration" / "fit_tpu_v1_like.py")
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)
    preset = load_hardware("tpu_v1_like")
    fitted = fit.fit(load_silicon(SILICON_DIR / "tpu_v1.yaml"), fit.unfitted(preset))
    assert fitted == fit.preset_values(preset) and sorted(preset.fitted) == sorted(fitted)


def test_uncore_power_is_drawn_whenever_the_chip_is_on():
    """Idle, the die draws its leakage and its uncore power; a run's leakage energy is both over its time;
    without uncore power nothing else moves."""
    from conftest import preset_with

    from simulator.energy.accounting import static_mw
    from simulator.energy.action_costs import action_costs
    from simulator.engine import simulate
    from simulator.spec.run_config import load_run_config
    from workloads.models import Workload, load_model

    hw = load_hardware("tpu_v1_like")
    bare = preset_with("tpu_v1_like", energy={"uncore_mw": 0.0})
    assert static_mw(action_costs(hw)) == pytest.approx(static_mw(action_costs(bare)) + hw.energy.uncore_mw)
    trace, int8 = load_model("bert-base").trace(Workload(tokens=32)), load_run_config("configs/int8.yaml")
    with_uncore, without = simulate(trace, hw, int8), simulate(trace, bare, int8)
    extra = with_uncore.totals.energy["by_component"]["leakage"] - without.totals.energy["by_component"]["leakage"]
    assert extra == pytest.approx(hw.energy.uncore_mw * with_uncore.totals.latency_ms * 1e6)  # mW x ms = 1e6 pJ
    columns = [c for c in without.columns]
    assert with_uncore[columns].to_csv(index=False) == without[columns].to_csv(index=False)  # per-op dynamic


def test_no_two_regimes_of_the_plot_look_alike():
    """Each of the plot's regimes, up to 110 of them, gets a marker and colour pair of its own."""
    from simulator.report.validation import regime_style

    assert len({regime_style(index) for index in range(110)}) == 110
