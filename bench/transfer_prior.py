"""How much of a mixture's effect carries across scale, fitted on the published run tables.

The ``transfer`` kernel splits a mixture's effect on the loss into a share ``rho`` common to
every model size and the rest, free to change with size (``mfms_bo/surrogate/kernels.py``).
A study's own data cannot tell the two apart until it has run several mixtures at a large
size, so the prior on ``rho`` decides how far a screen at the smallest size is believed.
This script fits the kernel on each published table whole (every mixture at every size, at
the target steps), from a neutral prior (mean 0.5), and prints each table's ``rho``, their
mean (the library's default prior, ``TRANSFER_PRIOR``) and, for each table, the mean of the
*other* tables: the prior the benchmark gives a table problem, so that no table's search is
helped by a prior fitted on its own runs.

    python bench/transfer_prior.py [--json bench/results/transfer_prior.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from mfms_bo.bench.harness import evaluate_trial
from mfms_bo.bench.problem import search_space_of
from mfms_bo.bench.problems.tables import table_problems
from mfms_bo.strategies.bo import MFMSBO
from mfms_bo.surrogate.kernels import SharedFractionKernel
from mfms_bo.trials import TrialSpec


def fitted_share(name: str, prior: float = 0.5) -> float:
    """``rho`` of the ``transfer`` kernel fitted on every run of table ``name``."""
    problem = table_problems()[name]
    space = search_space_of(problem)
    assert space.candidates is not None
    steps = int(space.fidelities.target_steps)
    history = []
    for size in space.fidelities.model_sizes:
        for w in space.candidates:
            spec = TrialSpec(space.mixtures.to_dict(w), size, steps,
                             space.fidelities.checkpoint_steps(steps))
            history.append(evaluate_trial(problem, spec, len(history)))
    strategy = MFMSBO(space, seed=0, kernel="transfer", surrogate={"transfer_prior": prior})
    fit = strategy.fit_surrogate(history)
    assert fit is not None
    (share,) = [float(m.fraction.detach()) for m in fit.model.model.modules()
                if isinstance(m, SharedFractionKernel)]
    return share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    shares = {name: fitted_share(name) for name in sorted(table_problems())}
    default = statistics.fmean(shares.values())
    held_out = {name: statistics.fmean(v for n, v in shares.items() if n != name)
                for name in shares}
    print("| table | fitted rho | prior from the other tables |")
    print("|---|---|---|")
    for name in shares:
        print(f"| {name} | {shares[name]:.3f} | {held_out[name]:.3f} |")
    print(f"\nmean over the tables (the default prior): {default:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"fitted": shares, "default": default,
                                         "held_out": held_out}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
