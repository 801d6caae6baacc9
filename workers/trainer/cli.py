"""``mfms data``: make the token shards the torch backend trains on.

``mfms_cli.main`` composes it with :func:`add_data_command`;
``python -m workers.trainer.cli`` runs it alone.
"""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["add_data_command", "main"]


def _summary(meta: dict) -> str:
    return (f"{meta['domain']}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val "
            f"tokens, {meta['documents']:,} documents, vocab {meta['vocab_size']}")


def _cmd_prepare(args: argparse.Namespace) -> int:
    from workers.trainer.data import prepare_domain

    try:
        meta = prepare_domain(args.domain, args.paths, args.out, args.tokenizer,
                              val_fraction=args.val_fraction,
                              min_val_tokens=args.min_val_tokens, text_field=args.text_field)
    except (ValueError, OSError, ImportError) as exc:
        print(f"mfms data prepare: {exc}", file=sys.stderr)
        return 1
    print(_summary(meta))
    return 0


def _cmd_example(args: argparse.Namespace) -> int:
    from workers.trainer.data import build_example_corpus

    try:
        metas = build_example_corpus(args.out, args.mb, args.tokenizer)
    except (ValueError, RuntimeError, OSError, ImportError) as exc:
        print(f"mfms data example: {exc}", file=sys.stderr)
        return 1
    for meta in metas.values():
        print(_summary(meta))
    print(f"domains for a study: {', '.join(metas)}  (data dir: {args.out})")
    return 0


def add_data_command(sub: argparse._SubParsersAction) -> None:
    """Register ``data prepare`` and ``data example`` on a subcommand parser."""
    d = sub.add_parser("data", help="prepare token shards for `mfms worker --backend torch`")
    dsub = d.add_subparsers(dest="data_command", required=True)

    p = dsub.add_parser("prepare", help="tokenise text files into one domain's shards")
    p.add_argument("--domain", required=True, help="the name the study uses for this domain")
    p.add_argument("--out", required=True, help="data directory (DIR/<domain>/ is written)")
    p.add_argument("--tokenizer", default=None,
                   help="Hugging Face tokenizer.json (default: UTF-8 bytes, vocab 257)")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--min-val-tokens", type=int, default=2**17,
                   help="hold out at least this many tokens (at most half the domain)")
    p.add_argument("--text-field", default="text", help=".jsonl/.parquet text field")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help=".txt, .jsonl, .parquet files (.gz too) or folders of them")
    p.set_defaults(func=_cmd_prepare)

    e = dsub.add_parser("example", help="a small real corpus from this machine's files "
                        "(Python stdlib, C headers, Debian docs, man pages, prose)")
    e.add_argument("--out", required=True, help="data directory")
    e.add_argument("--mb", type=float, default=2.0, help="MiB of text per domain")
    e.add_argument("--tokenizer", default=None, help="Hugging Face tokenizer.json")
    e.set_defaults(func=_cmd_example)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mfms-data")
    add_data_command(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
