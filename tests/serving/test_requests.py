"""Requests: traces read by column name (ours or Vidur's), arrivals and lengths drawn as documented."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.serving.requests import Lengths, Request, generate_requests, parse_lengths, parse_requests
from workloads.errors import InputError


def rows(*values: tuple[object, object, object], names: tuple[str, str, str] = ("arrival_s", "prompt_tokens",
                                                                                 "output_tokens")) -> list[dict]:
    return [dict(zip(names, row, strict=True)) for row in values]


def test_columns_ours_and_vidurs() -> None:
    ours = parse_requests(rows(("0", "10", "3"), ("0.5", "7", "1")), ("arrival_s", "prompt_tokens", "output_tokens"),
                          "t")
    names = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")
    theirs = parse_requests(rows((0, 10, 3), (0.5, 7.0, 1), names=names), names, "t")
    assert ours == theirs == [Request(0, 0.0, 10, 3), Request(1, 0.5, 7, 1)]


@pytest.mark.parametrize("row, needle", [
    (("x", 1, 1), "row 1: arrival_s 'x' is not a number"),
    ((math.inf, 1, 1), "is not a time >= 0"),
    ((0, 1.5, 1), "prompt_tokens 1.5 is not an integer"),
    ((0, True, 1), "prompt_tokens True is not an integer"),
    ((0, None, 1), "prompt_tokens None"),
    ((0, 0, 1), "prompt_tokens 0 is not a positive token count"),
    ((0, 3, -2), "output_tokens -2"),
])
def test_bad_rows_are_named(row: tuple[object, object, object], needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        parse_requests(rows(row), ("arrival_s", "prompt_tokens", "output_tokens"), "t")


def test_an_empty_trace_is_refused() -> None:
    with pytest.raises(InputError, match="no requests"):
        parse_requests([], ("arrival_s", "prompt_tokens", "output_tokens"), "t")


def test_poisson_arrivals_and_lengths() -> None:
    """Gaps exponential with mean 1/rate (5,000 of them: the mean within 4 standard errors, their
    coefficient of variation near 1); lengths within their bounds; the same seed, the same requests."""
    rate = 3.0
    requests = generate_requests(5000, rate, parse_lengths("uniform:5,9", "p"), parse_lengths("zipf:1.5,50", "o"), 1)
    gaps = np.diff([0.0] + [r.arrival_s for r in requests])
    assert abs(gaps.mean() - 1 / rate) < 4 / rate / math.sqrt(len(gaps))
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)
    assert {r.prompt_tokens for r in requests} == set(range(5, 10))
    assert min(r.output_tokens for r in requests) == 1 and max(r.output_tokens for r in requests) <= 50
    assert generate_requests(50, rate, Lengths("fixed", (4,)), Lengths("fixed", (2,)), 9) == \
        generate_requests(50, rate, Lengths("fixed", (4,)), Lengths("fixed", (2,)), 9)
    assert {r.arrival_s for r in generate_requests(4, None, Lengths("fixed", (4,)), Lengths("fixed", (2,)), 0)} == {0.0}


def test_lognormal_median_and_cap() -> None:
    lengths = Lengths("lognormal", (200.0, 0.5, 300.0)).draw(np.random.Generator(np.random.PCG64(0)), 4001)
    assert float(np.median(lengths)) == pytest.approx(200, rel=0.03)
    assert max(lengths) == 300 and min(lengths) >= 1


@pytest.mark.parametrize("text, needle", [("0", "not a token count"), ("uniform:9,3", "exceeds HIGH"),
                                          ("lognormal:1,2", "takes MEDIAN,SIGMA,MAX"), ("zipf:1,10", "S > 1"),
                                          ("lognormal:-1,1,5", "MEDIAN > 0"), ("normal:1,2", "unknown distribution"),
                                          ("uniform:a,3", "not a token count")])
def test_bad_distributions(text: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        parse_lengths(text, "--prompt-tokens")


@pytest.mark.parametrize("count, rate, seed, needle", [(0, 1.0, 0, "--num-requests"), (3, -1.0, 0, "--rate"),
                                                       (3, math.nan, 0, "--rate"), (3, 1.0, -1, "--seed")])
def test_bad_generator_settings(count: int, rate: float, seed: int, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        generate_requests(count, rate, Lengths("fixed", (1,)), Lengths("fixed", (1,)), seed)


def test_lengths_parsed() -> None:
    assert parse_lengths("7", "p") == Lengths("fixed", (7,))
    assert parse_lengths("uniform:5,5", "p") == Lengths("uniform", (5, 5))
    assert parse_lengths("lognormal:0.5,0,9", "p") == Lengths("lognormal", (0.5, 0.0, 9))
    assert parse_lengths("zipf:1.2,40", "p") == Lengths("zipf", (1.2, 40))
    assert parse_lengths("1", "p") == Lengths("fixed", (1,))
    assert parse_lengths(str(2**31 - 1), "p") == Lengths("fixed", (2**31 - 1,))


@pytest.mark.parametrize("text, needle", [
    ("uniform:1,x", "--prompt-tokens: 'x' in 'uniform:1,x' is not a token count"),
    ("lognormal:a,1,5", "--prompt-tokens: 'a' in 'lognormal:a,1,5' is not a number"),
    ("lognormal:5,inf,5", "--prompt-tokens: 'inf' in 'lognormal:5,inf,5' is not finite"),
    ("lognormal:5,1,0", "--prompt-tokens: '0' in 'lognormal:5,1,0'"),
    ("zipf:q,4", "--prompt-tokens: 'q' in 'zipf:q,4'"),
    ("zipf:0.5,4", "exponent S > 1, got 0.5"),
    ("zipf:2,0", "'0' in 'zipf:2,0'"),
    ("beta:1", "--prompt-tokens: unknown distribution 'beta'; choose from uniform, lognormal, zipf"),
    (str(2**31), "is not a token count"),
    ("0", "--prompt-tokens: '0' in '0' is not a token count"),
    ("zipf:2,x", "--prompt-tokens: 'x' in 'zipf:2,x'"),
    ("lognormal:0,1,5", "lognormal needs MEDIAN > 0 and SIGMA >= 0, got '0,1,5'"),
    ("lognormal:5", "--prompt-tokens: lognormal takes MEDIAN,SIGMA,MAX, got '5'"),
])
def test_length_errors_name_the_option_and_the_value(text: str, needle: str) -> None:
    with pytest.raises(InputError) as error:
        parse_lengths(text, "--prompt-tokens")
    assert needle in str(error.value)


def test_lognormal_spread_and_floor() -> None:
    """sigma spreads the draws (0: all at the median); a small median rounds some to 0, floored at 1."""
    rng = np.random.Generator(np.random.PCG64(2))
    assert set(Lengths("lognormal", (40.0, 0.0, 100.0)).draw(rng, 50)) == {40}
    spread = Lengths("lognormal", (40.0, 1.0, 10_000.0)).draw(rng, 2000)
    assert np.std(np.log(spread)) == pytest.approx(1.0, rel=0.1)
    low = Lengths("lognormal", (0.5, 1.0, 10.0)).draw(rng, 2000)
    assert min(low) == 1 and low.count(1) > 500


def test_generated_ids_rates_and_counts() -> None:
    requests = generate_requests(1, 0.5, Lengths("fixed", (3,)), Lengths("fixed", (2,)), 0)
    assert requests[0].request_id == 0 and requests[0].arrival_s > 0
    assert [r.request_id for r in generate_requests(5, 2.0, Lengths("fixed", (3,)), Lengths("fixed", (2,)), 0)] == \
        list(range(5))
    with pytest.raises(InputError, match="--rate must be a positive number of requests per second, got 0"):
        generate_requests(3, 0.0, Lengths("fixed", (1,)), Lengths("fixed", (1,)), 0)
    with pytest.raises(InputError, match="--num-requests must be at least 1, got 0"):
        generate_requests(0, 1.0, Lengths("fixed", (1,)), Lengths("fixed", (1,)), 0)


def test_trace_errors_name_the_row_and_column() -> None:
    names = ("arrival_s", "prompt_tokens")
    with pytest.raises(InputError, match=r"t: missing column\(s\) output_tokens \(or Vidur's arrived_at, "
                                         "num_prefill_tokens, num_decode_tokens\\)"):
        parse_requests(rows((0, 1, 1)), names, "t")
    columns = ("arrival_s", "prompt_tokens", "output_tokens")
    with pytest.raises(InputError, match="t: row 2: arrival 0.5 is before the previous row's 1.0"):
        parse_requests(rows((1, 1, 1), (0.5, 1, 1)), columns, "t")
    with pytest.raises(InputError, match="t: row 1: output_tokens 2.5 is not an integer"):
        parse_requests(rows((0, 1, 2.5)), columns, "t")
    with pytest.raises(InputError, match="t: row 1: prompt_tokens 2147483648 is not a positive token count"):
        parse_requests(rows((0, 2**31, 1)), columns, "t")
    assert parse_requests(rows((0, 2**31 - 1, 1)), columns, "t")[0].prompt_tokens == 2**31 - 1
    vidur = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")
    with pytest.raises(InputError, match="t: row 1: num_decode_tokens 0 is not a positive token count"):
        parse_requests(rows((0, 1, 0), names=vidur), vidur, "t")


@pytest.mark.parametrize("count, seed, needle", [(2.5, 0, "--num-requests must be at least 1, got 2.5"),
                                                 (True, 0, "got True"), (2, 1.5, "--seed must be a non-negative")])
def test_a_count_or_seed_that_is_not_a_whole_number_is_refused(count, seed, needle):
    with pytest.raises(InputError, match=needle):
        generate_requests(count, 1.0, Lengths("fixed", (3,)), Lengths("fixed", (2,)), seed)


def test_a_lognormal_cap_below_its_median_is_refused():
    assert parse_lengths("lognormal:100,0.5,100", "p").parameters == (100.0, 0.5, 100)
    with pytest.raises(InputError, match=r"^p: unknown distribution 'gamma'; choose from uniform, lognormal, zipf "
                                         r"\(or give a number\)$"):
        parse_lengths("gamma:1,2", "p")
    with pytest.raises(InputError, match="p: lognormal MAX 50 is below its MEDIAN 100: more than half the draws "
                                         "would be cut to MAX$"):
        parse_lengths("lognormal:100,0.5,50", "p")
