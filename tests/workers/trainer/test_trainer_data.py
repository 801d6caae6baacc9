"""Text files -> token shards, the example corpus, and the ``data`` command."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from workers.trainer.cli import main as data_main
from workers.trainer.data import (
    BYTE_EOT,
    ByteTokenizer,
    available_domains,
    load_meta,
    load_split,
    prepare_domain,
)

DOCS = [f"document {i:02d}: " + "héllo wörld " * 7 + "\n" for i in range(12)]


def _corpus(root: Path) -> Path:
    src = root / "src"
    (src / "sub").mkdir(parents=True)
    for i, doc in enumerate(DOCS[:4]):
        (src / f"{i}.txt").write_text(doc, encoding="utf-8")
    with open(src / "sub" / "rows.jsonl", "w", encoding="utf-8") as f:
        for doc in DOCS[4:10]:
            f.write(json.dumps({"text": doc, "id": 1}) + "\n\n")  # blank lines are skipped
    with gzip.open(src / "sub" / "more.txt.gz", "wt", encoding="utf-8") as f:
        f.write(DOCS[10])
    (src / "sub" / "table.csv").write_text("not,text\n")  # skipped inside a folder
    return src


def test_prepare_round_trips_documents(tmp_path: Path) -> None:
    src = _corpus(tmp_path)
    extra = tmp_path / "extra.txt"
    extra.write_text(DOCS[11], encoding="utf-8")
    doc_len = len(DOCS[0].encode()) + 1  # every document is the same size, + end token
    meta = prepare_domain("web", [src, extra], tmp_path / "data", val_tokens=2 * doc_len)
    assert meta["vocab_size"] == 257 and meta["dtype"] == "uint16"
    assert meta["documents"] == 12 and meta["files"] == 7
    assert meta["val_tokens"] == 2 * doc_len and meta["train_tokens"] == 10 * doc_len
    d = available_domains(tmp_path / "data")["web"]
    assert load_meta(d) == meta
    train, val = load_split(d, "train"), load_split(d, "val")
    assert len(train) == meta["train_tokens"] and int(val[-1]) == BYTE_EOT
    docs = ByteTokenizer.decode_documents(val) + ByteTokenizer.decode_documents(train)
    assert sorted(docs) == sorted(DOCS)
    # Deterministic: the same inputs make the same shards.
    prepare_domain("web", [src, extra], tmp_path / "again", val_tokens=2 * doc_len)
    again = available_domains(tmp_path / "again")["web"]
    assert (load_split(again, "val") == val).all()


def test_validation_split_floor_and_cap(tmp_path: Path) -> None:
    src = _corpus(tmp_path)
    meta = prepare_domain("a", [src], tmp_path / "d", val_fraction=0.0, min_val_tokens=100)
    assert meta["val_tokens"] == 100  # the floor, cutting one document
    meta = prepare_domain("a", [src], tmp_path / "d", min_val_tokens=10**9)
    total = meta["train_tokens"] + meta["val_tokens"]
    assert meta["val_tokens"] == total // 2  # never more than half


def test_folder_without_text_names_the_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        prepare_domain("a", [empty], tmp_path / "d")
    (empty / "notes.csv").write_text("x")
    with pytest.raises(ValueError, match=r"empty has no text files"):
        prepare_domain("a", [empty], tmp_path / "d")
    blank = tmp_path / "blank"
    blank.mkdir()
    (blank / "a.txt").write_text("  \n")
    with pytest.raises(ValueError, match="no text"):
        prepare_domain("a", [blank], tmp_path / "d")
    assert available_domains(tmp_path / "d") == {}  # nothing half-written


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("a")
    with pytest.raises(ValueError, match="unsupported file type"):
        prepare_domain("a", [csv], tmp_path / "d")
    with pytest.raises(FileNotFoundError):
        prepare_domain("a", [tmp_path / "missing.txt"], tmp_path / "d")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text field"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: no string field 'text'"):
        prepare_domain("a", [bad], tmp_path / "d")
    with pytest.raises(ValueError, match="folder name"):
        prepare_domain("../up", [csv], tmp_path / "d")


def test_optional_dependencies_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    pq = tmp_path / "t.parquet"
    pq.write_bytes(b"PAR1")
    with pytest.raises(ImportError, match="pip install pyarrow"):
        prepare_domain("a", [pq], tmp_path / "d")
    txt = tmp_path / "t.txt"
    txt.write_text("hello")
    with pytest.raises(ImportError, match="pip install tokenizers"):
        prepare_domain("a", [txt], tmp_path / "d", tokenizer=tmp_path / "tok.json")


def test_hugging_face_tokenizer(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {"[UNK]": 0, "</s>": 1, "hello": 2, "world": 3}
    tok = tokenizers.Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.save(str(tmp_path / "tok.json"))
    (tmp_path / "a.txt").write_text("hello world hello")
    (tmp_path / "b.txt").write_text("world other")
    meta = prepare_domain("a", [tmp_path / "a.txt", tmp_path / "b.txt"], tmp_path / "d",
                          tokenizer=tmp_path / "tok.json", val_tokens=3)
    assert meta["vocab_size"] == 4 and meta["eot_token"] == 1 and meta["dtype"] == "uint8"
    assert meta["tokenizer"]["kind"] == "huggingface"
    d = tmp_path / "d" / "a"
    tokens = np.concatenate([load_split(d, "val"), load_split(d, "train")])
    assert sorted(tokens.tolist()) == sorted([2, 3, 2, 1, 3, 0, 1])


def test_example_corpus(example_dir: Path) -> None:
    domains = available_domains(example_dir)
    assert len(domains) >= 3
    for d in domains.values():
        meta = load_meta(d)
        assert meta["train_tokens"] > 50_000 and meta["val_tokens"] >= 1024
        assert meta["documents"] >= 2
    assert (example_dir / "_sources").is_dir()


def test_data_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _corpus(tmp_path)
    assert data_main(["data", "prepare", "--domain", "web", "--out", str(tmp_path / "d"),
                      "--min-val-tokens", "50", str(src)]) == 0
    assert "web:" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert data_main(["data", "prepare", "--domain", "x", "--out", str(tmp_path / "d"),
                      str(tmp_path / "empty")]) == 1
    assert "empty has no text files" in capsys.readouterr().err
