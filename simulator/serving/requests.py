"""Requests: read from a trace's rows, or drawn from an arrival process and length distributions (pure).

A request arrives at ``arrival_s`` with a prompt of ``prompt_tokens`` and wants ``output_tokens`` tokens
back, the first of them from its prefill (as ``generate`` counts them). A trace's rows name these columns,
or Vidur's (``arrived_at``, ``num_prefill_tokens``, ``num_decode_tokens``).

Generated requests: ``count`` of them, arriving as a Poisson process of ``rate`` requests per second (the
gaps between arrivals exponential with mean 1/rate, the first at time 0 plus one gap), or all at time 0
without a rate; each length drawn from a :class:`Lengths` distribution, all from one seeded generator
(numpy's PCG64), arrivals first, then prompts, then outputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from workloads.errors import InputError
from workloads.ops import MAX_SIZE

COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens")
VIDUR_COLUMNS = {"arrived_at": "arrival_s", "num_prefill_tokens": "prompt_tokens",
                 "num_decode_tokens": "output_tokens"}
DISTRIBUTIONS = {"uniform": ("low", "high"), "lognormal": ("median", "sigma", "max"), "zipf": ("s", "max")}


@dataclass(frozen=True)
class Request:
    """A request; ``samples`` sequences are sampled from its prompt in parallel (each ``output_tokens``
    long), sharing the prompt's KV blocks; with ``beams`` they are the beams of one beam search, which
    returns one of them."""

    request_id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    samples: int = 1
    beams: bool = False

    @property
    def returned(self) -> int:
        """Sequences the request returns: every sample, or a beam search's best beam."""
        return 1 if self.beams else self.samples

    @property
    def final_tokens(self) -> int:
        """Cache entries of each sample at its last step: the prompt and every output token but the last."""
        return self.prompt_tokens + self.output_tokens - 1


def sampled(requests: list[Request], samples: int = 1, beams: int = 1) -> list[Request]:
    """``requests`` each sampling ``samples`` sequences in parallel, or searching ``beams`` beams (not both)."""
    from dataclasses import replace

    if samples > 1 and beams > 1:
        raise InputError("a request either samples sequences or searches beams, not both")
    if beams > 1:
        return [replace(request, samples=beams, beams=True) for request in requests]
    return [replace(request, samples=samples) for request in requests] if samples > 1 else requests


@dataclass(frozen=True)
class Lengths:
    """Token counts: a fixed ``value``, or a distribution: uniform integers from low to high (inclusive);
    lognormal with a median and sigma (of the log), rounded to the nearest integer, at least 1, at most
    max; zipf with exponent s > 1 (P(k) proportional to k^-s), at most max."""

    kind: str  # "fixed" or a key of DISTRIBUTIONS
    parameters: tuple[float, ...]

    def draw(self, rng: np.random.Generator, count: int) -> list[int]:
        if self.kind == "fixed":
            return [int(self.parameters[0])] * count
        if self.kind == "uniform":
            low, high = (int(p) for p in self.parameters)
            return [int(v) for v in rng.integers(low, high + 1, size=count)]
        if self.kind == "lognormal":
            median, sigma, most = self.parameters
            values = np.rint(rng.lognormal(math.log(median), sigma, size=count))
            return [int(v) for v in np.clip(values, 1, most)]
        s, most = self.parameters
        return [int(min(v, most)) for v in rng.zipf(s, size=count)]


def parse_lengths(text: str, option: str) -> Lengths:
    """``N``, or ``uniform:LOW,HIGH``, ``lognormal:MEDIAN,SIGMA,MAX`` or ``zipf:S,MAX``."""
    kind, _, rest = text.partition(":")
    if not rest:
        return Lengths("fixed", (_count(text, option, text),))
    if kind not in DISTRIBUTIONS:
        raise InputError(f"{option}: unknown distribution {kind!r}; choose from {', '.join(DISTRIBUTIONS)} "
                         "(or give a number)")
    names = DISTRIBUTIONS[kind]
    values = rest.split(",")
    if len(values) != len(names):
        raise InputError(f"{option}: {kind} takes {','.join(n.upper() for n in names)}, got {rest!r}")
    if kind == "uniform":
        low, high = (_count(v, option, text) for v in values)
        if low > high:
            raise InputError(f"{option}: uniform LOW {low} exceeds HIGH {high}")
        return Lengths(kind, (low, high))
    if kind == "lognormal":
        median, sigma = (_number(v, option, text) for v in values[:2])
        if median <= 0 or sigma < 0:
            raise InputError(f"{option}: lognormal needs MEDIAN > 0 and SIGMA >= 0, got {rest!r}")
        most = _count(values[2], option, text)
        if most < median:
            raise InputError(f"{option}: lognormal MAX {most} is below its MEDIAN {values[0]}: more than half the "
                             "draws would be cut to MAX")
        return Lengths(kind, (median, sigma, most))
    s = _number(values[0], option, text)
    if s <= 1:
        raise InputError(f"{option}: zipf needs an exponent S > 1, got {values[0]}")
    return Lengths(kind, (s, _count(values[1], option, text)))


def _number(value: str, option: str, text: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{option}: {value!r} in {text!r} is not a number") from None
    if not math.isfinite(number):
        raise InputError(f"{option}: {value!r} in {text!r} is not finite")
    return number


def _count(value: str, option: str, text: str) -> int:
    if not value.strip().isdigit() or not 1 <= int(value) <= MAX_SIZE:
        raise InputError(f"{option}: {value!r} in {text!r} is not a token count (a positive integer)")
    return int(value)


def generate_requests(count: int, rate: float | None, prompts: Lengths, outputs: Lengths, seed: int) -> list[Request]:
    """``count`` requests (see the module docstring)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(f"--num-requests must be at least 1, got {count!r}")
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise InputError(f"--rate must be a positive number of requests per second, got {rate}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {seed!r}")
    rng = np.random.Generator(np.random.PCG64(seed))
    arrivals = np.cumsum(rng.exponential(1.0 / rate, size=count)) if rate is not None else np.zeros(count)
    prompt_tokens, output_tokens = prompts.draw(rng, count), outputs.draw(rng, count)
    return [Request(index, float(arrivals[index]), prompt_tokens[index], output_tokens[index])
            for index in range(count)]


def parse_requests(rows: Iterable[Mapping[str, object]], columns: Iterable[str], where: str) -> list[Request]:
    """Requests from a trace's rows (each a mapping of column name to value, as a CSV or JSON lines file
    gives them); ``columns`` are the names the file has. Arrival times must be finite, non-negative and
    non-decreasing; lengths positive integers."""
    names = list(columns)
    mapping = dict(zip(COLUMNS, COLUMNS, strict=True))
    if not set(COLUMNS) <= set(names):
        if set(VIDUR_COLUMNS) <= set(names):
            mapping = {ours: theirs for theirs, ours in VIDUR_COLUMNS.items()}
        else:
            missing = [c for c in COLUMNS if c not in names]
            raise InputError(f"{where}: missing column(s) {', '.join(missing)} (or Vidur's "
                             f"{', '.join(VIDUR_COLUMNS)})")
    requests: list[Request] = []
    last = 0.0
    for number, row in enumerate(rows, start=1):
        arrival = _value(row, mapping["arrival_s"], where, number, False)
        if not math.isfinite(arrival) or arrival < 0:
            raise InputError(f"{where}: row {number}: {mapping['arrival_s']} {arrival} is not a time >= 0")
        if arrival < last:
            raise InputError(f"{where}: row {number}: arrival {arrival} is before the previous row's {last}")
        last = arrival
        prompt = int(_value(row, mapping["prompt_tokens"], where, number, True))
        output = int(_value(row, mapping["output_tokens"], where, number, True))
        for column, tokens in ((mapping["prompt_tokens"], prompt), (mapping["output_tokens"], output)):
            if not 1 <= tokens <= MAX_SIZE:
                raise InputError(f"{where}: row {number}: {column} {tokens} is not a positive token count")
        requests.append(Request(len(requests), arrival, prompt, output))
    if not requests:
        raise InputError(f"{where}: no requests")
    return requests


def _value(row: Mapping[str, object], column: str, where: str, number: int, integer: bool) -> float:
    """A cell as a number (an integer when ``integer``), or one line naming the row and the column."""
    value = row.get(column)
    what = "an integer" if integer else "a number"
    try:
        if isinstance(value, bool):
            raise ValueError
        parsed = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{where}: row {number}: {column} {value!r} is not {what}") from None
    if integer and not parsed.is_integer():
        raise InputError(f"{where}: row {number}: {column} {value!r} is not {what}")
    return int(parsed) if integer else parsed
