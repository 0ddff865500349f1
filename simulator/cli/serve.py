"""``accelsim serve``: a stream of requests on the simulated chip (see simulator.serving)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from simulator.cli.csv_files import read_csv, read_text
from simulator.cli.options import (
    StrictCommand,
    chosen_format,
    chosen_plan,
    format_options,
    given,
    knob_option,
    load_policy,
    positive_int,
)
from simulator.serving.defaults import DEFAULT_OUTPUTS, DEFAULT_PROMPTS, DEFAULT_SWAP_SPACE_GIB
from simulator.serving.swap import PREEMPTIONS
from workloads.errors import InputError, json_object

GENERATOR_OPTIONS = ("num_requests", "rate", "prompt_tokens", "output_tokens", "seed")


@click.command(cls=StrictCommand)
@click.argument("config", type=click.Path())
@click.option("--model", "model", required=True, help="Zoo name (see `accelsim models`) or path to a config.json.")
@click.option("--hardware", "hardware_name", default=None,
              help="Chip or system preset name, or YAML path (overrides the config's).")
@click.option("--tp", type=positive_int(), default=None,
              help="Tensor-parallel degree over a system preset's chips (default: the config's parallel.tp, else 1).")
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
@click.option("--beams", type=click.IntRange(min=1, max=4096), default=1, show_default=True,
              help="Beam search: beams decoded per request (sharing its prompt's KV blocks), one returned.")
@click.option("--samples", type=click.IntRange(min=1, max=4096), default=1, show_default=True,
              help="Sequences sampled in parallel from every request's prompt (sharing its KV blocks).")
@click.option("--scheduler", type=click.Choice(("static", "continuous", "chunked")), default="continuous",
              show_default=True, help="Batching policy (see docs/serving.md).")
@click.option("--max-batch", type=int, default=256, show_default=True, help="Most sequences running at once.")
@click.option("--max-tokens", type=int, default=None,
              help="Most new tokens per iteration [default: chunked 512; continuous the model's context; static "
                   "no limit].")
@click.option("--kv-block-size", type=int, default=16, show_default=True, help="Tokens per KV-cache block.")
@click.option("--preemption", type=click.Choice(PREEMPTIONS), default="recompute", show_default=True,
              help="When the KV cache runs out: free the victim's blocks and recompute it later, or swap them to the "
                   "host over the chip's host link and back (see docs/serving.md).")
@click.option("--swap-space", type=float, default=None,
              help=f"With --preemption swap: GiB of host memory for swapped KV blocks [default: "
                   f"{DEFAULT_SWAP_SPACE_GIB:g}].")
@click.option("--slo", default=None, help="Latency objectives for goodput: ttft=MS,tpot=MS (either or both).")
@click.option("--capacity", is_flag=True,
              help="Find the highest --rate whose generated requests meet --slo (see --attainment).")
@click.option("--attainment", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="With --capacity: the share of requests that must meet every objective [default: 0.99].")
@knob_option("expert_imbalance")
@format_options(("table", "json"))
@click.option("--out", type=click.Path(), default=None,
              help="Write requests.csv, iterations.csv, summary.json and the plots to DIR (with --capacity: the "
                   "run at the capacity, and capacity.csv).")
@click.option("--force", is_flag=True, help="Replace a non-empty --out directory.")
@click.pass_context
def serve(ctx: click.Context, config: str, model: str, hardware_name: str | None, tp: int | None,
          requests_file: str | None, num_requests: int | None, rate: float | None, prompt_tokens: str | None,
          output_tokens: str | None, seed: int | None, beams: int, samples: int, scheduler: str, max_batch: int,
          max_tokens: int | None, kv_block_size: int, preemption: str, swap_space: float | None, slo: str | None,
          capacity: bool, attainment: float | None,
          expert_imbalance: float | None, fmt: str | None, as_json: bool, out: str | None, force: bool) -> None:
    """Serve a stream of requests: TTFT, TPOT and end-to-end percentiles, throughput, goodput, KV use, energy."""
    from simulator.report.files import check_out_dir
    from simulator.serving.defaults import swap_space_bytes
    from simulator.serving.metrics import parse_slo
    from simulator.serving.server import ServeSettings

    fmt = chosen_format(fmt, as_json)
    if beams > 1 and samples > 1:
        raise click.UsageError("--beams and --samples: a request either samples or searches beams")
    objectives = parse_slo(slo) if slo is not None else None
    if attainment is not None and not capacity:
        raise click.UsageError("--attainment applies with --capacity")
    if capacity:
        for option, name, what in (("--rate", "rate", "--capacity searches the rate"),
                                   ("--requests", "requests_file", "--capacity generates its requests")):
            if given(ctx, name):
                raise click.UsageError(f"{option} does not apply: {what}")
        if objectives is None:
            raise click.UsageError("--capacity needs --slo (the objectives a rate must meet)")
    out_dir = check_out_dir(out, force) if out else None
    runner = _runner(config, model, hardware_name, tp, ServeSettings(scheduler, max_batch, max_tokens or 0,
                                                                     expert_imbalance, preemption,
                                                                     swap_space_bytes(preemption, swap_space)),
                     max_tokens is None, kv_block_size)
    if not capacity:
        from simulator.serving.requests import sampled

        requests = sampled(_requests(ctx, requests_file, num_requests, rate, prompt_tokens, output_tokens, seed),
                            samples, beams)
        with _Progress(len(requests)) as progress:
            run = runner.run(requests, objectives, progress)
        _silicon_adder(runner)(run.summary)
        click.echo(json.dumps(run.summary, indent=2) if fmt == "json" else _format(run.summary))
        if out_dir is not None:
            _write(out_dir, run, runner.title)
        return
    _capacity(ctx, runner, objectives or {}, attainment or 0.99, num_requests, prompt_tokens, output_tokens, seed,
              samples, beams, fmt, out_dir)


def _silicon_adder(runner: Any) -> Callable[[dict[str, Any]], None]:
    """What adds to a run's summary the line on whether its chip is validated on silicon, and how well, for
    the phases it ran (a request of one output token runs no decode step). Each line is worked out once (it
    simulates the measured points): a capacity search's runs share them."""
    from simulator.cli.options import silicon_accuracy

    lines: dict[tuple[str, ...], str] = {}

    def add(summary: dict[str, Any]) -> None:
        phases = ("prefill", "decode") if summary["tpot_ms"]["mean"] is not None else ("prefill",)
        if phases not in lines:
            lines[phases] = silicon_accuracy(runner.simulator.hardware, list(phases))
        summary["silicon"] = lines[phases]

    return add


def _format(summary: dict[str, Any]) -> str:
    from simulator.report.serving import format_serving

    return format_serving(summary)


def _runner(config: str, model: str, hardware_name: str | None, tp: int | None, settings: Any,
            default_budget: bool, kv_block_size: int) -> Any:
    """The runner of ``settings`` (its token budget the scheduler's default when ``default_budget``)."""
    from dataclasses import replace

    from simulator.engine import Simulator
    from simulator.serving.defaults import default_max_tokens
    from simulator.serving.session import ServingRunner, check_servable
    from simulator.spec.system import load_target
    from simulator.spec.weight_masks import weight_masks
    from workloads.models import Workload, load_model

    policy, sources = load_policy(config, model, hardware_name)
    target = load_target(hardware_name or policy.config.hardware)
    hardware = target.hardware
    plan = chosen_plan(policy, tp=tp)
    if plan.ep > 1 or plan.pp > 1 or plan.microbatches > 1:
        raise InputError("serve splits a model tensor-parallel only (parallel.ep, parallel.pp and microbatches "
                         "are not modelled in serving)")
    spec = load_model(model)
    check_servable(spec)
    spec = replace(spec, tp=plan.tp) if plan.tp > 1 else spec
    context = int(spec.config.get("max_position_embeddings") or 0)
    if default_budget:
        settings = replace(settings, max_tokens=default_max_tokens(settings.scheduler, context or None))
    masks = weight_masks(policy, spec.trace(Workload(tokens=1, expert_imbalance=settings.expert_imbalance)))
    simulator = Simulator(hardware, policy, mask_for=masks, system=target.system)
    return ServingRunner(spec, simulator, settings, kv_block_size, policy.name, sources)


def _write(out_dir: Path, run: Any, title: str, extra: dict[str, list[dict[str, Any]]] | None = None) -> None:
    """A run's files (none when ``run`` is None: a capacity search no rate of which met the SLO) and the
    ``extra`` tables."""
    from simulator.report.files import staged_dir
    from simulator.report.serving import plot_latency_cdfs, plot_timeline, write_rows
    from simulator.report.summary import write_json
    from simulator.serving.metrics import ITERATION_COLUMNS, REQUEST_COLUMNS

    written = [] if run is None else ["requests.csv", "iterations.csv", "summary.json", "latency_cdf.png/svg",
                                      "timeline.png/svg"]
    with staged_dir(out_dir) as staging:
        if run is not None:
            write_rows(staging / "requests.csv", run.requests, REQUEST_COLUMNS)
            write_rows(staging / "iterations.csv", run.iterations, ITERATION_COLUMNS)
            write_json(staging / "summary.json", run.summary)
            plot_latency_cdfs(run.requests, staging / "latency_cdf", title)
            plot_timeline(run.iterations, run.serving.served.kv_capacity, staging / "timeline", title)
        for name, rows in (extra or {}).items():
            write_rows(staging / name, rows, tuple(rows[0]))
            written.append(name)
    click.echo(f"wrote {', '.join(written)} to {out_dir}", err=True)


def _capacity(ctx: click.Context, runner: Any, objectives: dict[str, float], attainment: float,
              num_requests: int | None, prompt_tokens: str | None, output_tokens: str | None, seed: int | None,
              samples: int, beams: int, fmt: str, out_dir: Path | None) -> None:
    """The highest rate meeting the SLO (simulator.serving.capacity), its run, and every rate tried."""
    from simulator.serving.capacity import highest_rate

    runs: dict[float | None, Any] = {}
    add_silicon = _silicon_adder(runner)

    def run_at(rate: float | None) -> dict[str, Any]:
        from simulator.serving.requests import sampled

        requests = sampled(_requests(ctx, None, num_requests, rate, prompt_tokens, output_tokens, seed), samples,
                            beams)
        runs[rate] = runner.run(requests, objectives)
        add_silicon(runs[rate].summary)
        return dict(runs[rate].summary)

    found = highest_rate(run_at, attainment)
    probes = [{"rate_requests_per_s": p.rate, "slo_attained": p.attained,
               "goodput_requests_per_s": p.summary["goodput_requests_per_s"],
               "ttft_p99_ms": p.summary["ttft_ms"]["p99"], "tpot_p99_ms": p.summary["tpot_ms"]["p99"],
               "throughput_tokens_per_s": p.summary["throughput_tokens_per_s"]} for p in found.probes]
    best = found.best
    result = {"capacity_requests_per_s": found.rate, "attainment": attainment, "slo_ms": objectives,
              "probes": probes, "summary": best.summary if best is not None else None}
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        slo = ", ".join(f"{key} <= {value:g} ms" for key, value in objectives.items())
        click.echo(f"highest rate meeting {slo} for {100 * attainment:g}% of requests: {found.rate:.4g} requests/s "
                   f"({len(probes)} runs)")
        for probe in probes:
            rate = "all at once" if probe["rate_requests_per_s"] is None else f"{probe['rate_requests_per_s']:.4g}/s"
            click.echo(f"  rate {rate:>12}: {100 * probe['slo_attained']:.1f}% met, TTFT p99 "
                       f"{_ms(probe['ttft_p99_ms'], 1)}, TPOT p99 {_ms(probe['tpot_p99_ms'], 2)}")
        if best is not None:
            click.echo(_format(best.summary))
    if out_dir is not None:
        _write(out_dir, None if best is None else runs[best.rate], runner.title, {"capacity.csv": probes})


def _ms(value: float | None, digits: int) -> str:
    """Milliseconds, or n/a where no request gives the figure."""
    return "n/a" if value is None else f"{value:.{digits}f} ms"


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

    if path.suffix in (".jsonl", ".ndjson"):
        rows = [json_object(line, f"{path}: line {number}")
                for number, line in enumerate(read_text(path).splitlines(), start=1) if line.strip()]
        columns = sorted({key for row in rows for key in row})
        return parse_requests(rows, columns, str(path))
    if path.suffix != ".csv":
        raise InputError(f"{path}: a trace is a .csv or .jsonl file")
    header, records = read_csv(path)
    return parse_requests(records, header, str(path))


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
