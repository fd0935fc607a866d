"""Training an Autoencoder by gradient descent: full-batch GD, minibatch SGD, L-BFGS.

Contract: ``train(model, params, x_train, ...) -> TrainResult``. The caller's ``params`` are
never modified; training works on a copy and returns the trained parameters with the
``TrainState`` that resumes it. ``epochs`` is the total to reach, so a run resumed from a
checkpoint after epoch 2 of 4 trains epochs 3 and 4 only.

GD and SGD share one update, classical momentum (GD's single batch is the whole training set)::

    v <- momentum * v - learning_rate * grad
    p <- p + v

Determinism: epoch ``e`` (counting from 0) visits the images in the order
``epoch_order(seed, e, n_train)``, so a run resumed from a checkpoint replays the same batches
as an uninterrupted one, and its parameters agree bit for bit where the BLAS thread count is
the same in both (pinned with ``blas_threads``: in float32 the count changes the rounding of
the products, and by default it follows the machine's load). L-BFGS runs
``scipy.optimize.minimize(method="L-BFGS-B")`` on the flattened float64 parameters; one epoch
is one L-BFGS iteration over the full batch. Its curvature memory is not checkpointed, so a
resumed L-BFGS run starts that memory afresh.

The library never prints: progress goes to an optional ``callback`` as ``TrainStarted``,
``StepDone`` and ``EpochDone`` events. A NaN or Inf loss, error or parameter raises
``TrainingDiverged``, and so does a loss that grows to more than ``DIVERGENCE_FACTOR`` times
the run's first loss (a float64 network with an identity output can climb to 1e200, its
weights to 1e85, before anything overflows). A checkpoint is written only after an epoch
whose numbers all passed these checks, so the file on disk is then the last good one. The
loss is checked after every step and the parameters after every epoch: a non-finite parameter
makes the next step's loss non-finite, except where it only saturates units, and then the end
of the epoch catches it.

Speed: an SGD step reuses one workspace of preallocated arrays (``Autoencoder.workspace``),
lets the model return ``-learning_rate * grad`` directly and skips the model's scans for NaN
and Inf, which the checks above make redundant; each parameter is then updated in three
passes over its array.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradproof import blas
from gradproof.checkpoint import EpochMetrics, TrainState, save_checkpoint
from gradproof.errors import InputError, TrainingDiverged
from gradproof.nn import aligned
from gradproof.nn.autoencoder import Autoencoder
from gradproof.nn.network import Workspace
from gradproof.nn.validation import all_finite
from gradproof.params import parse_params

# Method name -> what it does (CLI choices and help read these keys).
METHODS: dict[str, str] = {
    "gd": "full-batch gradient descent with momentum",
    "sgd": "minibatch stochastic gradient descent with momentum",
    "lbfgs": "L-BFGS-B (scipy) on the full batch, in float64",
}

DEFAULT_METHOD = "sgd"
# 50 epochs of the seed network on the bundled 5000 images take about 8 s on 2 cores.
DEFAULT_EPOCHS = 50
DEFAULT_MOMENTUM = 0.5
DEFAULT_BATCH_SIZE = 100
DEFAULT_SEED = 0
# Default learning rate for a loss averaged over the batch (reduction "mean"). A summed loss
# (reduction "sum", the seed's) has a gradient as many times larger as the batch has images,
# so its default is this divided by the batch size: 0.5 / 100 = 0.005 for SGD over batches of
# 100. Measured on the seed network and the bundled 5000 images with momentum 0.5: SGD reaches
# a test error of about 3.6 in 30 epochs and 2.8 in 50 (0.01 with momentum 0.9 stalls near 21:
# larger rates saturate the sigmoids); GD at 1.0 / 5000 reaches about 14 in 100 epochs.
MEAN_LOSS_LEARNING_RATE: dict[str, float] = {"sgd": 0.5, "gd": 1.0}

# A loss this many times the run's first one means divergence, not noise: batch losses of a
# working run stay within a few times the first (a sigmoid output bounds the squared error
# at about 5 times its starting value), while a diverging one grows geometrically.
DIVERGENCE_FACTOR = 1e6

# Images per forward pass when measuring reconstruction error (bounds the memory it takes).
_EVAL_CHUNK = 10_000


@dataclass(frozen=True)
class TrainStarted:
    """Sent once before the first step."""

    method: str
    start_epoch: int  # epochs already done (non-zero when resuming)
    epochs: int  # the total to reach
    steps_per_epoch: int
    n_train: int
    learning_rate: float | None  # None for L-BFGS, which chooses its own steps


@dataclass(frozen=True)
class StepDone:
    """Sent after every optimiser step."""

    epoch: int  # the epoch in progress, counting from 1
    step: int  # steps since training began
    step_in_epoch: int  # counting from 1
    steps_per_epoch: int
    loss: float  # the objective on this step's batch, before the update
    running_loss: float  # mean of ``loss`` over the epoch so far


@dataclass(frozen=True)
class EpochDone:
    """Sent after every epoch, once its checkpoint (if any) is on disk."""

    metrics: EpochMetrics
    checkpoint: Path | None


TrainEvent = TrainStarted | StepDone | EpochDone


@dataclass(frozen=True)
class TrainResult:
    """The outcome of ``train``.

    Attributes
    ----------
    params : dict of str to ndarray
        The trained parameters.
    state : TrainState
        The state to resume from; ``state.history`` holds every epoch's metrics.
    stop_reason : str
        Why training stopped: ``"completed"``, or L-BFGS's own message when it converged
        early, or a note that the state had already reached ``epochs``.
    checkpoint : Path or None
        The checkpoint file, when one was asked for.
    """

    params: dict[str, np.ndarray]
    state: TrainState
    stop_reason: str
    checkpoint: Path | None

    @property
    def history(self) -> list[EpochMetrics]:
        return self.state.history

    @property
    def final(self) -> EpochMetrics | None:
        """The last epoch's metrics (None when no epoch has run)."""
        return self.state.history[-1] if self.state.history else None

    def to_dict(self) -> dict[str, Any]:
        """Return the options, per-epoch metrics and outcome as JSON-ready data."""
        state = self.state
        return {
            "method": state.method,
            "learning_rate": None if state.method == "lbfgs" else state.learning_rate,
            "momentum": state.momentum,
            "batch_size": state.batch_size,
            "seed": state.seed,
            "epochs_done": state.epoch,
            "steps": state.step,
            "stop_reason": self.stop_reason,
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "final": None if self.final is None else self.final.to_dict(),
            "history": [metrics.to_dict() for metrics in state.history],
        }


def default_learning_rate(model: Autoencoder, method: str, batch_images: int) -> float:
    """Return the default learning rate of ``method`` for ``model``.

    Parameters
    ----------
    model : Autoencoder
        Its loss reduction decides the scale: a summed loss divides the mean-loss rate by
        ``batch_images``, since its gradient grows with the batch.
    method : {"gd", "sgd"}
        L-BFGS takes no learning rate.
    batch_images : int
        Images per step: the batch size for SGD, the training set size for GD.
    """
    rate = MEAN_LOSS_LEARNING_RATE[method]
    return rate / batch_images if model.reduction == "sum" else rate


def epoch_order(seed: int, epoch: int, n_train: int) -> np.ndarray:
    """Return the order in which SGD visits the training images in epoch ``epoch``.

    Parameters
    ----------
    seed : int
        The training seed.
    epoch : int
        Counting from 0.
    n_train : int
        Number of training images.

    Returns
    -------
    ndarray of int, shape (n_train,)
        A permutation of ``range(n_train)``, drawn from ``np.random.default_rng((seed, epoch))``;
        batch ``k`` holds the images at positions ``k * batch_size`` onward.
    """
    return np.random.default_rng((seed, epoch)).permutation(n_train)


def reconstruction_error(
    model: Autoencoder, params: dict[str, np.ndarray], x: np.ndarray
) -> float:
    """Return the mean over images of the summed squared pixel error, ``mean_i sum_j (z-x)^2``.

    Parameters
    ----------
    model : Autoencoder
    params : dict of str to ndarray
    x : ndarray, shape (n, n_visible)
        With n >= 1.
    """
    total = 0.0
    for start in range(0, len(x), _EVAL_CHUNK):
        batch = x[start : start + _EVAL_CHUNK]  # (chunk, n_visible)
        z = model.reconstruct(params, batch)  # (chunk, n_visible)
        total += float(np.sum(np.square(z - batch), dtype=np.float64))
    return total / len(x)


@blas.policy("train")
def train(
    model: Autoencoder,
    params: dict[str, np.ndarray],
    x_train: np.ndarray,
    *,
    x_test: np.ndarray | None = None,
    method: str | None = None,
    epochs: int | None = None,
    learning_rate: float | None = None,
    momentum: float | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    state: TrainState | None = None,
    callback: Callable[[TrainEvent], None] | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    info: dict[str, Any] | None = None,
    blas_threads: int | str | None = None,
) -> TrainResult:
    """Train ``model`` from ``params`` on ``x_train``.

    Every option left as None takes its value from ``state`` when resuming, else its default
    (``DEFAULT_METHOD``, ``DEFAULT_EPOCHS``, ``default_learning_rate``, ``DEFAULT_MOMENTUM``,
    ``DEFAULT_BATCH_SIZE``, ``DEFAULT_SEED``).

    Parameters
    ----------
    model : Autoencoder
    params : dict of str to ndarray
        The starting parameters; left unmodified (training works on a copy in the model's
        dtype).
    x_train : ndarray, shape (n_train, n_visible)
    x_test : ndarray, shape (n_test, n_visible), optional
        When given, each epoch also records its test reconstruction error.
    method : {"gd", "sgd", "lbfgs"}
        See ``METHODS``. L-BFGS needs float64 parameters.
    epochs : int
        The total number of epochs to reach, counting those ``state`` has done.
    learning_rate : float
        Step size, > 0 (GD and SGD).
    momentum : float
        In [0, 1) (GD and SGD).
    batch_size : int
        Images per SGD step, >= 1 (capped at ``n_train``; the last batch may be smaller).
    seed : int
        Seeds the shuffling, >= 0.
    state : TrainState, optional
        The state of a checkpoint to resume from (with that checkpoint's ``params``).
    callback : callable, optional
        Receives every ``TrainStarted``, ``StepDone`` and ``EpochDone`` event.
    checkpoint_path : path-like, optional
        Where to save a checkpoint after every epoch (atomically; never with non-finite
        numbers).
    info : dict, optional
        JSON-ready notes merged into ``state.info`` and saved with every checkpoint.
    blas_threads : int or {"auto", "off"}, optional
        Threads of the BLAS and OpenMP pools while training (see ``gradproof.blas``): by
        default ``$GRADPROOF_BLAS_THREADS``, else "auto": one thread at first, then as many
        as the cores other processes leave free, chosen again every
        ``blas.FOLLOW_SECONDS``; "off" leaves them as they are. The caller's setting is
        restored afterwards. A bad value (here or in the variable) raises InputError. In
        float32 one and two threads round the products differently, so with "auto" the
        trained parameters depend on the machine's load; a number pins the count and keeps
        runs and resumed runs the same bit for bit.

    Returns
    -------
    TrainResult

    Raises
    ------
    InputError
        On a bad option, parameter or input array.
    TrainingDiverged
        When the loss, an error or a parameter becomes NaN or Inf, or the loss grows to more
        than ``DIVERGENCE_FACTOR`` times its first value in this run; the message gives the
        epoch and step and where the last good checkpoint is.
    """
    model.validate_params(params)
    x_train = model.validate_input(x_train)  # (n_train, n_visible) in the model's dtype
    if x_test is not None:
        x_test = model.validate_input(x_test)
    new_state = _resolve_state(
        model,
        state,
        n_train=len(x_train),
        method=method,
        learning_rate=learning_rate,
        momentum=momentum,
        batch_size=batch_size,
        seed=seed,
    )
    new_state.velocity = _starting_velocity(params, state, new_state.method, model.dtype)
    new_state.info.update(info or {})
    target = _positive_int("epochs", epochs if epochs is not None else DEFAULT_EPOCHS)
    if new_state.method == "lbfgs" and model.dtype != np.float64:
        raise InputError(
            f"method 'lbfgs' runs in float64, but the model is {model.dtype}; build it with "
            f"dtype='float64' (--dtype float64)"
        )
    # Copies on 64-byte boundaries, like the velocity and the step's buffers (see
    # gradproof.nn.aligned): the update passes over them run up to twice as fast.
    params = {name: aligned.copy(value, model.dtype) for name, value in params.items()}
    path = None if checkpoint_path is None else Path(checkpoint_path)
    if new_state.epoch >= target:
        reason = f"already at epoch {new_state.epoch}, which reaches epochs={target}"
        return TrainResult(params, new_state, reason, path)
    session = _Session(model, x_train, x_test, new_state, callback, path,
                       blas.follower("train", blas_threads))
    # Overflow is how divergence starts; the session detects and reports it, so numpy's
    # warnings would only repeat it.
    with np.errstate(over="ignore", invalid="ignore"):
        if new_state.method == "lbfgs":
            params, reason = _run_lbfgs(session, params, target)
        else:
            _run_momentum(session, params, target)
            reason = "completed"
    return TrainResult(params, new_state, reason, path)


def _resolve_state(
    model: Autoencoder,
    state: TrainState | None,
    *,
    n_train: int,
    method: str | None,
    learning_rate: float | None,
    momentum: float | None,
    batch_size: int | None,
    seed: int | None,
) -> TrainState:
    """Validate the options, fill the missing ones, and return the state to train on.

    The returned state carries ``state``'s progress and history (copied) but no velocity.
    """

    def pick(value: Any, name: str, default: Any) -> Any:
        """The option given, else the resumed state's, else the default."""
        if value is not None:
            return value
        return getattr(state, name) if state is not None else default

    method = pick(method, "method", DEFAULT_METHOD)
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    batch_size = _positive_int("batch_size", pick(batch_size, "batch_size", DEFAULT_BATCH_SIZE))
    if learning_rate is None and state is not None and state.method != "lbfgs":
        learning_rate = state.learning_rate
    if learning_rate is not None:
        learning_rate = _check_learning_rate(learning_rate)
    if method == "lbfgs":
        learning_rate = 0.0  # L-BFGS picks its own steps; 0 records "none" in checkpoints
    elif learning_rate is None:
        batch_images = n_train if method == "gd" else min(batch_size, n_train)
        learning_rate = default_learning_rate(model, method, batch_images)
    return TrainState(
        method=method,
        learning_rate=learning_rate,
        momentum=_check_momentum(pick(momentum, "momentum", DEFAULT_MOMENTUM)),
        batch_size=batch_size,
        seed=_check_seed(pick(seed, "seed", DEFAULT_SEED)),
        epoch=state.epoch if state is not None else 0,
        step=state.step if state is not None else 0,
        history=list(state.history) if state is not None else [],
        info=dict(state.info) if state is not None else {},
    )


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_learning_rate(value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"learning_rate must be a finite number > 0, got {value!r}")
    return value


def _check_momentum(value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise InputError(f"momentum must be in [0, 1), got {value!r}")
    return value


def _check_seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"seed must be an integer >= 0, got {value!r}")
    return int(value)


def _starting_velocity(
    params: dict[str, np.ndarray], state: TrainState | None, method: str, dtype: np.dtype
) -> dict[str, np.ndarray]:
    """The resumed momentum buffers (copied), zeros where there are none; none for L-BFGS.

    In the model's ``dtype``, like the parameters they update: a float64 velocity would turn
    every float32 update into a float64 one.
    """
    if method == "lbfgs":
        return {}
    resumed = state.velocity if state is not None else {}
    return {
        name: aligned.copy(resumed[name], dtype) if name in resumed
        else aligned.zeros(np.shape(value), dtype)
        for name, value in params.items()
    }


class _Session:
    """What both optimisers share: evaluation, checkpoints, events and divergence reports."""

    def __init__(
        self,
        model: Autoencoder,
        x_train: np.ndarray,
        x_test: np.ndarray | None,
        state: TrainState,
        callback: Callable[[TrainEvent], None] | None,
        checkpoint: Path | None,
        follower: blas.LoadFollower | None,
    ) -> None:
        self.model = model
        self.x_train = x_train
        self.x_test = x_test
        self.state = state
        self.callback = callback
        self.checkpoint = checkpoint
        self.saved_epoch: int | None = None
        self.first_loss: float | None = None
        self.follower = follower  # the BLAS thread count, where it follows the load

    def tick(self) -> None:
        """After each step: the BLAS thread count follows the load, where it does."""
        if self.follower is not None:
            self.follower.tick()

    def emit(self, event: TrainEvent) -> None:
        if self.callback is not None:
            self.callback(event)

    def start(self, epochs: int, steps_per_epoch: int) -> None:
        state = self.state
        self.emit(
            TrainStarted(
                method=state.method,
                start_epoch=state.epoch,
                epochs=epochs,
                steps_per_epoch=steps_per_epoch,
                n_train=len(self.x_train),
                learning_rate=None if state.method == "lbfgs" else state.learning_rate,
            )
        )

    def check_loss(self, loss: float) -> None:
        if not math.isfinite(loss):
            self.diverge(f"the loss became {loss}")
        if self.first_loss is None:
            self.first_loss = loss
        elif loss > DIVERGENCE_FACTOR * self.first_loss > 0:
            self.diverge(
                f"the loss grew to {loss:.3g}, more than {DIVERGENCE_FACTOR:.0e} times its first "
                f"value in this run ({self.first_loss:.3g})"
            )

    def check_finite(self, name: str, value: np.ndarray) -> None:
        if not all_finite(value):
            self.diverge(f"parameter {name} became NaN or Inf")

    def finish_epoch(self, params: dict[str, np.ndarray], loss: float, started: float) -> None:
        """Evaluate, check, checkpoint and report the epoch just trained."""
        state = self.state
        for name, value in params.items():
            self.check_finite(name, value)  # before the model refuses them as bad input
        train_error = reconstruction_error(self.model, params, self.x_train)
        test_error = (
            None if self.x_test is None else reconstruction_error(self.model, params, self.x_test)
        )
        for name, value in (("the training error", train_error), ("the test error", test_error)):
            if value is not None and not math.isfinite(value):
                self.diverge(f"{name} became {value}")
        state.epoch += 1
        metrics = EpochMetrics(
            epoch=state.epoch,
            step=state.step,
            loss=float(loss),
            train_error=train_error,
            test_error=test_error,
            seconds=time.perf_counter() - started,
        )
        state.history.append(metrics)
        if self.checkpoint is not None:
            save_checkpoint(self.checkpoint, self.model, params, state)
            self.saved_epoch = state.epoch
        self.emit(EpochDone(metrics, self.checkpoint))

    def diverge(self, what: str) -> None:
        state = self.state
        where = f"training diverged in epoch {state.epoch + 1}, step {state.step}: {what}"
        advice = (
            "L-BFGS reached a point where the loss is not finite"
            if state.method == "lbfgs"
            else f"lower the learning rate (it is {state.learning_rate:g})"
        )
        if self.saved_epoch is not None:
            kept = (
                f"the last good checkpoint (epoch {self.saved_epoch}) is kept at "
                f"{self.checkpoint}"
            )
        elif self.checkpoint is not None and self.checkpoint.exists():
            kept = f"the checkpoint at {self.checkpoint} was left untouched"
        else:
            kept = "no checkpoint was written"
        raise TrainingDiverged(f"{where}; {advice}; {kept}")


def _run_momentum(session: _Session, params: dict[str, np.ndarray], epochs: int) -> None:
    """GD or SGD with momentum, updating ``params`` and ``session.state`` in place."""
    model, x, state = session.model, session.x_train, session.state
    n = len(x)
    batch_images = n if state.method == "gd" else min(state.batch_size, n)
    steps_per_epoch = math.ceil(n / batch_images)
    velocity = state.velocity
    # Preallocated buffers, reused every step: a fresh array would cost page faults in the hot
    # loop. One workspace per batch size, since the last batch of an epoch may be smaller.
    buffer = aligned.empty((batch_images, x.shape[1]), x.dtype) if steps_per_epoch > 1 else None
    workspaces: dict[int, Workspace] = {}
    session.start(epochs, steps_per_epoch)
    while state.epoch < epochs:
        started = time.perf_counter()
        loss_sum = 0.0
        batches = _epoch_batches(x, batch_images, epoch_order(state.seed, state.epoch, n), buffer)
        for k, x_batch in enumerate(batches):
            rows = len(x_batch)
            if rows not in workspaces:
                workspaces[rows] = model.workspace(rows)
            # x was checked on entry and the parameters are checked after every epoch (see the
            # module docstring), so the model need not scan them; it returns the step
            # -learning_rate * grad directly.
            loss, steps = model.loss_and_grad(
                params, x_batch, out=workspaces[rows], check_finite=False,
                grad_scale=-state.learning_rate,
            )
            state.step += 1
            session.check_loss(loss)
            for name, step in steps.items():
                v = velocity[name]
                v *= state.momentum
                v += step  # v <- momentum * v - learning_rate * grad
                params[name] += v
            loss_sum += float(loss)
            session.tick()
            session.emit(
                StepDone(
                    epoch=state.epoch + 1,
                    step=state.step,
                    step_in_epoch=k + 1,
                    steps_per_epoch=steps_per_epoch,
                    loss=float(loss),
                    running_loss=loss_sum / (k + 1),
                )
            )
        session.finish_epoch(params, loss_sum / steps_per_epoch, started)


def _epoch_batches(
    x: np.ndarray, batch_images: int, order: np.ndarray, buffer: np.ndarray | None
) -> Iterator[np.ndarray]:
    """Yield one epoch's batches of ``x`` in the given order, each written into ``buffer``.

    A single batch holding every image is ``x`` itself: its order cannot change the loss.
    """
    if buffer is None:
        yield x
        return
    for start in range(0, len(x), batch_images):
        rows = order[start : start + batch_images]
        # mode="clip" (the rows are valid anyway) lets take write straight into `out`.
        yield np.take(x, rows, axis=0, out=buffer[: len(rows)], mode="clip")  # (batch, n_visible)


def _run_lbfgs(
    session: _Session, params: dict[str, np.ndarray], epochs: int
) -> tuple[dict[str, np.ndarray], str]:
    """L-BFGS-B over the full batch; returns the final parameters and why it stopped."""
    model, x, state = session.model, session.x_train, session.state
    layout, theta0 = parse_params(params)  # theta0: every entry, float64, tensor after tensor
    last: dict[str, Any] = {}  # the latest evaluation, reused by the iteration callback

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        if not np.isfinite(theta).all():  # the model would refuse them as bad input
            session.diverge("L-BFGS tried parameters holding NaN or Inf")
        loss, grads = model.loss_and_grad(layout.named(theta), x)
        last.update(theta=theta.copy(), loss=float(loss))
        return float(loss), layout.unroll(grads)

    started = time.perf_counter()

    def on_iteration(theta: np.ndarray) -> None:
        nonlocal started
        current = layout.named(theta.copy())
        if "theta" in last and np.array_equal(last["theta"], theta):
            loss = last["loss"]
        else:
            loss = float(model.loss(current, x))
        state.step += 1
        session.check_loss(loss)
        session.tick()
        session.emit(
            StepDone(
                epoch=state.epoch + 1,
                step=state.step,
                step_in_epoch=1,
                steps_per_epoch=1,
                loss=loss,
                running_loss=loss,
            )
        )
        session.finish_epoch(current, loss, started)
        started = time.perf_counter()

    # Imported here: scipy.optimize takes about half a second to import, which every command
    # (and the default SGD training) would otherwise pay without using it.
    import scipy.optimize

    session.start(epochs, steps_per_epoch=1)
    result = scipy.optimize.minimize(
        objective,
        theta0,
        jac=True,
        method="L-BFGS-B",
        callback=on_iteration,
        options={"maxiter": epochs - state.epoch},
    )
    if not math.isfinite(float(result.fun)):
        session.diverge(f"the loss became {result.fun}")
    reason = "completed" if state.epoch >= epochs else f"L-BFGS stopped early: {result.message}"
    return layout.named(np.array(result.x, copy=True)), reason

