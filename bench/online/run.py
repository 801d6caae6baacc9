"""Online mixing on real text: stratified vs Aioli vs Aioli from a prior, equal steps.

Every method trains the same model (same seed, same initial weights, same data order per
domain) for the same number of steps with the built-in trainer; Aioli's probing steps are
among them. "Test" perplexity is measured at the last step on the first ``--eval-tokens``
tokens of each domain's validation split, which Aioli never sees (its own probe losses use
the split's other end).

Methods:
* ``stratified`` - uniform proportions throughout (the baseline).
* ``aioli-ref`` - the reference code's settings of the issue's quick run: A normalised to
  sum 1, EMA 0.1, eta 0.2 unscaled (p is recomputed each round from the EMA).
* ``aioli`` - ours: the cumulative EGD update of the paper's Lemma 1, eta scaled by k.
* ``aioli-prior`` - the restricted setting: a prior p0 learned by a short run (``aioli``
  for ``--steps / 4`` steps, its final proportions), trained on for ``steps / 4`` steps,
  then adapted by ``aioli`` (the short run's cost is reported, not counted in ``steps``).
* ``static-prior`` - p0 for the whole run (is adapting better than just using p0?).

    python bench/online/run.py --seeds 3 --steps 1200 --json bench/results/online.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from mfms_bo.online import Aioli, MixingController, Static, Stratified
from workers.trainer.data import available_domains, build_example_corpus
from workers.trainer.train import train_trial

ARGS = argparse.Namespace(rounds=6, lp_rounds=4, lp_steps=4, one_hot_factor=0.75)
METHODS = ("stratified", "aioli-ref", "aioli", "aioli-prior", "static-prior")


def aioli(domains: list[str], steps: int, seed: int, **kw: Any) -> Aioli:
    """Our settings; ``--rounds`` rounds per run, probe budget ``--lp-rounds`` x
    ``--lp-steps`` (the reference's is 4 x 4 per 250 steps)."""
    rounds = int(kw.pop("rounds", ARGS.rounds))
    lp_rounds, lp_steps = ARGS.lp_rounds, ARGS.lp_steps
    base = dict(eta=0.2, update_steps=max(steps // rounds, lp_rounds * len(domains) * lp_steps
                                          + 1),
                lp_rounds=lp_rounds, lp_steps=lp_steps, one_hot_factor=ARGS.one_hot_factor,
                seed=seed)
    base.update(kw)
    return Aioli(domains, **base)


def run_one(data: Path, domains: list[str], ctl: MixingController, steps: int, seed: int,
            args: argparse.Namespace) -> dict[str, Any]:
    reports: list[tuple] = []
    stats: dict[str, float] = {}
    t = time.perf_counter()
    train_trial(data, dict.fromkeys(domains, 1.0 / len(domains)), args.model_size, steps,
                [steps], lambda *r: reports.append(r), batch_size=args.batch_size,
                seq_len=args.seq_len, seed=seed, eval_tokens=args.eval_tokens,
                controller=ctl, controller_eval_tokens=args.controller_eval_tokens,
                stats=stats, progress=False, compile=False)
    losses = reports[-1][1]
    ppl = {d: math.exp(v) for d, v in losses.items()}
    return {"test_loss": losses, "test_ppl": ppl,
            "avg_ppl": statistics.fmean(ppl.values()),
            "final_proportions": ctl.proportions,
            "average_proportions": ctl.average_proportions,
            "trajectory": ctl.trajectory, "stats": stats,
            "wall_s": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("bench/results/online_corpus"),
                    help="prepared domains (built with `mfms data example` if empty)")
    ap.add_argument("--domains", default=None, help="comma-separated (default: all)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--model-size", type=float, default=1e5, help="parameters (preset)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--eval-tokens", type=int, default=2**15)
    ap.add_argument("--controller-eval-tokens", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=6, help="Aioli rounds per run")
    ap.add_argument("--lp-rounds", type=int, default=4)
    ap.add_argument("--lp-steps", type=int, default=4)
    ap.add_argument("--one-hot-factor", type=float, default=0.75)
    ap.add_argument("--eta", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    ARGS.__dict__.update(vars(args))
    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if not args.data.is_dir() or not available_domains(args.data):
        print(f"building the example corpus in {args.data} ...", flush=True)
        build_example_corpus(args.data, mb_per_domain=2.0)
    found = list(available_domains(args.data))
    domains = args.domains.split(",") if args.domains else found
    k, steps = len(domains), args.steps
    runs: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        prior, prior_cost = None, 0.0
        if {"aioli-prior", "static-prior"} & set(methods):
            short = run_one(args.data, domains, aioli(domains, steps // 4, seed, eta=args.eta,
                                                      rounds=2), steps // 4, seed, args)
            prior, prior_cost = short["final_proportions"], short["wall_s"]
        for m in methods:
            if m == "stratified":
                ctl: MixingController = Stratified(domains)
            elif m == "aioli-ref":
                ctl = aioli(domains, steps, seed, eta=args.eta, ema=0.1, eta_scale="none")
            elif m == "aioli":
                ctl = aioli(domains, steps, seed, eta=args.eta)
            elif m == "aioli-prior":
                ctl = aioli(domains, steps - steps // 4, seed, eta=args.eta, prior=prior,
                            prior_steps=steps // 4)
            else:
                ctl = Static(domains, prior)
            r = run_one(args.data, domains, ctl, steps, seed, args)
            r.update(method=m, seed=seed, prior=prior,
                     prior_run_s=prior_cost if "prior" in m else 0.0)
            runs.append(r)
            s = r["stats"]
            print(f"seed {seed} {m:13s} avg ppl {r['avg_ppl']:.4f}  "
                  f"p_final {[round(v, 3) for v in r['final_proportions'].values()]}  "
                  f"probe-eval {100 * s['controller_eval_seconds'] / s['train_seconds']:.1f}%"
                  f"  {r['wall_s']:.0f}s", flush=True)

    print(f"\n{k} domains, {steps} steps x {args.batch_size} x {args.seq_len} tokens, "
          f"model {args.model_size:g}, {args.seeds} seeds (mean +- sd)\n")
    head = "| method | avg test ppl | " + " | ".join(domains) + \
        " | vs stratified | probe eval / train time |"
    print(head)
    print("|" + "---|" * (len(domains) + 4))
    base = {r["seed"]: r["avg_ppl"] for r in runs if r["method"] == "stratified"}
    summary = {}
    for m in methods:
        rs = [r for r in runs if r["method"] == m]

        def ms(vals: list[float]) -> str:
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            return f"{statistics.fmean(vals):.4f} +- {sd:.4f}"

        diffs = [r["avg_ppl"] - base[r["seed"]] for r in rs if r["seed"] in base]
        overhead = [r["stats"]["controller_eval_seconds"] / r["stats"]["train_seconds"]
                    for r in rs]
        summary[m] = {"avg_ppl": statistics.fmean(r["avg_ppl"] for r in rs),
                      "diff_vs_stratified": statistics.fmean(diffs) if diffs else None,
                      "wins_vs_stratified": sum(d < 0 for d in diffs),
                      "overhead": statistics.fmean(overhead)}
        print(f"| {m} | {ms([r['avg_ppl'] for r in rs])} | "
              + " | ".join(ms([r["test_ppl"][d] for r in rs]) for d in domains)
              + f" | {summary[m]['diff_vs_stratified'] or 0:+.4f} "
              f"({summary[m]['wins_vs_stratified']}/{len(diffs)} seeds better) | "
              f"{100 * summary[m]['overhead']:.1f}% |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "summary": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
