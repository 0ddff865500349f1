"""Runs inside .venv-vidur (Vidur 0.0.26): one trace through Vidur's vLLM or Sarathi scheduler, each batch
timed by a given closed form instead of Vidur's profiled predictor; prints every request's times.

Input (JSON on stdin): ``trace`` (a CSV path: arrived_at, num_prefill_tokens, num_decode_tokens: Vidur's
column names, read here, as its own trace reader wants another layout),
``scheduler`` ("vllm" or "sarathi"), ``max_batch``, ``max_tokens`` (vLLM's max_tokens_in_batch,
Sarathi's chunk size), ``block_size``, ``num_blocks``, and ``cost``: seconds per batch = ``fixed`` +
``per_token`` x new tokens + ``per_sequence`` x requests. Output: one object per request, in arrival
order: ``arrived_at``, ``prefill_completed_at``, ``completed_at``, ``restarts``.

Vidur 0.0.26's ``Request.restart`` (a preempted request starting over, vLLM's recompute) has two defects,
mended here so that runs with preemption can be compared: it does not reset the pipeline stage's count of
processed tokens (the request's next prefill then fails Vidur's own assertion), and a request preempted
part-way through a chunked prefill restarts with the part it had processed as its whole prompt (the rest of
the prompt would be decoded one token per iteration, and its first token reported at the part's end).
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from typing import Any

from vidur._native.entities import ExecutionTime as ExecutionTimeC
from vidur.config import SimulationConfig
from vidur.entities import Request
from vidur.events import RequestArrivalEvent
from vidur.execution_time_predictor import ExecutionTimePredictorRegistry
from vidur.simulator import Simulator


class ClosedFormPredictor:
    """A batch's time from a closed form, as one component of one layer (Vidur sums components over the
    layers of a stage, in ms)."""

    def __init__(self, cost: dict[str, float]) -> None:
        self.cost = cost

    def get_execution_time(self, batch, pipeline_stage):
        seconds = (self.cost["fixed"] + self.cost["per_token"] * sum(batch.num_q_tokens)
                   + self.cost["per_sequence"] * len(batch.requests))
        return ExecutionTimeC(1, 0.0, 0.0, 0.0, 0.0, seconds * 1e3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _mended(restart):
    """``Request.restart``, and then what it leaves wrong set right (see the module docstring)."""

    def mended_restart(self):
        prefilled, prompt, total = self.is_prefill_complete, self.num_prefill_tokens, self.total_tokens
        restart(self)
        self._num_stage_processed_tokens = 0
        self._is_prefill_stage_complete = False
        if not prefilled:  # nothing was generated: the prompt is recomputed as it was
            self._num_prefill_tokens, self._num_decode_tokens = prompt, total - prompt

    return mended_restart


def main() -> None:
    Request.restart = _mended(Request.restart)
    request = json.load(sys.stdin)
    with tempfile.TemporaryDirectory() as output:  # Vidur writes its config there even without metrics
        _simulate(request, output)


def _simulate(request: dict[str, Any], output: str) -> None:
    scheduler = request["scheduler"]
    limits = ([f"--vllm_scheduler_config_batch_size_cap={request['max_batch']}",
               f"--vllm_scheduler_config_max_tokens_in_batch={request['max_tokens']}"] if scheduler == "vllm" else
              [f"--sarathi_scheduler_config_batch_size_cap={request['max_batch']}",
               f"--sarathi_scheduler_config_chunk_size={request['max_tokens']}"])
    sys.argv = ["vidur", "--replica_config_model_name=meta-llama/Llama-2-7b-hf",
                "--replica_config_num_pipeline_stages=1", "--replica_config_tensor_parallel_size=1",
                f"--replica_scheduler_config_type={scheduler}", *limits,
                f"--cache_config_block_size={request['block_size']}",
                f"--cache_config_num_blocks={request['num_blocks']}",
                "--cache_config_watermark_blocks_fraction=0",
                "--no-metrics_config_write_metrics", f"--metrics_config_output_dir={output}"]
    config = SimulationConfig.create_from_cli_args()
    predictor = ClosedFormPredictor(request["cost"])
    ExecutionTimePredictorRegistry.get = classmethod(lambda cls, *args, **kwargs: predictor)  # type: ignore
    simulator = Simulator(config)
    # the trace's requests replace the generator's (its trace reader wants another format)
    with open(request["trace"]) as handle:
        rows = list(csv.DictReader(handle))
    requests = [Request(float(row["arrived_at"]), int(row["num_prefill_tokens"]), int(row["num_decode_tokens"]))
                for row in rows]
    simulator._event_queue = []
    for item in requests:
        simulator._add_event(RequestArrivalEvent(item.arrived_at, item))
    simulator._write_output = lambda: None  # no metrics files or plots
    simulator.run()
    times = [{"arrived_at": r.arrived_at, "prefill_completed_at": r.prefill_completed_at,
              "completed_at": r.completed_at, "restarts": r.num_restarts} for r in requests]
    print("vidur-requests: " + json.dumps(times))  # Vidur logs to stdout too


if __name__ == "__main__":
    main()
