"""The README's torch study (``examples/torch_study.json``) is a study the server accepts,
over the domains ``mfms data example`` writes, with one trainer preset per ladder rung."""

from __future__ import annotations

import json
from pathlib import Path

from mfms_client.client import MFMSClient
from workers.trainer.data import available_domains
from workers.trainer.model import preset_for_size

STUDY = Path(__file__).resolve().parents[3] / "examples" / "torch_study.json"


def test_example_torch_study_is_accepted_and_maps_to_presets(api: MFMSClient,
                                                             example_dir: Path) -> None:
    body = json.loads(STUDY.read_text())
    study = api.create_study(body)
    assert study.state == "running"
    assert set(body["domains"]) == set(available_domains(example_dir))
    presets = [preset_for_size(m)[0] for m in body["model_sizes"]]
    assert presets == ["tiny", "mini", "6m"]
    assert preset_for_size(body["target"]["model_size"])[0] == "20m"
