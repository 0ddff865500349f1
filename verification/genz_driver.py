"""Runs inside .venv-genz (GenZ, ``genz-llm`` 0.0.16): a model's prefill split tensor-parallel, and every
collective GenZ puts in it. Reads a JSON request on stdin; prints one line ``genz-collectives: [...]``, each
entry the collective's name, its tensor's dimensions and GenZ's time for it (ms)."""

import json
import sys
import tempfile
import warnings

warnings.filterwarnings("ignore")

from GenZ import System, create_full_prefill_model, get_model_df  # noqa: E402


def main() -> None:
    request = json.load(sys.stdin)
    with tempfile.TemporaryDirectory() as data:  # GenZ writes the model's layers there (its default: /tmp/genz)
        model = create_full_prefill_model(name=request["model"], input_sequence_length=request["tokens"],
                                          tensor_parallel=request["tp"], data_path=data)
        system = System(flops=197, offchip_mem_bw=819, interchip_link_bw=request["link_gb"],
                        interchip_link_latency=request["latency_us"], num_nodes=request["tp"], bits="bf16",
                        frequency=1503)
        frame = get_model_df(model, system=system, batch_size=request["batch"], intermediate_on_chip=True,
                             data_path=data)
    sync = frame[frame["Op Type"].astype(str) == "Sync"]
    rows = [{"name": row["Layer Name"], "dims": [int(d) for d in row["Dimension"]],
             "time_ms": float(row["Communication time (msec)"])} for _, row in sync.iterrows()]
    print("genz-collectives: " + json.dumps(rows))


if __name__ == "__main__":
    main()
