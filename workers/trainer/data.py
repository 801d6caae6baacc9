"""Token shards per data domain: the on-disk format the trainer reads, and how to make it.

A data directory holds one folder per domain, named exactly as the study names the domain::

    DATA/<domain>/train.bin   tokens, a flat numpy array (dtype in meta.json)
    DATA/<domain>/val.bin     held-out tokens: validation losses are measured here
    DATA/<domain>/meta.json   tokenizer, vocab size, dtype, token and document counts

Flat token arrays read through ``np.memmap`` (as nanoGPT does) cost nothing to open, never
load a domain into memory, and make "window k of a domain" a slice.

Documents are concatenated, each followed by an end-of-document token (when the tokenizer
has one), so a model learns where documents stop and a training window that spans two
documents says so. The default tokenizer is byte-level: token = UTF-8 byte (0-255) and 256
marks the end of a document, vocab 257, stored as uint16 (257 does not fit a byte). It
needs no download and no vocabulary file, and its losses are in nats per byte, comparable
across any text. A Hugging Face ``tokenizers`` JSON file can be used instead.

The validation split is made of whole documents drawn at random (seeded) from the domain,
the last one cut to size, so it is spread over the corpus rather than being its
alphabetically last files, and no document is in both splits except that one cut.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import random
import sysconfig
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BYTE_EOT", "BYTE_VOCAB_SIZE", "TEXT_SUFFIXES", "ByteTokenizer", "HFTokenizer",
    "load_tokenizer", "prepare_domain", "available_domains", "load_meta", "load_split",
    "build_example_corpus",
]

log = logging.getLogger("mfms.trainer.data")

BYTE_EOT = 256
BYTE_VOCAB_SIZE = 257
TEXT_SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz", ".parquet")
FORMAT_VERSION = 1

# Read and tokenised this many documents at a time: large enough for the HF tokenizer's
# batch parallelism, small enough to keep memory flat on big corpora.
_DOCS_PER_CHUNK = 1024


class ByteTokenizer:
    """UTF-8 bytes plus an end-of-document token (see the module docstring)."""

    name = "bytes"
    vocab_size = BYTE_VOCAB_SIZE
    eot: int | None = BYTE_EOT

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = []
        for t in texts:
            b = np.frombuffer(t.encode("utf-8"), dtype=np.uint8)
            out.append(np.append(b.astype(np.int64), BYTE_EOT))
        return out

    @staticmethod
    def decode_documents(tokens: np.ndarray | Sequence[int]) -> list[str]:
        """The documents in a run of tokens (split at end-of-document tokens; a trailing
        unfinished document is included): for inspecting shards and for tests."""
        arr = np.asarray(tokens, dtype=np.int64)
        cuts = np.flatnonzero(arr == BYTE_EOT)
        parts = np.split(arr, cuts)
        docs = [parts[0]] + [p[1:] for p in parts[1:]]
        if len(docs[-1]) == 0:  # the run ended with an end-of-document token
            docs.pop()
        return [d.astype(np.uint8).tobytes().decode("utf-8", errors="replace") for d in docs]

    def describe(self) -> dict[str, Any]:
        return {"kind": "bytes"}


class HFTokenizer:
    """A Hugging Face ``tokenizers`` JSON file (``tokenizer.json``)."""

    # Conventional end-of-document names, most common first: GPT-2/Pythia, Llama/T5,
    # a few others. The first one the vocabulary has is used.
    _EOT_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eos|>", "[SEP]")

    def __init__(self, path: str | Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ImportError(
                f"tokenizer {path}: the Hugging Face 'tokenizers' package is not installed "
                "(pip install tokenizers), or leave the tokenizer out for bytes") from exc
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise FileNotFoundError(f"tokenizer file {self.path} does not exist")
        self._tok = Tokenizer.from_file(str(self.path))
        self.name = self.path.name
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
        ids = (self._tok.token_to_id(n) for n in self._EOT_NAMES)
        self.eot = next((i for i in ids if i is not None), None)
        if self.eot is None:
            log.warning("tokenizer %s has none of %s: documents will not be separated",
                        self.path, ", ".join(self._EOT_NAMES))

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        tail = [] if self.eot is None else [self.eot]
        return [np.asarray(e.ids + tail, dtype=np.int64) for e in encs]

    def describe(self) -> dict[str, Any]:
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        return {"kind": "huggingface", "file": str(self.path), "sha256": digest}


def load_tokenizer(path: str | Path | None = None) -> ByteTokenizer | HFTokenizer:
    """Bytes when ``path`` is None, else the Hugging Face tokenizer JSON at ``path``."""
    return ByteTokenizer() if path is None else HFTokenizer(path)


def _dtype_for(vocab_size: int) -> np.dtype:
    """Smallest unsigned integer that holds every token id: shards are read at the speed of
    the disk, so halving them halves the time to read them."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    raise ValueError(f"vocab size {vocab_size} does not fit uint32")


# -- reading text ------------------------------------------------------------------------


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in TEXT_SUFFIXES if name.endswith(s)), None)


def _text_files(paths: Sequence[str | Path]) -> list[Path]:
    """Files to read, in a deterministic order (sorted within each folder) so that the same
    inputs always make the same shards."""
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*")
                           if f.is_file() and not f.name.startswith("."))
            usable = [f for f in found if _suffix(f)]
            if not usable:
                raise ValueError(
                    f"folder {p} has no text files ({', '.join(TEXT_SUFFIXES)}): "
                    f"{len(found)} other file(s) found")
            if len(usable) < len(found):
                log.info("%s: skipped %d file(s) that are not %s", p,
                         len(found) - len(usable), "/".join(TEXT_SUFFIXES))
            files.extend(usable)
        elif p.is_file():
            if not _suffix(p):
                raise ValueError(f"{p}: unsupported file type; expected one of "
                                 f"{', '.join(TEXT_SUFFIXES)}")
            files.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return files


def _open_text(path: Path) -> io.TextIOBase:
    # errors="replace": one bad byte in a scraped file should not sink a whole domain.
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _documents(path: Path, text_field: str) -> Iterator[str]:
    """The documents of one file: a .txt file is one document (read whole), a .jsonl line
    or a parquet row is one."""
    suffix = _suffix(path)
    if suffix in (".txt", ".txt.gz"):
        with _open_text(path) as f:
            yield f.read()
    elif suffix in (".jsonl", ".jsonl.gz"):
        with _open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not JSON ({exc.msg})") from exc
                text = row.get(text_field) if isinstance(row, dict) else None
                if not isinstance(text, str):
                    raise ValueError(f"{path}:{lineno}: no string field {text_field!r}")
                yield text
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ImportError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)"
                              ) from exc
        pf = pq.ParquetFile(path)
        if text_field not in pf.schema_arrow.names:
            raise ValueError(f"{path}: no column {text_field!r}; columns are "
                             f"{pf.schema_arrow.names}")
        for batch in pf.iter_batches(columns=[text_field]):
            for text in batch.column(0).to_pylist():
                if text is not None:
                    yield text


# -- writing shards ----------------------------------------------------------------------


def _check_domain_name(name: str) -> None:
    # The name is a folder name: it must stay one path component inside out_dir.
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"domain name {name!r} cannot be a folder name")


def prepare_domain(
    name: str,
    paths: Sequence[str | Path],
    out_dir: str | Path,
    tokenizer: str | Path | None = None,
    *,
    val_fraction: float = 0.05,
    min_val_tokens: int = 2**17,
    val_tokens: int | None = None,
    text_field: str = "text",
    seed: int = 0,
) -> dict[str, Any]:
    """Tokenise the text files (or folders of them) in ``paths`` into ``out_dir/name/``.

    The validation split holds ``val_tokens`` tokens when given, else
    ``max(min_val_tokens, val_fraction * total)``: a floor, because a small domain's
    validation loss is only as good as the number of tokens it is measured on, and the
    trainer evaluates a fixed number of them (its ``eval_tokens``). Either way at most half
    the domain is held out. Returns the ``meta.json`` contents.
    """
    _check_domain_name(name)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    tok = load_tokenizer(tokenizer)
    files = _text_files(paths)
    dtype = _dtype_for(tok.vocab_size)
    dest = Path(out_dir) / name
    dest.mkdir(parents=True, exist_ok=True)

    # Pass 1: every document's tokens, end to end, into one temporary file.
    all_path = dest / "all.bin.tmp"
    doc_ends: list[int] = []
    total = 0
    try:
        with open(all_path, "wb") as out:
            def flush(batch: list[str]) -> None:
                nonlocal total
                for ids in tok.encode(batch):
                    out.write(ids.astype(dtype).tobytes())
                    total += len(ids)
                    doc_ends.append(total)
                batch.clear()

            batch: list[str] = []
            for f in files:
                for text in _documents(f, text_field):
                    if text.strip():
                        batch.append(text)
                        if len(batch) >= _DOCS_PER_CHUNK:
                            flush(batch)
            flush(batch)
        if total < 2:
            raise ValueError(f"domain {name!r}: no text in {', '.join(map(str, paths))}")
        n_val = _split(name, np.memmap(all_path, dtype=dtype, mode="r"),
                       np.asarray(doc_ends, dtype=np.int64), dest, val_fraction,
                       min_val_tokens, val_tokens, seed)
    finally:
        all_path.unlink(missing_ok=True)
    # Swap the new shards in only now, so a failure above leaves an earlier version of the
    # domain intact; without its meta.json in between, a half-swapped domain is not one.
    (dest / "meta.json").unlink(missing_ok=True)
    for split in ("train", "val"):
        os.replace(dest / f"{split}.bin.tmp", dest / f"{split}.bin")

    meta = {
        "format_version": FORMAT_VERSION,
        "domain": name,
        "tokenizer": tok.describe(),
        "vocab_size": tok.vocab_size,
        "eot_token": tok.eot,
        "dtype": dtype.name,
        "train_tokens": total - n_val,
        "val_tokens": n_val,
        "documents": len(doc_ends),
        "files": len(files),
    }
    # meta.json last: its presence is what marks a domain as complete.
    tmp = dest / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, dest / "meta.json")
    log.info("domain %s: %d train + %d val tokens from %d documents in %d file(s)", name,
             total - n_val, n_val, len(doc_ends), len(files))
    return meta


def _split(name: str, tokens: np.ndarray, doc_ends: np.ndarray, dest: Path,
           val_fraction: float, min_val_tokens: int, val_tokens: int | None, seed: int) -> int:
    """Write val.bin.tmp (random whole documents, the last cut to size) and train.bin.tmp
    (the rest, in corpus order); returns the number of validation tokens."""
    total = len(tokens)
    want = val_tokens if val_tokens is not None else max(min_val_tokens,
                                                         round(val_fraction * total))
    n_val = max(1, min(int(want), total // 2))
    if n_val < want:
        log.warning("domain %s: only %d tokens; holding out %d for validation, not %d",
                    name, total, n_val, want)
    starts = np.concatenate([[0], doc_ends[:-1]])
    # Seeded by the domain's name too, so domains do not all pick "document 17".
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    spans: list[tuple[int, int]] = []
    need = n_val
    for i in rng.permutation(len(doc_ends)):
        take = min(int(doc_ends[i] - starts[i]), need)
        spans.append((int(starts[i]), int(starts[i]) + take))
        need -= take
        if need == 0:
            break
    spans.sort()
    with open(dest / "val.bin.tmp", "wb") as val, open(dest / "train.bin.tmp", "wb") as train:
        pos = 0
        for s, e in spans:
            train.write(tokens[pos:s].tobytes())
            val.write(tokens[s:e].tobytes())
            pos = e
        train.write(tokens[pos:].tobytes())
    return n_val


# -- reading shards ----------------------------------------------------------------------


def available_domains(data_dir: str | Path) -> dict[str, Path]:
    """Domain name -> folder for every complete domain (one with a meta.json) in
    ``data_dir``. Looking names up here, never joining them onto a path, keeps a domain
    name sent by the server from pointing outside the data directory."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory {root} does not exist")
    return {d.name: d for d in sorted(root.iterdir())
            if d.is_dir() and (d / "meta.json").is_file()}


def load_meta(domain_dir: str | Path) -> dict[str, Any]:
    meta = json.loads((Path(domain_dir) / "meta.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{domain_dir}: shard format {meta.get('format_version')} is not "
                         f"{FORMAT_VERSION}; prepare the domain again")
    return meta


def load_split(domain_dir: str | Path, split: str) -> np.ndarray:
    """The ``train`` or ``val`` tokens of a domain as a read-only memmap (empty array when
    the split is empty: np.memmap refuses zero-length files)."""
    meta = load_meta(domain_dir)
    path = Path(domain_dir) / f"{split}.bin"
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=meta["dtype"])
    return np.memmap(path, dtype=meta["dtype"], mode="r")


# -- the example corpus ------------------------------------------------------------------

# One file contributes at most this much, so a domain is many documents, not one huge one.
_MAX_DOC_BYTES = 64 * 1024
# A source with less text than this is treated as missing: too little for a validation split
# and a few training windows.
_MIN_DOMAIN_BYTES = 16 * 1024


def _walk(root: Path, keep: Callable[[str], bool], prune: tuple[str, ...] = ()
          ) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in prune]
        found.extend(Path(dirpath, f) for f in filenames if keep(f))
    return sorted(p for p in found if not p.is_symlink())


def _python_sources() -> tuple[list[Path], str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = _walk(stdlib, lambda f: f.endswith(".py"),
                  prune=("site-packages", "dist-packages", "__pycache__"))
    return files, f"no .py files under the Python stdlib {stdlib}"


def _c_header_sources() -> tuple[list[Path], str]:
    return (_walk(Path("/usr/include"), lambda f: f.endswith(".h")),
            "no .h files under /usr/include (install libc6-dev)")


def _doc_sources() -> tuple[list[Path], str]:
    def keep(f: str) -> bool:
        base = f[:-3] if f.endswith(".gz") else f
        return base == "copyright" or base.lower().startswith(("changelog", "news", "readme"))

    return (_walk(Path("/usr/share/doc"), keep),
            "no copyright/changelog/NEWS/README files under /usr/share/doc")


def _man_sources() -> tuple[list[Path], str]:
    root = Path("/usr/share/man")
    files = [p for p in _walk(root, lambda f: True)
             if p.parent.name.startswith("man") and p.parent.parent == root]
    return files, "no man pages under /usr/share/man (minimal images exclude them)"


def _prose_texts() -> tuple[list[tuple[str, str]], str]:
    """English prose: the Python reference documentation that ships inside the stdlib
    (``pydoc_data``, what ``help('if')`` prints) and the common licence texts."""
    texts: list[tuple[str, str]] = []
    try:
        from pydoc_data.topics import topics
        texts += [(f"pydoc_data:{k}", topics[k]) for k in sorted(topics)]
    except ImportError:
        pass
    for p in _walk(Path("/usr/share/common-licenses"), lambda f: True):
        texts.append((str(p), p.read_text(encoding="utf-8", errors="replace")))
    return texts, "neither pydoc_data nor /usr/share/common-licenses is available"


def _read_source(path: Path) -> str | None:
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            data = f.read(_MAX_DOC_BYTES + 1)
    except (OSError, EOFError):  # unreadable, or a truncated .gz
        return None
    if b"\0" in data:  # binary
        return None
    return data.decode("utf-8", errors="replace")


def _cut(text: str, limit: int) -> str:
    """At most ``limit`` UTF-8 bytes of ``text``, ending at a line break when one is near."""
    b = text.encode("utf-8")
    if len(b) <= limit:
        return text
    head = b[:limit]
    nl = head.rfind(b"\n")
    if nl > limit // 2:
        head = head[: nl + 1]
    return head.decode("utf-8", errors="ignore")


def build_example_corpus(
    out_dir: str | Path,
    mb_per_domain: float = 2.0,
    tokenizer: str | Path | None = None,
    *,
    min_val_tokens: int | None = None,
) -> dict[str, dict[str, Any]]:
    """A small real multi-domain corpus from files every Debian/Python machine has, prepared
    into ``out_dir`` (the raw text stays in ``out_dir/_sources/`` for inspection).

    Domains: ``python`` (stdlib source), ``c_headers`` (/usr/include), ``docs`` (Debian
    package copyright files, changelogs, READMEs), ``prose`` (Python reference docs and
    licence texts), ``man`` (troff man pages). Their styles differ enough that mixtures
    matter, which is what a demo of mixture search needs. Files are taken in a seeded
    shuffle of the sorted file list (deterministic, and not only the alphabetically first
    package) until ``mb_per_domain`` MiB of UTF-8 text; one file gives at most 64 KiB.
    A domain without sources is skipped; fewer than three domains is an error that says
    what was missing. ``min_val_tokens`` defaults to 5% of a domain's budget. Returns each
    domain's meta.
    """
    budget = int(mb_per_domain * 2**20)
    if budget < _MIN_DOMAIN_BYTES:
        raise ValueError(f"mb_per_domain {mb_per_domain} is below the "
                         f"{_MIN_DOMAIN_BYTES / 2**20:.3f} MiB a domain needs")
    out = Path(out_dir)
    raw_dir = out / "_sources"
    raw_dir.mkdir(parents=True, exist_ok=True)
    sources = {"python": _python_sources, "c_headers": _c_header_sources,
               "docs": _doc_sources, "man": _man_sources}
    missing: dict[str, str] = {}
    written: dict[str, Path] = {}
    for domain, find in [*sources.items(), ("prose", None)]:
        if find is None:
            named, why = _prose_texts()
        else:
            files, why = find()
            random.Random(f"mfms-example:{domain}").shuffle(files)
            named = ((str(p), _read_source(p)) for p in files)
        path = raw_dir / f"{domain}.jsonl"
        size = _write_raw(path, named, budget)
        if size < _MIN_DOMAIN_BYTES:
            path.unlink(missing_ok=True)
            missing[domain] = why if size == 0 else f"only {size} bytes of text found"
            continue
        written[domain] = path
    if len(written) < 3:
        detail = "; ".join(f"{d}: {why}" for d, why in missing.items())
        raise RuntimeError(f"the example corpus needs at least 3 domains, found "
                           f"{sorted(written) or 'none'} ({detail})")
    for domain, why in missing.items():
        log.warning("example corpus: skipping domain %s: %s", domain, why)
    floor = min_val_tokens if min_val_tokens is not None else max(1024, budget // 20)
    return {d: prepare_domain(d, [p], out, tokenizer, min_val_tokens=floor)
            for d, p in written.items()}


def _write_raw(path: Path, named: Iterable[tuple[str, str | None]], budget: int) -> int:
    """Write (source, text) pairs as JSON lines until ``budget`` bytes of text; returns the
    bytes of text written."""
    size = 0
    with open(path, "w", encoding="utf-8") as f:
        for source, text in named:
            if not text or not text.strip():
                continue
            text = _cut(text, min(_MAX_DOC_BYTES, budget - size))
            if not text.strip():
                break
            f.write(json.dumps({"text": text, "source": source}) + "\n")
            size += len(text.encode("utf-8"))
            if size >= budget:
                break
    return size
