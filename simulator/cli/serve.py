"""``accelsim serve``: a stream of requests on the simulated chip (see simulator.serving)."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from simulator.cli.options import StrictCommand, chosen_format, format_options, given, knob_option, load_policy
from workloads.errors import InputError

DEFAULT_PROMPTS = "lognormal:1000,0.5,2048"
DEFAULT_OUTPUTS = "lognormal:250,0.5,1024"
GENERATOR_OPTIONS = ("num_requests", "rate", "prompt_tokens", "output_tokens", "seed")


@click.command(cls=StrictCommand)
@click.argument("config", type=click.Path())
@click.option("--model", "model", required=True, help="Zoo name (see `accelsim models`) or path to a config.json.")
@click.option("--hardware", "hardware_name", default=None, help="Preset name or YAML path (overrides the config's).")
@click.option("--requests", "requests_file", type=click.Path(), default=None,
              help="A trace: CSV or JSON lines with arrival_s, prompt_tokens, output_tokens (or Vidur's arrived_at, "
                   "num_prefill_tokens, num_decode_tokens).")
@click.option("--num-requests", type=int, default=None, help="Generate N requests (instead of --requests).")
@click.option("--rate", type=float, default=None,
              help="Poisson arrivals at R requests/s (generated requests; without it all arrive at time 0).")
@click.option("--prompt-tokens", default=None,
              help=f"Prompt lengths: N, uniform:LOW,HIGH, lognormal:MEDIAN,SIGMA,MAX or zipf:S,MAX "
                   f"[default: {DEFAULT_PROMPTS}].")
@click.option("--output-tokens", default=None, help=f"Output lengths, as --prompt-tokens [default: {DEFAULT_OUTPUTS}].")
@click.option("--seed", type=int, default=None, help="Seed of the generated requests [default: 0].")
@click.option("--scheduler", type=click.Choice(("static", "continuous", "chunked")), default="continuous",
              show_default=True, help="Batching policy (see docs/serving.md).")
@click.option("--max-batch", type=int, default=256, show_default=True, help="Most sequences running at once.")
@click.option("--max-tokens", type=int, default=None,
              help="Most new tokens per iteration [default: chunked 512; otherwise the model's context].")
@click.option("--kv-block-size", type=int, default=16, show_default=True, help="Tokens per KV-cache block.")
@click.option("--slo", default=None, help="Latency objectives for goodput: ttft=MS,tpot=MS (either or both).")
@knob_option("expert_imbalance")
@format_options(("table", "json"))
@click.option("--out", type=click.Path(), default=None,
              help="Write requests.csv, iterations.csv, summary.json and the plots to DIR.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out directory.")
@click.pass_context
def serve(ctx: click.Context, config: str, model: str, hardware_name: str | None, requests_file: str | None,
          num_requests: int | None, rate: float | None, prompt_tokens: str | None, output_tokens: str | None,
          seed: int | None, scheduler: str, max_batch: int, max_tokens: int | None, kv_block_size: int,
          slo: str | None, expert_imbalance: float | None, fmt: str | None, as_json: bool, out: str | None,
          force: bool) -> None:
    """Serve a stream of requests: TTFT, TPOT and end-to-end percentiles, throughput, goodput, KV use, energy."""
    from simulator.engine import Simulator
    from simulator.report.files import check_out_dir, staged_dir
    from simulator.report.serving import format_serving, plot_latency_cdfs, plot_timeline, write_rows
    from simulator.report.summary import write_json
    from simulator.serving.metrics import ITERATION_COLUMNS, REQUEST_COLUMNS, iteration_rows, parse_slo, request_rows
    from simulator.serving.metrics import summary as serving_summary
    from simulator.serving.server import Settings
    from simulator.serving.session import run_serving
    from simulator.spec.hardware import load_hardware
    from simulator.spec.weight_masks import weight_masks
    from workloads.models import Workload, load_model

    fmt = chosen_format(fmt, as_json)
    objectives = parse_slo(slo) if slo is not None else None
    out_dir = check_out_dir(out, force) if out else None
    requests = _requests(ctx, requests_file, num_requests, rate, prompt_tokens, output_tokens, seed)
    policy, sources = load_policy(config, model, hardware_name)
    hardware = load_hardware(hardware_name or policy.config.hardware)
    spec = load_model(model)
    context = int(spec.config.get("max_position_embeddings") or 0)
    budget = max_tokens if max_tokens is not None else 512 if scheduler == "chunked" else context or 2048
    settings = Settings(scheduler, max_batch, budget, expert_imbalance)
    masks = weight_masks(policy, spec.trace(Workload(tokens=1, expert_imbalance=expert_imbalance)))
    simulator = Simulator(hardware, policy, mask_for=masks)
    with _Progress(len(requests)) as progress:
        serving = run_serving(spec, simulator, requests, settings, kv_block_size, progress)
    clock_hz = serving.clock_hz
    rows = request_rows(serving.served, clock_hz)
    iterations = iteration_rows(serving.served, clock_hz)
    summary: dict[str, Any] = {
        "model": spec.name, "config": policy.name, "hardware": hardware.name, "scheduler": scheduler,
        "max_batch": max_batch, "max_tokens": budget, "kv_block_tokens": kv_block_size,
        "kv_block_bytes": serving.block_bytes, "weight_bytes": serving.weight_bytes,
        **serving_summary(serving.served, rows, clock_hz, objectives, serving.energy_modelled),
        "notes": [*sources, *simulator.notes],
    }
    if fmt == "json":
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(format_serving(summary))
    if out_dir is not None:
        title = f"{spec.name} under {policy.name} on {hardware.name}, {scheduler} scheduler"
        with staged_dir(out_dir) as staging:
            write_rows(staging / "requests.csv", rows, REQUEST_COLUMNS)
            write_rows(staging / "iterations.csv", iterations, ITERATION_COLUMNS)
            write_json(staging / "summary.json", summary)
            plot_latency_cdfs(rows, staging / "latency_cdf", title)
            plot_timeline(iterations, serving.served.kv_capacity, staging / "timeline", title)
        click.echo(f"wrote requests.csv, iterations.csv, summary.json, latency_cdf.png/svg, timeline.png/svg to "
                   f"{out_dir}", err=True)


def _requests(ctx: click.Context, requests_file: str | None, num_requests: int | None, rate: float | None,
              prompt_tokens: str | None, output_tokens: str | None, seed: int | None) -> list[Any]:
    """The requests of a trace file, or generated; the options of the other source are refused."""
    from simulator.serving.requests import generate_requests, parse_lengths

    if requests_file is not None:
        extra = [name for name in GENERATOR_OPTIONS if given(ctx, name)]
        if extra:
            raise click.UsageError(f"--{extra[0].replace('_', '-')} generates requests; it does not apply with "
                                   "--requests (a trace)")
        return _read_trace(Path(requests_file))
    if num_requests is None:
        raise click.UsageError("give the requests: --requests FILE, or --num-requests N (with --rate, "
                               "--prompt-tokens, --output-tokens, --seed)")
    return generate_requests(num_requests, rate, parse_lengths(prompt_tokens or DEFAULT_PROMPTS, "--prompt-tokens"),
                             parse_lengths(output_tokens or DEFAULT_OUTPUTS, "--output-tokens"), seed or 0)


def _read_trace(path: Path) -> list[Any]:
    """A CSV (a header row) or JSON lines (one object per line: .jsonl, .ndjson) trace."""
    from simulator.serving.requests import parse_requests

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    if path.suffix in (".jsonl", ".ndjson"):
        rows: list[dict[str, Any]] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: line {number}: malformed JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}: line {number}: expected a JSON object")
            rows.append(row)
        columns = sorted({key for row in rows for key in row})
        return parse_requests(rows, columns, str(path))
    if path.suffix != ".csv":
        raise InputError(f"{path}: a trace is a .csv or .jsonl file")
    reader = csv.DictReader(text.splitlines())
    return parse_requests(reader, reader.fieldnames or [], str(path))


class _Progress:
    """Completed requests on stderr, redrawn at most every 0.2 s, once a run has taken 2 s (terminals only)."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.start = self.shown = time.monotonic()
        self.active = sys.stderr.isatty()

    def __enter__(self) -> _Progress:
        return self

    def __call__(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.active and now - self.start > 2 and now - self.shown > 0.2:
            self.shown = now
            sys.stderr.write(f"\rserved {self.done:,} of {self.total:,} requests")
            sys.stderr.flush()

    def __exit__(self, *exc: object) -> None:
        if self.active and self.shown > self.start:
            sys.stderr.write("\n")
