"""The worker agent: claim -> run -> report -> complete, forever (or ``--max-trials``).

* Heartbeats run in a thread every third of the lease, so a long checkpoint never loses it.
* Every measurement is posted as it happens; if the server is unreachable it is buffered and
  re-sent (measurements are idempotent on (trial, step)) before the trial completes, so a
  server blip loses nothing; a backlog of several goes in one batch request. An
  online-mixed run's ``proportions`` travel with it.
* A backend returning :class:`~workers.backends.BackendResult` completes the trial with its
  online-mixing summary as well as its cost.
* SIGTERM / SIGINT: the current trial is reported failed-retryable (the server re-queues
  it with its partial curve kept) and the agent exits.
* No work (204): wait with exponential backoff and jitter.
* A trial the backend fails (or whose measurement the server refuses, 422) is failed with
  the reason; after ``max_failures`` such trials in a row the agent backs off between
  them, and then exits with a message saying what went wrong (a worker that cannot run
  anything should not keep claiming trials; the server pauses the study too).
* It declares what it can run (domains, backend name, labels) with every ``/next-trial``
  and says which study each trial came from.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from mfms_client.client import (
    APIError,
    ConflictError,
    InvalidRequestError,
    MFMSClient,
    NotFoundError,
    ServerUnavailable,
    ServerUnreachable,
)
from mfms_client.schemas import TrialAssignment, TrialPublic
from workers.backends import Backend, BackendResult

__all__ = ["WorkerAgent", "TrialStopped", "MeasurementRefused"]

log = logging.getLogger("mfms.worker")

_TRANSIENT = (ServerUnreachable, ServerUnavailable)


class TrialStopped(Exception):
    """Raised inside a backend's ``report`` when the agent must abandon the trial."""


class MeasurementRefused(Exception):
    """The server refused a measurement as invalid (422): retrying the same one cannot
    succeed, so the trial fails with the server's reason."""


class WorkerAgent:
    def __init__(self, client: MFMSClient, backend: Backend, worker_id: str,
                 study_id: int | None = None, max_model_size: float | None = None,
                 max_trials: int | None = None, once: bool = False,
                 poll_min: float = 1.0, poll_max: float = 30.0,
                 echo: Callable[[str], None] | None = None, labels: tuple[str, ...] = (),
                 max_failures: int | None = 3) -> None:
        self.client = client
        self.backend = backend
        self.worker_id = worker_id
        self.study_id = study_id
        self.max_model_size = max_model_size
        self.max_trials = max_trials
        self.once = once
        self.poll_min, self.poll_max = poll_min, poll_max
        self.echo = echo or (lambda line: log.info("%s", line))
        self.labels = tuple(labels)
        self.max_failures = max_failures
        self.stop_event = threading.Event()
        self.trials_done = 0
        self.trials_failed = 0  # by the backend or a refused measurement
        self.failed_in_a_row = 0
        #: Why the agent gave up (``max_failures`` failures in a row); None otherwise.
        self.gave_up: str | None = None
        self._last_failure = ""
        self._studies_seen: set[int] = set()
        self._batches = True  # send a backlog in one request (False: the server cannot)

    # -- lifecycle -------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            self.echo(f"{self.worker_id}: got {signal.Signals(signum).name}; stopping after "
                      "reporting the current trial as retryable")
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> int:
        """Work until stopped, out of trials, or (``once``) out of work; returns trials done."""
        idle = self.poll_min
        while not self.stop_event.is_set():
            if self.max_trials is not None and self.trials_done >= self.max_trials:
                break
            try:
                trial = self.client.next_trial(
                    self.worker_id, self.study_id, self.max_model_size,
                    # backends without `domains` take any study
                    getattr(self.backend, "domains", None),
                    exact_domains=bool(getattr(self.backend, "exact_domains", False)),
                    backend=getattr(self.backend, "name", None), labels=self.labels)
            except _TRANSIENT as exc:
                self.echo(f"{self.worker_id}: server unavailable ({exc}); retrying")
                self._sleep(idle)
                idle = min(idle * 2, self.poll_max)
                continue
            if trial is None:
                if self.once or self._study_finished():
                    break
                self._sleep(idle)
                idle = min(idle * 2, self.poll_max)
                continue
            idle = self.poll_min
            self._announce(trial.study_id)
            failures = self.trials_failed
            self.run_trial(trial)
            if self.trials_failed == failures:  # completed, or interrupted: not a failure
                self.failed_in_a_row = 0
                continue
            self.failed_in_a_row += 1
            if self.max_failures is not None and self.failed_in_a_row >= self.max_failures:
                self.gave_up = (
                    f"{self.failed_in_a_row} trials in a row failed (last: "
                    f"{self._last_failure}); stopping so that this worker does not fail "
                    "more. Fix the backend (try its command by hand), then start the "
                    "worker again")
                self.echo(f"{self.worker_id}: {self.gave_up}")
                break
            # Back off before the next claim: a failure that is the environment's (a full
            # disk, a busy GPU) may pass, and a broken worker claims trials more slowly.
            self._sleep(min(self.poll_min * 2 ** self.failed_in_a_row, self.poll_max))
        return self.trials_done

    def _announce(self, study_id: int) -> None:
        """Say which study a worker serving any study took work from, once per study."""
        if self.study_id is not None or study_id in self._studies_seen:
            return
        self._studies_seen.add(study_id)
        try:
            name = repr(self.client.get_study(study_id).name)
        except (APIError, ServerUnreachable):
            name = "(name not readable with this token)"
        self.echo(f"{self.worker_id}: taking trials of study {study_id} {name}, which "
                  "this worker matches")

    def _study_finished(self) -> bool:
        if self.study_id is None:
            return False
        try:
            return self.client.get_study(self.study_id).state in ("completed", "stopped")
        except (APIError, ServerUnreachable):
            return False

    def _sleep(self, seconds: float) -> None:
        self.stop_event.wait(seconds * random.uniform(0.5, 1.5))

    # -- one trial -------------------------------------------------------------------------
    def run_trial(self, trial: TrialAssignment) -> bool:
        """Run, report and finish one claimed trial; True when it completed."""
        tid = trial.trial_id
        t0 = time.monotonic()
        buffer: list[tuple[int, dict[str, float], float | None, dict[str, float] | None]] = []
        lost = threading.Event()  # the server took the trial back (lease lapsed, stopped)
        beat = threading.Thread(target=self._heartbeats, args=(trial, lost), daemon=True)
        beat.start()

        def report(step: int, losses: dict[str, float], cost: float | None,
                   proportions: dict[str, float] | None = None) -> None:
            if self.stop_event.is_set() or lost.is_set():
                raise TrialStopped("worker stopping" if self.stop_event.is_set()
                                   else "the server took the trial back")
            bad = {d: v for d, v in losses.items() if not math.isfinite(float(v))}
            if bad:  # JSON cannot carry it and no retry can fix it: fail the trial now
                raise ValueError(f"the backend reported non-finite loss(es) {bad} at step "
                                 f"{step}")
            buffer.append((step, dict(losses), cost,
                           None if proportions is None else dict(proportions)))
            self._flush(tid, buffer)

        try:
            result = self.backend.run(trial, report)
        except TrialStopped as exc:
            reason = f"worker {self.worker_id} stopped: {exc}"
            self._try_flush(tid, buffer)
            if not lost.is_set():
                self._finish(lambda: self.client.fail_trial(tid, reason, retryable=True,
                                                            worker_id=self.worker_id))
            self.echo(f"{self.worker_id}: trial {tid} interrupted ({exc})")
            return False
        except Exception as exc:  # any backend failure fails the trial
            if isinstance(exc, MeasurementRefused):
                reason = str(exc)
                buffer.clear()  # the refused one would be refused again
            else:
                tail = "".join(traceback.format_exception(exc))[-2000:]
                reason = f"{exc}\n{tail}"
            self._try_flush(tid, buffer)
            self._finish(lambda: self.client.fail_trial(tid, reason, worker_id=self.worker_id))
            self._last_failure = " ".join(str(exc).split())[:300]
            self.trials_failed += 1
            self.echo(f"{self.worker_id}: trial {tid} failed: {exc}")
            return False
        finally:
            lost.set()  # ends the heartbeat thread
        if not self._try_flush(tid, buffer, patience=600.0):
            self.echo(f"{self.worker_id}: trial {tid}: could not deliver "
                      f"{len(buffer)} measurement(s); leaving the trial to its lease")
            return False
        online: dict[str, Any] | None = None
        if isinstance(result, BackendResult):
            cost, online = result.cost, result.online
        else:
            cost = result
        done = self._finish(lambda: self._complete(tid, cost, online))
        self.trials_done += 1
        obj = f"{done.objective:.4f}" if done is not None and done.objective is not None else "-"
        mix = " ".join(f"{v:.2f}" for v in trial.mixture.values())
        self.echo(f"{self.worker_id}: trial {tid:4d} size {trial.model_size / 1e6:7.4g}M steps "
                  f"{trial.steps:7d} w=[{mix}] objective {obj} cost {cost:.4g} "
                  f"({time.monotonic() - t0:.1f} s)")
        return True

    def _flush(self, tid: int, buffer: list, patience: float = 0.0) -> bool:
        """Send buffered measurements in order; keep what could not be sent. With
        ``patience`` > 0, retry transient failures for that many seconds. A backlog of
        more than one goes in one batch request (all or nothing), unless the server has
        no batch endpoint (an older one): then one at a time."""
        deadline = time.monotonic() + patience
        delay = 0.5
        while buffer:
            batch = len(buffer) > 1 and self._batches
            step = buffer[0][0]
            try:
                if batch:
                    self.client.post_measurements(
                        tid, [{"step": s, "losses": losses, "cost": cost,
                               "proportions": proportions}
                              for s, losses, cost, proportions in buffer],
                        worker_id=self.worker_id)
                else:
                    _, losses, cost, proportions = buffer[0]
                    self.client.post_measurement(tid, step, losses, cost,
                                                 worker_id=self.worker_id,
                                                 proportions=proportions)
            except _TRANSIENT:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 15.0)
                continue
            except NotFoundError:
                if not batch:
                    raise
                self._batches = False  # a server without the batch endpoint
                continue
            except ConflictError as exc:
                # The trial is no longer ours (lease lapsed and re-queued): stop running it.
                raise TrialStopped(str(exc)) from exc
            except InvalidRequestError as exc:
                what = (f"the {len(buffer)} measurements from step {step}" if batch
                        else f"the measurement at step {step}")
                raise MeasurementRefused(f"the server refused {what}: {exc.detail}") from exc
            if batch:
                buffer.clear()
            else:
                buffer.pop(0)
        return True

    def _complete(self, tid: int, cost: float, online: dict[str, Any] | None) -> TrialPublic:
        """Complete with the online summary; if the server refuses the summary (422), complete
        without it rather than throw away the trial's measured curve and cost."""
        try:
            return self.client.complete_trial(tid, cost, worker_id=self.worker_id,
                                              online=online)
        except InvalidRequestError as exc:
            if online is None:
                raise
            self.echo(f"{self.worker_id}: trial {tid}: the server refused the online summary "
                      f"({exc.detail}); completing without it")
            return self.client.complete_trial(tid, cost, worker_id=self.worker_id)

    def _try_flush(self, tid: int, buffer: list, patience: float = 30.0) -> bool:
        try:
            return self._flush(tid, buffer, patience)
        except (TrialStopped, MeasurementRefused) as exc:
            self.echo(f"{self.worker_id}: trial {tid}: {exc}")
            buffer.clear()
            return False

    def _finish(self, call: Callable[[], object], patience: float = 600.0):
        deadline = time.monotonic() + patience
        delay = 0.5
        while True:
            try:
                return call()
            except _TRANSIENT:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 15.0)
            except ConflictError as exc:
                self.echo(f"{self.worker_id}: {exc.detail}")
                return None

    def _heartbeats(self, trial: TrialAssignment, lost: threading.Event) -> None:
        interval = max(0.2, trial.lease_seconds / 3)
        while not lost.wait(interval):
            try:
                hb = self.client.heartbeat(trial.trial_id, worker_id=self.worker_id)
                if hb.should_stop:
                    self.echo(f"{self.worker_id}: study stopped; abandoning trial "
                              f"{trial.trial_id}")
                    lost.set()
            except ConflictError as exc:
                self.echo(f"{self.worker_id}: lost trial {trial.trial_id}: {exc.detail}")
                lost.set()
            except (*_TRANSIENT, APIError) as exc:
                log.warning("heartbeat for trial %d failed: %s", trial.trial_id, exc)
