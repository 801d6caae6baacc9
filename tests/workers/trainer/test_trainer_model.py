"""The GPT module and the size ladder."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from workers.trainer.model import GPT, PRESETS, GPTConfig, count_params, preset_for_size


def test_forward_shapes_and_initial_loss() -> None:
    config = replace(PRESETS["tiny"], vocab_size=257, block_size=32)
    model = GPT(config)
    idx = torch.randint(0, 257, (3, 32))
    logits, loss = model(idx)
    assert logits.shape == (3, 32, 257) and loss is None
    logits, loss = model(idx[:, :16], idx[:, 1:17])  # shorter than block_size is fine
    assert logits.shape == (3, 16, 257)
    # Small-init logits are near uniform: the loss starts near log(vocab).
    assert abs(loss.item() - math.log(257)) < 0.5
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize("name", ["tiny", "mini"])
@pytest.mark.parametrize("bias", [False, True])
def test_count_params_matches_the_module(name: str, bias: bool) -> None:
    config = replace(PRESETS[name], bias=bias, vocab_size=300, block_size=64)
    model = GPT(config)
    assert model.num_params() == count_params(config)
    assert model.num_params(non_embedding=False) == count_params(config, non_embedding=False)
    assert count_params(config, non_embedding=False) - count_params(config) == \
        (300 + 64) * config.n_embd


def test_ladder_spans_tiny_to_a_billion() -> None:
    counts = [count_params(c) for c in PRESETS.values()]
    assert counts == sorted(counts)
    assert counts[0] < 0.5e6 and 1e6 < count_params(PRESETS["mini"]) < 3e6
    assert 1e9 < counts[-1] < 1.5e9
    assert PRESETS["125m"] == GPTConfig(n_layer=12, n_head=12, n_embd=768)  # GPT-3 Small


def test_preset_for_size_is_monotone_and_hits_each_preset() -> None:
    sizes = [10 ** (3 + i / 4) for i in range(41)]  # 1e3 .. 1e13, geometric
    order = list(PRESETS)
    picked = [order.index(preset_for_size(s)[0]) for s in sizes]
    assert picked == sorted(picked)
    assert set(picked) == set(range(len(order)))
    for name, config in PRESETS.items():
        assert preset_for_size(count_params(config))[0] == name
    assert preset_for_size(20e6)[0] == "20m" and preset_for_size(60e6)[0] == "60m"
    with pytest.raises(ValueError):
        preset_for_size(0)
