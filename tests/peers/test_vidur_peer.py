"""The serving schedulers against Vidur 0.0.26 itself, run as a subprocess in its own venv.

Vidur's batches are timed by the same closed form as accelsim's iterations (verification/vidur_peer.py),
so the comparison is of scheduling alone: accelsim's continuous scheduler against Vidur's vLLM
scheduler, its chunked scheduler against Sarathi, on one trace, with Vidur's watermark set to 0
(accelsim keeps none). With a KV cache large enough that nothing is preempted, and with one so small that
requests are preempted dozens of times (Vidur's restart mended: verification/vidur_driver.py), every
request's first token and completion come out at the same times, to within one cycle of accelsim's clock
(accelsim sees an arrival at the first cycle at or after it, Vidur at its exact time), after the same
number of preemptions. A missing Vidur fails the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.serving.kv_cache import PagedKVCache
from simulator.serving.requests import generate_requests, parse_lengths
from simulator.serving.server import ServeSettings, serve
from verification.vidur_peer import ClosedFormCoster, run_vidur

pytestmark = pytest.mark.slow

COSTER = ClosedFormCoster(fixed=5000, per_token=10, per_sequence=1000, clock_hz=1e6)  # 5 ms, 10 us a token, 1 ms a seq


@pytest.mark.parametrize("ours, theirs, max_batch, max_tokens, blocks", [
    ("continuous", "vllm", 32, 4096, 100_000), ("continuous", "vllm", 4, 300, 100_000),
    ("chunked", "sarathi", 32, 256, 100_000), ("chunked", "sarathi", 6, 128, 100_000),
    ("continuous", "vllm", 32, 4096, 40), ("continuous", "vllm", 4, 300, 25), ("chunked", "sarathi", 32, 256, 30),
    ("chunked", "sarathi", 6, 128, 40)])
def test_requests_come_out_when_vidur_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ours: str, theirs: str,
                                           max_batch: int, max_tokens: int, blocks: int) -> None:
    requests = generate_requests(60, 20.0, parse_lengths("uniform:10,300", "p"), parse_lengths("uniform:2,40", "o"), 1)
    trace = tmp_path / "trace.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
                     + "".join(f"{r.arrival_s!r},{r.prompt_tokens},{r.output_tokens}\n" for r in requests))
    scratch = tmp_path / "scratch"  # the driver's temporary directory: Vidur writes its config there
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    theirs_times = run_vidur(trace, theirs, max_batch, max_tokens, 16, blocks, COSTER)
    assert not list(scratch.iterdir())  # nothing of the peer's run outlives it
    served = serve(requests, COSTER, PagedKVCache(blocks, 16), ServeSettings(ours, max_batch, max_tokens),
                   COSTER.clock_hz)
    ours_times = sorted(served.requests, key=lambda active: active.request.request_id)
    assert len(ours_times) == len(theirs_times) == 60
    for active, peer in zip(ours_times, theirs_times, strict=True):
        assert active.request.arrival_s == peer["arrived_at"]
        assert active.first_token is not None and active.finish is not None
        cycle = 1 / COSTER.clock_hz
        assert active.first_token / COSTER.clock_hz == pytest.approx(peer["prefill_completed_at"], abs=cycle)
        assert active.finish / COSTER.clock_hz == pytest.approx(peer["completed_at"], abs=cycle)
        assert active.preemptions == peer["restarts"]
    preempted = sum(active.preemptions for active in ours_times)
    assert preempted == 0 if blocks == 100_000 else preempted > 30
