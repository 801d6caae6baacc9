"""Pool-based benchmark problems built from published run tables (DESIGN section 5).

Real language models trained on data mixtures, measured by others: a strategy may query only
the table's mixtures (``candidates``) at the table's fidelities, and every answer is a lookup.
This is the benchmark's check that what wins on the simulated problems also wins on real runs.

* ``regmix-60m`` (:func:`regmix_problem`): the 256 RegMix test mixtures of 17 Pile domains,
  trained at about 1M and 60M parameters; one measurement per run; target 60M.
* ``mixinglaws-5mix`` and ``mixinglaws-redpajama`` (:func:`mixinglaws_problem`): the 26 and 20
  candidate mixtures of Data Mixing Laws (Ye et al.), Pythia-style models of 70M-410M with
  learning curves up to step 30000; target 410M at step 30000.

The tables' training domains (the mixture coordinates, ``domains``) are not the domains on
which losses are measured. Every problem here therefore has an extra attribute
``loss_domains``: the keys of the loss dicts that :meth:`TableProblem.evaluate` returns, and
``objective_weights`` is keyed by those (uniform: the objective is the mean validation loss).
For RegMix the 13 loss domains are named like 13 of the 17 training domains; for the mixing-law
problems they are the 22 Pile validation domains (``ArXiv``, ``Pile-CC``, ...).

The compact tables live in ``mfms_bo/bench/data/`` (built by ``build_tables.py`` there; see
its README for provenance and licenses); they are parsed once per process.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mfms_bo.bench.problem import Problem

__all__ = [
    "TableProblem",
    "regmix_problem",
    "mixinglaws_problem",
    "table_problems",
    "REGMIX_DOMAINS",
    "MIXINGLAWS_5MIX_DOMAINS",
    "MIXINGLAWS_REDPAJAMA_DOMAINS",
]

_DATA = Path(__file__).resolve().parent.parent / "data"
_MATCH_TOL = 1e-6  # max |w_i - c_i| for a mixture to be a candidate (after renormalising)
_SIZE_RTOL = 1e-9  # relative tolerance when matching a model size to the ladder
_PFLOP = 1e15

REGMIX_DOMAINS = [
    "arxiv", "freelaw", "nih_exporter", "pubmed_central", "wikipedia_en", "dm_mathematics",
    "github", "philpapers", "stackexchange", "enron_emails", "gutenberg_pg_19", "pile_cc",
    "ubuntu_irc", "europarl", "hackernews", "pubmed_abstracts", "uspto_backgrounds",
]  # fmt: skip
_REGMIX_SIZES = {"1M": 1e6, "60M": 6e7}  # nominal sizes of tinyllama_1M / tinyllama_60M
_REGMIX_STEP = 1000
_REGMIX_TOKENS_PER_STEP = 1e6  # 1000 steps = 1B tokens (assumed for 60M too)

MIXINGLAWS_5MIX_DOMAINS = ["academic", "prose", "dialogue", "symbolic", "internet"]
MIXINGLAWS_REDPAJAMA_DOMAINS = [f"rp{i}" for i in range(7)]
# Parameter counts from the source's pipeline/utils.py.
_MIXINGLAWS_SIZES = {"70M": 18_915_328.0, "160M": 85_056_000.0, "305M": 201_541_632.0,
                     "410M": 302_311_424.0}
_MIXINGLAWS_TOKENS_PER_STEP = 4096 * 256  # BSZ in the source (~1.05M tokens per step)
_MIXINGLAWS = {
    # setting key: (problem name, file, coordinates, steps (min, max))
    # 5Mix starts at 10000: the first step every candidate has at every size (410M starts at
    # 9000, some 160M runs at 10000); a shorter run would return no checkpoint at all.
    "5mix": ("mixinglaws-5mix", "mixinglaws_5mix.csv", MIXINGLAWS_5MIX_DOMAINS, (10000, 30000)),
    "redpajama": ("mixinglaws-redpajama", "mixinglaws_redpajama.csv",
                  MIXINGLAWS_REDPAJAMA_DOMAINS, (10000, 30000)),
}

Curve = list[tuple[int, dict[str, float]]]


#: The ``transfer`` kernel's prior share of a mixture effect common to every size, for a
#: search on each table: the mean of the shares fitted on the *other* two tables
#: (``python bench/transfer_prior.py``), so that no table's search starts from a prior
#: fitted on its own runs. The library's default is the mean over all three.
HELD_OUT_TRANSFER_PRIOR = {
    "regmix-60m": 0.898,
    "mixinglaws-5mix": 0.884,
    "mixinglaws-redpajama": 0.967,
}


class TableProblem:
    """A pool-based problem answered from a table of measured losses.

    Satisfies :class:`mfms_bo.bench.problem.Problem`, plus ``loss_domains`` (the keys that
    :meth:`evaluate` returns) and ``candidate_labels`` (each candidate's id in the source).
    The tables hold single measurements, so ``evaluate`` is deterministic and ignores
    ``seed``. ``cost`` is ``6 * params * tokens`` in PFLOP (1e15 FLOPs).

    Args:
        name: problem name.
        domains: mixture coordinates, in order.
        loss_domains: domains the losses are reported on; the objective is their mean.
        model_sizes: runnable sizes (parameter counts), ascending.
        steps: ``(min, max)`` steps; max is the target steps.
        checkpoints: evaluations per trial (informational for a pool).
        candidates: the pool, each a ``{coordinate: weight}`` summing to 1.
        curves: ``curves[size][i]`` is candidate ``i``'s learning curve at that size: sorted
            ``(step, {loss domain: loss})`` with every loss domain present.
        tokens_per_step: tokens seen per training step (for the cost).
        candidate_labels: the candidates' ids in the source table.
    """

    def __init__(
        self,
        name: str,
        domains: Sequence[str],
        loss_domains: Sequence[str],
        model_sizes: Sequence[float],
        steps: tuple[int, int],
        checkpoints: int,
        candidates: Sequence[Mapping[str, float]],
        curves: Mapping[float, Sequence[Curve]],
        tokens_per_step: float,
        candidate_labels: Sequence[str],
    ) -> None:
        self.name = name
        self.domains = list(domains)
        self.loss_domains = list(loss_domains)
        self.model_sizes = sorted(float(m) for m in model_sizes)
        self.steps = (int(steps[0]), int(steps[1]))
        self.target_model_size = self.model_sizes[-1]
        self.checkpoints = int(checkpoints)
        self.objective_weights: dict[str, float] | None = {
            d: 1.0 / len(self.loss_domains) for d in self.loss_domains
        }
        self.candidates: list[dict[str, float]] | None = [
            {d: float(c.get(d, 0.0)) for d in self.domains} for c in candidates
        ]
        self.candidate_labels = list(candidate_labels)
        self.tokens_per_step = float(tokens_per_step)
        self._curves = {float(m): list(c) for m, c in curves.items()}
        self._cand_matrix = [[c[d] for d in self.domains] for c in self.candidates]
        self._targets = [self._objective_at_target(i) for i in range(len(self.candidates))]

    @property
    def strategy_options(self) -> dict[str, dict[str, Any]]:
        """Options the benchmark gives a strategy on this table, under the caller's own: the
        GP strategies' ``transfer`` prior from the other tables
        (:data:`HELD_OUT_TRANSFER_PRIOR`)."""
        prior = HELD_OUT_TRANSFER_PRIOR.get(self.name)
        if prior is None:
            return {}
        return {s: {"surrogate": {"transfer_prior": prior}}
                for s in ("mfms-bo", "mf-bo", "sf-bo")}

    def __repr__(self) -> str:
        return (f"TableProblem({self.name!r}, {len(self._targets)} candidates, "
                f"sizes={self.model_sizes}, steps={self.steps})")

    # -- lookups ----------------------------------------------------------------------------
    def candidate_index(self, mixture: Mapping[str, float]) -> int:
        """Index of the candidate equal to ``mixture`` (renormalised, within 1e-6).

        Raises:
            ValueError: unknown coordinates, negative or non-finite weights, a zero sum, or a
                mixture that is not in the pool.
        """
        unknown = [d for d in mixture if d not in self.domains]
        if unknown:
            raise ValueError(f"{self.name}: unknown domain(s) {unknown}; known: {self.domains}")
        w = [float(mixture.get(d, 0.0)) for d in self.domains]
        if any(not math.isfinite(v) or v < 0 for v in w) or sum(w) <= 0:
            raise ValueError(f"{self.name}: invalid mixture {dict(mixture)}")
        total = sum(w)
        w = [v / total for v in w]
        for i, c in enumerate(self._cand_matrix):
            if max(abs(a - b) for a, b in zip(w, c, strict=True)) <= _MATCH_TOL:
                return i
        raise ValueError(f"{self.name}: mixture {dict(mixture)} is not in the candidate pool")

    def _size_key(self, model_size: float) -> float:
        m = float(model_size)
        for s in self.model_sizes:
            if abs(m - s) <= _SIZE_RTOL * s:
                return s
        raise ValueError(
            f"{self.name}: model_size {model_size:g} is not in the table; sizes: "
            f"{self.model_sizes}"
        )

    def _objective(self, losses: Mapping[str, float]) -> float:
        assert self.objective_weights is not None
        return sum(w * losses[d] for d, w in self.objective_weights.items())

    def _objective_at_target(self, i: int) -> float:
        curve = self._curves[self.target_model_size][i]
        for step, losses in curve:
            if step == self.steps[1]:
                return self._objective(losses)
        raise ValueError(f"{self.name}: candidate {self.candidate_labels[i]} lacks the target")

    # -- protocol ---------------------------------------------------------------------------
    def evaluate(
        self, mixture: dict[str, float], model_size: float, steps: int, seed: int = 0
    ) -> list[tuple[int, dict[str, float]]]:
        """The table's learning curve of ``mixture`` at ``model_size`` up to ``steps``.

        Returns ``(step, {loss domain: loss})`` for every table step ``<= steps`` at which all
        loss domains were measured, sorted by step; ``[]`` if there is none. ``seed`` is
        ignored: the tables are single measurements, so the "noise" is the one realised.

        Raises:
            ValueError: the mixture is not a candidate, or the size is not in the table.
        """
        i = self.candidate_index(mixture)
        curve = self._curves[self._size_key(model_size)][i]
        return [(step, dict(losses)) for step, losses in curve if step <= int(steps)]

    def cost(self, model_size: float, steps: int) -> float:
        """Training compute ``6 * params * steps * tokens_per_step`` in PFLOP."""
        return 6.0 * float(model_size) * float(steps) * self.tokens_per_step / _PFLOP

    def true_objective(self, mixture: dict[str, float]) -> float:
        """Mean validation loss of the candidate at the target fidelity, from the table."""
        return self._targets[self.candidate_index(mixture)]

    def optimum(self) -> float | None:
        """The best (lowest) true objective over the pool."""
        return min(self._targets)

    def true_objectives(self) -> list[float]:
        """Every candidate's true objective, in candidate order."""
        return list(self._targets)


# -- loading --------------------------------------------------------------------------------
def _read_csv(name: str) -> tuple[list[str], list[list[str]]]:
    with (_DATA / name).open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _normalised(weights: Sequence[float], label: str) -> list[float]:
    total = sum(weights)
    if not total > 0:
        raise ValueError(f"mixture {label} has no positive weight")
    return [w / total for w in weights]


@cache
def _regmix_table() -> tuple[list[str], list[list[float]], list[str], dict[str, list[Curve]]]:
    """(labels, normalised mixtures, loss domains, {size label: curve per candidate})."""
    header, rows = _read_csv("regmix_test_mixtures.csv")
    if header[1:] != REGMIX_DOMAINS:
        raise ValueError(f"regmix_test_mixtures.csv: unexpected columns {header}")
    labels = [r[0] for r in rows]
    mixtures = [_normalised([float(v) for v in r[1:]], r[0]) for r in rows]
    header, rows = _read_csv("regmix_test_losses.csv")
    loss_domains = header[2:]
    where = {label: i for i, label in enumerate(labels)}
    curves: dict[str, list[Curve]] = {s: [[] for _ in labels] for s in _REGMIX_SIZES}
    for r in rows:
        losses = {d: float(v) for d, v in zip(loss_domains, r[2:], strict=True)}
        curves[r[0]][where[r[1]]] = [(_REGMIX_STEP, losses)]
    return labels, mixtures, loss_domains, curves


@cache
def _mixinglaws_table(file: str) -> tuple[list[str], list[str], dict[str, list[Curve]]]:
    """(mixture strings, loss domains, {size label: complete curve per mixture})."""
    header, rows = _read_csv(file)
    loss_domains = header[3:]
    labels = sorted({r[1] for r in rows})
    where = {label: i for i, label in enumerate(labels)}
    curves: dict[str, list[Curve]] = {s: [[] for _ in labels] for s in _MIXINGLAWS_SIZES}
    for r in rows:
        if "" in r[3:]:  # a step at which some domains were not measured
            continue
        losses = {d: float(v) for d, v in zip(loss_domains, r[3:], strict=True)}
        curves[r[0]][where[r[1]]].append((int(r[2]), losses))
    for per_size in curves.values():
        for curve in per_size:
            curve.sort(key=lambda p: p[0])
    return labels, loss_domains, curves


# -- factories ------------------------------------------------------------------------------
def regmix_problem() -> TableProblem:
    """``regmix-60m``: RegMix's 256 test mixtures at 1M and 60M parameters, target 60M.

    Source: ``sail-sg/regmix`` (MIT), files ``test_mixture_1m.csv``, ``test_pile_loss_1m.csv``
    and ``test_pile_loss_60m.csv``. Coordinates are the 17 Pile training domains; the table's
    weights are rounded to 3 decimals and are renormalised here to sum to 1. Losses are the 13
    Pile validation losses the table has (keyed by the matching training-domain names; there
    are none for nih_exporter, philpapers, enron_emails and europarl); the objective is their
    uniform mean. Sizes are the nominal 1e6 and 6e7 parameters of ``tinyllama_1M`` and
    ``tinyllama_60M``.

    Each run has one measurement, reported at step 1000 (``steps = (1000, 1000)``,
    ``checkpoints = 1``). The 1M models saw 1B tokens (1000 steps of 1M tokens). The repository
    does not state the 60M token budget; we **assume** the same 1B tokens, so the cost is
    ``6 * params * 1000 * 1e6`` FLOPs for both sizes (in PFLOP). ``seed`` is ignored.
    """
    labels, mixtures, loss_domains, curves = _regmix_table()
    return TableProblem(
        name="regmix-60m",
        domains=REGMIX_DOMAINS,
        loss_domains=loss_domains,
        model_sizes=list(_REGMIX_SIZES.values()),
        steps=(_REGMIX_STEP, _REGMIX_STEP),
        checkpoints=1,
        candidates=[dict(zip(REGMIX_DOMAINS, w, strict=True)) for w in mixtures],
        curves={_REGMIX_SIZES[s]: c for s, c in curves.items()},
        tokens_per_step=_REGMIX_TOKENS_PER_STEP,
        candidate_labels=labels,
    )


def mixinglaws_problem(setting: str) -> TableProblem:
    """A Data Mixing Laws pool: ``setting`` is ``"5mix"`` or ``"redpajama"`` (any case).

    Source: ``yegcjs/mixinglaws`` (no license file found), ``data/5Mix`` and
    ``data/RedPajama``. The candidates are the mixtures measured with all 22 Pile validation
    domains at step 30000 at each of 70M, 160M, 305M and 410M (26 for 5Mix, 20 for
    RedPajama; the authors' optimized runs, ids > 900, are not among them). Model sizes are
    the source's parameter counts; a step is 4096 x 256 tokens. ``evaluate`` returns the
    losses of the 22 Pile validation domains at every table step up to ``steps`` where all 22
    were measured; the objective is their uniform mean at 410M, step 30000. ``seed`` is
    ignored (single measurements).

    * ``5mix``: coordinates [academic, prose, dialogue, symbolic, internet], groups of Pile
      domains (``mix_5_domains.ipynb``); steps (10000, 30000): the table starts at 3000 for
      70M, but 410M starts at step 9000 and some 160M runs at 10000.
    * ``redpajama``: 7 RedPajama sources named ``rp0``..``rp6``. **The authors do not state
      which source each coordinate is**; correlations suggest rp2 ~ GitHub, rp3 ~ ArXiv,
      rp4 ~ Books, rp5 ~ StackExchange (our inference only). Steps (10000, 30000).

    Raises:
        ValueError: an unknown setting.
    """
    key = setting.lower()
    if key not in _MIXINGLAWS:
        raise ValueError(f"unknown mixinglaws setting {setting!r}; known: {sorted(_MIXINGLAWS)}")
    name, file, coords, steps = _MIXINGLAWS[key]
    labels, loss_domains, curves = _mixinglaws_table(file)
    candidates = []
    for label in labels:
        w = _normalised([float(v) for v in label.split("-")], label)
        if len(w) != len(coords):
            raise ValueError(f"{file}: mixture {label} has {len(w)} weights, not {len(coords)}")
        candidates.append(dict(zip(coords, w, strict=True)))
    return TableProblem(
        name=name,
        domains=coords,
        loss_domains=loss_domains,
        model_sizes=list(_MIXINGLAWS_SIZES.values()),
        steps=steps,
        checkpoints=8,
        candidates=candidates,
        curves={_MIXINGLAWS_SIZES[s]: c for s, c in curves.items()},
        tokens_per_step=_MIXINGLAWS_TOKENS_PER_STEP,
        candidate_labels=labels,
    )


def table_problems() -> dict[str, Problem]:
    """All table problems, keyed by name."""
    problems = [regmix_problem(), mixinglaws_problem("5mix"), mixinglaws_problem("redpajama")]
    return {p.name: p for p in problems}
