"""Bad input across every command: one line on stderr naming the field or file, exit 2, no traceback.

Each case builds its own files in a temporary directory and says which text the error line must
contain. Internal errors are checked separately: exit 1, one line, and a hint to rerun with --debug.
"""

import json
import re

import numpy as np
import pytest
from cli_helpers import ROOT, accelsim, assert_one_line_error

RAPID_LIKE = ROOT / "configs" / "hardware" / "rapid_like.yaml"


def write(directory, name, text):
    path = directory / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


GENERATE = ["generate", "int8", "--model", "llama-2-7b", "--prompt", "512"]


def hardware_with(directory, pattern, new):
    """The rapid_like preset with the first match of the regex ``pattern`` replaced by ``new``."""
    text, count = re.subn(pattern, new, RAPID_LIKE.read_text(), count=1)
    assert count == 1, pattern
    return write(directory, "hw.yaml", text)


def run_config(directory, body, name="c.yaml"):
    return write(directory, name, f"name: c\nhardware: rapid_like\n{body}\n")


def sparsity_case(command: str, sparsity: str):
    """Arguments running ``command`` on bert-base under an INT8 config with this ``sparsity`` section."""
    return lambda p: [command, run_config(p, f"precision: {{default: int8}}\nsparsity: {sparsity}"), "--model",
                      "bert-base"]


def checkpoint_dir(directory, quantization):
    """A checkpoint directory: tests/configs' Qwen2 shape with this quantization_config."""
    config = json.loads((ROOT / "tests" / "configs" / "qwen2-0.5b.json").read_text())
    (directory / "ckpt").mkdir()
    write(directory / "ckpt", "config.json", json.dumps({**config, "quantization_config": quantization}))
    return str(directory / "ckpt")


def attention_case(attention: str, model: str = "gpt2"):
    """Arguments running ``model`` under an INT8 config with this ``attention`` section."""
    return lambda p: ["run", run_config(p, f"precision: {{default: int8}}\nattention: {attention}"), "--model", model]


def _energy_table(directory, *replacements):
    """rapid_like priced by a copy of the 45 nm table with regex replacements applied (pattern, new, ...)."""
    text = (ROOT / "configs" / "energy" / "horowitz_45nm.yaml").read_text()
    for pattern, new in zip(replacements[::2], replacements[1::2], strict=True):
        text, count = re.subn(pattern, new, text)
        assert count >= 1, pattern
    table = write(directory, "table.yaml", text)
    return hardware_with(directory, r"table: horowitz_45nm", f"table: {table}")


def masked_config(directory, mask_name):
    return run_config(directory, f"precision: {{default: int8}}\nsparsity: {{weights: {{mask: {mask_name}, "
                                 "roles: [q]}}\nbaseline: int8")


def bad_mask(directory, kind):
    if kind == "shape":
        np.save(directory / "m.npy", np.ones((3, 3)))
        return "m.npy"
    if kind == "dtype":
        np.save(directory / "m.npy", np.array([["a"] * 768] * 768))
        return "m.npy"
    (directory / "m.npz").write_bytes(b"PK\x03\x04 truncated archive")
    return "m.npz"


BERT_KEYS = ('"vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, '
             '"max_position_embeddings": 64, "type_vocab_size": 2')
GEMM = ["gemm", "--m", "8", "--k", "8", "--n", "8", "--rows", "4", "--cols", "4"]
RUN = ["run", "configs/int8.yaml", "--model", "bert-base"]
SWEEP_HEAD = "name: s\nhardware: rapid_like\n"

def _cases(folder):
    path = folder / "cases.csv"
    path.write_text("m,k,n,rows,cols,dataflow\n4,4,4,2,2,ws\n")
    return path


def _touch(path):
    path.write_text("already here")
    return path


def _misspelt_sfu(folder):
    path = folder / "hw.yaml"
    path.write_text((ROOT / "configs" / "hardware" / "rapid_like.yaml").read_text().replace("softmax:", "sofmax:"))
    return path


def _sweep_with_axis(folder, axis):
    path = folder / "sweep.yaml"
    path.write_text(f"name: s\nhardware: rapid_like\naxes:\n  product: {{{axis}: [1, 2]}}\n"
                    "configs: [int8]\nmodels: [bert-base]\n")
    return path


CASES = [
    # models
    ("models-extra-arg", lambda p: ["models", "bert-base"], "unexpected extra argument"),
    ("unknown-command", lambda p: ["nosuchcommand"], "nosuchcommand"),
    # extract
    ("extract-unknown-model", lambda p: ["extract", "--model", "bert-bsae"], "did you mean bert-base"),
    ("extract-malformed-json", lambda p: ["extract", "--model", write(p, "config.json", "{not json")],
     "malformed JSON"),
    ("extract-missing-key", lambda p: ["extract", "--model", write(p, "config.json", '{"model_type": "bert"}')],
     "missing key"),
    ("extract-unsupported-type", lambda p: ["extract", "--model", write(p, "config.json", '{"model_type": "gemma"}')],
     "unsupported model_type"),
    ("extract-json-array", lambda p: ["extract", "--model", write(p, "config.json", "[1, 2]")], "JSON object"),
    ("extract-heads-do-not-divide", lambda p: ["extract", "--model", write(
        p, "config.json", '{"model_type": "bert", "num_attention_heads": 5, ' + BERT_KEYS + "}")], "does not divide"),
    ("extract-size-as-text", lambda p: ["extract", "--model", write(
        p, "config.json", '{"model_type": "bert", "num_attention_heads": "12", ' + BERT_KEYS + "}")],
     "key 'num_attention_heads' has an invalid value '12'"),
    ("extract-size-past-31-bits", lambda p: ["extract", "--model", write(  # an internal OverflowError before
        p, "config.json", '{"model_type": "bert", "num_attention_heads": 2, ' + BERT_KEYS.replace("100", "1" + "0" * 30)
        + "}")], "key 'vocab_size' = 1" + "0" * 30 + " exceeds the largest accepted size"),
    ("extract-flag-as-text", lambda p: ["extract", "--model", write(  # was read as true
        p, "config.json", '{"model_type": "opt", "do_layer_norm_before": "false", "vocab_size": 100, '
        '"hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2, "num_attention_heads": 2, '
        '"max_position_embeddings": 64}')],
     "key 'do_layer_norm_before' must be true or false, got 'false'"),
    ("extract-zero-tokens", lambda p: ["extract", "--model", "bert-base", "--tokens", "0"], "--tokens"),
    ("extract-negative-batch", lambda p: ["extract", "--model", "bert-base", "--batch", "-3"], "--batch"),
    ("extract-32bit-overflow", lambda p: ["extract", "--model", "bert-base", "--tokens", "4294967296"], "--tokens"),
    ("extract-non-integer", lambda p: ["extract", "--model", "bert-base", "--batch", "two"], "--batch"),
    ("extract-bad-image", lambda p: ["extract", "--model", "vit-base", "--image-size", "100"], "not divisible"),
    ("extract-short-audio", lambda p: ["extract", "--model", "wav2vec2-large", "--audio-samples", "100"],
     "shorter than one frame"),
    ("extract-wrong-head", lambda p: ["extract", "--model", "bert-base", "--head", "ctc"], "head"),
    ("extract-bad-format", lambda p: ["extract", "--model", "bert-base", "--format", "xml"], "--format"),
    ("extract-out-is-dir", lambda p: ["extract", "--model", "bert-base", "--out", str(p)], "directory"),
    # knobs that do not apply to the model or the command are refused, naming the knob
    ("extract-decode-on-encoder", lambda p: ["extract", "--model", "bert-base", "--phase", "decode"], "--phase"),
    ("extract-prefill-on-vit", lambda p: ["extract", "--model", "vit-base", "--phase", "prefill"], "--phase"),
    ("extract-decoder-tokens-on-encoder", lambda p: ["extract", "--model", "bert-base", "--decoder-tokens", "5"],
     "--decoder-tokens"),
    ("extract-image-size-on-text", lambda p: ["extract", "--model", "gpt2", "--image-size", "224"], "--image-size"),
    ("extract-audio-on-vit", lambda p: ["extract", "--model", "vit-base", "--audio-samples", "8000"],
     "--audio-samples"),
    ("extract-tokens-on-vit", lambda p: ["extract", "--model", "vit-base", "--tokens", "5"], "--tokens"),
    ("extract-repeated-model", lambda p: ["extract", "--model", "bert-base", "--model", "gpt2"], "--model"),
    ("run-repeated-hardware", lambda p: ["run", "int8", "--model", "bert-base", "--hardware", "rapid_like",
                                         "--hardware", "tpu_v1_like"], "--hardware"),
    ("memory-tokens", lambda p: ["memory", "configs/int8.yaml", "--model", "bert-base", "--tokens", "5"],
     "--tokens"),
    ("memory-batch", lambda p: ["memory", "configs/int8.yaml", "--model", "bert-base", "--batch", "2"], "--batch"),
    ("memory-phase", lambda p: ["memory", "configs/int8.yaml", "--model", "gpt2", "--phase", "decode"], "--phase"),
    ("gemm-cases-and-sizes", lambda p: ["gemm", "--cases", str(_cases(p)), "--m", "5"], "--m"),
    ("gemm-cases-and-dataflow", lambda p: ["gemm", "--cases", str(_cases(p)), "--dataflow", "os"], "--dataflow"),
    ("extract-format-vs-extension", lambda p: ["extract", "--model", "bert-base", "--format", "csv", "--out",
                                               str(p / "t.parquet")], "does not match"),
    ("extract-unknown-extension", lambda p: ["extract", "--model", "bert-base", "--out", str(p / "t.xyz")],
     "--format"),
    ("extract-out-exists", lambda p: ["extract", "--model", "bert-base", "--out", str(_touch(p / "t.csv"))],
     "--force"),
    ("reproduce-json-exists", lambda p: ["reproduce", "--json", str(_touch(p / "r.json"))], "--force"),
    ("run-unknown-config-name", lambda p: ["run", "int9", "--model", "bert-base"], "did you mean 'int8'"),
    ("run-misspelt-sfu-op", lambda p: ["run", "int8", "--model", "bert-base", "--hardware", str(_misspelt_sfu(p))],
     "did you mean 'softmax'"),
    ("sweep-axis-misspelt-sfu-op", lambda p: ["sweep", str(_sweep_with_axis(p, "sfu.cycles_per_element.sofmax")),
                                              "--out", str(p / "o")], "did you mean 'softmax'"),
    ("sweep-axis-bad-precision", lambda p: ["sweep", str(_sweep_with_axis(p, "macs_per_pe.int99")),
                                            "--out", str(p / "o")], "int99"),
    ("extract-no-model", lambda p: ["extract"], "--model"),
    # energy and area: tables, the hardware's energy section, the accounting switch
    ("energy-negative-value", lambda p: ["run", "int8", "--model", "bert-base", "--hardware", _energy_table(
        p, r"int8_add: +\{value: 0.03", "int8_add: {value: -0.03")], "finite number >= 0"),
    ("energy-missing-action", lambda p: ["run", "fp16", "--model", "bert-base", "--hardware", _energy_table(
        p, r"\n  fp16_mult:[^\n]*", "")], "no entry 'fp16_mult'"),
    ("energy-node-without-rule", lambda p: ["area", _energy_table(
        p, r"scaling: stillmaker_baas\n", "", r"node_nm: 40", "node_nm: 45")], "names no scaling rule"),
    ("validate-unknown-preset", lambda p: ["validate", "--preset", "nope"], "--preset nope: no such preset (measured:"),
    ("validate-misspelt-preset", lambda p: ["validate", "--preset", "tpu_v3"],
     "--preset tpu_v3: no such preset; did you mean 'tpu_v3_core'?"),
    ("area-without-energy", lambda p: ["area", hardware_with(p, r"\nenergy:[^\n]*(\n  [^\n]*)+", "")],
     "no energy section"),
    ("extract-model-is-dir", lambda p: ["extract", "--model", str(p)], "is a directory"),
    # gemm
    ("gemm-zero", lambda p: ["gemm", "--m", "0", "--k", "8", "--n", "8", "--rows", "4", "--cols", "4"], "m must be"),
    ("gemm-negative", lambda p: ["gemm", "--m", "8", "--k", "-8", "--n", "8", "--rows", "4", "--cols", "4"],
     "k must be"),
    ("gemm-32bit-overflow", lambda p: ["gemm", "--m", "8", "--k", "8", "--n", str(2**33), "--rows", "4", "--cols",
                                       "4"], "n = 8589934592 exceeds"),
    ("gemm-dataflow", lambda p: [*GEMM, "--dataflow", "rs"], "dataflow"),
    ("gemm-precision", lambda p: [*GEMM, "--precision", "int3x"], "precision"),
    ("gemm-n-over-m", lambda p: [*GEMM, "--sparsity", "3:2"], "N must not exceed M"),
    ("gemm-timing", lambda p: [*GEMM, "--timing", "exact"], "timing"),
    ("gemm-missing", lambda p: ["gemm", "--m", "8"], "missing option"),
    ("gemm-cases-missing-file", lambda p: ["gemm", "--cases", str(p / "none.csv")], "none.csv"),
    ("gemm-cases-columns", lambda p: ["gemm", "--cases", write(p, "c.csv", "m,k\n1,2\n")], "missing column"),
    ("gemm-cases-type", lambda p: ["gemm", "--cases", write(p, "c.csv", "m,k,n,rows,cols,dataflow\n1,x,1,1,1,ws\n")],
     "line 2"),
    ("gemm-cases-binary", lambda p: ["gemm", "--cases", write(p, "c.csv", b"\xff\xfe\x00garbage")], "c.csv"),
    # memory (run configs)
    ("memory-int17", lambda p: ["memory", run_config(p, "precision: {default: int17}"), "--model", "bert-base"],
     "precision.default"),
    ("memory-int1", lambda p: ["memory", run_config(p, "precision: {default: int1}"), "--model", "bert-base"],
     "int1"),
    ("memory-n-over-m", sparsity_case("memory", "{weights: {pattern: '3:2'}}"), "sparsity.weights.pattern"),
    ("memory-range-outside", lambda p: ["memory", run_config(p, "precision: {default: int8, layers: "
                                                                "{'0-12': int4}}"), "--model", "bert-base"],
     "outside bert-base"),
    ("attention-block-zero", attention_case("{block_q: 0}"), "attention.block_q"),
    ("attention-unknown-kernel", attention_case("{kernel: flash}"), "attention.kernel"),
    ("attention-blocks-materialized", attention_case("{kernel: materialized, block_k: 64}"),
     "apply to the fused kernel"),
    ("attention-blocks-on-encoder", attention_case("{block_q: 64}", "bert-base"),
     "no attention of bert-base runs fused"),
    ("attention-blocks-too-large", attention_case("{block_q: 1024, block_k: 1048576}"), "do not fit its buffers"),
    ("attention-block-k-n-m", attention_case("{block_k: 6}\nsparsity: {attention: {probabilities: '2:4'}}"),
     "multiple of 4"),
    ("attention-unknown-key", attention_case("{kernal: fused}"), "kernal"),
    ("checkpoint-without-hardware", lambda p: ["run", "checkpoint", "--model", "gpt2"], "needs --hardware"),
    ("checkpoint-not-a-directory", lambda p: ["run", "checkpoint", "--model", str(p), "--hardware", "tpu_v5e_like"],
     "not a checkpoint directory (no config.json)"),
    ("checkpoint-unknown-method", lambda p: ["run", "checkpoint", "--model", checkpoint_dir(p, {"quant_method": "hqq"}),
                                             "--hardware", "tpu_v5e_like"], "quant_method 'hqq' is not supported"),
    ("config-not-a-checkpoint", lambda p: ["config", "--from-checkpoint", str(p), "--hardware", "tpu_v5e_like"],
     "not a checkpoint directory"),
    ("json-and-csv", lambda p: ["run", "int8", "--model", "gpt2", "--json", "--format", "csv"],
     "--json contradicts --format csv"),
    ("generate-long-prompt-bf16", lambda p: ["generate", "native", "--model", "llama-3.1-8b", "--prompt", "131072",
                                             "--new-tokens", "1", "--hardware", "tpu_v5e_like"],
     "more than hardware tpu_v5e_like's DRAM of 16,000,000,000 bytes"),
    ("run-kv-cache-on-encoder", lambda p: ["run", run_config(p, "precision: {default: int8, kv_cache: int4}"),
                                           "--model", "bert-base"], "kv_cache does not apply"),
    ("run-kv-cache-bad-format", lambda p: ["run", run_config(p, "precision: {default: int8, kv_cache: int5x}"),
                                           "--model", "gpt2"], "kv_cache"),
    ("memory-unknown-group", lambda p: ["memory", run_config(p, "precision: {default: int8, groups: {mlp: int4}}"),
                                        "--model", "bert-base"], "precision.groups"),
    ("memory-unknown-role", lambda p: ["memory", run_config(p, "precision: {default: int8, ops: {qq: int4}}"),
                                       "--model", "bert-base"], "precision.ops"),
    ("memory-overlap", lambda p: ["memory", run_config(p, "precision: {default: int8, layers: {'0-7': int2, "
                                                          "'6-11': int4}}"), "--model", "bert-base"], "overlap"),
    ("memory-unknown-key", lambda p: ["memory", run_config(p, "precision: {default: int8}\ncolour: red"),
                                      "--model", "bert-base"], "colour: unknown key"),
    ("memory-duplicate-key", lambda p: ["memory", run_config(p, "precision: {default: int8}\nprecision: "
                                                                "{default: int4}"), "--model", "bert-base"],
     "duplicate key 'precision'"),
    ("memory-wrong-type", lambda p: ["memory", run_config(p, "precision: {default: int8, scale_bits: lots}"),
                                     "--model", "bert-base"], "precision.scale_bits"),
    ("memory-bmm-prune", sparsity_case("memory", "{weights: {pattern: '2:4', roles: [bmm_qk]}}"), "no weight matrix"),
    ("run-attention-n-over-m", sparsity_case("run", "{attention: {probabilities: '3:2'}}"),
     "sparsity.attention.probabilities"),
    ("run-attention-nothing", sparsity_case("run", "{attention: {}}"), "give probabilities, keys or both"),
    ("run-attention-unknown-operand", sparsity_case("run", "{attention: {queries: '2:4'}}"), "queries: unknown key"),
    ("memory-malformed-yaml", lambda p: ["memory", run_config(p, "precision: [int8"), "--model", "bert-base"],
     "malformed YAML"),
    ("memory-missing-field", lambda p: ["memory", write(p, "c.yaml", "name: c\nhardware: rapid_like\n"),
                                        "--model", "bert-base"], "precision: required field is missing"),
    ("memory-not-a-mapping", lambda p: ["memory", write(p, "c.yaml", "- just\n- a list\n"), "--model", "bert-base"],
     "YAML mapping"),
    ("memory-binary-file", lambda p: ["memory", write(p, "c.yaml", b"\xff\xfe\x00\x81"), "--model", "bert-base"],
     "c.yaml: cannot read"),
    # run
    ("run-missing-config", lambda p: ["run", "configs/nope.yaml", "--model", "bert-base"], "no such file"),
    # compression formats (issue 14)
    ("memory-unknown-format", lambda p: ["memory", run_config(p, "precision: {default: int3x}"), "--model",
                                         "bert-base"], "known: fp32, fp16, bf16, fp8_e4m3"),
    ("memory-group-size-zero", lambda p: ["memory", run_config(p, "precision: {weights: int4, activations: native, "
                                          "weight_scales: {per: group, group_size: 0}}"), "--model", "bert-base"],
     "group_size must be between 1 and"),
    ("memory-group-size-too-large", lambda p: ["memory", run_config(
        p, "precision: {weights: int4, activations: native, weight_scales: {per: group, group_size: 4294967296}}"),
        "--model", "bert-base"], "31-bit"),
    ("memory-zero-point-on-float", lambda p: ["memory", run_config(
        p, "precision: {default: fp8_e5m2, weight_scales: {zero_point_bits: 8}}"), "--model", "bert-base"],
     "fp8_e5m2 weights are floats"),
    ("memory-mx-block-size", lambda p: ["memory", run_config(
        p, "precision: {default: mxfp6, weight_scales: {per: group, group_size: 16}}"), "--model", "bert-base"],
     "mxfp6 blocks are 32 elements"),
    ("run-kv-on-encoder", lambda p: ["run", "configs/w4a16_g128_kv8.yaml", "--model", "bert-base"],
     "precision.kv_cache does not apply to bert-base"),
    ("run-outliers-beyond-k", lambda p: ["run", run_config(p, "precision: {default: int8}\noutliers: {dims: 5000}"),
                                         "--model", "bert-base"], "outliers.dims 5000 must be below"),
    ("run-config-is-dir", lambda p: ["run", str(p), "--model", "bert-base"], "is a directory"),
    ("run-unknown-preset", lambda p: [*RUN, "--hardware", "rapid"], "did you mean 'rapid_like'"),
    ("run-out-is-file", lambda p: [*RUN, "--out", "configs/int8.yaml"], "not a directory"),
    ("run-fp16-on-tpu", lambda p: ["run", "configs/fp16.yaml", "--model", "bert-base", "--hardware", "tpu_v1_like"],
     "cannot compute fp16"),
    ("run-sparse-baseline", lambda p: ["run", run_config(p, "precision: {default: int8}\nbaseline: "
                                                            f"{ROOT / 'configs' / 'int8_sp.yaml'}"),
                                       "--model", "bert-base"], "is itself sparse"),
    ("serve-capacity-with-requests", lambda p: ["serve", "int8", "--model", "llama-2-7b", "--hardware", "tpu_v5e_like",
                                                "--capacity", "--slo", "ttft=500,tpot=50", "--requests",
                                                str(ROOT / "configs" / "traces" / "chat_200.csv")],
     "--requests does not apply: --capacity generates its requests"),  # it said --requestss
    ("sweep-more-workers-than-cpus", lambda p: ["sweep", str(ROOT / "configs" / "sweeps" / "pe_array.yaml"), "--out",
                                                str(p / "o"), "--workers", "100000"],
     "--workers 100000: this machine gives accelsim"),  # a pool of up to 60 processes, a LocalCluster of 100000
    ("memory-checkpoint-no-hardware", lambda p: ["memory", "checkpoint", "--model",
                                                 str(ROOT / "tests" / "fixtures" / "checkpoints" / "ct_w4a16")],
     "the checkpoint config needs --hardware"),
    ("memory-on-a-system", lambda p: ["memory", "int8", "--model", "bert-base", "--hardware", "tpu_v5e_x4"],
     "tpu_v5e_x4 is a system of several chips; this command runs one chip"),
    ("area-system-yaml", lambda p: ["area", str(ROOT / "configs" / "systems" / "tpu_v5e_x4.yaml")],
     "tpu_v5e_x4.yaml is a system of several chips"),  # was: array: required field is missing
    # --force with nothing to replace was taken silently
    ("run-force-without-out", lambda p: [*RUN, "--force"], "--force applies only with --out"),
    ("validate-force-without-out", lambda p: ["validate", "--force"], "--force applies only with --out"),
    ("reproduce-force-without-out", lambda p: ["reproduce", "--force"], "--force applies only with --out or --json"),
    # a name in the config that resolves to nothing, also where the command does not use it
    ("memory-dangling-baseline", lambda p: ["memory", run_config(p, "precision: {default: int8}\nbaseline: int88"),
                                            "--model", "bert-base"], "c: baseline 'int88' not found"),
    ("serve-dangling-baseline", lambda p: ["serve", run_config(p, "precision: {default: int8}\nbaseline: int88"),
                                           "--model", "llama-2-7b", "--hardware", "tpu_v5e_like", "--num-requests",
                                           "1"], "c: baseline 'int88' not found"),
    ("run-config-hardware-overridden", lambda p: ["run", write(p, "c.yaml", "name: c\nhardware: rapid_lik\n"
                                                                           "precision: {default: int8}\n"),
                                                  "--model", "bert-base", "--hardware", "tpu_v5e_like"],
     "c: hardware: unknown hardware preset 'rapid_lik'; did you mean 'rapid_like'?"),
    ("memory-config-hardware", lambda p: ["memory", write(p, "c.yaml", "name: c\nhardware: nonesuch\n"
                                                                      "precision: {default: int8}\n"),
                                          "--model", "bert-base"], "c: hardware: unknown hardware preset 'nonesuch'"),
    ("run-hw-unknown-key", lambda p: [*RUN, "--hardware", hardware_with(p, "accumulator_bits: 32",
                                                                        "accumulator_bits: 32\nturbo: true")],
     "turbo: unknown key"),
    ("run-hw-wrong-type", lambda p: [*RUN, "--hardware", hardware_with(p, r"rows: \d+,", "rows: four,")], "array.rows"),
    ("run-hw-zero-rows", lambda p: [*RUN, "--hardware", hardware_with(p, r"rows: \d+,", "rows: 0,")], "array.rows"),
    # a value of another type is not coerced (a flag 0, a count true, a number as text were accepted)
    ("run-hw-count-as-flag", lambda p: [*RUN, "--hardware", hardware_with(p, r"rows: \d+,", "rows: true,")],
     "array.rows: Input should be a valid integer"),
    ("run-hw-flag-as-number", lambda p: [*RUN, "--hardware", hardware_with(p, r"fusion: \w+", "fusion: 0")],
     "sfu.fusion: Input should be a valid boolean"),
    ("run-config-number-as-text", lambda p: ["run", run_config(p, 'precision: {weights: int4, weight_scales: '
                                                                '{per: channel, scale_bits: "16"}}'),
                                             "--model", "bert-base"],
     "precision.weight_scales.scale_bits: Input should be a valid integer"),
    ("run-hw-huge-rows", lambda p: [*RUN, "--hardware", hardware_with(p, r"rows: \d+,", "rows: 8589934592,")],
     "array.rows"),
    ("run-hw-nan-cost", lambda p: [*RUN, "--hardware", hardware_with(p, r"softmax: [\d.]+", "softmax: .nan")],
     "sfu.cycles_per_element"),
    ("run-hw-missing-sfu-op", lambda p: [*RUN, "--hardware", hardware_with(p, r"    softmax: [\d.]+\n", "")],
     "no cost for vector op 'softmax'"),
    ("run-hw-bad-precision", lambda p: [*RUN, "--hardware", hardware_with(p, "int2: 32", "int17: 32")],
     "macs_per_pe"),
    ("run-hw-bad-dataflow", lambda p: [*RUN, "--hardware", hardware_with(p, "dataflow: ws", "dataflow: rs")],
     "array.dataflow"),
    ("run-hw-zero-buffer", lambda p: [*RUN, "--hardware", hardware_with(p, r"ifmap_buffer_bytes: \d+",
                                                                        "ifmap_buffer_bytes: 0")],
     "memory.ifmap_buffer_bytes"),
    ("run-hw-negative-buffer", lambda p: [*RUN, "--hardware", hardware_with(p, r"ofmap_buffer_bytes: \d+",
                                                                            "ofmap_buffer_bytes: -8")],
     "memory.ofmap_buffer_bytes"),
    ("run-hw-zero-bandwidth", lambda p: [*RUN, "--hardware", hardware_with(p, r"dram_bytes_per_cycle: [\d.]+",
                                                                           "dram_bytes_per_cycle: 0")],
     "memory.dram_bytes_per_cycle"),
    ("run-hw-dram-too-small", lambda p: [*RUN, "--hardware", hardware_with(
        p, "weights_streamed: true", "weights_streamed: true\n  dram_capacity_bytes: 1000000")],
     "more than hardware rapid_like's DRAM of 1,000,000 bytes"),
    ("generate-zero-tokens", lambda p: [*GENERATE, "--new-tokens", "0"], "--new-tokens must be at least 1"),
    ("generate-zero-beams", lambda p: [*GENERATE, "--new-tokens", "4", "--beams", "0"], "--beams must be at least 1"),
    ("generate-encoder-only", lambda p: ["generate", "int8", "--model", "bert-base", "--prompt", "8",
                                         "--new-tokens", "4"], "bert-base has no decoder"),
    ("generate-beyond-positions", lambda p: [*GENERATE, "--new-tokens", "3600"],
     "a context of 4111 tokens exceeds the model's 4096 positions"),
    ("generate-encoder-decoder-beyond-positions", lambda p: ["generate", "int8", "--model", "t5-3b", "--prompt",
                                                             "20", "--new-tokens", "3000000"],
     "a decoder context of 3000000 tokens exceeds the model's 512 positions (n_positions)"),
    ("generate-knob-of-another-family", lambda p: [*GENERATE, "--new-tokens", "2", "--expert-imbalance", "2"],
     "--expert-imbalance does not apply to llama models (their workload knobs: batch, head, tokens, phase)"),
    ("generate-kv-cache-outgrows-dram", lambda p: [
        "generate", "int8", "--model", "llama-3-8b", "--prompt", "512", "--new-tokens", "4000", "--hardware",
        hardware_with(p, "weights_streamed: true", "weights_streamed: true\n  dram_capacity_bytes: 8300000000")],
     "more than hardware rapid_like's DRAM of 8,300,000,000 bytes"),
    ("run-mask-missing", lambda p: ["run", masked_config(p, "nothere.npz"), "--model", "bert-base"], "nothere.npz"),
    ("run-mask-shape", lambda p: ["run", masked_config(p, bad_mask(p, "shape")), "--model", "bert-base"],
     "shape (3, 3)"),
    ("run-mask-dtype", lambda p: ["run", masked_config(p, bad_mask(p, "dtype")), "--model", "bert-base"], "dtype"),
    ("run-mask-truncated", lambda p: ["run", masked_config(p, bad_mask(p, "truncated")), "--model", "bert-base"],
     "m.npz: cannot read masks"),
    ("run-mask-is-dir", lambda p: ["run", masked_config(p, str(p)), "--model", "bert-base"], "is a directory"),
    ("run-unknown-model", lambda p: ["run", "configs/int8.yaml", "--model", "gpt5"], "gpt5"),
    ("run-bad-format", lambda p: [*RUN, "--format", "yaml"], "--format"),
    # reproduce
    ("reproduce-json-is-dir", lambda p: ["reproduce", "--json", "configs"], "is a directory"),
    ("reproduce-out-is-file", lambda p: ["reproduce", "--out", "configs/int8.yaml"], "not a directory"),
    ("sweep-unknown-key", lambda p: ["sweep", write(p, "s.yaml", SWEEP_HEAD + "configs: [int8]\nmodels: [bert-base]"
                                                                 "\ncolour: red\n"), "--out", str(p / "o")],
     "colour: unknown key"),
    ("sweep-no-such-field", lambda p: ["sweep", write(p, "s.yaml", SWEEP_HEAD + "axes: {product: {array.depth: [1]}}"
                                                                   "\nconfigs: [int8]\nmodels: [bert-base]\n"),
                                       "--out", str(p / "o")], "array.depth"),
    ("sweep-zip-lengths", lambda p: ["sweep", write(p, "s.yaml", SWEEP_HEAD + "axes: {zip: {array.rows: [1, 2], "
                                                                 "array.cols: [3]}}\nconfigs: [int8]\n"
                                                                 "models: [bert-base]\n"), "--out", str(p / "o")],
     "equal lengths"),
    ("sweep-unknown-config", lambda p: ["sweep", write(p, "s.yaml", SWEEP_HEAD + "configs: [int9]\n"
                                                                    "models: [bert-base]\n"), "--out", str(p / "o")],
     "config 'int9' not found"),
    ("sweep-unknown-model", lambda p: ["sweep", write(p, "s.yaml", SWEEP_HEAD + "configs: [int8]\n"
                                                                   "models: [bert-bass]\n"), "--out", str(p / "o")],
     "bert-bass"),
    ("sweep-empty-configs", lambda p: ["sweep", write(p, "s.yaml", SWEEP_HEAD + "configs: []\nmodels: [bert-base]\n"),
                                       "--out", str(p / "o")], "configs"),
    ("sweep-malformed", lambda p: ["sweep", write(p, "s.yaml", SWEEP_HEAD + "configs: [int8\n"), "--out",
                                   str(p / "o")], "malformed YAML"),
    ("sweep-duplicate", lambda p: ["sweep", write(p, "s.yaml", SWEEP_HEAD + "name: t\nconfigs: [int8]\n"
                                                               "models: [bert-base]\n"), "--out", str(p / "o")],
     "duplicate key 'name'"),
    ("sweep-zero-workers", lambda p: ["sweep", "configs/sweeps/pe_array.yaml", "--out", str(p / "o"), "--workers",
                                      "0"], "--workers"),
    ("sweep-missing-file", lambda p: ["sweep", str(p / "none.yaml"), "--out", str(p / "o")], "none.yaml"),
    ("sweep-scheduler-local", lambda p: ["sweep", "configs/sweeps/pe_array.yaml", "--out", str(p / "o"),
                                         "--scheduler", "tcp://127.0.0.1:1"], "--executor dask"),
    ("sweep-model-knob-type", lambda p: ["sweep", write(p, "s.yaml", SWEEP_HEAD + "configs: [int8]\nmodels: "
                                                                     "[{name: bert-base, tokens: many}]\n"),
                                         "--out", str(p / "o")], "models.0"),
]

SERVE = ["serve", "int8", "--model", "llama-2-7b", "--hardware", "tpu_v5e_like"]


def serve_trace(directory, text, name="t.csv"):
    return [*SERVE, "--requests", write(directory, name, text)]


CASES += [
    ("serve-negative-time", lambda p: serve_trace(p, "arrival_s,prompt_tokens,output_tokens\n-1,10,5\n"), "row 1"),
    ("serve-time-backwards", lambda p: serve_trace(p, "arrival_s,prompt_tokens,output_tokens\n2,10,5\n1,10,5\n"),
     "row 2: arrival 1.0 is before the previous row's 2.0"),
    ("serve-zero-output", lambda p: serve_trace(p, "arrival_s,prompt_tokens,output_tokens\n0,10,0\n"),
     "row 1: output_tokens 0"),
    ("serve-missing-column", lambda p: serve_trace(p, "arrival_s,prompt_tokens\n0,10\n"), "output_tokens"),
    ("serve-column-twice", lambda p: serve_trace(p, "arrival_s,prompt_tokens,output_tokens,arrival_s\n0,10,5,1\n"),
     "arrival_s appear more than once"),
    ("serve-ragged-row", lambda p: serve_trace(p, "arrival_s,prompt_tokens,output_tokens\n0,10,5\n1,10,5,7\n"),
     "row 2 has 4 fields, the header 3"),
    ("serve-fractional-prompt", lambda p: serve_trace(p, '{"arrival_s": 0, "prompt_tokens": 2.5, '
                                                         '"output_tokens": 3}\n', "t.jsonl"), "prompt_tokens 2.5"),
    ("serve-prompt-too-long", lambda p: serve_trace(p, "arrival_s,prompt_tokens,output_tokens\n0,4000,200\n"),
     "request 0: 4000 prompt tokens"),
    ("serve-unknown-slo", lambda p: [*SERVE, "--num-requests", "2", "--slo", "ttft=100,latency=5"], "'latency'"),
    ("serve-block-size", lambda p: [*SERVE, "--num-requests", "2", "--kv-block-size", "0"], "--kv-block-size"),
    ("serve-block-past-context", lambda p: [*SERVE, "--num-requests", "2", "--kv-block-size", "5000"],
     "--kv-block-size 5000 exceeds llama-2-7b's context of 4096 tokens"),
    ("serve-rate", lambda p: [*SERVE, "--num-requests", "2", "--rate", "0"], "--rate"),
    ("serve-seed", lambda p: [*SERVE, "--num-requests", "2", "--seed", "-1"], "--seed"),
    ("serve-samples", lambda p: [*SERVE, "--num-requests", "2", "--samples", "0"], "--samples"),
    ("serve-rate-with-trace", lambda p: [*serve_trace(p, "arrival_s,prompt_tokens,output_tokens\n0,10,5\n"),
                                         "--rate", "3"], "--rate"),
    ("serve-no-requests", lambda p: SERVE, "--num-requests"),
    ("serve-distribution", lambda p: [*SERVE, "--num-requests", "2", "--prompt-tokens", "gamma:1,2"], "'gamma'"),
    ("serve-encoder", lambda p: ["serve", "int8", "--model", "bert-base", "--hardware", "tpu_v5e_like",
                                 "--num-requests", "2"], "serving needs a decoder"),
    # a decoder whose family builds no mixed batch: an internal KeyError (GPT-2, T5, FSMT); ViT was told
    # --tokens does not apply
    *((f"serve-{model}", lambda p, model=model: ["serve", "int8", "--model", model, "--num-requests", "2"],
       f"{family} models cannot be served") for model, family in (("gpt2", "gpt2"), ("t5-3b", "t5"),
                                                                  ("transformer-base", "fsmt"))),
    ("serve-opt-tp", lambda p: ["serve", "int8", "--model", "opt-13b", "--hardware", "tpu_v5e_x4", "--tp", "4",
                                "--num-requests", "2"], "--tp does not apply to opt models"),
    ("serve-vit", lambda p: ["serve", "int8", "--model", "vit-base", "--num-requests", "2"], "does not generate text"),
    ("serve-jsonl-malformed", lambda p: serve_trace(p, '{"arrival_s": 0, "prompt_tokens": 3, '
                                                       '"output_tokens": 1}\n{oops\n', "t.jsonl"),
     "t.jsonl: line 2: malformed JSON"),
    ("serve-jsonl-not-object", lambda p: serve_trace(p, "[1, 2, 3]\n", "t.jsonl"), "line 1: expected a JSON object"),
    ("serve-trace-suffix", lambda p: serve_trace(p, "x", "t.txt"), "a trace is a .csv or .jsonl file"),
    ("serve-swap-static", lambda p: [*SERVE, "--num-requests", "2", "--preemption", "swap", "--scheduler", "static"],
     "--preemption swap does not apply to the static scheduler"),
    ("serve-swap-no-host-link", lambda p: ["serve", "int8", "--model", "llama-2-7b", "--hardware", "rapid_like_4core",
                                           "--num-requests", "2", "--preemption", "swap"],
     "rapid_like_4core states no host_link"),
    ("serve-swap-space-recompute", lambda p: [*SERVE, "--num-requests", "2", "--swap-space", "8"],
     "--swap-space applies with --preemption swap"),
    ("serve-swap-space-zero", lambda p: [*SERVE, "--num-requests", "2", "--preemption", "swap", "--swap-space", "0"],
     "--swap-space must be a positive number of GiB"),
    ("serve-swap-space-tiny", lambda p: [*SERVE, "--num-requests", "2", "--preemption", "swap", "--swap-space",
                                         "0.001"], "holds no KV block"),
    ("serve-arrival-past-the-clock", lambda p: serve_trace(p, "arrival_s,prompt_tokens,output_tokens\n0,10,5\n"
                                                                "1e300,10,5\n"),
     "request 1: an arrival at 1e+300 s is past what the chip's clock (1503 MHz) counts in cycles"),
    ("serve-rate-past-the-clock", lambda p: [*SERVE, "--num-requests", "2", "--rate", "1e-300"],
     "is past what the chip's clock"),
    ("serve-samples-over-batch", lambda p: [*SERVE, "--num-requests", "2", "--samples", "4", "--max-batch", "2"],
     "its 4 parallel sequences never run within --max-batch 2"),
    ("serve-chunked-batch-over-budget", lambda p: [*SERVE, "--num-requests", "2", "--scheduler", "chunked",
                                                   "--max-tokens", "64"], "--max-batch 256 exceeds --max-tokens 64"),
]


def test_suite_is_large_and_covers_every_command(tmp_path):
    assert len(CASES) >= 40 and len({name for name, _, _ in CASES}) == len(CASES)
    commands = {make(tmp_path)[0] for _, make, _ in CASES}
    from simulator.cli.main import cli

    assert set(cli.commands) <= commands


@pytest.mark.parametrize(("make_args", "needle"), [(make, needle) for _, make, needle in CASES],
                         ids=[name for name, _, _ in CASES])
def test_bad_input_one_line_exit_2(tmp_path, make_args, needle, accelsim_here):
    """In this process (the CLI's own entry point): what is tested is the message, not the interpreter."""
    assert_one_line_error(accelsim_here(*make_args(tmp_path)), needle)


# A handful through a real subprocess, one per kind of failure: usage, a file, a schema, a model, a sweep.
SUBPROCESS = ["gemm-missing", "run-missing-config", "memory-int17", "extract-unknown-model",
              "sweep-model-knob-type"]


@pytest.mark.parametrize("name", SUBPROCESS)
def test_bad_input_through_the_installed_entry_point(tmp_path, name):
    make_args, needle = next((make, needle) for case, make, needle in CASES if case == name)
    assert_one_line_error(accelsim(*make_args(tmp_path)), needle)


def test_debug_shows_the_traceback(tmp_path):
    config = run_config(tmp_path, "precision: {default: int17}")
    plain = accelsim("memory", config, "--model", "bert-base")
    debug = accelsim("--debug", "memory", config, "--model", "bert-base")
    assert plain.returncode == debug.returncode == 2
    assert "Traceback" not in plain.stderr and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


def extract_raising(monkeypatch, capsys, error: BaseException, *options: str) -> tuple[int, str]:
    """`accelsim [options] extract` whose model loading raises ``error``: the exit code and stderr."""
    import simulator.cli.extract
    import simulator.cli.main as cli

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(simulator.cli.extract, "load_model", fail)
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*options, "extract", "--model", "bert-base"])
    return int(exit_info.value.code), capsys.readouterr().err


def test_internal_error_exit_1_with_hint(monkeypatch, capsys):
    code, err = extract_raising(monkeypatch, capsys, RuntimeError("boom\nsecond line"))
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1
    assert "internal error: RuntimeError: boom second line" in lines[0] and "--debug" in lines[0]
    assert "Traceback" in extract_raising(monkeypatch, capsys, RuntimeError("boom"), "--debug")[1]


def test_a_run_larger_than_memory_is_one_line_exit_2(monkeypatch, capsys):
    code, err = extract_raising(monkeypatch, capsys, MemoryError("Unable to allocate 745. GiB for an array"))
    assert code == 2 and err.strip().splitlines() == [
        "accelsim: error: not enough memory for this run (Unable to allocate 745. GiB for an array); ask for a "
        "smaller one"]


def test_json_outputs_of_commands_parse(tmp_path):
    """Outputs that succeed are machine-readable (the complement of the error table)."""
    memory = accelsim("memory", "configs/int8.yaml", "--model", "bert-base", "--json")
    assert json.loads(memory.stdout)["total"]["params"] == 108_893_186
