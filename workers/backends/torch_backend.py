"""``torch``: train each trial for real with the built-in GPT trainer (:mod:`workers.trainer`).

The data directory holds one prepared folder per domain (``mfms data prepare`` or
``mfms data example``), named as the study names its domains: the names are the contract
between the study and the data, and the backend never renames.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from mfms_bo.online import controller_from_spec
from mfms_client.schemas import TrialAssignment
from workers.backends import BackendResult, Report
from workers.trainer.data import available_domains
from workers.trainer.train import train_trial

__all__ = ["TorchBackend"]

# Set by the backend from the trial and its own arguments, so not accepted as train_kwargs.
_FROM_TRIAL = {"data_dir", "mixture", "model_size", "steps", "checkpoints", "report",
               "device", "eval_domains", "controller", "stats"}


class TorchBackend:
    name = "torch"

    def __init__(self, data_dir: str | Path, device: str | torch.device | None = None,
                 **train_kwargs: Any) -> None:
        """Checks the data directory and the options now, so that a mistake stops the
        worker at start-up instead of failing every trial it claims."""
        self.data_dir = Path(data_dir)
        domains = available_domains(self.data_dir)
        self.domains: tuple[str, ...] | None = tuple(domains)
        if not domains:
            raise ValueError(f"{self.data_dir} has no prepared domains (a folder per domain "
                             "with meta.json, train.bin, val.bin: see `mfms data prepare`)")
        allowed = set(inspect.signature(train_trial).parameters) - _FROM_TRIAL
        unknown = set(train_kwargs) - allowed
        if unknown:
            raise TypeError(f"TorchBackend: unknown option(s) {sorted(unknown)}; "
                            f"allowed: {sorted(allowed)}")
        self.device = device
        self.train_kwargs = train_kwargs

    def run(self, trial: TrialAssignment, report: Report) -> float | BackendResult:
        # Report exactly the names the server accepts for this study (``loss_domains`` is
        # the mixture's domains unless the study evaluates elsewhere); names without
        # validation data here are left out, a partial report the server allows.
        eval_domains = list(trial.loss_domains) or list(trial.mixture)
        online = getattr(trial, "online", None)
        # Online mixing: the trial's mixture is the mixer's starting point (Aioli's prior),
        # the run refines it, and the server gets the trajectory and where it ended.
        controller = (controller_from_spec(list(trial.mixture), online, dict(trial.mixture),
                                           seed=trial.trial_id) if online else None)
        cost = train_trial(self.data_dir, dict(trial.mixture), trial.model_size, trial.steps,
                           list(trial.checkpoints) or [trial.steps], report,
                           device=self.device, eval_domains=eval_domains,
                           controller=controller, **self.train_kwargs)
        if controller is None:
            return cost
        return BackendResult(cost, {"final_proportions": controller.proportions,
                                    "average_proportions": controller.average_proportions})
