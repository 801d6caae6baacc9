"""Train one trial: a GPT of the trial's size on the trial's mixture, reporting per-domain
validation losses at its checkpoints.

The study compares mixtures through these losses, so everything that is not the mixture is
held fixed and deterministic: the same seed gives every trial the same initial weights and
each domain the same window order (common random numbers: two mixtures differ only by what
they sample), every batch follows the mixture as exactly as integers allow, and every
checkpoint is measured on the same held-out windows.

Schedule and optimiser follow GPT-3: AdamW (beta2 0.95, weight decay 0.1 on matrices
only), linear warmup then cosine decay to 10% of the peak, gradients clipped at 1.0.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mfms_bo.online import MixingController
from workers.trainer.data import available_domains, load_meta, load_split
from workers.trainer.model import GPT, count_params, preset_for_size

__all__ = ["MixtureBatches", "lr_at", "warmup_steps", "train_trial", "PEAK_LR"]

log = logging.getLogger("mfms.trainer")

Report = Callable[[int, dict[str, float], float | None], None]

# Peak learning rates: GPT-3's for its four shapes (Brown et al. 2020, Table 2.1), and for
# the small presets the higher rates small models tolerate (Pythia-70M used 1e-3; the CPU
# presets are tuned so that a ~100-step test run visibly learns).
PEAK_LR: dict[str, float] = {
    "tiny": 3e-3, "mini": 2e-3, "6m": 1.5e-3, "20m": 1e-3, "60m": 8e-4,
    "125m": 6e-4, "350m": 3e-4, "760m": 2.5e-4, "1.3b": 2e-4,
}


# -- mixture sampling --------------------------------------------------------------------


class MixtureBatches:
    """Batches of ``(x, y)`` token windows whose domain make-up follows a mixture.

    Each batch gives every domain ``floor(w * B)`` sequences, and the ``B - sum(floors)``
    seats left over go to the domains with the largest *accumulated* remainder (the largest
    remainder rule, with remainders carried from batch to batch). Every batch is thus a
    largest-remainder split of ``B``, and over many batches each domain's share converges to
    its weight exactly: a 3% domain in batches of 8 still gets its 3%, where rounding each
    batch afresh would give it nothing, ever.

    Each domain is read sequentially through a seeded shuffle of its non-overlapping
    windows, and only repeats (a new shuffle, logged once) when all have been seen.
    """

    def __init__(self, domains: dict[str, np.ndarray], weights: dict[str, float],
                 batch_size: int, seq_len: int, seed: int) -> None:
        self.names = [d for d in weights if weights[d] > 0]
        w = np.array([weights[d] for d in self.names], dtype=np.float64)
        self.weights = w / w.sum()
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.tokens = {d: domains[d] for d in self.names}
        self.n_windows = {d: (len(domains[d]) - 1) // seq_len for d in self.names}
        for d, n in self.n_windows.items():
            if n < 1:
                raise ValueError(f"domain {d!r} has {len(domains[d])} training tokens, fewer "
                                 f"than one sequence of {seq_len + 1}")
        self._carry = np.zeros(len(self.names))
        self._order: dict[str, np.ndarray] = {}
        self._pos = dict.fromkeys(self.names, 0)
        self.epoch = dict.fromkeys(self.names, 0)
        for d in self.names:
            self._shuffle(d)

    def _shuffle(self, d: str) -> None:
        # Per-domain generator keyed by name: a domain's window order does not depend on
        # which other domains the mixture has.
        rng = np.random.default_rng([self.seed, zlib.crc32(d.encode()), self.epoch[d]])
        self._order[d] = rng.permutation(self.n_windows[d])
        self._pos[d] = 0

    def set_weights(self, weights: dict[str, float]) -> None:
        """Switch the mixture (online mixing changes it during the run). Every named domain
        must be one this sampler was built with; a domain may go to 0. The carried
        remainders restart, so each stretch of constant weights is split as exactly as a
        fresh sampler would split it."""
        unknown = sorted(set(weights) - set(self.names))
        if unknown:
            raise ValueError(f"no training data loaded for domain(s) {unknown}")
        w = np.array([float(weights.get(d, 0.0)) for d in self.names], dtype=np.float64)
        if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
            raise ValueError(f"invalid mixture {weights}")
        w = w / w.sum()
        if not np.array_equal(w, self.weights):
            self.weights = w
            self._carry = np.zeros(len(self.names))

    def counts(self) -> list[int]:
        """Sequences per domain for the next batch (advances the carried remainders)."""
        quota = self.weights * self.batch_size
        base = np.floor(quota)
        frac = quota - base
        self._carry += frac
        left = self.batch_size - int(base.sum())
        # Only domains with a fractional quota may take a leftover seat, so each count stays
        # the floor or the ceiling of its quota.
        eligible = np.where(frac > 1e-12, self._carry, -np.inf)
        pick = np.argsort(-eligible, kind="stable")[:left]
        base[pick] += 1
        self._carry[pick] -= 1
        return base.astype(np.int64).tolist()

    def _windows(self, d: str, k: int) -> list[np.ndarray]:
        out = []
        T = self.seq_len
        for _ in range(k):
            if self._pos[d] == self.n_windows[d]:
                self.epoch[d] += 1
                log.info("domain %s: all %d windows of %d tokens seen; repeating it "
                         "(pass %d)", d, self.n_windows[d], T, self.epoch[d] + 1)
                self._shuffle(d)
            i = int(self._order[d][self._pos[d]])
            self._pos[d] += 1
            out.append(self.tokens[d][i * T: i * T + T + 1])
        return out

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` and ``y`` (B, T) int64, ``y`` being ``x`` shifted by one token."""
        rows: list[np.ndarray] = []
        for d, k in zip(self.names, self.counts(), strict=True):
            rows.extend(self._windows(d, k))
        batch = torch.from_numpy(np.stack(rows).astype(np.int64))  # (B, T + 1)
        return batch[:, :-1], batch[:, 1:]


# -- evaluation --------------------------------------------------------------------------
EVAL_TOKENS_MIN, EVAL_TOKENS_MAX = 2**15, 2**17


def default_eval_tokens(steps: int, n_checkpoints: int, tokens_per_step: int,
                        n_domains: int, fraction: float = 0.25) -> int:
    """Validation tokens per domain and checkpoint: ``fraction`` of the tokens trained
    between two checkpoints, shared by the domains, within ``[2^15, 2^17]``.

    Why: a fixed 2^17 tokens per domain made a short CPU run mostly evaluation (a trial
    of ~5 s of training took over a minute). A forward pass costs about a third of a
    training step per token, so 25% keeps evaluation under ~10% of a run; the floor keeps
    the loss estimate's noise (~0.015 nats at 2^15 tokens) below the mixture effects a
    study compares, the cap is what long runs always used.
    """
    between = steps * tokens_per_step / max(1, n_checkpoints)
    share = int(fraction * between / max(1, n_domains))
    return max(EVAL_TOKENS_MIN, min(EVAL_TOKENS_MAX, share))




def _eval_windows(val: np.ndarray, eval_tokens: int, seq_len: int, from_end: bool = False
                  ) -> torch.Tensor:
    """The fixed held-out set of one domain: consecutive windows over the first
    ``eval_tokens`` tokens of its validation split (the last ones with ``from_end``),
    shape (N, T + 1). The same tokens at every checkpoint and in every trial, so
    differences are the model's, not the sample's."""
    if from_end:
        val = val[::-1].copy()
    T = min(seq_len, len(val) - 1)
    n = max(1, min(eval_tokens, len(val) - 1) // T)
    w = np.stack([val[i * T: i * T + T + 1] for i in range(n)])
    if from_end:
        w = w[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(w).astype(np.int64))


@torch.no_grad()
def _evaluate(model: GPT, windows: dict[str, torch.Tensor], batch_size: int,
              device: torch.device, autocast: contextlib.AbstractContextManager
              ) -> dict[str, float]:
    """Mean next-token cross-entropy per domain, in nats per token."""
    model.eval()
    losses = {}
    for d, w in windows.items():
        total = 0.0
        for i in range(0, len(w), batch_size):
            chunk = w[i: i + batch_size].to(device)  # (b, T + 1)
            with autocast:
                _, loss = model(chunk[:, :-1], chunk[:, 1:])
            total += float(loss) * len(chunk)  # all windows have T targets
        losses[d] = total / len(w)
    model.train()
    return losses


# -- schedule ----------------------------------------------------------------------------


def warmup_steps(steps: int) -> int:
    """10% of the run, at most 1000 steps. Proportional so that a short, cheap trial is not
    all warmup (its checkpoints must still say something about the mixture), capped because
    warmup only has to outlast the early large, noisy updates, which do not get longer when
    the run does."""
    return max(1, min(steps // 10, 1000))


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warmup to ``peak``, then
    cosine decay reaching 10% of ``peak`` at the last step (Chinchilla's floor)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    floor = 0.1 * peak
    progress = (step - warmup) / max(1, steps - 1 - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


# -- the trial ---------------------------------------------------------------------------


def _load_domains(data_dir: str | Path, mixture: dict[str, float], eval_domains: list[str],
                  all_train: bool = False
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """Training tokens of the weighted domains (of every mixture domain with
    ``all_train``: an online mixer may move weight onto any of them), validation tokens of
    the evaluated ones, and the shared vocabulary size."""
    found = available_domains(data_dir)
    have = ", ".join(found) or "none"
    for d, w in mixture.items():
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"mixture weight of {d!r} must be finite and >= 0, got {w}")
        if (w > 0 or all_train) and d not in found:
            raise ValueError(f"domain {d!r} has weight {w:g} in the mixture but no prepared "
                             f"data in {data_dir} (domains there: {have})")
    if not sum(mixture.values()) > 0:
        raise ValueError("the mixture has no domain with weight > 0")
    used = [d for d in dict.fromkeys([*mixture, *eval_domains]) if d in found]
    metas = {d: load_meta(found[d]) for d in used}
    kinds = {_tokenizer_id(m["tokenizer"]) for m in metas.values()}
    if len(kinds) > 1:
        raise ValueError(f"domains in {data_dir} were prepared with different tokenizers "
                         f"({', '.join(sorted(kinds))}); prepare them all with one")
    train = {d: load_split(found[d], "train") for d, w in mixture.items()
             if w > 0 or all_train}
    val = {}
    for d in eval_domains:
        split = load_split(found[d], "val") if d in found else None
        if split is None or len(split) < 2:
            log.warning("domain %s: no validation data in %s; its loss is not reported",
                        d, data_dir)
            continue
        val[d] = split
    if not val:
        raise ValueError(f"none of the domains to evaluate ({', '.join(eval_domains)}) has "
                         f"validation data in {data_dir} (domains there: {have})")
    return train, val, max(int(m["vocab_size"]) for m in metas.values())


def _tokenizer_id(tokenizer: dict) -> str:
    return tokenizer.get("sha256") or tokenizer["kind"]


def train_trial(
    data_dir: str | Path,
    mixture: dict[str, float],
    model_size: float,
    steps: int,
    checkpoints: Sequence[int],
    report: Report,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 32,
    micro_batch_size: int | None = None,
    seq_len: int = 512,
    seed: int = 0,
    eval_tokens: int | None = None,
    eval_domains: Sequence[str] | None = None,
    lr: float | None = None,
    weight_decay: float = 0.1,
    compile: bool = True,
    progress: bool = True,
    controller: MixingController | None = None,
    controller_eval_tokens: int = 2**11,
    stats: dict[str, float] | None = None,
) -> float:
    """Train the preset nearest ``model_size`` for ``steps`` steps on ``mixture`` and call
    ``report(step, {domain: loss}, cost_so_far)`` at each checkpoint (0 = before training).
    Returns the cost: GPU-seconds, i.e. wall seconds x 1 GPU (this trainer uses one device);
    on a CPU, wall seconds. Cost counts everything the trial occupies the device for (model
    setup, compilation, training, evaluation), as that is what a trial costs the study.

    Losses (nats per token) are reported for ``eval_domains`` (default: the mixture's
    domains, weight 0 included) that have validation data; domains without it are skipped
    with a warning. A weighted domain without training data is a ValueError.

    Tokens per step are ``batch_size * seq_len`` at every model size, so a study's steps
    mean the same data at every rung of its ladder. ``micro_batch_size`` splits a step into
    several forward/backward passes (gradient accumulation) when a large preset does not
    fit in memory; the optimisation is the same. ``lr`` defaults to the preset's
    :data:`PEAK_LR`. ``compile`` uses torch.compile on CUDA (never on a CPU, where
    compiling costs more than a short run saves).

    ``controller`` mixes online (:mod:`mfms_bo.online`): it sets every batch's mixture
    (``mixture`` is then only the run's domains and the controller's usual prior) from
    per-domain losses measured, when it asks, on a small fixed validation set of
    ``controller_eval_tokens`` tokens per domain (its own, so that probing stays cheap,
    taken from the end of the validation split: disjoint from the checkpoints' windows
    when the split holds both).
    Checkpoint reports then carry the controller's proportions as a fourth argument.
    ``stats``, when given, is filled with seconds spent training, evaluating checkpoints
    and evaluating for the controller.

    ``eval_tokens`` is the validation tokens per domain at each checkpoint; by default
    :func:`default_eval_tokens` of the run, so a short run is not mostly evaluation.
    """
    t0 = time.perf_counter()
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    ckpts = sorted({int(c) for c in checkpoints})
    if not ckpts or ckpts[0] < 0 or ckpts[-1] > steps:
        raise ValueError(f"checkpoints {list(checkpoints)} must be within 0..{steps}")
    micro = micro_batch_size or batch_size
    if batch_size % micro:
        raise ValueError(f"batch_size {batch_size} is not a multiple of micro_batch_size "
                         f"{micro}")
    eval_names = list(eval_domains) if eval_domains is not None else list(mixture)
    if controller is not None:
        extra = sorted(set(controller.domains) - set(mixture))
        if extra:
            raise ValueError(f"the controller mixes domain(s) {extra} that are not in the "
                             f"trial's mixture {sorted(mixture)}")
    train_tokens, val_tokens, vocab_size = _load_domains(data_dir, dict(mixture), eval_names,
                                                         all_train=controller is not None)
    if controller is not None:
        # Each mixed domain's validation split, read once (most are already loaded).
        ctl_val = {d: val_tokens[d] if d in val_tokens else _val_for(data_dir, d)
                   for d in controller.domains}
        missing = [d for d, v in ctl_val.items() if v is None]
        if missing:
            raise ValueError(f"online mixing needs validation data for every mixed domain; "
                             f"none for {missing} in {data_dir}")

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # bf16 autocast: the tensor cores' fast path, with fp32's range so no loss scaling.
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if cuda and torch.cuda.is_bf16_supported() else contextlib.nullcontext())

    name, config = preset_for_size(model_size)
    config = replace(config, vocab_size=vocab_size, block_size=seq_len)
    model = GPT(config).to(device)
    log.info("trial: preset %s (%.3gM non-embedding parameters) on %s, %d steps of %d x %d "
             "tokens", name, count_params(config) / 1e6, device, steps, batch_size, seq_len)
    # Weight decay on matrices (embeddings included, as in GPT-2/3) only: decaying the
    # LayerNorm gains would just shrink activations, regularising nothing.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    peak = lr if lr is not None else PEAK_LR[name]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=peak, betas=(0.9, 0.95), eps=1e-8, fused=cuda)
    step_model = torch.compile(model) if (compile and cuda) else model
    warmup = warmup_steps(steps)

    if eval_tokens is None:
        eval_tokens = default_eval_tokens(steps, len(ckpts), batch_size * seq_len,
                                          len(val_tokens))
    windows = {d: _eval_windows(v, eval_tokens, seq_len) for d, v in val_tokens.items()}
    timing = {"train_seconds": 0.0, "checkpoint_eval_seconds": 0.0,
              "controller_eval_seconds": 0.0}
    if controller is None:
        batches = MixtureBatches(train_tokens, dict(mixture), batch_size, seq_len, seed)
    else:
        batches = MixtureBatches(train_tokens, dict.fromkeys(train_tokens, 1.0), batch_size,
                                 seq_len, seed)
        # The controller's windows come from the other end of the validation split than
        # the checkpoints', so the losses the study records are not the ones it optimised.
        ctl_windows = {d: _eval_windows(v, controller_eval_tokens, seq_len, from_end=True)
                       for d, v in ctl_val.items()}

    def checkpoint(step: int) -> None:
        t_eval = time.perf_counter()
        bar.set_description_str(f"{name} {device.type} evaluating")
        losses = _evaluate(model, windows, micro, device, autocast)
        bar.set_description_str(f"{name} {device.type}")
        if cuda:
            torch.cuda.synchronize()
        timing["checkpoint_eval_seconds"] += time.perf_counter() - t_eval
        if controller is None:
            report(step, losses, time.perf_counter() - t0)
        else:
            report(step, losses, time.perf_counter() - t0, controller.proportions)

    train_time, tokens_seen = 0.0, 0
    with tqdm(total=steps, disable=not progress, unit="step", dynamic_ncols=True,
              desc=f"{name} {device.type}") as bar:
        if ckpts[0] == 0:
            checkpoint(0)
        for step in range(1, steps + 1):
            if controller is not None:  # step - 1 steps are done
                if controller.needs_losses(step - 1):
                    t_eval = time.perf_counter()
                    controller.observe(step - 1, _evaluate(model, ctl_windows, micro, device,
                                                           autocast))
                    timing["controller_eval_seconds"] += time.perf_counter() - t_eval
                batches.set_weights(controller.mixture(step - 1))
            t_step = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = lr_at(step - 1, steps, peak, warmup)
            x, y = batches.next_batch()  # (B, T) each
            if cuda:
                x = x.pin_memory().to(device, non_blocking=True)
                y = y.pin_memory().to(device, non_blocking=True)
            for i in range(0, batch_size, micro):
                with autocast:
                    _, loss = step_model(x[i: i + micro], y[i: i + micro])
                (loss * (micro / batch_size)).backward()  # the mean over the whole batch
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            tokens_seen += batch_size * seq_len
            if step % 10 == 0 or step == steps:  # .item() waits for the GPU: not every step
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise FloatingPointError(f"training loss became {loss_value} at step "
                                             f"{step}")
                train_time += time.perf_counter() - t_step
                bar.set_postfix(loss=f"{loss_value:.3f}",
                                tok_s=f"{tokens_seen / max(train_time, 1e-9):,.0f}")
            else:
                train_time += time.perf_counter() - t_step
            bar.update(1)
            if step in ckpts:
                checkpoint(step)
    if cuda:
        torch.cuda.synchronize()
    timing["train_seconds"] = train_time
    if stats is not None:
        stats.update(timing)
    if controller is not None:
        log.info("online %s: final proportions %s; controller evaluation %.1f s = %.1f%% of "
                 "training time", controller.method,
                 {d: round(v, 3) for d, v in controller.proportions.items()},
                 timing["controller_eval_seconds"],
                 100 * timing["controller_eval_seconds"] / max(train_time, 1e-9))
    return time.perf_counter() - t0


def _val_for(data_dir: str | Path, domain: str) -> np.ndarray | None:
    """The domain's validation tokens, or ``None`` if it has none (or too few)."""
    found = available_domains(data_dir)
    split = load_split(found[domain], "val") if domain in found else None
    return split if split is not None and len(split) >= 2 else None
