"""Flower's own FedAvg on flsilo bundles: the baseline of benchmarks/bench_aggregate.py.

Runs in the separate Flower virtual environment (benchmarks/README.md), never in flsilo's.
Usage: .venv-flwr/bin/python benchmarks/flower_fedavg.py BUNDLE.safetensors...

Every bundle is loaded (safetensors.numpy, nothing verified) into an ArrayRecord with its
sample count in a MetricRecord, as a Flower ServerApp receives replies, then
``flwr.serverapp.strategy.strategy_utils.aggregate_arrayrecords`` (what Flower's FedAvg
calls) averages them; the result is written as a safetensors file beside the first input,
then removed, so the run ends with the same kind of output flsilo writes.
"""

from __future__ import annotations

import json
import os
import sys

from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from safetensors import safe_open
from safetensors.numpy import load_file, save_file


def main() -> None:
    records = []
    for path in sys.argv[1:]:
        with safe_open(path, "numpy") as fh:
            meta = json.loads((fh.metadata() or {})["flsilo.manifest"])
        samples = meta["bundle"]["num_samples"]
        records.append(
            RecordDict(
                {
                    "arrays": ArrayRecord({k: Array(v) for k, v in load_file(path).items()}),
                    "metrics": MetricRecord({"num-examples": samples}),
                }
            )
        )
    averaged = aggregate_arrayrecords(records, "num-examples")
    out = sys.argv[1] + ".flower.safetensors"
    save_file({k: v.numpy() for k, v in averaged.items()}, out)
    os.remove(out)


if __name__ == "__main__":
    main()
