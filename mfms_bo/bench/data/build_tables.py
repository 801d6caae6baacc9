"""Rebuild the compact run tables read by :mod:`mfms_bo.bench.problems.tables`.

The shared data folder (``../shared/data`` from the repository root) holds the published loss
tables of RegMix and of Data Mixing Laws (see its README). The pool-based benchmark problems
need only a small part of them, so this script keeps that part and writes it as compact CSVs
next to itself (or into ``--out``):

* ``regmix_test_mixtures.csv``: the 256 RegMix test mixtures, ``index`` + 17 training-domain
  weights (short names, ``train_the_pile_`` stripped), values copied unchanged (3 decimals).
* ``regmix_test_losses.csv``: ``model_size`` (``1M``/``60M``), ``index`` + the 13 validation
  losses (short names, ``metric/the_pile_`` and ``_val_loss`` stripped), rounded to 6 decimals.
* ``mixinglaws_5mix.csv`` and ``mixinglaws_redpajama.csv``: one row per
  ``(model_size, mixture, step)`` with one column per Pile validation domain (22), rounded to 6
  decimals; an empty cell where the source has no loss. Only the candidate mixtures (present
  with all 22 domains at step 30000 at each of 70M, 160M, 305M and 410M), only those four
  sizes and only steps <= 30000 are kept.

Usage: ``python mfms_bo/bench/data/build_tables.py ../shared/data [--out DIR]``.
Only the standard library is used.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

REGMIX_SIZES = ("1M", "60M")
MIXINGLAWS_SIZES = ("70M", "160M", "305M", "410M")
MIXINGLAWS_MAX_STEP = 30000
MIXINGLAWS_SETTINGS = {"5Mix": "mixinglaws_5mix.csv", "RedPajama": "mixinglaws_redpajama.csv"}
N_VALID_DOMAINS = 22
DECIMALS = 6


def _read(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    print(f"wrote {path} ({len(rows)} rows, {path.stat().st_size} bytes)")


def _round(value: str) -> str:
    """A loss string rounded to ``DECIMALS`` decimals, trailing zeros dropped."""
    text = f"{float(value):.{DECIMALS}f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def build_regmix(src: Path, out: Path) -> None:
    """The 256 test mixtures (trained at 1M and 60M) and their 13 validation losses."""
    mix = _read(src / "test_mixture_1m.csv")
    if (src / "test_mixture_1m.csv").read_bytes() != (src / "test_mixture_60m.csv").read_bytes():
        raise SystemExit("regmix: test_mixture_1m.csv and test_mixture_60m.csv differ")
    prefix = "train_the_pile_"
    if mix[0][0] != "index" or not all(c.startswith(prefix) for c in mix[0][1:]):
        raise SystemExit(f"regmix: unexpected mixture header {mix[0]}")
    header = ["index"] + [c[len(prefix):] for c in mix[0][1:]]
    _write(out / "regmix_test_mixtures.csv", header, mix[1:])
    index = [r[0] for r in mix[1:]]

    loss_rows: list[list[str]] = []
    loss_header: list[str] | None = None
    for size in REGMIX_SIZES:
        table = _read(src / f"test_pile_loss_{size.lower()}.csv")
        cols = table[0][1:]
        names = [c.removeprefix("metric/the_pile_").removesuffix("_val_loss") for c in cols]
        if loss_header is None:
            loss_header = ["model_size", "index", *names]
        elif loss_header[2:] != names:
            raise SystemExit(f"regmix: loss columns of {size} differ from 1M")
        if [r[0] for r in table[1:]] != index:
            raise SystemExit(f"regmix: loss rows of {size} are not aligned with the mixtures")
        loss_rows += [[size, r[0], *(_round(v) for v in r[1:])] for r in table[1:]]
    assert loss_header is not None
    _write(out / "regmix_test_losses.csv", loss_header, loss_rows)


def build_mixinglaws(src: Path, setting: str, out: Path) -> None:
    """Candidate mixtures of one setting, sizes 70M-410M, steps <= 30000, wide format."""
    table: dict[tuple[str, str, int], dict[str, str]] = defaultdict(dict)
    domains: set[str] = set()
    with (src / f"{setting}.csv").open(newline="") as f:
        for r in csv.DictReader(f):
            step = int(r["step"])
            if r["model_size"] not in MIXINGLAWS_SIZES or step > MIXINGLAWS_MAX_STEP:
                continue
            domains.add(r["valid_domain"])
            table[(r["model_size"], r["mixture"], step)][r["valid_domain"]] = r["loss"]
    cols = sorted(domains)
    if len(cols) != N_VALID_DOMAINS:
        raise SystemExit(f"{setting}: expected {N_VALID_DOMAINS} domains, got {len(cols)}")
    full = [
        {m for (s, m, z), v in table.items() if s == size and z == MIXINGLAWS_MAX_STEP
         and len(v) == N_VALID_DOMAINS}
        for size in MIXINGLAWS_SIZES
    ]
    candidates = set.intersection(*full)
    dropped = sorted({m for (_, m, _) in table} - candidates)
    print(f"{setting}: {len(candidates)} candidates; dropped {len(dropped)} other mixtures")
    order = {s: i for i, s in enumerate(MIXINGLAWS_SIZES)}
    keys = sorted((k for k in table if k[1] in candidates), key=lambda k: (order[k[0]], k[1], k[2]))
    rows = []
    for s, m, z in keys:
        losses = table[(s, m, z)]
        rows.append([s, m, str(z), *(_round(losses[d]) if d in losses else "" for d in cols)])
    _write(out / MIXINGLAWS_SETTINGS[setting], ["model_size", "mixture", "step", *cols], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shared_data", type=Path, help="the shared data folder (../shared/data)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="output folder (default: this script's folder)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    build_regmix(args.shared_data / "regmix", args.out)
    for setting in MIXINGLAWS_SETTINGS:
        build_mixinglaws(args.shared_data / "mixinglaws", setting, args.out)


if __name__ == "__main__":
    main()
