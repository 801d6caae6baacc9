#!/usr/bin/env python3
"""A complete (toy) training script speaking the worker's ``command`` protocol.

    mfms worker --server URL --backend command --command \
      "python examples/train_example.py --mixture {mixture_json} --model-size {model_size} \
       --steps {steps} --checkpoints {checkpoints} --out {trial_dir}"

A real script trains a model on the given mixture; this one computes a plausible
per-domain loss so the protocol can be tried without a GPU. What matters is the output: one
JSON line per checkpoint on stdout, flushed as it happens, other output free-form.
"""

import argparse
import json
import math
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mixture", required=True, help='JSON {"domain": weight}')
    ap.add_argument("--model-size", type=float, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--checkpoints", required=True, help="comma-separated steps")
    ap.add_argument("--out", default=".")
    ap.add_argument("--seconds-per-step", type=float, default=0.0)
    args = ap.parse_args()
    mixture = json.loads(args.mixture)
    checkpoints = [int(s) for s in args.checkpoints.split(",")]
    print(f"training {args.model_size:.3g} params for {args.steps} steps on {mixture}")
    done = 0
    for step in checkpoints:
        time.sleep(args.seconds_per_step * (step - done))
        done = step
        losses = {}
        for domain, w in mixture.items():
            # more data of a domain helps it; bigger models and longer runs help everything
            data_term = 2.0 / (1.0 + 20.0 * w) + 0.3 * sum(mixture.values()) / len(mixture)
            losses[domain] = 1.5 + data_term + 40.0 / args.model_size ** 0.25 \
                + 2.0 / math.sqrt(step)
        print(json.dumps({"step": step, "losses": losses}), flush=True)
    gpu_seconds = 1e-9 * args.model_size * args.steps
    print(json.dumps({"cost": gpu_seconds}), flush=True)


if __name__ == "__main__":
    main()
