"""What a serving run measured: per-request rows, per-iteration rows and the summary (pure).

Per request: TTFT, the arrival to its first token; TPOT, the time from its first token to its last over
the tokens after the first (none for a one-token request); end-to-end latency, arrival to last token;
queueing, arrival to first scheduled (arrivals counted from the cycle the server sees them).
Percentiles are numpy's (linear interpolation). A request's samples run in lock-step: its TPOT is each
sample's, and its output tokens count every sample's (a beam search's, its one returned beam's). The run
lasts from the first arrival to the last iteration's end. Throughput counts the output tokens of completed requests;
goodput the completed requests that met every SLO, per second, and SLO attainment their share of all
requests (a rejected request meets none). Energy: the iterations' (dynamic and
leakage) and the idle time's leakage, per output token; each request's share is its tokens' share of
each iteration it ran in (an iteration's copies to and from the host included).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from simulator.serving.server import Served, arrival_cycle
from workloads.errors import InputError

REQUEST_COLUMNS = ("request_id", "arrival_s", "prompt_tokens", "output_tokens", "first_scheduled_s", "first_token_s",
                   "finish_s", "queueing_ms", "ttft_ms", "tpot_ms", "e2e_ms", "preemptions", "energy_j", "samples",
                   "beam_search", "swaps")
ITERATION_COLUMNS = ("iteration", "start_s", "duration_ms", "prefill_sequences", "prefill_tokens",
                     "decode_sequences", "tokens", "emitted", "kv_blocks_in_use", "energy_j",
                     "swapped_blocks")
SLO_KEYS = ("ttft", "tpot")


def parse_slo(text: str) -> dict[str, float]:
    """``ttft=MS,tpot=MS`` (either or both) as milliseconds by metric (checked by :func:`check_slo`)."""
    slo: dict[str, float] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = _slo_key(key.strip())
        if not sep or key in slo:
            raise InputError(f"--slo: give each of {', '.join(SLO_KEYS)} once as KEY=MS, got {text!r}")
        try:
            slo[key] = float(value)
        except ValueError:
            raise InputError(f"--slo: {key}={value!r} is not a number of milliseconds") from None
    return check_slo(slo)


def check_slo(slo: Mapping[str, float]) -> dict[str, float]:
    """Latency objectives (milliseconds by metric: ``ttft``, ``tpot`` or both), refused when a key is unknown
    or a limit is not a positive number; as floats."""
    if not slo:
        raise InputError(f"--slo: give {' or '.join(SLO_KEYS)} or both (as ttft=MS,tpot=MS)")
    for key, limit in slo.items():
        _slo_key(key)
        number = isinstance(limit, int | float) and not isinstance(limit, bool)
        if not (number and math.isfinite(limit) and limit > 0):
            raise InputError(f"--slo: {key}={limit!r} must be a positive number of milliseconds")
    return {key: float(limit) for key, limit in slo.items()}


def _slo_key(key: str) -> str:
    if key not in SLO_KEYS:
        raise InputError(f"--slo: unknown key {key!r}; choose from {', '.join(SLO_KEYS)} (as ttft=MS,tpot=MS)")
    return key


def request_rows(served: Served, clock_hz: float) -> list[dict[str, Any]]:
    """One row per served request, by request id (rejected ones are not served)."""
    ms = 1e3 / clock_hz
    rows = []
    for active in sorted(served.requests, key=lambda a: a.request.request_id):
        request = active.request
        arrival = arrival_cycle(request, clock_hz)
        assert active.first_scheduled is not None and active.first_token is not None and active.finish is not None
        later = request.output_tokens - 1
        rows.append({
            "request_id": request.request_id, "arrival_s": request.arrival_s, "prompt_tokens": request.prompt_tokens,
            "output_tokens": request.output_tokens, "first_scheduled_s": active.first_scheduled / clock_hz,
            "first_token_s": active.first_token / clock_hz, "finish_s": active.finish / clock_hz,
            "queueing_ms": (active.first_scheduled - arrival) * ms, "ttft_ms": (active.first_token - arrival) * ms,
            "tpot_ms": (active.finish - active.first_token) * ms / later if later else math.nan,
            "e2e_ms": (active.finish - arrival) * ms, "preemptions": active.preemptions,
            "energy_j": active.energy_pj * 1e-12, "samples": request.samples, "beam_search": request.beams,
            "swaps": active.swaps})
    return rows


def iteration_rows(served: Served, clock_hz: float) -> list[dict[str, Any]]:
    return [{"iteration": number, "start_s": row.start / clock_hz, "duration_ms": row.cycles * 1e3 / clock_hz,
             "prefill_sequences": row.prefill_sequences, "prefill_tokens": row.prefill_tokens,
             "decode_sequences": row.decode_sequences, "tokens": row.prefill_tokens + row.decode_sequences,
             "emitted": row.emitted, "kv_blocks_in_use": row.kv_blocks, "energy_j": row.energy_pj * 1e-12,
             "swapped_blocks": row.swapped_blocks}
            for number, row in enumerate(served.iterations, start=1)]


def distribution(values: list[float]) -> dict[str, float | None]:
    """Mean and percentiles of the defined values (None when there are none)."""
    defined = np.array([v for v in values if not math.isnan(v)], dtype=float)
    if not len(defined):
        return dict.fromkeys(("mean", "p50", "p90", "p99"))
    p50, p90, p99 = (float(v) for v in np.percentile(defined, [50, 90, 99]))
    return {"mean": float(defined.mean()), "p50": p50, "p90": p90, "p99": p99}


def summary(served: Served, requests: list[dict[str, Any]], clock_hz: float, slo: dict[str, float] | None,
            energy_modelled: bool) -> dict[str, Any]:
    """The run's summary (times in s and ms, rates per second, energy in J)."""
    first = min([r["arrival_s"] for r in requests] + [r.arrival_s for r in served.rejected], default=0.0)
    duration = max(served.end / clock_hz - first, 0.0)  # 0 when every request was rejected: nothing ran
    tokens = sum(r["output_tokens"] * (1 if r["beam_search"] else r["samples"]) for r in requests)
    busy = sum(row.cycles for row in served.iterations)
    energy_j = (sum(row.energy_pj for row in served.iterations) + served.idle_energy_pj) * 1e-12
    result: dict[str, Any] = {
        "requests": len(requests) + len(served.rejected), "completed": len(requests),
        "rejected": len(served.rejected), "rejected_request_ids": [r.request_id for r in served.rejected],
        "duration_s": duration,
        "throughput_tokens_per_s": tokens / duration if duration > 0 else None,
        "throughput_requests_per_s": len(requests) / duration if duration > 0 else None,
        **{f"{name}_ms": distribution([r[f"{name}_ms"] for r in requests]) for name in ("ttft", "tpot", "e2e")},
        "queueing_ms": distribution([r["queueing_ms"] for r in requests]),
        "iterations": len(served.iterations),
        "busy_fraction": busy / (served.end - math.ceil(first * clock_hz)) if served.end > first * clock_hz else None,
        "preemptions": sum(r["preemptions"] for r in requests),
        "swaps": sum(r["swaps"] for r in requests),
        "kv_cache": {"capacity_blocks": served.kv_capacity, "peak_blocks": served.kv_peak,
                     "peak_utilization": served.kv_peak / served.kv_capacity,
                     "mean_utilization": _mean_kv(served)},
        **({"host_swap_peak_blocks": served.host_peak} if served.host_peak is not None else {}),
        "energy_j": energy_j if energy_modelled else None,
        "energy_per_token_j": energy_j / tokens if energy_modelled and tokens else None,
        "energy_per_request_j": energy_j / len(requests) if energy_modelled and requests else None,
        "mean_power_w": energy_j / duration if energy_modelled and duration > 0 else None,
    }
    if slo is not None:
        met = [r for r in requests if _meets(r, slo)]
        result["slo_ms"] = slo
        result["slo_attained"] = len(met) / (len(requests) + len(served.rejected))
        result["goodput_requests_per_s"] = len(met) / duration if duration > 0 else None
    return result


def _meets(row: dict[str, Any], slo: dict[str, float]) -> bool:
    """Whether a request met every SLO (a one-token request has no TPOT to miss)."""
    return all(math.isnan(row[f"{key}_ms"]) or row[f"{key}_ms"] <= limit for key, limit in slo.items())


def _mean_kv(served: Served) -> float | None:
    """Blocks in use averaged over the iterations' time, over the capacity."""
    busy = sum(row.cycles for row in served.iterations)
    if not busy:
        return None
    return sum(row.kv_blocks * row.cycles for row in served.iterations) / busy / served.kv_capacity
