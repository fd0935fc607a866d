"""Training benchmark: gradproof against PyTorch on full MNIST, and the FLOP floor.

Three implementations train the seed network (784-200-784, sigmoid, squared error summed over
the batch, biases) in float32 from the same initial weights (gradproof's ``init_params``), on
the same batches (gradproof's ``epoch_order``), with the same optimiser:

- gradproof's ``train`` (minibatch SGD with momentum ``v <- m v - lr g; p <- p + v``);
- PyTorch CPU autograd with ``torch.optim.SGD(lr, momentum=m, dampening=0)``, whose
  ``b <- m b + g; p <- p - lr b`` is the same update with ``v = -lr b``;
- a plain numpy loop written for this one network (preallocated arrays, no input checks, no
  events): a reference for what numpy itself costs here.

They alternate epoch by epoch, so a change in the machine's load hits all of them. Printed:
seconds per training epoch (evaluation excluded; the median over the epochs after the first),
the test reconstruction error after the last epoch (mean over test images of the sum over
pixels of (z - x)^2), and the FLOP floor: 6 x n_train x 313600 flops (three products per
weight, two flops per multiply-add) at the float32 rate numpy reaches on this step's matmul
shapes, measured in the same run between the epochs.

Usage::

    python bench/bench_train.py                      # full MNIST from ../shared/data/mnist
    python bench/bench_train.py --data-dir DIR --epochs 5

It skips, with a message, when the MNIST files or PyTorch are missing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import gradproof as gp
from gradproof.train import (
    DEFAULT_MOMENTUM,
    StepDone,
    TrainStarted,
    default_learning_rate,
    epoch_order,
    train,
)

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
LAYERS = (784, 200, 784)
# Rounds of one step's six matmuls per floor measurement (a round takes about 1 ms).
FLOOR_ROUNDS = 200
# gradproof's BLAS thread count is read every this many steps (threadpoolctl took 1.1 ms to
# read it beside torch: 0.4% of the timed steps at this rate).
THREADS_EVERY = 200

Params = dict[str, np.ndarray]


@dataclass
class Run:
    """One implementation's per-epoch results."""

    name: str
    seconds: list[float] = field(default_factory=list)
    test_errors: list[float] = field(default_factory=list)

    def median_seconds(self) -> float:
        return statistics.median(self.seconds[1:])  # the first epoch warms up


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="directory with the four MNIST .gz files (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=5,
                        help="epochs of each; all but the first are timed (default: 5)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="default: gradproof's default for a summed loss (0.5 / batch)")
    parser.add_argument("--momentum", type=float, default=DEFAULT_MOMENTUM)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first LIMIT training images (a quick smoke run)")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is a warm-up)")
    return args


def blas_threads() -> int:
    """The thread count of numpy's BLAS (the first BLAS library threadpoolctl finds)."""
    from threadpoolctl import threadpool_info

    return next(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")


def summed_squared_error(z: np.ndarray, x: np.ndarray) -> float:
    """Mean over images of the summed squared pixel error, accumulated in float64."""
    return float(np.sum(np.square(z - x), dtype=np.float64)) / len(x)


# ----- gradproof ----------------------------------------------------------------------------


class GradproofRunner:
    """gradproof's ``train``, one epoch per call, resuming from the previous call's state."""

    def __init__(self, model: gp.Autoencoder, params: Params, args: argparse.Namespace) -> None:
        self.model, self.params, self.args = model, params, args
        self.state = None
        self.run = Run("gradproof")
        # BLAS thread count -> steps seen with it (one in THREADS_EVERY): by default the
        # count follows the load (gradproof.blas.follower).
        self.threads: Counter[int] = Counter()

    def epoch(self, x_train: np.ndarray, x_test: np.ndarray) -> None:
        marks: dict[str, float] = {}

        def clock(event: object) -> None:
            # Training time only: from the start of the epoch to its last step, before the
            # evaluation that train() runs after every epoch.
            if isinstance(event, TrainStarted):
                marks["start"] = time.perf_counter()
            elif isinstance(event, StepDone):
                if event.step % THREADS_EVERY == 0:
                    self.threads[blas_threads()] += 1
                if event.step_in_epoch == event.steps_per_epoch:
                    marks["end"] = time.perf_counter()

        args = self.args
        result = train(
            self.model, self.params, x_train, x_test=x_test, method="sgd",
            epochs=(self.state.epoch if self.state else 0) + 1,
            learning_rate=args.learning_rate, momentum=args.momentum,
            batch_size=args.batch_size, seed=args.seed, state=self.state, callback=clock,
        )
        self.params, self.state = result.params, result.state
        self.run.seconds.append(marks["end"] - marks["start"])
        self.run.test_errors.append(result.final.test_error)


# ----- plain numpy --------------------------------------------------------------------------


class NumpyRunner:
    """The seed network's SGD written out in numpy for this benchmark alone."""

    def __init__(self, params: Params, args: argparse.Namespace) -> None:
        self.args = args
        self.params = {name: value.copy() for name, value in params.items()}
        self.velocity = {name: np.zeros_like(value) for name, value in params.items()}
        self.epochs_done = 0
        self.run = Run("plain numpy")

    def epoch(self, x_train: np.ndarray, x_test: np.ndarray) -> None:
        args, p, v = self.args, self.params, self.velocity
        batch, f32 = args.batch_size, np.float32
        buffers = {
            "x": np.empty((batch, LAYERS[0]), f32), "a": np.empty((batch, LAYERS[1]), f32),
            "z": np.empty((batch, LAYERS[2]), f32), "r": np.empty((batch, LAYERS[2]), f32),
            "d_z": np.empty((batch, LAYERS[2]), f32), "d_a": np.empty((batch, LAYERS[1]), f32),
            "d_h": np.empty((batch, LAYERS[1]), f32),
        }
        step = {name: np.empty_like(value) for name, value in p.items()}
        started = time.perf_counter()
        order = epoch_order(args.seed, self.epochs_done, len(x_train))
        loss_sum = 0.0
        for begin in range(0, len(order), batch):
            rows = order[begin : begin + batch]
            x, a, z, r, d_z, d_a, d_h = (arr[: len(rows)] for arr in buffers.values())
            np.take(x_train, rows, axis=0, out=x, mode="clip")
            forward_layer(x, p["W1"], p["b1"], a)
            forward_layer(a, p["W2"], p["b2"], z)
            np.subtract(z, x, out=r)  # dJ/dz of J = 0.5 * sum((z - x)^2)
            loss_sum += 0.5 * float(np.vdot(r, r))  # gradproof reports the loss too
            np.subtract(1, z, out=d_z)
            d_z *= z
            d_z *= r
            d_z *= -args.learning_rate  # so that the "gradients" below are the SGD steps
            np.matmul(a.T, d_z, out=step["W2"])
            np.add.reduce(d_z, axis=0, out=step["b2"])
            np.matmul(d_z, p["W2"].T, out=d_a)
            np.subtract(1, a, out=d_h)
            d_h *= a
            d_h *= d_a
            np.matmul(x.T, d_h, out=step["W1"])
            np.add.reduce(d_h, axis=0, out=step["b1"])
            for name, value in p.items():
                v[name] *= args.momentum
                v[name] += step[name]
                value += v[name]
        self.run.seconds.append(time.perf_counter() - started)
        self.epochs_done += 1
        hidden = np.empty((len(x_test), LAYERS[1]), f32)
        out = np.empty((len(x_test), LAYERS[2]), f32)
        forward_layer(x_test, p["W1"], p["b1"], hidden)
        forward_layer(hidden, p["W2"], p["b2"], out)
        self.run.test_errors.append(summed_squared_error(out, x_test))


def forward_layer(x: np.ndarray, w: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = sigmoid(x @ w + b)`` = 1 / (1 + exp(-(x @ w + b))), in place."""
    np.matmul(x, w, out=out)
    out += b
    np.negative(out, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1
    return np.divide(1.0, out, out=out)


# ----- PyTorch ------------------------------------------------------------------------------


class TorchRunner:
    """The same network, initial weights, batches and optimiser in PyTorch (CPU autograd)."""

    def __init__(self, torch: Any, params: Params, args: argparse.Namespace) -> None:
        self.torch, self.args = torch, args
        nn = torch.nn
        self.model = nn.Sequential(
            nn.Linear(LAYERS[0], LAYERS[1]), nn.Sigmoid(), nn.Linear(LAYERS[1], LAYERS[2]),
            nn.Sigmoid(),
        )
        with torch.no_grad():
            for k, linear in ((1, self.model[0]), (2, self.model[2])):
                # torch keeps W as (n_out, n_in): gradproof's W_k transposed.
                linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(params[f"W{k}"].T)))
                linear.bias.copy_(torch.from_numpy(params[f"b{k}"]))
        self.optimiser = torch.optim.SGD(
            self.model.parameters(), lr=args.learning_rate, momentum=args.momentum, dampening=0
        )
        self.epochs_done = 0
        self.run = Run("PyTorch (CPU autograd)")

    def loss(self, x: Any) -> Any:
        # gradproof's squared loss: 0.5 * sum over pixels and examples of (z - x)^2
        return 0.5 * (self.model(x) - x).square().sum()

    def gradients(self, x: np.ndarray) -> Params:
        """The loss gradient on one batch, in gradproof's names and shapes."""
        self.model.zero_grad()
        self.loss(self.torch.from_numpy(x)).backward()
        first, second = self.model[0], self.model[2]
        return {"W1": first.weight.grad.T.numpy(), "b1": first.bias.grad.numpy(),
                "W2": second.weight.grad.T.numpy(), "b2": second.bias.grad.numpy()}

    def epoch(self, x_train: Any, x_test: Any) -> None:
        torch, batch = self.torch, self.args.batch_size
        started = time.perf_counter()
        order = torch.from_numpy(epoch_order(self.args.seed, self.epochs_done, len(x_train)))
        loss_sum = 0.0
        for begin in range(0, len(order), batch):
            x = x_train[order[begin : begin + batch]]  # (batch, 784)
            self.optimiser.zero_grad(set_to_none=True)
            loss = self.loss(x)
            loss.backward()
            self.optimiser.step()
            loss_sum += loss.item()  # gradproof reports each epoch's mean loss too
        self.run.seconds.append(time.perf_counter() - started)
        self.epochs_done += 1
        with torch.no_grad():
            z = self.model(x_test).numpy()
        self.run.test_errors.append(summed_squared_error(z, x_test.numpy()))


# ----- the FLOP floor -----------------------------------------------------------------------


def step_matmul_seconds(batch: int, rng: np.random.Generator) -> float:
    """Median seconds numpy takes for the six float32 products of one step.

    Per layer (n_in, n_out): the forward (batch, n_in) @ (n_in, n_out), the input gradient
    (batch, n_out) @ (n_out, n_in) and the weight gradient (n_in, batch) @ (batch, n_out), each
    with contiguous operands and a preallocated output.
    """
    products = []
    for n_in, n_out in zip(LAYERS[:-1], LAYERS[1:]):
        shapes = ((batch, n_in, n_out), (batch, n_out, n_in), (n_in, batch, n_out))
        for rows, inner, cols in shapes:  # out (rows, cols) = (rows, inner) @ (inner, cols)
            a = rng.random((rows, inner), dtype=np.float32)
            b = rng.random((inner, cols), dtype=np.float32)
            products.append((a, b, np.empty((rows, cols), np.float32)))
    times = []
    for _ in range(FLOOR_ROUNDS):
        started = time.perf_counter()
        for a, b, out in products:
            np.matmul(a, b, out=out)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# ----- main ---------------------------------------------------------------------------------


def max_relative_difference(ours: Params, theirs: Params) -> float:
    return max(
        float(np.abs(ours[name] - theirs[name]).max() / np.abs(ours[name]).max())
        for name in ours
    )


def table(runs: list[Run], floor_seconds: float, rate: float, epochs: int) -> str:
    torch_run = runs[-1]
    torch_seconds, torch_error = torch_run.median_seconds(), torch_run.test_errors[-1]
    timed = len(torch_run.seconds) - 1
    lines = [
        f"| | seconds per epoch (median of {timed}) | / PyTorch | / FLOP floor "
        f"| test error after {epochs} epochs | relative to PyTorch |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        seconds, error = run.median_seconds(), run.test_errors[-1]
        lines.append(
            f"| {run.name} | {seconds:.3f} | {seconds / torch_seconds:.2f} "
            f"| {seconds / floor_seconds:.2f} | {error:.5f} | {error / torch_error - 1:+.1e} |"
        )
    lines.append(
        f"| FLOP floor ({rate / 1e9:.0f} GFLOP/s) | {floor_seconds:.3f} "
        f"| {floor_seconds / torch_seconds:.2f} | 1.00 | | |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data_dir.is_dir():
        print(f"skipped: no MNIST directory at {args.data_dir} (pass --data-dir)")
        return 0
    try:
        import torch
    except ImportError:
        print("skipped: PyTorch is not installed (pip install 'gradproof[bench]')")
        return 0
    x_train, _ = gp.load_mnist("train", data_dir=args.data_dir, limit=args.limit,
                               dtype=np.float32)
    x_test, _ = gp.load_mnist("test", data_dir=args.data_dir, dtype=np.float32)
    model = gp.Autoencoder(layers=list(LAYERS), dtype="float32")
    params = model.init_params(seed=args.seed)
    if args.learning_rate is None:
        args.learning_rate = default_learning_rate(model, "sgd", args.batch_size)

    ours = GradproofRunner(model, params, args)
    plain = NumpyRunner(params, args)
    theirs = TorchRunner(torch, params, args)
    first_batch = x_train[: args.batch_size]
    grad_difference = max_relative_difference(
        model.loss_and_grad(params, first_batch)[1], theirs.gradients(first_batch)
    )
    x_train_t, x_test_t = torch.from_numpy(x_train), torch.from_numpy(x_test)
    rng = np.random.default_rng(args.seed)
    step_seconds = []
    for epoch in range(1, args.epochs + 1):
        ours.epoch(x_train, x_test)
        plain.epoch(x_train, x_test)
        theirs.epoch(x_train_t, x_test_t)
        step_seconds.append(step_matmul_seconds(args.batch_size, rng))
        print(f"epoch {epoch}: " + " | ".join(
            f"{runner.run.name} {runner.run.seconds[-1]:.3f} s, test error "
            f"{runner.run.test_errors[-1]:.4f}" for runner in (ours, plain, theirs)
        ), flush=True)

    steps = -(-len(x_train) // args.batch_size)
    weights = sum(n_in * n_out for n_in, n_out in zip(LAYERS[:-1], LAYERS[1:]))  # 313600
    step_time = statistics.median(step_seconds)
    floor_seconds = steps * step_time  # 6 x n_train x 313600 flops at the measured rate
    print()
    print(f"MNIST {len(x_train)} train / {len(x_test)} test images, float32, batch "
          f"{args.batch_size}, learning rate {args.learning_rate:g}, momentum "
          f"{args.momentum:g}, seed {args.seed}; numpy {np.__version__}, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"first-batch gradients, gradproof vs PyTorch: max relative difference "
          f"{grad_difference:.1e}; parameters after {args.epochs} epochs, gradproof vs plain "
          f"numpy: {max_relative_difference(ours.params, plain.params):.1e}")
    seen = sum(ours.threads.values())
    if seen:
        print("gradproof's BLAS threads: " + ", ".join(
            f"{count} in {steps_seen / seen:.0%} of the steps" for count, steps_seen
            in sorted(ours.threads.items())) + f" (read every {THREADS_EVERY} steps)")
    print()
    rate = 6 * args.batch_size * weights / step_time
    print(table([ours.run, plain.run, theirs.run], floor_seconds, rate, args.epochs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
