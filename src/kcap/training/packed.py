"""Packed training: K runs of one model shape trained together as one `PackedGPT`.

Each member is an ordinary `Trainer` -- its own run directory, dataset, stream, learning rate,
schedule, weight decay, gradient clipping, checkpoints, metrics and final measurement -- whose
steps are taken together: one forward and backward of the packed model over the K members'
batches, one `StackedAdamW` step with per-member learning rates. A member's checkpoint is the one
its separate run would write (its `GPT` weights and a `torch.optim.AdamW` state), so it resumes
alone or in another pack, and `kcap measure`, `kcap report` and the store see a plain run.
Members may stand at different steps and have different lengths: a member that reaches its end
is measured, written and dropped from the pack, and the others go on.

Each member computes what its separate run computes, up to float rounding (the LayerNorm gain
is applied outside the fused kernel, AdamW's step size is a tensor): tests/test_packed.py checks
whole runs within fp32 tolerance, and the update rule to 1e-10 in float64.

What packs: members with the same `ModelConfig` (dense; the init scale may differ), batch size
and window, on one device with one dtype, AdamW betas and eps, without DDP or
``training.compile``, and with ``on_nan: stop`` (a member whose loss or gradient is not finite
stops, with no checkpoint of the broken weights, and leaves the pack; the others are unaffected,
since no weight is shared).
`pack_key` says which runs can share a pack; `train_packed` trains a list of members.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kcap.measure.measurement import Measurement
from kcap.models.packed import PackedGPT
from kcap.tokenization.stream import PAD
from kcap.training import interrupt
from kcap.training.config import RunConfig
from kcap.training.schedule import run_lr
from kcap.training.trainer import Trainer, TrainingDiverged

__all__ = ["PackedTrainer", "StackedAdamW", "pack_key", "train_packed"]

#: Model settings that only shape the initial weights (each member initialises its own model),
#: so members that differ in them still pack.
INIT_ONLY = {"init_std"}


def pack_key(cfg: RunConfig) -> tuple | None:
    """What runs must share to train in one pack, from their configs; None: never packed.

    Models are compared again once built (the vocabulary comes from the dataset), so the key is
    a necessary condition: `train_packed` splits members whose models differ."""
    t = cfg.training
    if t.compile or t.on_nan != "stop" or "-moe" in cfg.model.preset:
        return None
    if cfg.model.overrides.get("n_experts"):
        return None
    overrides = {k: v for k, v in cfg.model.overrides.items() if k not in INIT_ONLY}
    return (
        cfg.model.preset,
        json.dumps(overrides, sort_keys=True),
        cfg.dataset.vocab,
        cfg.dataset.tokenizer,
        t.batch_size,
        t.window,
        t.device,
        t.dtype,
        t.beta1,
        t.beta2,
        t.eps,
    )


def _member_key(trainer: Trainer) -> tuple:
    t = trainer.cfg.training
    return (
        trainer.model_cfg.model_dump_json(exclude=INIT_ONLY),
        t.batch_size,
        t.window,
        str(trainer.device),
        trainer.amp,
        t.beta1,
        t.beta2,
        t.eps,
    )


class StackedAdamW:
    """AdamW over the (K, S) weights of a `PackedGPT`, with a learning rate, weight decay and
    step count per model: torch.optim.AdamW's update for each row (decoupled decay on matrices
    only, bias-corrected moments), shared betas and eps."""

    def __init__(self, model: PackedGPT, betas: tuple[float, float], eps: float):
        self.model, self.betas, self.eps = model, betas, eps
        self.exp_avg = torch.zeros_like(model.flat)
        self.exp_avg_sq = torch.zeros_like(model.flat)
        self.steps = torch.zeros(model.k, dtype=torch.float64)  # optimizer steps, per model
        self.decay = model.decay_mask()

    @torch.no_grad()
    def step(self, lr: torch.Tensor, weight_decay: torch.Tensor) -> None:
        """One update; ``lr`` and ``weight_decay`` are (K,) float64 tensors on the host."""
        b1, b2 = self.betas
        p, g = self.model.flat, self.model.flat_grad
        dev = p.device
        self.steps += 1
        bias1 = 1 - b1**self.steps
        bias2_sqrt = (1 - b2**self.steps).sqrt()
        p.mul_(1 - (lr * weight_decay).to(dev, p.dtype).unsqueeze(1) * self.decay)
        self.exp_avg.lerp_(g, 1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (self.exp_avg_sq.sqrt() / bias2_sqrt.to(dev, p.dtype).unsqueeze(1)).add_(self.eps)
        step_size = (lr / bias1).to(dev, p.dtype).unsqueeze(1)
        p.addcdiv_(self.exp_avg * step_size, denom, value=-1.0)

    def keep(self, rows: list[int]) -> None:
        """Keep the state of the models ``rows`` (call with `PackedGPT.keep`)."""
        index = torch.tensor(rows, device=self.exp_avg.device)
        self.exp_avg = self.exp_avg.index_select(0, index)
        self.exp_avg_sq = self.exp_avg_sq.index_select(0, index)
        self.steps = self.steps[rows]
        self.decay = self.model.decay_mask()

    # ------------------------------------------------------------------ torch.optim.AdamW state
    def load_member(self, k: int, trainer: Trainer) -> None:
        """Row k from a member's torch AdamW state (zeros when it has not stepped yet)."""
        state = trainer.optimizer.state
        named = dict(trainer.model.named_parameters())
        if not any(p in state for p in named.values()):
            return
        avg = {n: state[p]["exp_avg"] for n, p in named.items()}
        avg_sq = {n: state[p]["exp_avg_sq"] for n, p in named.items()}
        self.exp_avg[k] = self.model.columns(avg)
        self.exp_avg_sq[k] = self.model.columns(avg_sq)
        self.steps[k] = float(state[named["wte.weight"]]["step"])

    def store_member(self, k: int, trainer: Trainer) -> None:
        """Write row k into a member's torch AdamW state, exactly where its own steps would."""
        avg, avg_sq = self.model.split(self.exp_avg[k]), self.model.split(self.exp_avg_sq[k])
        for n, p in trainer.model.named_parameters():
            trainer.optimizer.state[p] = {
                "step": torch.tensor(float(self.steps[k]), dtype=torch.float32),
                "exp_avg": avg[n].detach().clone().to(p.device),
                "exp_avg_sq": avg_sq[n].detach().clone().to(p.device),
            }


@dataclass
class _Outcome:
    result: Measurement | None = None
    error: BaseException | None = None


class PackedTrainer:
    """Trains member `Trainer`s (same `_member_key`) as one `PackedGPT`; see the module doc."""

    def __init__(
        self, members: list[Trainer], on_outcome: Callable[[str, _Outcome], None] | None = None
    ):
        """``on_outcome(run directory name, outcome)`` is called as each member leaves the
        pack (finished and measured, or failed), before the others go on."""
        if not members:
            raise ValueError("a pack needs at least one member")
        keys = {_member_key(m) for m in members}
        if len(keys) > 1:
            raise ValueError("packed members must share model, batch, window, device and dtype")
        for m in members:
            if m.world.active or m.cfg.training.compile or m.cfg.training.on_nan != "stop":
                raise ValueError(
                    f"{m.cfg.name}: packs take single-process, uncompiled runs "
                    "with training.on_nan: stop"
                )
        first = members[0]
        self.members = list(members)
        self.device, self.amp = first.device, first.amp
        t = first.cfg.training
        self.model = PackedGPT(first.model_cfg, len(members)).to(self.device)
        self.optimizer = StackedAdamW(self.model, (t.beta1, t.beta2), t.eps)
        for k, m in enumerate(self.members):
            self.model.load_member(k, m.model.state_dict())
            self.optimizer.load_member(k, m)
            m.packed_with = len(members)
        self.outcomes: dict[str, _Outcome] = {}
        self.on_outcome = on_outcome

    # ------------------------------------------------------------------ members in and out
    def _sync(self, k: int) -> None:
        """Copy member k's weights and optimizer state from the pack into its own Trainer."""
        m = self.members[k]
        m.model.load_state_dict(self.model.member_state(k))
        self.optimizer.store_member(k, m)

    def _drop(self, rows: list[int]) -> None:
        """Members ``rows`` leave the pack (finished, or stopped)."""
        keep = [k for k in range(len(self.members)) if k not in rows]
        self.members = [self.members[k] for k in keep]
        self._windows = [self._windows[k] for k in keep]
        self._first_bad = self._first_bad[keep]
        if self.members:
            self.model.keep(keep)
            self.optimizer.keep(keep)

    def checkpoint_all(self) -> None:
        for k, m in enumerate(self.members):
            self._sync(k)
            m.save_checkpoint()

    # ------------------------------------------------------------------ training
    def _step(self, batches: list) -> torch.Tensor:
        """One packed step over the members' batches; returns each member's loss (detached).
        Marks the members whose loss or gradient norm was not finite in ``self._first_bad``."""
        rows = max(len(b[0]) for b in batches)  # a member's last batch may be short: padded
        x = torch.stack([_pad_rows(b[0], rows, 0) for b in batches]).to(self.device)
        y = torch.stack([_pad_rows(b[1], rows, PAD) for b in batches]).to(self.device)
        n_targets = torch.tensor([max(b[2], 1) for b in batches], dtype=torch.float32)
        lrs, wds, clips = [], [], []
        for m in self.members:
            t = m.cfg.training
            lr = m.lr_scale * run_lr(t, m.step, m.total_steps, m.warmup)
            for group in m.optimizer.param_groups:  # what the member logs and checkpoints
                group["lr"] = lr
            lrs.append(lr)
            wds.append(t.weight_decay)
            clips.append(t.grad_clip)
        ctx = (
            torch.autocast(self.device.type, dtype=self.amp)
            if self.amp
            else contextlib.nullcontext()
        )
        with ctx:
            # each member's mean over its own targets, as its separate run's loss
            losses = self.model.nll(x, y, PAD) / n_targets.to(self.device)
        self.model.backward(losses.sum())  # no weight is shared: each gets its own gradient
        grad = self.model.flat_grad
        norms = grad.pow(2).sum(1).sqrt()
        clip = torch.tensor(clips, device=grad.device)
        # per-model clipping, as clip_grad_norm_ does for one model (none where grad_clip is 0)
        coef = torch.where(clip > 0, (clip / (norms + 1e-6)).clamp(max=1.0), 1.0)
        grad.mul_(coef.unsqueeze(1))
        self.optimizer.step(
            torch.tensor(lrs, dtype=torch.float64), torch.tensor(wds, dtype=torch.float64)
        )
        self.model.zero_grad()
        finite = torch.isfinite(losses.detach()) & torch.isfinite(norms)
        step = torch.tensor([m.step for m in self.members], device=self.device)
        self._first_bad = torch.where((self._first_bad < 0) & ~finite, step, self._first_bad)
        return losses.detach()

    def fit(self, *, stop_after: int | None = None) -> dict[str, _Outcome]:
        """Train every member to its end; returns each member's outcome by run directory name
        (its final `Measurement`, or the error that stopped it). A stop request checkpoints
        every member and raises `RunInterrupted`. ``stop_after``: checkpoint and return after
        that many packed steps (benchmarks, tests)."""
        on_host = self.device.type == "cpu"
        self._first_bad = torch.full((len(self.members),), -1, device=self.device)
        self._windows = [[time.perf_counter(), 0] for _ in self.members]  # start, tokens
        steps = 0
        while self.members:
            if stop_after is not None and steps >= stop_after:
                self._check()
                self.checkpoint_all()
                break
            stop = interrupt.pending()
            if stop is not None:
                self._check()
                self.checkpoint_all()
                raise interrupt.RunInterrupted(stop[0], None, stop[1])
            done = [k for k, m in enumerate(self.members) if m.step >= m.total_steps]
            if done and not self._check():
                self._finish(done)
            if done:
                continue
            batches = [m._batch() for m in self.members]
            if any(b is None for b in batches):  # a stream shorter than its steps: end it there
                self._finish([k for k, b in enumerate(batches) if b is None])
                continue
            t0 = time.perf_counter()
            losses = self._step(batches)
            dt = time.perf_counter() - t0
            steps += 1
            for m, b, w in zip(self.members, batches, self._windows, strict=True):
                m.step += 1
                m.tokens += b[2]
                m.train_seconds += dt
                w[1] += b[3]
            self._after_step(losses, on_host)
        return self.outcomes

    def _after_step(self, losses: torch.Tensor, on_host: bool) -> None:
        """Each member's logging, in-training measurement and checkpoint at its own steps."""
        due = []
        for m in self.members:
            t = m.cfg.training
            log = m.step % t.log_every == 0 or m.step == m.total_steps
            due.append((log, m.measure_due(), m.step % t.checkpoint_every == 0))
        if (on_host or any(any(d) for d in due)) and self._check():
            return  # a member left the pack: the others log at their next due step
        measured = False
        now = time.perf_counter()
        for k, (m, (log, measure, save)) in enumerate(zip(self.members, due, strict=True)):
            if log:
                start, tokens = self._windows[k]
                m.log_training(float(losses[k]), tokens / max(now - start, 1e-9))
                self._windows[k] = [now, 0]
            if measure:
                self._sync(k)
                m.measure_during()
                measured = True
            if save:
                self._sync(k)
                m.save_checkpoint()
        if measured:  # measuring is not training
            self._windows = [[time.perf_counter(), 0] for _ in self.members]

    def _check(self) -> bool:
        """Stop the members with a non-finite step (as ``on_nan: stop``: their last good
        checkpoint stays, nothing of the broken weights is written) and drop them from the
        pack; the others are unaffected, since no weight is shared. True if any stopped."""
        bad = self._first_bad.tolist()  # a device sync on a GPU: at due steps only
        rows = [k for k, at in enumerate(bad) if at >= 0]
        for k in rows:
            m = self.members[k]
            where = (
                f"the last good checkpoint is step {m.checkpoint_step:,} "
                f"({m.run_dir / 'checkpoint.pt'})"
                if m.checkpoint_step is not None
                else "no checkpoint was written"
            )
            error = TrainingDiverged(
                f"loss or gradient is not finite at step {bad[k] + 1:,}; {where}"
            )
            self._leave(m, _Outcome(error=error))
        if rows:
            self._drop(rows)
        return bool(rows)

    def _leave(self, m: Trainer, outcome: _Outcome) -> None:
        """Record how member ``m`` left the pack, and tell ``on_outcome`` now."""
        self.outcomes[m.run_dir.name] = outcome
        if self.on_outcome is not None:
            self.on_outcome(m.run_dir.name, outcome)

    def _finish(self, rows: list[int]) -> None:
        """Measure and write the members ``rows`` (`Trainer.finish`), then drop them."""
        for k in rows:
            m = self.members[k]
            self._sync(k)
            try:
                outcome = _Outcome(result=m.finish())
            except Exception as e:  # one member's failure is its own
                outcome = _Outcome(error=e)
            self._leave(m, outcome)
        self._drop(rows)


def _pad_rows(t: torch.Tensor, rows: int, value: int) -> torch.Tensor:
    """``t`` (b, T) with ``rows - b`` rows of ``value`` appended: padded target rows are all
    PAD, so they add no loss and no gradient, and a sequence never attends across rows."""
    if len(t) == rows:
        return t
    return torch.cat([t, t.new_full((rows - len(t), t.size(1)), value)])


def train_packed(
    members: list[Trainer], on_outcome: Callable[[str, _Outcome], None] | None = None
) -> dict[str, _Outcome]:
    """Train members in packs of what can share one (`_member_key`), one pack after another;
    ``on_outcome`` as for `PackedTrainer`."""
    groups: dict[tuple, list[Trainer]] = {}
    for m in members:
        groups.setdefault(_member_key(m), []).append(m)
    outcomes: dict[str, _Outcome] = {}
    for group in groups.values():
        outcomes |= PackedTrainer(group, on_outcome).fit()
    return outcomes
