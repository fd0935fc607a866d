"""check_network: identification plus check, on the networks people write.

1. A 400-25-10 sigmoid classifier in the MATLAB course's layout (``Theta1`` 25x401 and
   ``Theta2`` 10x26 with the biases as column 1, 1-based labels, cross-entropy averaged over
   the examples, ``lambda/(2m)`` decay skipping the bias column) on 5000 synthetic examples of
   MNIST-like shape (20x20 pixels in [0, 1], about 80% exactly zero): identification alone,
   and identification plus check (target: <= 2 s).
2. The seed network (784-200-784, sigmoid, ``sum(0.5 * (z - x)**2)``, numpy layout) on one
   image of the bundled MNIST sample: ``check_network`` on the user's own loss and gradient
   beside ``check_model`` on the same network, the two taking turns (target: within 20 %).
   With ``--baseline-src DIR`` (another checkout's ``src``, such as that of the commit the
   target was set against) the seed rows run in fresh processes, this checkout's and the
   baseline's taking turns for ``--rounds`` rounds, and ``check_network`` is also divided by
   the baseline's ``check_model`` of the same rounds. Without it, ``--floor`` times in the
   same turns the work ``check_network`` does beyond ``check_model``, in plain numpy without
   any checking (``plain_floor``): what no checking of that work can go below.
3. Members of the family, each as a user would store it (``gradproof.layouts``), its loss the
   network's own: the model identified and the identification's time.
4. The users' networks of the tests (``tests/user_networks.py``, written from the course and
   textbook formulas without gradproof), each with its right gradient: the model identified,
   the identification's time and ``check_network``'s.

Each time is the median of ``--repeats`` runs after one warm-up (wall and CPU seconds; the load
average is printed, as the cores may be shared). ``--blas-threads 1`` runs everything (the
user's code too) with one BLAS thread: on shared cores numpy's spinning BLAS workers slow the
classifier's own cost function about tenfold (see DESIGN's measured facts).

Run: python bench/bench_identify.py [--repeats 5] [--blas-threads 1] [--seed-only] [--floor]
         [--baseline-src DIR [--rounds 3]]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _timing import alternated, timed
from threadpoolctl import threadpool_limits

import gradproof as gp
from gradproof import blas
from gradproof.identify import identify
from gradproof.layouts import Layout, from_canonical, to_canonical


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def course_classifier(m: int = 5000, seed: int = 0):
    """The user's loss and gradient, written from the course's formulas."""
    rng = np.random.default_rng(seed)
    x = rng.random((m, 400)) * (rng.random((m, 400)) > 0.8)  # (m, 400), ~80% zeros
    y = rng.integers(1, 11, size=(m, 1))
    params = {"Theta1": rng.uniform(-0.12, 0.12, (25, 401)),
              "Theta2": rng.uniform(-0.12, 0.12, (10, 26))}
    Y = np.eye(10)[y.ravel() - 1]
    a1 = np.hstack([np.ones((m, 1)), x])  # (m, 401)
    lam = 1.0

    def cost_and_grad(p):
        z2 = a1 @ p["Theta1"].T  # (m, 25)
        a2 = np.hstack([np.ones((m, 1)), sigmoid(z2)])  # (m, 26)
        h = sigmoid(a2 @ p["Theta2"].T)  # (m, 10)
        reg = lam / (2 * m) * (np.sum(p["Theta1"][:, 1:] ** 2) + np.sum(p["Theta2"][:, 1:] ** 2))
        cost = -np.sum(Y * np.log(h) + (1 - Y) * np.log(1 - h)) / m + reg
        d3 = h - Y
        d2 = (d3 @ p["Theta2"][:, 1:]) * sigmoid(z2) * (1 - sigmoid(z2))
        g1, g2 = d2.T @ a1 / m, d3.T @ a2 / m
        g1[:, 1:] += lam / m * p["Theta1"][:, 1:]
        g2[:, 1:] += lam / m * p["Theta2"][:, 1:]
        return float(cost), {"Theta1": g1, "Theta2": g2}

    return params, x, y, cost_and_grad


def seed_network():
    x = gp.load_mnist()[0][:1].astype(np.float64)  # (1, 784)
    model = gp.Autoencoder(n_visible=784, n_hidden=200)
    params = model.init_params(seed=0)

    def loss(p):
        z = sigmoid(sigmoid(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"])
        return float(np.sum(0.5 * (z - x) ** 2))

    def grad(p):
        a = sigmoid(x @ p["W1"] + p["b1"])
        z = sigmoid(a @ p["W2"] + p["b2"])
        d2 = (z - x) * z * (1 - z)
        d1 = d2 @ p["W2"].T * a * (1 - a)
        return {"W1": x.T @ d1, "b1": d1.sum(axis=0), "W2": a.T @ d2, "b2": d2.sum(axis=0)}

    return model, params, x, loss, grad


def plain_floor(params, x, loss, grad) -> None:
    """The work ``check_network`` does beyond ``check_model`` on the seed network, in plain
    numpy, checking nothing: four points moved as the identification moves them, the user's
    loss at six points (the given one twice) and gradient once, the network's forward pass at
    the five points, a backprop (the user's gradient function again) and the comparison of
    every entry in the passes its report needs; with the BLAS threads ``check_network``
    runs with."""
    with blas.limited("check_gradient"):
        plain_work(params, x, loss, grad)


def plain_work(params, x, loss, grad) -> None:
    """``plain_floor``'s work."""
    names = list(params)
    flat = np.concatenate([params[name].ravel() for name in names])
    raw = np.random.default_rng(0).bit_generator.random_raw(-(-(flat.size + 4) // 4))
    noise = raw.view(np.int16).astype(np.float64)
    ends = np.cumsum([params[name].size for name in names])[:-1]
    points = [params]
    for i in range(4):
        moved = noise[i: i + flat.size] * 1e-6
        moved += flat
        points.append({name: part.reshape(params[name].shape)
                       for name, part in zip(names, np.split(moved, ends))})
    for point in [params, *points]:
        loss(point)
    for point in points:
        z = sigmoid(sigmoid(x @ point["W1"] + point["b1"]) @ point["W2"] + point["b2"])
        float(np.sum(0.5 * (z - x) ** 2))
    user, reference = grad(params), grad(params)
    for name in names:
        diff = np.abs(user[name] - reference[name])
        size = np.abs(reference[name])
        largest = size.max()
        scale = np.maximum(np.abs(user[name]), size)
        scale += np.finfo(np.float64).tiny
        float((diff / scale).max())
        size += largest
        size *= 1.5e-8
        int((diff / size).argmax())
        float(diff.max())


# name -> (Network options, Layout, batch): one per kind of member.
MEMBERS = {
    "logistic regression": (dict(layers=[20, 1], output="sigmoid", loss_name="cross_entropy",
                                 target="labels", reduction="mean"), Layout(), 200),
    "softmax regression, MATLAB layout": (
        dict(layers=[20, 5], output="softmax", loss_name="softmax_cross_entropy",
             target="labels", label_base=1, reduction="mean", weight_decay=0.5,
             decay_mean=True),
        Layout(weights="out_in", biases="augmented"), 200),
    "deep relu/tanh, one-hot, list": (
        dict(layers=[30, 16, 8, 4], activation="relu", output="softmax",
             loss_name="softmax_cross_entropy", target="one_hot", bias=False),
        Layout(biases="absent", container="list"), 100),
    "tied sparse autoencoder": (
        dict(layers=[64, 16, 64], tied=True, bias=False, weight_decay=1e-3,
             sparsity_weight=3.0, sparsity_target=0.1),
        Layout(biases="absent"), 100),
    "squared-error regression, examples as columns": (
        dict(layers=[10, 6, 3], activation="tanh", output="identity", squared_half=False,
             target="one_hot"),
        Layout(examples="columns", weights="out_in", biases="column"), 100),
}


def test_users() -> dict:
    """The users' networks of the tests (``tests/user_networks.py``), by the table's names."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import user_networks as users

    return {
        "course classifier, Theta1 8x21, Theta2 4x9, 60 examples": users.course_classifier(),
        "numpy softmax classifier 12-7-5, 50 examples": users.numpy_softmax_classifier(),
        "sparse autoencoder 10-4-10, 40 examples": users.sparse_autoencoder(),
        "tied sparse autoencoder 10-4-10, 40 examples": users.sparse_autoencoder(tied=True),
        "MATLAB autoencoder 8-5-8, examples as columns": users.matlab_autoencoder(),
        "deep classifier 6-5-5-3, 40 examples": users.deep_classifier(),
    }


def member_problem(options: dict, layout: Layout, batch: int):
    net = gp.Network(**options)
    rng = np.random.default_rng(0)
    x = rng.random((batch, net.layers[0]))
    if net.target == "labels":
        y = rng.integers(0, max(net.layers[-1], 2), batch) + net.label_base
    elif net.target == "one_hot":
        y = (np.eye(net.layers[-1])[rng.integers(0, net.layers[-1], batch)]
             if net.output == "softmax" else rng.normal(size=(batch, net.layers[-1])))
    else:
        y = None
    params = net.init_params(seed=0)
    for name in params:
        if name.startswith("b"):
            params[name] = rng.normal(size=params[name].shape) * 0.1
    user = from_canonical(layout, net, params)
    user_x = x if layout.examples == "rows" else x.T
    user_y = y if y is None or layout.examples == "rows" or net.target != "one_hot" else y.T

    def loss(p):
        return net.loss(to_canonical(layout, net, p), x, y)

    return loss, user, user_x, user_y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--blas-threads", type=int, default=None)
    parser.add_argument("--seed-only", action="store_true",
                        help="only the seed network's rows (2.), for many repeats")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="another checkout's src: its check_model beside this one's")
    parser.add_argument("--rounds", type=int, default=3,
                        help="with --baseline-src: seed rounds per checkout, taking turns")
    parser.add_argument("--floor", action="store_true",
                        help="the seed rows' work beyond check_model in plain numpy beside them")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # one round of the seed rows, for the process that started it
        with threadpool_limits(args.blas_threads):
            print(json.dumps(seed_medians(args.repeats)))
        return
    print(f"load average: {os.getloadavg()[0]:.2f}; BLAS threads: {args.blas_threads or 'default'}")
    with threadpool_limits(args.blas_threads):
        if not args.seed_only:
            run(args.repeats)
    if args.baseline_src is not None:
        run_seed_beside(args.baseline_src.resolve(), args.rounds, args.repeats,
                        args.blas_threads)
    else:
        with threadpool_limits(args.blas_threads):
            print_seed(seed_medians(args.repeats, args.floor))


def run(repeats: int) -> None:
    params, x, y, cost_and_grad = course_classifier()
    found = timed(lambda: identify(lambda p: cost_and_grad(p)[0], params, x, y), repeats)
    checked = timed(lambda: gp.check_network(cost_and_grad, None, params, x, y), repeats)
    print(f"400-25-10 classifier, 5000 examples: {found.result.summary()}")
    print(f"  identify            {found.wall:6.2f} s wall  {found.cpu:6.2f} s CPU")
    print(f"  check_network       {checked.wall:6.2f} s wall  {checked.cpu:6.2f} s CPU  "
          f"passed={checked.result.passed}")

    for name, (options, layout, batch) in MEMBERS.items():
        loss, user, user_x, user_y = member_problem(options, layout, batch)
        found = timed(lambda: identify(loss, user, user_x, user_y), repeats)
        print(f"{name}: {found.wall:.3f} s wall, {found.result.tried} candidates; "
              f"{found.result.summary()}")
    for name, user in test_users().items():
        found = timed(lambda: identify(user.loss, user.params, user.x, user.y), repeats)
        checked = timed(lambda: gp.check_network(user.loss, user.grad, user.params, user.x,
                                                 user.y), repeats)
        print(f"{name}: identify {found.wall:.3f} s wall, check_network {checked.wall:.3f} s "
              f"wall, passed={checked.result.passed}, {found.result.tried} candidates; "
              f"{found.result.summary()}")


def seed_medians(repeats: int, floor: bool = False) -> dict[str, Any]:
    """The seed rows in this process: ``check_network`` and ``check_model`` (and with
    ``floor``, ``plain_floor``) taking turns call by call, each one's median wall and CPU
    seconds."""
    model, params, x, loss, grad = seed_network()
    runs = [lambda: gp.check_network(loss, grad, params, x),
            lambda: gp.check_model(model, params, x)]
    if floor:
        runs.append(lambda: plain_floor(params, x, loss, grad))
    network, exact, *plain = alternated(runs, repeats)
    return {"description": network.result.model["description"],
            "check_network": [network.wall, network.cpu, network.result.passed],
            "check_model": [exact.wall, exact.cpu, exact.result.passed],
            **({"floor": [plain[0].wall, plain[0].cpu]} if plain else {})}


def print_seed(seed: dict[str, Any]) -> None:
    network, exact = seed["check_network"], seed["check_model"]
    print(f"seed network, one image: {seed['description']}")
    for name, (wall, cpu, passed) in (("check_network", network), ("check_model", exact)):
        print(f"  {name:19} {wall:6.3f} s wall  {cpu:6.3f} s CPU  passed={passed}")
    print(f"  ratio network/model {network[0] / exact[0]:6.2f} wall  "
          f"{network[1] / exact[1]:6.2f} CPU")
    if "floor" in seed:
        wall, cpu = seed["floor"]
        print(f"  plain numpy floor   {wall:6.3f} s wall  {cpu:6.3f} s CPU")
        print(f"  (model + floor)/model {(exact[0] + wall) / exact[0]:4.2f} wall  "
              f"{(exact[1] + cpu) / exact[1]:6.2f} CPU")


def run_seed_beside(baseline: Path, rounds: int, repeats: int, threads: int | None) -> None:
    """The seed rows in fresh processes, this checkout's and ``baseline``'s taking turns round
    by round; the medians over the rounds, and this checkout's ``check_network`` over both
    ``check_model``s."""
    sources = {"this checkout": Path(__file__).resolve().parents[1] / "src",
               "baseline": baseline}
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in sources}
    names = list(sources)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            env = dict(os.environ, PYTHONPATH=str(sources[name]))
            command = [sys.executable, __file__, "--worker", "--repeats", str(repeats)]
            if threads is not None:
                command += ["--blas-threads", str(threads)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            found[name].append(json.loads(done.stdout))
        print(f"  seed round {round_ + 1} done (load average {os.getloadavg()[0]:.2f})",
              flush=True)

    def median(name: str, check: str, column: int) -> float:
        return statistics.median(seed[check][column] for seed in found[name])

    print(f"seed network, one image, {rounds} rounds of {repeats} calls each "
          f"(medians over the rounds of each round's median):")
    for name in names:
        for check in ("check_network", "check_model"):
            passed = all(seed[check][2] for seed in found[name])
            print(f"  {name:13} {check:13} {median(name, check, 0):6.3f} s wall  "
                  f"{median(name, check, 1):6.3f} s CPU  passed={passed}")
    for name in names:
        wall = median("this checkout", "check_network", 0) / median(name, "check_model", 0)
        cpu = median("this checkout", "check_network", 1) / median(name, "check_model", 1)
        print(f"  ratio check_network (this checkout) / check_model ({name}): "
              f"{wall:.2f} wall  {cpu:.2f} CPU")


if __name__ == "__main__":
    main()
