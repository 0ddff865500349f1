"""``accelsim serve`` as a user runs it: outputs, determinism, trace formats and the shipped trace."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import ROOT, TESTS

from simulator.serving.defaults import DEFAULT_OUTPUTS, DEFAULT_PROMPTS
from simulator.serving.metrics import ITERATION_COLUMNS, REQUEST_COLUMNS
from simulator.serving.requests import generate_requests, parse_lengths

MODEL = str(TESTS / "configs" / "llama-serve-6.json")
SERVE = ["serve", "configs/int8.yaml", "--model", MODEL, "--hardware", "tpu_v5e_like"]
LENGTHS = ["--prompt-tokens", "uniform:8,200", "--output-tokens", "lognormal:20,0.8,200"]


def test_outputs_and_determinism(tmp_path: Path, accelsim_here) -> None:
    """Same trace and seed: byte-identical CSVs; --json prints the summary the checks read."""
    runs = []
    for name in ("a", "b"):
        result = accelsim_here(*SERVE, *LENGTHS, "--num-requests", "40", "--rate", "300", "--seed", "4", "--scheduler",
                               "chunked", "--slo", "ttft=2,tpot=0.5", "--out", str(tmp_path / name), "--json")
        assert result.returncode == 0, result.stderr
        runs.append(json.loads(result.stdout))
    for name in ("requests.csv", "iterations.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for name in ("summary.json", "latency_cdf.png", "latency_cdf.svg", "timeline.png", "timeline.svg"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    summary = runs[0]
    assert summary == runs[1]
    for key in ("requests", "completed", "rejected", "duration_s", "throughput_tokens_per_s",
                "throughput_requests_per_s", "goodput_requests_per_s", "energy_per_token_j"):
        assert key in summary
    for key in ("ttft_ms", "tpot_ms", "e2e_ms"):
        assert set(summary[key]) == {"mean", "p50", "p90", "p99"}
    header = (tmp_path / "a" / "requests.csv").read_text().splitlines()[0].split(",")
    assert header == list(REQUEST_COLUMNS)
    assert (tmp_path / "a" / "iterations.csv").read_text().splitlines()[0].split(",") == list(ITERATION_COLUMNS)
    assert summary["completed"] == 40 == len((tmp_path / "a" / "requests.csv").read_text().splitlines()) - 1


def test_a_trace_in_vidurs_columns_as_json_lines_and_from_a_spreadsheet(tmp_path: Path, accelsim_here) -> None:
    rows = [(0.0, 12, 4), (0.001, 30, 2), (0.001, 7, 9)]
    vidur = tmp_path / "vidur.csv"
    vidur.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
                     + "".join(f"{a},{p},{o}\n" for a, p, o in rows))
    lines = tmp_path / "trace.jsonl"
    lines.write_text("".join(json.dumps({"arrival_s": a, "prompt_tokens": p, "output_tokens": o}) + "\n"
                             for a, p, o in rows))
    spreadsheet = tmp_path / "excel.csv"  # a spreadsheet's export: a byte-order mark, CRLF, a blank last line
    spreadsheet.write_bytes(("\ufeffarrival_s,prompt_tokens,output_tokens\r\n"
                             + "".join(f"{a},{p},{o}\r\n" for a, p, o in rows) + "\r\n").encode())
    outputs = []
    for path in (vidur, lines, spreadsheet):
        result = accelsim_here(*SERVE, "--requests", str(path), "--json")
        assert result.returncode == 0, result.stderr
        outputs.append(json.loads(result.stdout))
    assert outputs[0] == outputs[1] == outputs[2] and outputs[0]["completed"] == 3


def test_table_output(accelsim_here) -> None:
    result = accelsim_here(*SERVE, *LENGTHS, "--num-requests", "5", "--slo", "ttft=1")
    assert result.returncode == 0, result.stderr
    for text in ("continuous scheduler: 5 requests, 5 completed", "TTFT", "TPOT", "goodput", "KV cache", "energy"):
        assert text in result.stdout


def test_a_run_that_serves_nothing_says_so(tmp_path: Path, accelsim_here) -> None:
    """Every request rejected (none fits the cache): the table says n/a where only completed requests give a
    number (the energy line ended in an internal error), and --out writes its files."""
    from test_serving import small_dram_preset

    chip = small_dram_preset(tmp_path, 8)
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,400,100\n")
    result = accelsim_here("serve", "configs/int8.yaml", "--model", MODEL, "--hardware", str(chip), "--requests",
                           str(trace), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "1 request, 0 completed, 1 rejected" in result.stdout
    assert "n/a per output token, mean power n/a" in result.stdout
    assert (tmp_path / "out" / "requests.csv").read_text() == ",".join(REQUEST_COLUMNS) + "\n"


def test_the_shipped_trace_is_what_its_readme_says() -> None:
    requests = generate_requests(200, 2.0, parse_lengths(DEFAULT_PROMPTS, "p"), parse_lengths(DEFAULT_OUTPUTS, "o"), 7)
    expected = "arrival_s,prompt_tokens,output_tokens\n" + "".join(
        f"{r.arrival_s!r},{r.prompt_tokens},{r.output_tokens}\n" for r in requests)
    assert (ROOT / "configs" / "traces" / "chat_200.csv").read_text() == expected


def test_a_run_says_whether_its_chip_is_validated_and_prints_a_short_run_readably(accelsim_here) -> None:
    """The summary carries the silicon line of the phases the run ran (as run and generate do), in --json, in the
    table and in a capacity search's run; a run of half a millisecond prints its duration and energy in
    significant digits (it printed 0.000 s and 0.000 J)."""
    from simulator.analysis.validation import accuracy_line
    from simulator.spec.hardware import load_hardware
    from simulator.spec.silicon import measured_silicon

    def line(phases: list[str]) -> str:
        return accuracy_line(load_hardware("tpu_v3_core"), measured_silicon(), phases)

    v3 = ["serve", "configs/native.yaml", "--model", MODEL, "--hardware", "tpu_v3_core", "--num-requests", "2",
          "--prompt-tokens", "16"]
    decoded = accelsim_here(*v3, "--output-tokens", "3", "--json")
    assert json.loads(decoded.stdout)["silicon"] == line(["prefill", "decode"])
    prefilled = accelsim_here(*v3, "--output-tokens", "1", "--json")
    assert json.loads(prefilled.stdout)["silicon"] == line(["prefill"])
    table = accelsim_here(*v3, "--output-tokens", "3").stdout
    assert f"\n  {line(['prefill', 'decode'])}\n" in table
    assert "2 completed, 0 rejected, 0.000474 s\n" in table
    assert "  energy          299.3 uJ, 49.89 uJ per output token, mean power 0.63 W" in table
    search = accelsim_here(*v3, "--output-tokens", "3", "--slo", "ttft=100", "--capacity", "--json")
    assert json.loads(search.stdout)["summary"]["silicon"] == line(["prefill", "decode"])
    other = json.loads(accelsim_here(*SERVE, *LENGTHS, "--num-requests", "1", "--json").stdout)
    assert other["silicon"] == "not validated on silicon: no measured chip for tpu_v5e_like (accelsim validate)"


def test_a_duration_prints_to_the_millisecond_from_a_second_up_else_in_significant_digits() -> None:
    from simulator.report.serving import _seconds

    assert [_seconds(v) for v in (0.0, 0.000474, 0.9994, 1.0, 1.5, 2908.4)] == [
        "0.000 s", "0.000474 s", "0.999 s", "1.000 s", "1.500 s", "2,908.400 s"]
