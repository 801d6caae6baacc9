"""``server/study_cache.py``: one parsed config per study, bounded, never stale."""

from __future__ import annotations

from server.study_cache import StudyCache
from tests.server.conftest import study_body


def test_a_study_is_parsed_once_and_its_strategy_built_from_that() -> None:
    cache, config = StudyCache(), study_body(strategy={"name": "random"})
    entry = cache.study(1, config, seed=3)
    assert cache.study(1, dict(config), seed=3) is entry  # an equal stored config: a hit
    held = cache.strategy(1, config, 3)
    assert cache.strategy(1, config, 3) is held
    assert held.strategy.space is entry.config.space


def test_a_changed_config_or_seed_is_parsed_again() -> None:
    cache, config = StudyCache(), study_body(strategy={"name": "random"})
    entry = cache.study(1, config, seed=3)
    assert cache.study(1, config, seed=4) is not entry
    changed = cache.study(1, {**config, "checkpoints": 3}, seed=4)
    assert changed.config.space.fidelities.checkpoints == 3


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    cache, config = StudyCache(maxsize=2), study_body()
    first, second = cache.study(1, config, 0), cache.study(2, config, 0)
    assert cache.study(1, config, 0) is first  # 1 is now the most recent
    cache.study(3, config, 0)  # evicts 2
    assert cache.study(1, config, 0) is first
    assert cache.study(2, config, 0) is not second  # parsed again
