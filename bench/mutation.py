"""Mutation check: plant known bugs one at a time and see whether the tests notice.

Each :class:`Mutant` names a file, an exact snippet of it and a replacement that breaks one
behaviour the tests claim to cover (the claim order, a lease comparison, a budget bound, the
direction of a ranking ...). For every mutant the repository is copied to a temporary
directory (tracked files plus untracked, non-ignored ones: what ``git ls-files`` lists), the
snippet is replaced there, and the mutant's targeted test files run with ``pytest -x``. A
failing run *kills* the mutant; a passing one means the tests cannot see that bug. The
working tree is only read, never written.

A snippet that no longer occurs exactly once is an error, not a skip: the mutant list is
kept in step with the code (``tests/mfms_bo/bench/test_mutation.py`` checks every snippet
against the current source). Survivors are either killed by a new test or explained as
equivalent mutants in ``bench/README.md`` ("Mutation check").

    python bench/mutation.py                      # every mutant, table and kill rate
    python bench/mutation.py --list               # the mutants and their test files
    python bench/mutation.py --only claim-ignores-priority --json out.json
    python bench/mutation.py --rev HEAD           # a commit instead of the working tree
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_STORAGE = "server/storage.py"
_T_STORAGE = "tests/server/test_storage.py"
_T_PROTOCOL = "tests/server/test_trial_protocol.py"
_T_LEASES = "tests/server/test_leases.py"
_T_STUDIES = "tests/server/test_studies.py"
_T_STRATEGIES = "tests/mfms_bo/strategies/test_strategies.py"
_T_BASELINES = "tests/mfms_bo/strategies/test_baselines.py"
_T_TRIALS = "tests/mfms_bo/test_trials.py"
_T_METRICS = "tests/mfms_bo/bench/test_metrics.py"


@dataclass(frozen=True)
class Mutant:
    """One planted bug: ``original`` (which must occur exactly once in ``path``) becomes
    ``replacement``; ``tests`` are the test files expected to notice."""

    name: str
    path: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    bug: str


class MutationError(Exception):
    """A mutant cannot be applied: its snippet is missing or ambiguous in the source."""


MUTANTS: tuple[Mutant, ...] = (
    # -- server/storage.py: the claim path, leases, the proposer lock, accounting --------
    Mutant("claim-ignores-priority", _STORAGE,
           "q = (q.order_by(_TT.c.priority, _TT.c.id).limit(1)",
           "q = (q.order_by(_TT.c.id).limit(1)",
           (_T_STORAGE,), "user trials and retries no longer jump the queue"),
    Mutant("claim-newest-first", _STORAGE,
           "q = (q.order_by(_TT.c.priority, _TT.c.id).limit(1)",
           "q = (q.order_by(_TT.c.priority, _TT.c.id.desc()).limit(1)",
           (_T_STORAGE,), "ties in priority go newest first"),
    Mutant("claim-ignores-max-model-size", _STORAGE,
           "q = q.where(_TT.c.model_size <= bindparam(\"max_size\"))",
           "q = q.where(_TT.c.model_size <= bindparam(\"max_size\") + 1e30)",
           (_T_STORAGE, _T_PROTOCOL), "a small worker is handed a model it cannot run"),
    Mutant("claim-any-study-state", _STORAGE,
           ".where(_TT.c.state == _Q, _ST.c.state == StudyState.RUNNING.value))",
           ".where(_TT.c.state == _Q))",
           (_T_STORAGE, _T_STUDIES), "paused studies still hand out work"),
    Mutant("reaper-flipped-expiry", _STORAGE,
           "select(Trial).where(Trial.state == _R, Trial.lease_expires_at < now)",
           "select(Trial).where(Trial.state == _R, Trial.lease_expires_at > now)",
           (_T_STORAGE, _T_LEASES), "live leases are reaped, expired ones kept"),
    Mutant("heartbeat-does-not-renew", _STORAGE,
           "    trial.heartbeat_at = now\n"
           "    trial.lease_expires_at = now + timedelta(seconds=lease_seconds)\n"
           "    return trial\n",
           "    trial.heartbeat_at = now\n"
           "    return trial\n",
           (_T_STORAGE, _T_PROTOCOL), "a heartbeat does not extend the lease"),
    Mutant("proposer-lock-ignores-live-holder", _STORAGE,
           "or_(Study.proposer_until.is_(None), Study.proposer_until < now))",
           "or_(Study.proposer_until.is_(None), Study.proposer_until > now - now))",
           (_T_STORAGE,), "a second proposer takes a lock that is still held"),
    Mutant("stale-proposer-still-inserts", _STORAGE,
           "    if held != holder:\n        return []\n",
           "    if held is None and holder is None:\n        return []\n",
           (_T_STORAGE,), "a proposer whose lock lapsed queues a second batch"),
    Mutant("replayed-measurement-conflicts", _STORAGE,
           "        if not _same_losses(existing.losses, losses):",
           "        if _same_losses(existing.losses, losses):",
           (_T_PROTOCOL,), "a worker's retry of the same report is refused"),
    Mutant("measurement-step-off-by-one", _STORAGE,
           "    if step > trial.steps:",
           "    if step > trial.steps + 1:",
           (_T_PROTOCOL,), "a report one step past the trial's steps is accepted"),
    Mutant("complete-without-lease", _STORAGE,
           '    _leased_trial(session, trial, worker_id, "complete")\n',
           "",
           (_T_STORAGE,), "any worker may complete any trial"),
    Mutant("requeue-attempts-off-by-one", _STORAGE,
           'if trial.attempt >= max_attempts or trial.source == "import":',
           'if trial.attempt > max_attempts or trial.source == "import":',
           (_T_STORAGE, _T_LEASES), "one retry more than max_attempts"),
    Mutant("retry-loses-priority", _STORAGE,
           "again = Trial(study_id=trial.study_id, state=_Q, source=trial.source, priority=0,",
           "again = Trial(study_id=trial.study_id, state=_Q, source=trial.source, priority=1,",
           (_T_STORAGE,), "a retry waits behind the strategy's queue"),
    Mutant("stop-keeps-queued-trials", _STORAGE,
           ".values(state=TrialState.CANCELLED.value, finished_at=now)",
           ".values(finished_at=now)",
           (_T_STUDIES,), "stopping a study leaves its queue runnable"),
    Mutant("spend-counts-imports", _STORAGE,
           '.where(Trial.study_id.in_(study_ids), Trial.source != "import")',
           ".where(Trial.study_id.in_(study_ids))",
           (_T_PROTOCOL,), "imported sweeps are charged to the study's budget"),
    # -- server/api/routes: status codes and flags the workers act on --------------------
    Mutant("heartbeat-stop-flag-wrong-state", "server/api/routes/trials.py",
           "should_stop=state == StudyState.STOPPED.value",
           "should_stop=state == StudyState.PAUSED.value",
           (_T_PROTOCOL,), "workers are not told that their study stopped"),
    Mutant("replay-answers-201", "server/api/routes/trials.py",
           "status.HTTP_201_CREATED if created else status.HTTP_200_OK",
           "status.HTTP_201_CREATED",
           (_T_PROTOCOL,), "a replayed measurement looks newly recorded"),
    Mutant("pause-route-stops", "server/api/routes/studies.py",
           'return _transition(study_id, "pause", db, maintainer)',
           'return _transition(study_id, "stop", db, maintainer)',
           (_T_STUDIES,), "pausing a study stops it for good"),
    # -- mfms_bo/strategies (bo.py and the surrogate excluded: they change often) --------
    Mutant("screen-confirms-worst-first", "mfms_bo/strategies/screen.py",
           "rows.sort(key=lambda t: (t[0], t[1]))",
           "rows.sort(key=lambda t: (-t[0], t[1]))",
           (_T_BASELINES,), "screen-then-confirm confirms its worst screens"),
    Mutant("screen-max-screen-off-by-one", "mfms_bo/strategies/screen.py",
           "can_screen = n_screened < self.max_screen and fresh.has_next()",
           "can_screen = n_screened <= self.max_screen and fresh.has_next()",
           (_T_BASELINES,), "one screening run more than max_screen"),
    Mutant("hyperband-promotes-worst", "mfms_bo/strategies/hyperband.py",
           "members = [c for _, c in scored[:sizes[rung]]]",
           "members = [c for _, c in scored[::-1][:sizes[rung]]]",
           (_T_STRATEGIES,), "Hyperband promotes the worst of each rung"),
    Mutant("random-pool-excludes-nothing", "mfms_bo/strategies/random_search.py",
           "used = [*(r.spec for r in history if r.spec.model_size == size), *pending]",
           "used = []",
           (_T_STRATEGIES,), "random search buys a pool member twice"),
    Mutant("regmix-averages-the-worst", "mfms_bo/strategies/regmix.py",
           "avg = W[order[:n_avg]].mean(0)",
           "avg = W[order[-n_avg:]].mean(0)",
           (_T_BASELINES,), "RegMix confirms the average of its worst predictions"),
    # -- mfms_bo/trials.py: what a loss report may hold ---------------------------------
    Mutant("nan-loss-accepted", "mfms_bo/trials.py",
           "        if not math.isfinite(v):",
           "        if math.isinf(v):",
           (_T_TRIALS,), "a NaN loss is recorded"),
    Mutant("objective-of-partial-report", "mfms_bo/trials.py",
           "        if name not in losses:\n            return None\n",
           "        if name not in losses:\n            continue\n",
           (_T_TRIALS,), "a report missing a weighted domain gets an objective"),
    # -- mfms_bo/bench/metrics.py: the headline numbers ----------------------------------
    Mutant("settle-ignores-leaving-the-band", "mfms_bo/bench/metrics.py",
           "        if not _inside(v, optimum, band):\n            break\n",
           "        if not _inside(v, optimum, band):\n            continue\n",
           (_T_METRICS,), "a run that leaves the band still counts as settled early"),
    Mutant("gap-at-takes-a-later-point", "mfms_bo/bench/metrics.py",
           "        if c > cost:\n            break\n",
           "        if c > 2 * cost:\n            break\n",
           (_T_METRICS,), "the gap held at a cost reads a later recommendation"),
)


# -- the copies ----------------------------------------------------------------------------
def source_files(root: Path = ROOT) -> list[str]:
    """Tracked and untracked-but-not-ignored files that exist (a deleted tracked file is
    left out, as the working tree has it)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, capture_output=True, check=True).stdout
    names = sorted({n for n in out.decode().split("\0") if n})
    return [n for n in names if (root / n).is_file()]


def export_rev(rev: str, dest: Path) -> list[str]:
    """Extract commit ``rev`` into ``dest`` (``git archive``); its file names."""
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


def copy_tree(dest: Path, files: Sequence[str], root: Path = ROOT) -> None:
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)


def mutated_text(text: str, mutant: Mutant) -> str:
    """``text`` with the mutant's snippet replaced; MutationError unless it occurs once."""
    n = text.count(mutant.original)
    if n != 1:
        raise MutationError(f"{mutant.name}: snippet found {n} times in {mutant.path} "
                            f"(expected exactly once; update bench/mutation.py): "
                            f"{mutant.original!r}")
    return text.replace(mutant.original, mutant.replacement)


def check_snippets(root: Path = ROOT, mutants: Sequence[Mutant] = MUTANTS) -> list[str]:
    """Every problem with the mutant list against the source at ``root`` (empty: all good)."""
    problems = []
    names = [m.name for m in mutants]
    problems += [f"duplicate mutant name {n!r}" for n in sorted({n for n in names
                                                                if names.count(n) > 1})]
    for m in mutants:
        path = root / m.path
        if not path.is_file():
            problems.append(f"{m.name}: {m.path} does not exist")
            continue
        try:
            mutated_text(path.read_text(), m)
        except MutationError as exc:
            problems.append(str(exc))
        problems += [f"{m.name}: test file {t} does not exist" for t in m.tests
                     if not (root / t).is_file()]
        if m.original == m.replacement:
            problems.append(f"{m.name}: replacement equals the original")
    return problems


# -- running -------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What happened to one mutant (``killed`` is None when the run itself broke)."""

    name: str
    path: str
    tests: list[str]
    killed: bool | None
    seconds: float
    detail: str


def _pytest(tree: Path, tests: Sequence[str], timeout: float) -> tuple[int | None, str]:
    """Run ``tests`` inside ``tree``; ``(returncode, the failing tests and pytest's last
    line)``, returncode None on timeout.

    ``PYTHONPATH`` points at the copy so that an editable install of the working tree can
    never shadow the mutated files, in this process or in any it starts."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
           "-o", "addopts=", *tests]
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    # pytest -q names each failing test on a "FAILED ..." / "ERROR ..." line of its summary.
    failed = [ln for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
    return proc.returncode, "; ".join([*failed, lines[-1]] if lines else failed)


def run_mutant(mutant: Mutant, root: Path, files: Sequence[str], timeout: float) -> Outcome:
    """Copy, mutate, test, clean up. A timeout counts as killed (the tests noticed
    something: a mutant that hangs a test is a bug the suite catches, if slowly)."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as tmp:
        tree = Path(tmp)
        copy_tree(tree, files, root)
        target = tree / mutant.path
        target.write_text(mutated_text(target.read_text(), mutant))
        code, last = _pytest(tree, mutant.tests, timeout)
    if code is None:
        killed: bool | None = True
    elif code in (0, 1):  # 0: all passed (survived); 1: a test failed (killed)
        killed = code == 1
    else:  # 2-5: interrupted, internal error, usage error, nothing collected
        killed = None
    return Outcome(mutant.name, mutant.path, list(mutant.tests), killed,
                   round(time.monotonic() - start, 1), last)


def baseline(mutants: Sequence[Mutant], root: Path, files: Sequence[str], timeout: float
             ) -> str | None:
    """Run every targeted test file once, unmutated; the failure line, or None if green.
    Without a green baseline a "killed" mutant would mean nothing."""
    tests = sorted({t for m in mutants for t in m.tests})
    with tempfile.TemporaryDirectory(prefix="mutant-baseline-") as tmp:
        copy_tree(Path(tmp), files, root)
        code, last = _pytest(Path(tmp), tests, timeout)
    return None if code == 0 else f"{' '.join(tests)}: {last}"


def _table(outcomes: Sequence[Outcome]) -> str:
    rows = [("mutant", "file", "tests run", "killed?", "s")]
    for o in outcomes:
        verdict = {True: "killed", False: "SURVIVED", None: "ERROR"}[o.killed]
        rows.append((o.name, o.path, " ".join(Path(t).name for t in o.tests), verdict,
                     f"{o.seconds:.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run this mutant only (repeatable, or comma-separated)")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the outcomes as JSON")
    p.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds per test run before it counts as killed (default 300)")
    p.add_argument("--rev", metavar="COMMIT",
                   help="mutate this commit (git archive) instead of the working tree")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the unmutated run of the targeted tests")
    args = p.parse_args(argv)

    chosen = list(MUTANTS)
    if args.only:
        wanted = {n for item in args.only for n in item.split(",") if n}
        unknown = wanted - {m.name for m in MUTANTS}
        if unknown:
            p.error(f"unknown mutant(s): {', '.join(sorted(unknown))}")
        chosen = [m for m in MUTANTS if m.name in wanted]
    if args.list:
        for m in chosen:
            print(f"{m.name:36s} {m.path:32s} {' '.join(m.tests)}\n{'':36s} {m.bug}")
        return 0
    with tempfile.TemporaryDirectory(prefix="mutant-source-") as src:
        if args.rev is None:
            root, files = ROOT, source_files()
        else:
            root, files = Path(src), export_rev(args.rev, Path(src))
        problems = check_snippets(root, chosen)
        if problems:
            print("mutant list out of date:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 2
        if not args.no_baseline:
            failed = baseline(chosen, root, files, args.timeout)
            if failed is not None:
                print(f"baseline failed, no mutant can be judged: {failed}", file=sys.stderr)
                return 2
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            outcomes = list(pool.map(lambda m: run_mutant(m, root, files, args.timeout),
                                     chosen))
    print(_table(outcomes))
    judged = [o for o in outcomes if o.killed is not None]
    killed = sum(bool(o.killed) for o in judged)
    rate = killed / len(judged) if judged else float("nan")
    print(f"\nkilled {killed}/{len(judged)} ({rate:.0%}) in {time.monotonic() - start:.0f} s"
          + (f"; {len(outcomes) - len(judged)} run(s) errored" if len(judged) < len(outcomes)
             else ""))
    for o in outcomes:
        if not o.killed:
            print(f"  {'survived' if o.killed is False else 'error'}: {o.name}: {o.detail}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "killed": killed, "judged": len(judged), "kill_rate": rate,
            "mutants": [asdict(o) for o in outcomes]}, indent=2) + "\n")
    return 0 if killed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
