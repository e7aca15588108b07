"""The trainer: one run = one dataset, one model, E exposures, checkpoints, a final measurement.

Run directory layout::

    RUN_DIR/config.yaml      the resolved run config (what `kcap train --resume` reloads)
    RUN_DIR/dataset/         the generated dataset, when the config generates one
    RUN_DIR/checkpoint.pt    model, optimizer, step, stream state, RNG (atomic and
                             checksummed, every K steps; checkpoint.prev.pt keeps the one before)
    RUN_DIR/metrics.jsonl    one JSON line per logged step / in-training measurement
    RUN_DIR/measure.json     the final measurement (bits, P, R, R_max, recall, ...)
    RUN_DIR/run.json         summary: parameter counts, steps, tokens, realised exposures, timings

A resumed run restores the model, optimizer, step and stream position, so on CPU it is bitwise
equal to an uninterrupted run, however it was stopped (tests kill it with SIGKILL at random
steps). A stop request (`kcap.training.interrupt`: SIGTERM, SIGINT, a vanished coordinator) is
honoured between steps: checkpoint, then `RunInterrupted`. A loss or gradient that is not finite
is handled by ``training.on_nan``: stop (no checkpoint of the broken weights is written), skip
the step, or restart from the last checkpoint at half the learning rate (at most twice).

AdamW is torch's fused kernel on a CPU and a GPU. On a GPU a step never waits for the device:
batches are copied from pinned memory without blocking, and the loss is read back at log steps
only. With ``training.compile`` the first step's time (compilation included) is reported as
``compile_s`` (once in metrics.jsonl, and in run.json) and left out of the training time.

Under ``torchrun`` (`kcap.training.distributed`) K ranks train one run data-parallel:
``training.batch_size`` is per rank, each global batch is the next K × batch_size windows of
the one stream (rank r takes the r-th slice), and the loss is normalised by the global batch's
target count, so a step equals a single-process step with batch K × batch_size up to float
rounding, and every person still gets exactly E exposures. Rank 0 alone writes the run
directory; the ranks stop together.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml

from kcap.atomic import write_text_atomic
from kcap.data.biod import BioDParams, build_biod
from kcap.data.bios import build_bios
from kcap.data.build import write_dataset
from kcap.data.dataset import Dataset, load_dataset
from kcap.errors import KcapError
from kcap.measure import measure
from kcap.measure.measurement import Measurement
from kcap.models import GPT, ModelConfig, count_parameters, preset
from kcap.models.loss import summed_nll
from kcap.progress import progress_bar
from kcap.tokenization.factory import make_stream
from kcap.tokenization.stream import PAD
from kcap.training import checkpoint as ckpt
from kcap.training import distributed, interrupt
from kcap.training.config import RunConfig, config_hash, parse_config
from kcap.training.mfu import flops_per_token, peak_flops
from kcap.training.schedule import make_optimizer, run_lr, warmup_steps
from kcap.training.tensorboard import TENSORBOARD_DIR, TensorBoardLog

CONFIG, METRICS, MEASURE, SUMMARY = "config.yaml", "metrics.jsonl", "measure.json", "run.json"
MAX_NAN_RESTARTS = 2


class TrainingDiverged(RuntimeError):
    """The loss or a gradient stopped being finite (``training.on_nan`` says what then)."""


def physical_cores() -> int:
    """Physical CPU cores available to this process (hyperthreads halve tiny-model speed)."""
    try:
        pairs = set()
        phys = core = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                phys = line.split(":")[1].strip()
            elif line.startswith("core id"):
                core = line.split(":")[1].strip()
                pairs.add((phys, core))
        n = len(pairs)
    except OSError:
        n = 0
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(n or allowed or 1, allowed or 1))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise KcapError("training.device", "cuda requested but no CUDA device is available")
    return torch.device(name)


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPU by default; fp32 on CPU (bf16 is ~7x slower on CPUs without it)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def prepare_dataset(cfg: RunConfig, run_dir: Path, progress=None) -> Dataset:
    """Load ``dataset.path``, or generate the described dataset into ``RUN_DIR/dataset``."""
    spec = cfg.dataset
    if spec.path is not None:
        return load_dataset(spec.path)
    target = run_dir / "dataset"
    if not (target / "manifest.json").is_file():
        write_dataset(target, *build_dataset(spec, progress), force=True)
    return load_dataset(target)


def build_dataset(spec, progress=None) -> tuple:
    """Generate the dataset a `DatasetSpec` describes: ``(manifest, population, tokenizer[,
    extra files])``, ready for `write_dataset`."""
    common = {"vocab": spec.vocab, "tokenizer": spec.tokenizer, "progress": progress}
    if spec.kind == "bios":
        return build_bios(spec.n, spec.seed, spec.variant, **common)
    if spec.kind == "biod":
        p = BioDParams(spec.n, spec.k, spec.c, spec.d, spec.l, spec.t, spec.name_pool)
        return build_biod(p, spec.seed, **common)
    if spec.kind == "junk":
        from kcap.data.junk import REPETITIVE_N, build_junk

        return build_junk(
            spec.n,
            spec.ratio,
            spec.junk,
            spec.seed,
            domain=spec.domain or "none",
            junk_n=spec.junk_n or REPETITIVE_N,
            useful=spec.useful or "bios",
            k=spec.k,
            c=spec.c,
            d=spec.d,
            l=spec.l,
            t=spec.t,
            **common,
        )
    if spec.kind == "random":
        from kcap.data.random_strings import DEFAULT_S, DEFAULT_V, build_random

        s, v = spec.s or DEFAULT_S, spec.v or DEFAULT_V
        return build_random(spec.m, s, v, spec.seed, progress=progress)
    from kcap.data.bior import build_bior

    return build_bior(spec.n, spec.rewriter, spec.seed, rewrites=spec.rewrites or 40, **common)


def model_config(cfg: RunConfig, dataset: Dataset) -> ModelConfig:
    try:
        overrides = {"context": cfg.training.window, **cfg.model.overrides}
        return preset(cfg.model.preset, dataset.tokenizer.vocab_size, **overrides)
    except ValueError as e:
        raise KcapError("model", str(e).splitlines()[0]) from None


def param_counts(model: GPT, dataset: Dataset) -> dict[str, int]:
    counts = count_parameters(model, dataset.manifest["vocab"]["used_tokens"])
    return {
        "total": counts.total,
        "P": counts.P,
        "non_embedding": counts.non_embedding,
        "active": counts.active,
    }


class Trainer:
    """Trains one run; `fit` returns the final `Measurement`."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | Path,
        *,
        on_step: Callable[[dict], None] | None = None,
        progress: bool = True,
        threads: int | None = None,
    ):
        """``threads``: CPU threads when the config names none (default: the physical cores)."""
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.on_step = on_step
        self.show_progress = progress
        t = cfg.training
        self.device = resolve_device(t.device)
        self.world = distributed.init(self.device.type)  # a single process outside torchrun
        self.main = self.world.is_main  # the one writer of the run directory
        if self.world.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.world.local_rank)
        tensorboard = "tensorboard" in t.log and self.main  # a missing package fails here
        self.tensorboard = TensorBoardLog(self.run_dir / TENSORBOARD_DIR) if tensorboard else None
        cores = max(1, physical_cores() // self.world.local_size)  # shared by a machine's ranks
        torch.set_num_threads(t.threads or threads or cores)
        self.amp = autocast_dtype(t.dtype, self.device)
        if self.main:
            self.dataset = prepare_dataset(cfg, self.run_dir)  # a bad one fails before any write
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config_yaml = yaml.safe_dump(cfg.model_dump(), sort_keys=False)
            write_text_atomic(self.run_dir / CONFIG, config_yaml)
        distributed.barrier()  # the other ranks load the dataset rank 0 prepared
        if not self.main:
            self.dataset = prepare_dataset(cfg, self.run_dir)
        torch.manual_seed(t.seed)
        self.model_cfg = model_config(cfg, self.dataset)
        self.model = GPT(self.model_cfg).to(self.device)
        self.params = param_counts(self.model, self.dataset)
        self.peak_flops = peak_flops(self.device, self.amp)  # None: MFU unknown, not logged
        self.flops_per_token = flops_per_token(self.model_cfg, self.params)
        self.optimizer = make_optimizer(self.model, t, fused=True)  # torch's fused kernel
        self.stream = make_stream(self.dataset, exposures=t.exposures, seed=t.seed, window=t.window)
        self.total_windows = self.stream.count_windows()
        self.stream.render_in_workers(t.loader_workers)  # same windows, rendered ahead
        self.global_batch = t.batch_size * self.world.size  # windows per optimizer step
        self.total_steps = math.ceil(self.total_windows / self.global_batch)
        self.warmup = warmup_steps(t, self.total_steps)
        self.step = 0
        self.tokens = 0
        self.train_seconds = 0.0
        self.resumed_seconds = 0.0  # training time of earlier legs, restored by load_checkpoint
        self.lr_scale = 1.0  # halved by each restart after a non-finite loss
        self.nan_restarts = 0
        self.skipped_steps = 0  # on_nan: skip
        self.checkpoint_step: int | None = None  # the step of the last good checkpoint
        self._bad_step: torch.Tensor | None = None  # first non-finite step, kept on the device
        self.compile_seconds: float | None = None  # the first compiled step, compilation included
        self.packed_with = 0  # > 0: trained in a pack of this many models (kcap.training.packed)
        net = self.model
        if self.world.active:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            moe = bool(self.model_cfg.n_experts)  # an expert no token picked has no gradient
            net = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=moe)
        self._forward = torch.compile(net) if t.compile else net

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "tokens": self.tokens,
            "train_seconds": self.train_seconds,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "stream": self.stream.state_dict(),
            "counts": self.stream.counts,
            "torch_rng": torch.get_rng_state(),
            "config_hash": _hash(self.cfg),
            "lr_scale": self.lr_scale,
            "nan_restarts": self.nan_restarts,
            "skipped_steps": self.skipped_steps,
        }

    def save_checkpoint(self) -> None:
        """Checkpoint the current state -- never weights that a non-finite step has touched."""
        self._raise_if_diverged()
        if self.main:
            ckpt.save(self.state_dict(), self.run_dir)
        distributed.barrier()  # a rank that restarts from it reads it only once it is written
        self.checkpoint_step = self.step

    def load_checkpoint(self) -> bool:
        """Restore the newest good checkpoint (False when there is none); the metrics logged
        after it are dropped, since the resumed run logs those steps again."""
        found = ckpt.load_latest(self.run_dir, warn=_warn)
        if found is None:
            return False
        state, path = found
        if state["config_hash"] != _hash(self.cfg):
            raise KcapError("--resume", f"{path} was written by a different config")
        self.step, self.tokens = state["step"], state["tokens"]
        self.train_seconds = self.resumed_seconds = state["train_seconds"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # the kernel of this device, not the saver's
            group["fused"] = self.optimizer.defaults["fused"]
        self.stream.load_state_dict(state["stream"])
        self.stream.counts = state["counts"]
        torch.set_rng_state(state["torch_rng"])
        self.lr_scale = state.get("lr_scale", 1.0)
        self.nan_restarts = state.get("nan_restarts", 0)
        self.skipped_steps = state.get("skipped_steps", 0)
        self.checkpoint_step = self.step
        self._bad_step = None
        if self.main:
            _truncate_metrics(self.run_dir / METRICS, self.step, self.total_steps)
        distributed.barrier()
        return True

    # ------------------------------------------------------------------ training
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, int, int] | None:
        """The next batch: this rank's inputs and targets on the device, then the predicted
        tokens and the window tokens of the whole (global) batch, counted on the host."""
        windows = []
        for _ in range(self.global_batch):
            try:
                windows.append(next(self.stream).ids)
            except StopIteration:
                break
        if not windows:
            return None
        x, y = window_batch(windows)
        n_targets = int((y != PAD).sum())  # counted on the host: no device sync per step
        n_tokens = y.numel()
        if self.world.active:  # every rank reads the whole global batch and keeps its slice
            b, r = self.cfg.training.batch_size, self.world.rank
            x, y = x[r * b : (r + 1) * b], y[r * b : (r + 1) * b]
            if len(x) == 0:  # past the end of a short last batch: DDP still syncs this rank's
                x, y = window_batch([np.full_like(windows[0], PAD)])  # gradients; none here
        if self.device.type == "cuda":  # pinned host memory: the copy does not block the host
            x = x.pin_memory().to(self.device, non_blocking=True)
            y = y.pin_memory().to(self.device, non_blocking=True)
        else:
            x, y = x.to(self.device), y.to(self.device)
        return x, y, n_targets, n_tokens

    def train_step(self, x: torch.Tensor, y: torch.Tensor, n_targets: int) -> torch.Tensor:
        """One optimizer step; returns the (detached) loss without synchronising the device
        (except with ``on_nan: skip``, which must look at the loss before stepping). Under DDP
        ``n_targets`` counts the global batch, and the loss returned is this rank's share of its
        mean (the shares sum to it)."""
        t = self.cfg.training
        lr = self.lr_scale * run_lr(t, self.step, self.total_steps, self.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        ctx = (
            torch.autocast(self.device.type, dtype=self.amp)
            if self.amp
            else contextlib.nullcontext()
        )
        with ctx:
            logits = self._forward(x)
            # the mean loss over the batch's targets; under DDP, this rank's share of the global
            # batch's mean (``n_targets`` counts the global batch) times K, since DDP averages
            # the gradients over the K ranks: the update is that of the global mean
            nll = summed_nll(logits.float().flatten(0, 1), y.flatten(), PAD)
            loss = nll / max(n_targets, 1)
            scale = self.world.size if self.world.active else 1
            total = loss * scale + self.model.aux_loss()  # MoE balancing loss; 0 when dense
        total.backward()  # under DDP the gradients are averaged over the ranks here
        finite = torch.isfinite(total.detach())
        if t.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            finite = finite & torch.isfinite(norm)
        if self.world.active:  # every rank skips, stops or restarts at the same step
            finite = distributed.all_reduce_min(finite.int()).bool()
        if t.on_nan == "skip" and not bool(finite):  # a host sync, the price of skipping
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
        else:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if t.on_nan != "skip":
                bad = torch.where(finite, -1, self.step)
                prev = self._bad_step
                self._bad_step = bad if prev is None else torch.where(prev >= 0, prev, bad)
        self.step += 1
        self.tokens += n_targets
        return loss.detach()

    def _raise_if_diverged(self) -> None:
        """Raise `TrainingDiverged` if a step since the last check was not finite."""
        if self._bad_step is None:
            return
        bad = int(self._bad_step)  # a device sync: done at log and checkpoint steps only on GPU
        if bad < 0:
            return
        where = (
            f"the last good checkpoint is step {self.checkpoint_step:,} "
            f"({self.run_dir / ckpt.CHECKPOINT})"
            if self.checkpoint_step is not None
            else "no checkpoint was written"
        )
        raise TrainingDiverged(f"loss or gradient is not finite at step {bad + 1:,}; {where}")

    def _check(self) -> bool:
        """Raise `TrainingDiverged` after a non-finite step -- or, with ``on_nan: restart``, go
        back to the last checkpoint at half the learning rate and return True."""
        try:
            self._raise_if_diverged()
            return False
        except TrainingDiverged as e:
            t = self.cfg.training
            if t.on_nan != "restart" or self.nan_restarts >= MAX_NAN_RESTARTS:
                if t.on_nan == "restart":
                    gave_up = f"{e}; gave up after {MAX_NAN_RESTARTS} restarts"
                    raise TrainingDiverged(gave_up) from None
                raise
            restarts, scale, bad_at = self.nan_restarts + 1, self.lr_scale / 2, str(e)
            if not self.load_checkpoint():
                raise TrainingDiverged(f"{e}; nothing to restart from") from None
            self.nan_restarts, self.lr_scale = restarts, scale
            self._log({"step": self.step, "event": "nan_restart", "lr_scale": scale})
            _warn(f"{bad_at}; restarting from step {self.step:,} at {scale:g} x the lr")
            return True

    def measure(self, max_people: int | None = None) -> Measurement:
        return measure_run(
            self.cfg,
            self.model,
            self.dataset,
            self.params,
            max_people=max_people,
            device=self.device,
        )

    def _log(self, record: dict) -> None:
        if not self.main:
            return
        with open(self.run_dir / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard:
            self.tensorboard.write(record)
        if self.on_step:
            self.on_step(record)

    def fit(self, *, stop_at: int | None = None) -> Measurement | None:
        """Train to the end (or to step ``stop_at``, for tests), then measure everyone."""
        t = self.cfg.training
        end = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
        if t.on_nan == "restart" and self.checkpoint_step is None:
            self.save_checkpoint()  # something to go back to before the first checkpoint
        host_device = self.device.type == "cpu"
        bar = progress_bar(
            "loss {task.fields[loss]:.3f}",
            "{task.fields[tps]:,.0f} tok/s",
            enabled=self.show_progress and self.main,
        )
        with bar:
            task = bar.add_task(
                "training", total=self.total_steps, completed=self.step, loss=float("nan"), tps=0.0
            )
            window_start, window_tokens = time.perf_counter(), 0
            while self.step < end:
                stop = self._stop_request()
                if stop is not None:
                    if self._check():
                        continue  # went back to the last checkpoint: it is saved already
                    self.save_checkpoint()
                    raise interrupt.RunInterrupted(stop[0], self.step, stop[1])
                batch = self._batch()
                if batch is None:
                    break
                x, y, n_targets, n_tokens = batch
                compiling = t.compile and self.compile_seconds is None
                t0 = time.perf_counter()
                loss_t = self.train_step(x, y, n_targets)
                if compiling:  # the first step compiles: timed apart from training
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    self.compile_seconds = time.perf_counter() - t0
                    self._log(
                        {"step": self.step, "event": "compile", "compile_s": self.compile_seconds}
                    )
                    window_start = time.perf_counter()
                else:
                    self.train_seconds += time.perf_counter() - t0
                    window_tokens += n_tokens
                log_step = self.step % t.log_every == 0 or self.step == end
                save_step = self.step % t.checkpoint_every == 0
                # Non-finite steps: looked for every step on the CPU (free), at log and
                # checkpoint steps on a GPU (a device sync).
                if (host_device or log_step or save_step) and self._check():
                    window_start, window_tokens = time.perf_counter(), 0
                    continue
                if log_step:
                    if self.world.active:  # the global batch's mean loss
                        loss_t = distributed.all_reduce_sum(loss_t)
                    loss = float(loss_t)  # the only device sync, at log steps
                    elapsed = time.perf_counter() - window_start
                    tps = window_tokens / max(elapsed, 1e-9)
                    window_start, window_tokens = time.perf_counter(), 0
                    self.log_training(loss, tps)
                    bar.update(task, completed=self.step, loss=loss, tps=tps)
                if self.measure_due():
                    self.measure_during()
                    window_start, window_tokens = time.perf_counter(), 0  # measuring isn't training
                if save_step:
                    self.save_checkpoint()
            bar.update(task, completed=self.step)
        return self.finish()

    def log_training(self, loss: float, tokens_per_s: float) -> None:
        """Log a training step: loss, learning rate, tokens, throughput (and MFU, MoE state)."""
        self._log(
            {
                "step": self.step,
                "loss": loss,
                "lr": self.optimizer.param_groups[0]["lr"],
                "tokens": self.tokens,
                "tokens_per_s": tokens_per_s,
                **self._mfu(tokens_per_s),
                **self.model.moe_metrics(),  # per-layer balance/drops (MoE only)
            }
        )

    def measure_due(self) -> bool:
        """Whether this step takes an in-training measurement (``measurement.every``)."""
        every = self.cfg.measurement.every
        return bool(
            every
            and self.step % every == 0
            and self.step < self.total_steps
            and self.main  # the other ranks wait for it at the next step
        )

    def measure_during(self) -> None:
        """Measure ``measurement.during_max_people`` people now and log it."""
        r = self.measure(self.cfg.measurement.during_max_people)
        self._log({"step": self.step, "measure": _brief(r)})

    def finish(self) -> Measurement | None:
        """Checkpoint; at the end of training, also measure everyone and write measure.json and
        run.json. Returns the measurement (None before the end, and on ranks other than 0)."""
        self.save_checkpoint()
        if self.step < self.total_steps or not self.main:
            return None
        result = self.measure(self.cfg.measurement.max_people)
        self._log({"step": self.step, "measure": _brief(result)})
        (self.run_dir / MEASURE).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        (self.run_dir / SUMMARY).write_text(json.dumps(self.summary(), indent=2) + "\n")
        return result

    def _mfu(self, tokens_per_s: float) -> dict[str, float]:
        """``{"mfu": ...}`` where the device's peak is known, else nothing."""
        if self.peak_flops is None:
            return {}
        peak = self.peak_flops * self.world.size  # tokens_per_s counts every rank's tokens
        return {"mfu": tokens_per_s * self.flops_per_token / peak}

    def _stop_request(self) -> tuple[str, int] | None:
        """A pending stop request: this process's, or under DDP any rank's (all stop together)."""
        stop = interrupt.pending()
        if not self.world.active or not distributed.any_rank(stop is not None):
            return stop
        return stop or ("a stop request on another rank", 1)

    def summary(self) -> dict:
        counts = self.stream.counts
        summary = {
            "name": self.cfg.name,
            "params": self.params,
            "model": self.model_cfg.model_dump(),
            "steps": self.step,
            "total_steps": self.total_steps,
            "tokens": self.tokens,
            "exposures": {
                "target": self.cfg.training.exposures,
                "min": int(counts.min()),
                "max": int(counts.max()),
            },
            "train_seconds": self.train_seconds,
            "tokens_per_s": self.tokens / max(self.train_seconds, 1e-9),
            "device": str(self.device),
            "threads": torch.get_num_threads(),
        }
        summary["peak_flops"] = self.peak_flops or "unknown"  # the MFU denominator, per device
        if self.compile_seconds is not None:
            summary["compile_s"] = self.compile_seconds
        if self.packed_with:  # train_seconds is then the pack's time, shared with the others
            summary["packed_with"] = self.packed_with
        if self.world.active:
            summary["world_size"] = self.world.size
            summary["global_batch_size"] = self.global_batch
        stream_stats = self.stream.stats()  # e.g. useful and junk tokens of a junk mixture
        if stream_stats:
            summary["stream"] = stream_stats
        return summary


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _truncate_metrics(path: Path, step: int, total_steps: int) -> None:
    """Drop the records of ``metrics.jsonl`` logged after the checkpoint of ``step`` (and a line
    torn by a kill). At a step, everything is logged before its checkpoint except the final
    measurement, which follows the last checkpoint."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        at = record.get("step", 0)
        final = at == total_steps and "measure" in record
        if at < step or (at == step and not final):
            kept.append(line)
    path.write_text("".join(f"{line}\n" for line in kept))


def _brief(r: Measurement) -> dict:
    return {
        "bits": r.bits["total"],
        "R": r.R,
        "R_max": r.R_max,
        "p1": r.p1,
        "p2": r.p2,
        "recall_accuracy": r.recall_accuracy,
        "n_measured": r.n_measured,
    }


def _hash(cfg: RunConfig) -> str:
    return config_hash(cfg.model_dump())


def window_batch(windows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of a batch of (T+1)-token stream windows, on the host."""
    w = torch.from_numpy(np.stack(windows))
    return w[:, :-1].clamp(min=0), w[:, 1:]  # padding positions are never targets


def measure_run(
    cfg: RunConfig,
    model: torch.nn.Module,
    dataset: Dataset,
    params: dict,
    *,
    max_people: int | None,
    device: torch.device,
) -> Measurement:
    """Measure ``model`` with a run's measurement settings (evaluation seed, batch) and its P."""
    m = cfg.measurement
    return measure(
        model,
        dataset,
        P_count=params["P"],
        params=params,
        eval_seed=m.eval_seed,
        max_people=max_people,
        batch_size=m.batch_size,
        device=device,
    )


def run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config a run directory was trained with (its ``config.yaml``)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise KcapError("RUN_DIR", f"{run_dir} is not a kcap run directory (no {CONFIG})")
    return parse_config(yaml.safe_load((run_dir / CONFIG).read_text()))


def load_run(run_dir: str | Path) -> tuple[RunConfig, Dataset, GPT, dict]:
    """Config, dataset, trained model (from the checkpoint) and parameter counts of a run."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    if not ckpt.exists(run_dir):  # before the dataset is prepared: refuse without writing
        raise KcapError("RUN_DIR", f"{run_dir} has no checkpoint yet")
    state, path = ckpt.load_latest(run_dir, warn=_warn)
    if state.get("config_hash") not in (None, _hash(cfg)):
        raise KcapError("RUN_DIR", f"{path} was written by a different config than {CONFIG}")
    dataset = prepare_dataset(cfg, run_dir)
    model = GPT(model_config(cfg, dataset))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise KcapError("RUN_DIR", f"{path} does not fit the model of {CONFIG} ({first})") from None
    return cfg, dataset, model, param_counts(model, dataset)
