"""The training loop (paper section 6): SGD stepped per iteration, mixup, evaluation every epoch.

One ``Trainer`` runs one run: epochs of training (schedule evaluated at every iteration, optional
manifold mixup, bf16 autocast), an evaluation after each, a history row, an atomic checkpoint, and
the run's summary. It resumes from a checkpoint bit-identically (CPU), stops cleanly with status
``diverged`` on a non-finite loss -- naming the layer where the first non-finite value appeared
(:mod:`equinorm.train.nonfinite`, on a replay of the epoch) -- and on SIGTERM/SIGUSR1 writes a
mid-epoch checkpoint before handing the signal on (see :mod:`equinorm.train.signals`).

With ``k`` virtual devices (one Mixup each) a step splits its batch into ``k`` micro-batches,
each with its own forward pass (its own normalization statistics and mixup draw), averages their
gradients and keeps the first device's running statistics: the arithmetic of ``k`` DDP ranks
(DDP broadcasts rank 0's buffers), the paper's 2-GPU SVHN batch on one GPU.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import signal
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from equinorm.data.sharding import split_micro_batches
from equinorm.errors import ConfigError
from equinorm.layers import cached_eval_kernels
from equinorm.run import checkpoint as ckpt
from equinorm.run.record import RunDir, summarize
from equinorm.train import distributed
from equinorm.train.diagnostics import equilibrium_stats
from equinorm.train.distributed import DistInfo, all_reduce_sum
from equinorm.train.mixup import Mixup
from equinorm.train.nonfinite import NonFiniteProbe, account
from equinorm.train.optim import set_lr_momentum
from equinorm.train.schedules import Schedule
from equinorm.train.signals import PreemptionGuard
from equinorm.train.wandb_logger import WandbLogger

log = logging.getLogger("equinorm")

#: how often (in steps) the loop looks for a non-finite loss (a host sync) and, under DDP,
#: agrees across ranks on stopping
CHECK_EVERY = 20


def eta(seconds: float) -> str:
    """The epoch line's time left: rounded up (never "0m00s" with work left), hours past one."""
    s = math.ceil(seconds)
    if s <= 0:
        return ""
    left = f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
    return f"  eta {left}"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``train.precision`` (resolved: bf16 or fp32); None: none."""
    return torch.bfloat16 if precision == "bf16" else None


def autocast(device_type: str, dtype: torch.dtype | None):
    """The context a forward pass runs in: autocast to ``dtype``, or nothing."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type, dtype=dtype)


@torch.no_grad()
def score(model: nn.Module, splits: dict, autocast, device, progress: str | None = None) -> dict:
    """``<split>_loss`` (cross-entropy) and ``<split>_acc`` (%) of ``model`` over every image of
    each loader of ``splits`` (``{name: loader}``; under DDP each rank's share), inside the
    context ``autocast()``. An image whose outputs are not all finite is wrong: argmax would
    pick a NaN's class (0 for all-NaN outputs), scoring a network that overflows at chance.
    ``progress`` (a label, e.g. ``epoch 3/15``; None: none) shows a progress bar per split."""
    s = torch.zeros(len(splits), 3, dtype=torch.float64, device=device)
    for i, (name, loader) in enumerate(splits.items()):
        shown = None
        if progress is not None:
            from tqdm.auto import tqdm

            desc = f"{progress} {name}".strip()
            shown = tqdm(
                total=len(loader), desc=desc, unit="batch", leave=False, dynamic_ncols=True
            )
        for x, y in loader.iterate(0):
            with autocast():
                logits = model(x)
            s[i, 0] += F.cross_entropy(logits.float(), y, reduction="sum").double()
            s[i, 1] += ((logits.argmax(1) == y) & torch.isfinite(logits).all(1)).sum()
            s[i, 2] += len(y)
            if shown is not None:
                shown.update()
        if shown is not None:
            shown.close()
    scores = {}
    for name, (loss, correct, count) in zip(splits, all_reduce_sum(s).tolist(), strict=True):
        count = max(count, 1.0)
        scores |= {f"{name}_loss": loss / count, f"{name}_acc": 100.0 * correct / count}
    return scores


def overflowed(row: dict) -> list[str]:
    """The splits of a history row whose loss is not finite while the training loss is."""
    if not math.isfinite(row["train_loss"]):
        return []
    return [s for s in ("test", "val") if not math.isfinite(row.get(f"{s}_loss", 0.0))]


@dataclass
class Sums:
    """Running sums of one training epoch, kept on the device (no host sync per step)."""

    loss: Tensor
    correct: Tensor
    count: Tensor

    @classmethod
    def zeros(cls, device) -> Sums:
        z = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
        return cls(z(), z(), z())

    def state(self) -> dict:
        return {k: getattr(self, k).detach().cpu() for k in ("loss", "correct", "count")}

    @classmethod
    def from_state(cls, state: dict, device) -> Sums:
        return cls(*(state[k].to(device) for k in ("loss", "correct", "count")))


@dataclass
class Progress:
    """Where a run stands: the epoch in progress and the batches of it already done."""

    epoch: int = 0
    batch: int = 0
    history: list[dict] = field(default_factory=list)
    equilibrium: list[dict] = field(default_factory=list)
    elapsed: float = 0.0
    epoch_elapsed: float = 0.0  # seconds the epoch in progress took before a preemption


class Trainer:
    def __init__(
        self,
        *,
        model: nn.Module,
        raw_model: nn.Module,
        eval_model: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        mixup: Mixup | list[Mixup],
        data,
        epochs: int,
        device: torch.device,
        precision: str,
        rundir: RunDir,
        dist: DistInfo,
        logger: WandbLogger,
        checkpoint: bool = True,
        progress: bool = False,
        equilibrium: bool = False,
        summary_fields: dict | None = None,
    ) -> None:
        self.model, self.raw_model, self.eval_model = model, raw_model, eval_model
        self.optimizer, self.schedule = optimizer, schedule
        # one Mixup per virtual device of this process (their draws are independent)
        self.mixups = list(mixup) if isinstance(mixup, list | tuple) else [mixup]
        self.virtual_devices = len(self.mixups)
        self.data, self.epochs, self.device = data, epochs, device
        self.autocast_dtype = autocast_dtype(precision)
        self.rundir, self.dist, self.logger = rundir, dist, logger
        self.checkpoint_enabled = checkpoint
        self.progress_enabled = progress and dist.is_main
        self.equilibrium_enabled = equilibrium
        self.summary_fields = summary_fields or {}
        self.state = Progress()
        self.sums = Sums.zeros(device)
        self._probe: Tensor | None = None
        self._pending = None  # DDP: the last step's all-reduced (signalled, non-finite) flags
        self._epoch_start: dict | None = None  # state at the epoch's start, for a replay

    # -- state ---------------------------------------------------------------------------------
    def mixup_states(self) -> list[dict]:
        """Every device's mixup state, in global device order (a collective under DDP)."""
        mine = [m.state_dict() for m in self.mixups]
        if not self.dist.enabled:
            return mine
        return [s for rank in distributed.all_gather_object(mine) for s in rank]

    def state_dict(self, mixup: list[dict] | None = None) -> dict:
        s = self.state
        return {
            "version": 2,
            "world_size": self.dist.world_size,
            "virtual_devices": self.virtual_devices,
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "mixup": [m.state_dict() for m in self.mixups] if mixup is None else mixup,
            "rng": ckpt.rng_state(),
            "epoch": s.epoch,
            "batch": s.batch,
            "sums": self.sums.state(),
            "history": s.history,
            "equilibrium": s.equilibrium,
            "elapsed": s.elapsed,
            "epoch_elapsed": s.epoch_elapsed,
        }

    def load_state_dict(self, state: dict) -> None:
        saved = (state.get("world_size", 1), state.get("virtual_devices", 1))
        here = (self.dist.world_size, self.virtual_devices)
        if saved != here:
            raise ConfigError(
                f"{self.rundir.checkpoint_path} was written by {saved[0]} process(es) x "
                f"{saved[1]} virtual device(s), this run has {here[0]} x {here[1]}: resume it "
                f"with torchrun --nproc_per_node={saved[0]} (or remove that directory)"
            )
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        # every device's draws, in global device order (a version-1 checkpoint: one process's)
        mixups = state["mixup"] if isinstance(state["mixup"], list) else [state["mixup"]]
        first = self.dist.rank * self.virtual_devices
        mine = mixups[first : first + self.virtual_devices]
        for m, st in zip(self.mixups, mine, strict=True):
            m.load_state_dict(st)
        ckpt.set_rng_state(state["rng"])
        self.state = Progress(
            state["epoch"],
            state["batch"],
            list(state["history"]),
            list(state["equilibrium"]),
            float(state["elapsed"]),
            float(state.get("epoch_elapsed", 0.0)),  # older checkpoints: the resumed part only
        )
        self.sums = Sums.from_state(state["sums"], self.device)

    def logged_so_far(self) -> list[tuple[int, dict]]:
        """(step, metrics) of every finished epoch, as :meth:`end_epoch` logged them."""
        means: dict[int, dict] = {}
        for r in self.state.equilibrium:
            m = means.setdefault(int(r["epoch"]), {"positive": [], "negative": []})
            m["positive"].append(r["positive"])
            m["negative"].append(r["negative"])
        out = []
        for row in self.state.history:
            metrics = dict(row)
            m = means.get(int(row["epoch"]))
            if m:
                for part in ("positive", "negative"):
                    metrics[f"equilibrium/{part}"] = sum(m[part]) / len(m[part])
            out.append((int(row["epoch"]), metrics))
        return out

    def save_checkpoint(self) -> None:
        if not self.checkpoint_enabled:
            return
        mixup = self.mixup_states()  # every rank takes part in the gather
        if self.dist.is_main:
            ckpt.save_atomic(
                self.state_dict(mixup), self.rundir.checkpoint_path, keep_previous=True
            )

    def snapshot(self) -> None:
        """Keep this epoch's starting state (a device copy) to replay it if the epoch diverges."""
        self._epoch_start = copy.deepcopy(self.state_dict())

    # -- the loop ------------------------------------------------------------------------------
    def autocast(self):
        return autocast(self.device.type, self.autocast_dtype)

    def fit(self) -> dict:
        """Train from the current state to the end; returns the summary written to disk."""
        with PreemptionGuard(enabled=self.checkpoint_enabled) as guard:
            summary = self._epochs(guard)
            if guard.requested is not None:  # after the last poll: the run is recorded, and the
                guard.hand_on(ended=True)  # signal still stops the process (a sweep's Ctrl-C)
        return summary

    def _epochs(self, guard: PreemptionGuard) -> dict:
        """The epochs left, then the run's end (complete or diverged): its summary."""
        while self.state.epoch < self.epochs:
            epoch = self.state.epoch
            self.snapshot()
            start = time.perf_counter()
            stopped = self.train_epoch(epoch, guard)
            spent = time.perf_counter() - start
            self.state.elapsed += spent
            if stopped == "preempted":  # the resumed attempt adds the rest of the epoch
                self.state.epoch_elapsed += spent
                self.save_checkpoint()
                self.write_summary("running")
                log.warning("preempted during epoch %d: checkpoint written", epoch + 1)
                self.logger.finish(exit_code=1)
                guard.hand_on()
            train = self.reduce_sums()
            if stopped == "diverged" or not math.isfinite(train["train_loss"]):
                return self.diverge(epoch, train)
            scores = self.evaluate()
            epoch_time = self.state.epoch_elapsed + time.perf_counter() - start
            self.state.epoch_elapsed = 0.0
            self.end_epoch(epoch, train, scores, epoch_time)
        return self.finish()

    def train_epoch(self, epoch: int, guard: PreemptionGuard) -> str | None:
        loader = self.data.train
        n_batches = len(loader)
        self.model.train()
        bar = self._bar(n_batches, epoch)
        t0, seen = time.perf_counter(), 0
        self._pending = None
        for b, (x, y) in enumerate(loader.iterate(epoch, self.state.batch), start=self.state.batch):
            lr = self.step(x, y, epoch + b / n_batches)
            self.state.batch = b + 1
            seen += len(y)
            stop = self._poll(b, guard)
            if bar is not None and (b % 10 == 0 or b + 1 == n_batches):
                self._update_bar(bar, b, seen, t0, lr)
            if stop:
                if bar is not None:
                    bar.close()
                return stop
        if bar is not None:
            bar.close()
        if self.dist.enabled:  # the last step's flags
            return self._poll_ranks(guard, last=True)
        return None

    def step(self, x: Tensor, y: Tensor, t: float, model: nn.Module | None = None) -> float:
        """One optimizer step on a batch of this process (``t``: the fractional epoch); returns
        the learning rate. With virtual devices, one forward/backward per micro-batch."""
        model = self.model if model is None else model
        lr, momentum = self.schedule(t)
        set_lr_momentum(self.optimizer, lr, momentum)
        self.optimizer.zero_grad(set_to_none=True)
        k = self.virtual_devices
        parts = zip(split_micro_batches(x, k), split_micro_batches(y, k), strict=True)
        first_buffers, total = None, 0.0
        for j, (xj, yj) in enumerate(parts):
            last = j == k - 1
            sync = model.no_sync() if self.dist.enabled and not last else contextlib.nullcontext()
            try:
                with sync:
                    loss = self._forward_backward(model, self.mixups[j], xj, yj, 1.0 / k)
            except ValueError as exc:  # PyTorch's BatchNorm on one value per channel
                if "Expected more than 1 value per channel" not in str(exc):
                    raise
                raise ConfigError(
                    f"a training batch of {len(yj)} image(s) gives a batch norm one value per "
                    "channel (1x1 maps): raise train.batch_size (a last batch of 1: "
                    "dataset.drop_last=true)"
                ) from None
            if k > 1 and j == 0:  # DDP keeps rank 0's running statistics: device 0's here
                first_buffers = [buf.detach().clone() for buf in self.raw_model.buffers()]
            total = total + loss
        self.step_loss = total  # the step's summed loss, on the device (no sync)
        if first_buffers is not None:
            with torch.no_grad():
                for buf, kept in zip(self.raw_model.buffers(), first_buffers, strict=True):
                    buf.copy_(kept)
        self.optimizer.step()
        return lr

    def _forward_backward(self, model, mixup: Mixup, x: Tensor, y: Tensor, scale: float) -> Tensor:
        with self.autocast():
            if mixup.enabled:
                point, lam, perm, _ = mixup.draw(len(y), self.device)
                logits = model(x, hook_at=point, hook=mixup.mixer)
                y_perm = y[perm]
                loss = mixup.criterion(logits, y, y_perm, lam)
            else:
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
        (loss * scale if scale != 1.0 else loss).backward()
        with torch.no_grad():
            hit = (logits.argmax(1) == y).double()
            if mixup.enabled:
                lam64 = lam.double()
                hit = lam64 * hit + (1 - lam64) * (logits.argmax(1) == y_perm).double()
            self.sums.loss += loss.detach().double() * len(y)
            self.sums.correct += hit.sum()
            self.sums.count += len(y)
        return loss.detach()

    def _poll(self, b: int, guard: PreemptionGuard) -> str | None:
        """Preemption every step, a non-finite loss every CHECK_EVERY steps (single process);
        under DDP both every step, agreed across ranks with one step's delay (below)."""
        if self.dist.enabled:
            return self._poll_ranks(guard)
        if guard.requested is not None:
            return "preempted"
        if (b + 1) % CHECK_EVERY == 0 and not torch.isfinite(self.sums.loss):
            return "diverged"
        return None

    def _poll_ranks(self, guard: PreemptionGuard, last: bool = False) -> str | None:
        """Each step all-reduces (MAX) this rank's (signalled, non-finite) flags and reads the
        previous step's: a signal on any rank stops every rank within one step. On CUDA the
        reduce and a copy to pinned memory are queued behind the step and read one step later,
        so the host waits for the previous step only (the device stays one step ahead); gloo
        reduces on the host."""
        pending, self._pending = self._pending, None
        if not last:
            flags = torch.empty(2, dtype=torch.float32, device=self.device)
            flags[0].fill_(float(guard.requested is not None))  # a kernel argument, no copy
            flags[1] = (~torch.isfinite(self.sums.loss)).float()
            work = torch.distributed.all_reduce(
                flags, op=torch.distributed.ReduceOp.MAX, async_op=True
            )
            work.wait()  # NCCL: the stream waits, not the host; gloo: done
            done = None
            if flags.is_cuda:
                host = torch.empty(2, dtype=torch.float32, pin_memory=True)
                host.copy_(flags, non_blocking=True)
                done = torch.cuda.Event()
                done.record()
                flags = host
            self._pending = (done, flags)
        if pending is None:
            return None
        if pending[0] is not None:
            pending[0].synchronize()
        preempt, diverged = pending[1].tolist()
        if preempt and guard.requested is None:
            guard.requested = signal.SIGTERM  # another rank was signalled: stop with it
        if preempt or diverged:
            self._pending = None  # this step's flags: every rank stops here anyway
        return "preempted" if preempt else ("diverged" if diverged else None)

    def reduce_sums(self) -> dict:
        s = torch.stack([self.sums.loss, self.sums.correct, self.sums.count])
        loss, correct, count = all_reduce_sum(s).tolist()
        count = max(count, 1.0)
        return {
            "train_loss": loss / count,
            "train_acc": 100.0 * correct / count,
            "train_images": int(count),
        }

    def splits(self) -> dict:
        """The evaluated splits: the test set, and the validation images (dataset.val_size)."""
        held = self.data.val
        return {"test": self.data.test} | ({"val": held} if held is not None else {})

    def evaluate(self) -> dict:
        """``<split>_loss`` and ``<split>_acc`` of every split, over all its images (all ranks)."""
        self.eval_model.eval()
        # every rank evaluates the model rank 0 saves (DDP keeps rank 0's running statistics)
        distributed.broadcast_buffers(self.raw_model)
        with cached_eval_kernels(self.raw_model):
            shown = f"epoch {self.state.epoch + 1}/{self.epochs}" if self.progress_enabled else None
            scores = score(self.eval_model, self.splits(), self.autocast, self.device, shown)
        self.model.train()
        return scores

    def end_epoch(self, epoch: int, train: dict, scores: dict, epoch_time: float) -> None:
        lr, momentum = self.schedule(epoch + 1 - 1e-9)
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "momentum": momentum,
            "train_loss": train["train_loss"],
            "train_acc": train["train_acc"],
            **scores,
            "epoch_time_s": round(epoch_time, 3),
            "images_per_s": round(train["train_images"] / max(epoch_time, 1e-9), 1),
        }
        self.state.history.append(row)
        metrics = dict(row)
        if self.equilibrium_enabled:
            records = self.equilibrium(epoch + 1)
            self.state.equilibrium.extend(records)
            if records:
                metrics["equilibrium/positive"] = sum(r["positive"] for r in records) / len(records)
                metrics["equilibrium/negative"] = sum(r["negative"] for r in records) / len(records)
        self.state.epoch, self.state.batch = epoch + 1, 0
        self.sums = Sums.zeros(self.device)
        self.save_checkpoint()
        if self.dist.is_main:
            self.rundir.write_history(self.state.history)
            if self.state.equilibrium:
                self.rundir.write_table(self.rundir.equilibrium_path, self.state.equilibrium)
            self.write_summary("running")
        self.logger.log(metrics, step=epoch + 1)
        times = [r["epoch_time_s"] for r in self.state.history]
        left = (self.epochs - epoch - 1) * sum(times) / len(times)
        log.info(
            "epoch %d/%d  lr %.4g  train loss %.4f acc %.2f  test loss %.4f acc %.2f%s  "
            "%.1fs (%.0f img/s)%s",
            epoch + 1,
            self.epochs,
            lr,
            row["train_loss"],
            row["train_acc"],
            row["test_loss"],
            row["test_acc"],
            f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.2f}"
            if "val_acc" in row
            else "",
            epoch_time,
            row["images_per_s"],
            eta(left),
        )
        self._say_overflow(row)

    def _say_overflow(self, row: dict) -> None:
        """Warns when an evaluation loss is not finite while training's is, at the first such
        epoch of the run's history (``row``, its last): the network overflows in evaluation mode
        only (BatchNorm's running variance, say)."""
        bad = overflowed(row)
        if not bad or not self.dist.is_main or any(map(overflowed, self.state.history[:-1])):
            return
        log.warning(
            "epoch %d: the %s not finite while the training loss is: the network "
            "overflows in evaluation mode (e.g. BatchNorm's running statistics); images whose "
            "outputs are not finite count as wrong",
            row["epoch"],
            " and ".join(bad) + (" losses are" if len(bad) > 1 else " loss is"),
        )

    def equilibrium(self, epoch: int) -> list[dict]:
        if not self.dist.is_main:
            return []
        if self._probe is None:
            self._probe = next(self.data.test.iterate(0))[0][:128]
        with self.autocast():
            records = equilibrium_stats(self.raw_model, self._probe)
        return [{"epoch": epoch, **r} for r in records]

    def diverge(self, epoch: int, train: dict) -> dict:
        lr, momentum = self.schedule(epoch + self.state.batch / max(len(self.data.train), 1))
        self.state.history.append(
            {
                "epoch": epoch + 1,
                "lr": lr,
                "momentum": momentum,
                "train_loss": float("nan"),
                "train_acc": train["train_acc"],
                **{f"{name}_{m}": math.nan for name in self.splits() for m in ("loss", "acc")},
                "epoch_time_s": float("nan"),
                "images_per_s": float("nan"),
            }
        )
        progress = self.state
        origin = self.locate_nonfinite(epoch)
        self.state = progress
        log.warning(
            "non-finite training loss in epoch %d: stopping (status: diverged); first non-finite "
            "value: %s",
            epoch + 1,
            account(origin),
        )
        if self.dist.is_main:
            self.rundir.write_history(self.state.history)
        summary = self.write_summary("diverged", diverged_epoch=epoch + 1, **origin)
        self.logger.summary(status="diverged", diverged_epoch=epoch + 1)
        self.logger.finish(exit_code=1)
        return summary

    def locate_nonfinite(self, epoch: int) -> dict:
        """Replay the diverged epoch from its starting state, checking every step, and return
        where the first non-finite value appeared (``nonfinite_*`` summary fields)."""
        if self._epoch_start is None:
            return {}
        self.load_state_dict(copy.deepcopy(self._epoch_start))
        model = getattr(self.model, "_orig_mod", self.model)  # eager: hooks see every module
        model.train()
        n_batches = len(self.data.train)
        start = self.state.batch
        with NonFiniteProbe(self.raw_model) as probe:
            for b, (x, y) in enumerate(self.data.train.iterate(epoch, start), start=start):
                probe.reset()
                self.step(x, y, epoch + b / n_batches, model=model)
                params = self.raw_model.parameters()
                weights_ok = all(bool(torch.isfinite(p).all()) for p in params)
                loss_ok = bool(torch.isfinite(self.step_loss))
                finite = torch.tensor([float(loss_ok), float(weights_ok)], device=self.device)
                if self.dist.enabled:
                    torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
                if bool(finite.all()):
                    continue
                fields = {"nonfinite_epoch": epoch + 1, "nonfinite_batch": b + 1}
                name = probe.first_nonfinite_output()
                if name is not None:
                    return {**fields, **probe.describe(name, "forward")}
                name = probe.deepest_nonfinite_grad()
                if name is not None:
                    return {**fields, **probe.describe(name, "backward")}
                return {**fields, "nonfinite_layer": "optimizer step"}
        return {"nonfinite_layer": "not reproduced on replay (non-deterministic kernels?)"}

    def finish(self) -> dict:
        """The run's end, in an order a kill at any point leaves whole: model.pt, then the summary
        "complete" (a complete run has its weights; killed between, the rerun resumes from the
        last checkpoint and ends here again), then the checkpoints go, then wandb, whose finish
        may wait on its uploads."""
        keep = self.dist.is_main and self.checkpoint_enabled
        if keep:
            ckpt.save_atomic(self.raw_model.state_dict(), self.rundir.model_path)
        summary = self.write_summary("complete")
        if keep:
            ckpt.previous(self.rundir.checkpoint_path).unlink(missing_ok=True)
            self.rundir.checkpoint_path.unlink(missing_ok=True)  # a finished run keeps model.pt
        self.logger.summary(**{k: v for k, v in summary.items() if k.startswith(("test", "train"))})
        self.logger.finish()
        return summary

    def write_summary(self, status: str, **extra) -> dict:
        fields = {**self.summary_fields, **extra}
        summary = summarize(status, self.state.history, self.epochs, self.state.elapsed, **fields)
        summary["epoch"] = self.state.epoch  # a diverged epoch has no history row
        if self.dist.is_main:
            self.rundir.write_summary(**summary)
        return summary

    # -- progress bar --------------------------------------------------------------------------
    def _bar(self, total: int, epoch: int):
        if not self.progress_enabled:
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            initial=self.state.batch,
            desc=f"epoch {epoch + 1}/{self.epochs}",
            unit="batch",
            leave=False,
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def _update_bar(self, bar, b: int, seen: int, t0: float, lr: float) -> None:
        count = max(self.sums.count.item(), 1.0)
        bar.n = b + 1
        bar.set_postfix(
            loss=f"{self.sums.loss.item() / count:.4f}",
            acc=f"{100 * self.sums.correct.item() / count:.2f}",
            lr=f"{lr:.3g}",
            img_s=f"{seen / max(time.perf_counter() - t0, 1e-9):.0f}",
            refresh=False,
        )
        bar.refresh()


__all__ = ["Progress", "Sums", "Trainer", "autocast", "autocast_dtype", "score"]
