"""Stress: random correct networks of the whole Autoencoder family through every checker.

Each case is a random member of the ``Autoencoder`` family, drawn from its seed alone: every
activation for the hidden layers (relu often) and the output, both losses and reductions,
weight decay, KL sparsity, tied weights, biases or none, 1 to 3 hidden layers, float64 or
float32, a batch of 1 to 30 MNIST-like inputs (pixel levels k/255, most of them exactly 0,
now and then an all-zero image). Some networks are saturated (weights 5-20x their initial
scale); in some relu networks the biases put pre-activations exactly at 0 or within 1e-9 to
1e-6 of it, where the relu has its kink. The model's own gradient is first confirmed by an
independent ``autograd`` oracle in float64 (within 1e-9 of each tensor's largest entry in
float64, 1e-3 in float32); a case it does not confirm is skipped and counted.

Each confirmed case is then checked by ``check_model`` ("exact") and by ``check_gradient`` in
every mode ("auto", "full", "sample", "directional", "taylor"), seeded. A check of a confirmed
gradient that does not pass is a false alarm. Then one error is planted in one entry of one
tensor (a random entry, ``size`` times the tensor's largest |gradient| added to it; sizes
1e-2, 1e-4, 1e-6 in turn from case to case) and every checker runs again: a pass is a miss,
and a failure that blames only other tensors is counted as misplaced blame.

Two tables are printed: false alarms per checker (by dtype, and relu / no relu), and misses
per error size, dtype and checker. Progress goes to stderr, one line per case.

Run: python bench/stress.py [--count 250] [--seed 0] [--minutes 60] [--json results.json]
                            [--callable]   (the gradient as a callable of the point)
     python bench/stress.py --case SEED [--checker auto]   (one case's reports, for analysis)
     python bench/stress.py --explain results.json   (why each false alarm failed, see below)
     python bench/stress.py --rounding --count 800 --seed 5000   (float32 backprop rounding)

``--explain`` re-runs each recorded false alarm through the checkers' internals and counts its
failing comparisons by probe kind, by the staging decision that left each one failed, and by
whether its step really moves a relu pre-activation across 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import gradproof as gp
from gradproof.check import DEFAULT_CHUNK_BYTES, DEFAULT_DIRECTIONS
from gradproof.engine.blackbox import BlackBoxEvaluator, BlackBoxRun
from gradproof.engine.exact.derivative_rounding import derivative_rounding
from gradproof.engine.exact.evaluator import ExactRun
from gradproof.engine.probes import FAILED
from gradproof.finite_diff import ROUNDING_GROWTH, Rule, first_verdict
from gradproof.nn import ACTIVATIONS, LOSSES, REDUCTIONS, Autoencoder
from gradproof.params import parse_params


def _test_suite_oracle():
    """tests/oracle.py, the test suite's autograd oracle, loaded from its path."""
    path = Path(__file__).resolve().parents[1] / "tests" / "oracle.py"
    spec = importlib.util.spec_from_file_location("oracle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


oracle = _test_suite_oracle()

CHECKERS = ("exact", "auto", "full", "sample", "directional", "taylor")

# Planted errors, as a fraction of the tensor's largest |gradient| entry.
PLANTED_SIZES = (1e-2, 1e-4, 1e-6)

# The oracle confirms a gradient within this fraction of each tensor's largest entry.
CONFIRM_TOLERANCE = {"float64": 1e-9, "float32": 1e-3}

# ----- random cases ---------------------------------------------------------------------------


@dataclass
class Case:
    """One random network, its point and inputs, and what makes it hard."""

    seed: int
    model: Autoencoder
    params: dict[str, np.ndarray]
    x: np.ndarray
    kind: str  # "plain", "saturated" or "kink" (relu pre-activations at or near 0)

    @property
    def dtype(self) -> str:
        return str(self.model.dtype)

    @property
    def relu(self) -> bool:
        return "relu" in self.model.activations

    def describe(self) -> str:
        m = self.model
        return (
            f"seed {self.seed}: {'-'.join(map(str, m.layers))} {'/'.join(m.activations)} "
            f"{m.loss_name}/{m.reduction} bias={m.bias} tied={m.tied} wd={m.weight_decay:g} "
            f"sparsity={m.sparsity_weight:g}@{m.sparsity_target:.2f} {self.dtype} "
            f"batch {len(self.x)} {self.kind}"
        )


def random_case(seed: int, small: bool = False) -> Case:
    """The case of ``seed``; ``small`` keeps every network small (the quick test)."""
    rng = np.random.default_rng(seed)
    dtype = str(rng.choice(["float64", "float32"]))
    n_hidden_layers = int(rng.integers(1, 4))
    wide = not small and rng.random() < 0.2  # beyond auto's budget: row / column probes
    n_visible = int(rng.integers(30, 60) if wide else rng.integers(3, 10 if small else 20))
    widths = [int(rng.integers(2, max(3, n_visible))) for _ in range(n_hidden_layers)]
    tied = n_hidden_layers != 2 and rng.random() < 0.3
    if tied:
        widths[n_hidden_layers // 2 + 1:] = widths[: n_hidden_layers // 2][::-1]
    layers = [n_visible, *widths, n_visible]
    names = sorted(ACTIVATIONS)
    weights = np.array([0.4 if name == "relu" else 0.2 for name in names])
    hidden = [str(rng.choice(names, p=weights / weights.sum())) for _ in widths]
    output = str(rng.choice(names))
    loss = str(rng.choice(sorted(LOSSES))) if output == "sigmoid" else "squared"
    code = 1 + int(np.argmin(widths))
    sparse = hidden[code - 1] == "sigmoid" and rng.random() < 0.5
    model = Autoencoder(
        layers=layers,
        activation=hidden,
        output_activation=output,
        loss=loss,
        reduction=str(rng.choice(sorted(REDUCTIONS))),
        bias=bool(rng.random() < 0.8),
        tied=tied,
        weight_decay=float(rng.choice([0.0, 0.0, 0.01, 0.5])),
        sparsity_weight=float(rng.uniform(0.1, 3.0)) if sparse else 0.0,
        sparsity_target=float(rng.uniform(0.02, 0.5)),
        dtype=dtype,
    )
    batch = int(rng.integers(1, 7 if small else 31))
    x = mnist_like(rng, batch, n_visible)
    params = model.init_params(rng)
    if model.bias and rng.random() < 0.5:
        params = {
            k: v + rng.normal(0, 0.1, v.shape) if k.startswith("b") else v
            for k, v in params.items()
        }
    kind = "plain"
    if "relu" in hidden and model.bias and rng.random() < 0.6:
        params, kind = at_kinks(model, params, x, rng), "kink"
    elif rng.random() < 0.15:
        scale = rng.uniform(5, 20)
        params = {k: v * scale if k.startswith("W") else v for k, v in params.items()}
        kind = "saturated"
    params = {k: np.asarray(v, dtype=model.dtype) for k, v in params.items()}
    return Case(seed, model, params, x.astype(model.dtype), kind)


def mnist_like(rng: np.random.Generator, batch: int, n: int) -> np.ndarray:
    """Pixel levels k/255, about three quarters exactly 0; now and then an all-zero image."""
    x = rng.integers(1, 256, size=(batch, n)) / 255.0
    x[rng.random((batch, n)) < 0.75] = 0.0
    if rng.random() < 0.2:
        x[rng.integers(batch)] = 0.0
    return x


def at_kinks(model: Autoencoder, params: dict, x: np.ndarray, rng: np.random.Generator) -> dict:
    """Biases of the relu layers set so that some pre-activations sit at 0 (exactly, in the
    model's dtype) or within 1e-9 to 1e-6 of it, layer by layer from the input."""
    params = {k: np.asarray(v, dtype=model.dtype).copy() for k, v in params.items()}
    xm = x.astype(model.dtype)
    for k, name in enumerate(model.activations[:-1], start=1):
        if name != "relu":
            continue
        _, cache = model.forward(params, xm)
        before = cache.activations[k - 1]
        weight = model.weights(params)[k - 1]
        product = before @ weight  # (batch, layers[k]) as the model computes it
        units = np.flatnonzero(rng.random(product.shape[1]) < 0.5)
        rows = rng.integers(product.shape[0], size=units.size)
        offset = np.where(
            rng.random(units.size) < 0.5, 0.0, rng.choice([-1, 1], units.size)
            * 10.0 ** rng.uniform(-9, -6, units.size),
        )
        params[f"b{k}"][units] = (-product[rows, units] + offset).astype(model.dtype)
    return params


# ----- running the checkers ------------------------------------------------------------------


@dataclass
class Outcome:
    """One checker's verdict on one case (a planted error or none)."""

    seed: int
    checker: str
    dtype: str
    relu: bool
    kind: str
    planted: float  # 0: the correct gradient
    planted_tensor: str
    passed: bool
    blamed: list[str]  # tensors that fail or carry a bug finding
    findings: list[str]  # "kind:tensor"
    seconds: float


def run_checker(checker: str, case: Case, grads: dict, seed: int,
                callable_grad: bool = False) -> gp.GradReport:
    """One check of ``grads`` (the model's own, or with a planted error) at the case.
    ``callable_grad``: ``check_gradient`` is given the gradient as a callable of the point
    (the model's own gradient there plus whatever ``grads`` adds to it at the case's point),
    as a user's backprop function is; ``check_model`` takes arrays only."""
    model, params, x = case.model, case.params, case.x
    if checker == "exact":
        return gp.check_model(model, params, x, grad=grads)
    grad = grads
    if callable_grad:
        own = model.loss_and_grad(params, x)[1]
        planted = {k: np.asarray(grads[k]) - own[k] for k in own}  # 0 but for a planted entry

        def grad(p):
            return {k: g + planted[k] for k, g in model.loss_and_grad(p, x)[1].items()}

    return gp.check_gradient(lambda p: model.loss(p, x), grad, params, mode=checker, seed=seed)


def outcome(checker: str, case: Case, report: gp.GradReport, planted: float = 0.0,
            tensor: str = "") -> Outcome:
    blamed = {t.name for t in report.tensors if not t.passed}
    blamed |= {name for f in report.findings if f.is_bug for name in f.tensors}
    return Outcome(
        case.seed, checker, case.dtype, case.relu, case.kind, planted, tensor, report.passed,
        sorted(blamed), [f"{f.kind}:{' <-> '.join(f.tensors)}" for f in report.findings],
        report.seconds,
    )


def planted_error(grads: dict, size: float, rng: np.random.Generator) -> tuple[dict, str]:
    """A copy of ``grads`` with ``size`` times a tensor's largest |entry| added to one random
    entry of one random tensor (with a nonzero gradient)."""
    names = [n for n, g in grads.items() if g.size and np.max(np.abs(g)) > 0]
    name = str(rng.choice(names))
    wrong = {k: v.copy() for k, v in grads.items()}
    g = wrong[name]
    g.flat[rng.integers(g.size)] += size * float(np.max(np.abs(g)))
    return wrong, name


def stress_case(case: Case, checkers: Iterable[str], planted: float | None,
                callable_grad: bool = False) -> list[Outcome]:
    """Every checker on the case's correct gradient, then (``planted`` not None) on one with
    an error of that size planted (see ``run_checker`` for ``callable_grad``)."""
    _, grads = case.model.loss_and_grad(case.params, case.x)
    outcomes = [outcome(c, case, run_checker(c, case, grads, case.seed, callable_grad))
                for c in checkers]
    if planted is not None:
        wrong, name = planted_error(grads, planted, np.random.default_rng(case.seed + 1))
        outcomes += [
            outcome(c, case, run_checker(c, case, wrong, case.seed, callable_grad), planted,
                    name)
            for c in checkers
        ]
    return outcomes


def confirmed(case: Case) -> tuple[bool, float]:
    """Whether the oracle confirms the model's gradient at the case, and the error."""
    with np.errstate(all="ignore"):
        try:
            loss, grads = case.model.loss_and_grad(case.params, case.x)
        except gp.InputError:  # an infinite sparsity penalty: nothing to confirm
            return False, float("inf")
        if not np.isfinite(loss):
            return False, float("inf")
        truth = oracle.oracle_gradient(case.model, case.params, case.x)
        error = oracle.oracle_error(grads, truth)
    return error <= CONFIRM_TOLERANCE[case.dtype], error


# ----- tables ---------------------------------------------------------------------------------


def tables(outcomes: list[Outcome]) -> str:
    """Both tables, titled."""
    text = "False alarms (checks of gradients confirmed by autograd that did not pass):\n\n"
    text += alarm_table(outcomes)
    if any(o.planted > 0 for o in outcomes):
        text += ("\n\nMisses (a planted error of one entry that passed, where the same check "
                 "passed the correct gradient; 'elsewhere': the check failed but blamed only "
                 "other tensors):\n\n")
        text += miss_table(outcomes)
    return text


def alarm_table(outcomes: list[Outcome]) -> str:
    """False alarms per checker: all, by dtype, and relu / no relu."""
    correct = [o for o in outcomes if o.planted == 0]
    groups = [
        ("all", lambda o: True),
        ("float64", lambda o: o.dtype == "float64"),
        ("float32", lambda o: o.dtype == "float32"),
        ("relu", lambda o: o.relu),
        ("no relu", lambda o: not o.relu),
        ("relu at kinks", lambda o: o.kind == "kink"),
    ]
    lines = ["| checker | " + " | ".join(g for g, _ in groups) + " |",
             "|---|" + "---:|" * len(groups)]
    for checker in CHECKERS:
        mine = [o for o in correct if o.checker == checker]
        if not mine:
            continue
        cells = []
        for _, keep in groups:
            kept = [o for o in mine if keep(o)]
            cells.append(f"{sum(not o.passed for o in kept)} / {len(kept)}")
        lines.append(f"| {checker} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def miss_table(outcomes: list[Outcome]) -> str:
    """Misses (and misplaced blame) per planted size, dtype and checker, counted only where
    the same checker passed the case's correct gradient: a check that fails anyway proves
    nothing by failing again."""
    clean = {(o.seed, o.checker) for o in outcomes if o.planted == 0 and o.passed}
    planted = [o for o in outcomes if o.planted > 0 and (o.seed, o.checker) in clean]
    lines = ["| error | dtype | " + " | ".join(CHECKERS) + " |",
             "|---|---|" + "---:|" * len(CHECKERS)]
    for size in PLANTED_SIZES:
        for dtype in ("float64", "float32"):
            cells = []
            for checker in CHECKERS:
                kept = [o for o in planted
                        if o.planted == size and o.dtype == dtype and o.checker == checker]
                missed = sum(o.passed for o in kept)
                elsewhere = sum(
                    not o.passed and o.planted_tensor not in o.blamed for o in kept
                )
                cell = f"{missed} / {len(kept)}"
                cells.append(cell + (f" ({elsewhere} elsewhere)" if elsewhere else ""))
            lines.append(f"| {size:g} | {dtype} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----- why a check failed (the analysis in bench/README.md) ------------------------------------


def explain(case: Case, checker: str) -> list[dict]:
    """Every failing comparison of a check of the case's correct gradient: its probe kind,
    the staging decision that left it failed, the evidence the first step had (the one-sided
    slope gap against the rounding tolerance), and whether its first step really moves a relu
    pre-activation across 0 (the truth, from the model's forward passes)."""
    _, grads = case.model.loss_and_grad(case.params, case.x)
    rule = Rule(10.0, None, None)
    if checker == "exact":
        run = ExactRun(case.model, rule, DEFAULT_CHUNK_BYTES, True, None)
        run.setup(case.params, case.x, grads)
        run.measure()
        evaluator = run.evaluator
        center = run.layout.unroll(run.params)
    else:
        layout, flat = parse_params(case.params)
        directions = DEFAULT_DIRECTIONS.get(checker, 0)
        run = BlackBoxRun(layout, checker, 32, directions, 2000, rule,
                          np.random.default_rng(case.seed))
        run.setup(lambda p: case.model.loss(p, case.x), grads, flat, None)
        if checker == "taylor":
            return []  # one direction per tensor: no staging to explain
        run.probe()
        evaluator = BlackBoxEvaluator(run.context)
        center = run.context.center
    rows = []
    for m in (m for sets in run.measured.values() for m in sets):
        for k in np.flatnonzero(m.status == FAILED):
            rows.append(_failure(case, run.layout, center, m, int(k), rule, evaluator))
    return rows


def _failure(case: Case, layout, center: np.ndarray, m, k: int, rule, evaluator) -> dict:
    probes = m.probes
    h = float(probes.step[k])
    # The first step's differences, measured again: the staging keeps them only while it runs.
    _, ev = next(evaluator.evaluate([(m, np.array([k]))], 1.0))
    first = ev.differences(slice(None))
    # Slopes are kept from the first smaller step on (one-sided ones too, blind or not).
    sloped = bool(np.isfinite(m.slopes[k, 0]))
    shrunk = h / float(m.step[k])
    if m.one_sided[k]:
        stage = "one-sided slopes agree on another value"
        stage += ", kink seen before" if m.kink[k] else ""
    elif sloped and shrunk > 1.5:
        stage = f"failed at h/64^{round(np.log(shrunk) / np.log(64))}"
        stage += ", kink seen before" if m.kink[k] else ""
    elif m.kink[k]:
        stage = "kink seen at 2h, smaller steps blind: the 2h failure kept"
    elif first_verdict(first, m.rounding_g[[k]], rule)[1][0]:
        stage = "clear failure at h, not measured again"
    else:
        stage = "failed at h or 2h, no kink seen"
        stage += ", smaller and one-sided steps blind" if sloped else ""
    gap = float(first.curvature[0])
    tolerance = float(rule.tolerance(first.rounding, m.rounding_g[[k]], first.analytic,
                                     first.numeric)[0])
    support = slice(probes.start[k], probes.start[k + 1])
    move = np.zeros_like(center)
    move[probes.positions[support]] = h * probes.values[support]
    return {
        "kind": probes.kind,
        "tensor": probes.spec.name,
        "stage": stage,
        "crosses": _crosses(case, layout, center, move),
        "gap_over_tolerance": gap / tolerance if tolerance > 0 else float("inf"),
        "error_over_tolerance": abs(float(m.error[k])) / float(m.tolerance[k]),
    }


def _crosses(case: Case, layout, center: np.ndarray, move: np.ndarray) -> bool:
    """Whether the points center ± move put some relu pre-activation on another side of 0."""
    model = case.model
    relu = [k for k, name in enumerate(model.activations) if name == "relu"]
    if not relu:
        return False
    signs = []
    for point in (center - move, center, center + move):
        _, cache = model.forward(layout.named(point.astype(model.dtype)), case.x)
        signs.append([cache.pre_activations[k] > 0 for k in relu])
    return any(
        not np.array_equal(a, b) for side in (signs[0], signs[2]) for a, b in zip(side, signs[1])
    )


def explain_table(rows: list[dict]) -> str:
    """Failing comparisons counted by checker, dtype, probe kind, stage and truth."""
    keys = ("checker", "dtype", "kind", "stage", "crosses")
    counted: dict[tuple, int] = {}
    for row in rows:
        key = tuple(row[k] for k in keys)
        counted[key] = counted.get(key, 0) + 1
    lines = ["| checker | dtype | probe | staging decision | step crosses a relu kink | "
             "failing comparisons |", "|---|---|---|---|---|---:|"]
    for key, n in sorted(counted.items(), key=lambda item: (item[0][0], -item[1])):
        lines.append("| " + " | ".join(str(v) for v in key) + f" | {n} |")
    return "\n".join(lines)


# ----- the float32 backprop's own rounding (check_model's allowance) ----------------------------


def rounding_table(seeds: range) -> str:
    """How far the model's own float32 gradient is from the float64 oracle, per tensor of the
    oracle-confirmed float32 cases not at kinks, against the allowance ``check_model`` makes
    for it and against the one it made before the derivative term (``ROUNDING_GROWTH`` eps
    (|g| + max|g|); now that plus eps times ``derivative_rounding``). A comparison fails beyond ``safety`` (10) times
    its allowance plus the finite-difference estimate."""
    eps = float(np.finfo(np.float32).eps)
    ratios = []
    for seed in seeds:
        case = random_case(seed)
        if case.dtype != "float32" or case.kind == "kink" or not confirmed(case)[0]:
            continue
        _, grads = case.model.loss_and_grad(case.params, case.x)
        twin = Autoencoder.from_config({**case.model.config(), "dtype": "float64"})
        p64 = {k: v.astype(np.float64) for k, v in case.params.items()}
        x64 = case.x.astype(np.float64)
        with np.errstate(all="ignore"):
            truth = oracle.oracle_gradient(case.model, case.params, case.x)
        derivatives = derivative_rounding(twin, p64, x64)
        overall = max(float(np.max(np.abs(t), initial=0.0)) for t in truth.values())
        for name, g in grads.items():
            largest = float(np.max(np.abs(truth[name]), initial=0.0))
            if largest <= 1e-12 * overall:
                continue  # a vanishing tensor (dJ/ds flushed below 1e-30): no scale of its own
            error = np.abs(g.astype(np.float64) - truth[name]).ravel()
            before = ROUNDING_GROWTH * eps * (np.abs(truth[name]).ravel() + largest)
            now = before + eps * derivatives[name].ravel()  # check_model's allowance
            ratios.append((error.max() / largest, np.max(error / before), np.max(error / now),
                           now.max() / largest))
    table = np.array(ratios)
    lines = [f"{len(ratios)} tensors of the float32 cases among seeds {seeds.start}-"
             f"{seeds.stop - 1} (oracle-confirmed, not at kinks, not vanishing)", "",
             "| ratio | median | 99th percentile | max | above 1 | above 10 |",
             "|---|---:|---:|---:|---:|---:|"]
    names = ("error / tensor's largest entry", "error / allowance before",
             "error / allowance now", "allowance now / tensor's largest entry")
    for name, column in zip(names, table.T):
        lines.append(f"| {name} | {np.median(column):.2g} | {np.quantile(column, 0.99):.2g} | "
                     f"{column.max():.2g} | {int((column > 1).sum())} | "
                     f"{int((column > 10).sum())} |")
    return "\n".join(lines)


# ----- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=250, help="cases (6 checks each, 12 planted)")
    parser.add_argument("--seed", type=int, default=0, help="the first case's seed")
    parser.add_argument("--minutes", type=float, default=60.0, help="start no case after this")
    parser.add_argument("--no-planted", action="store_true", help="only the correct gradients")
    parser.add_argument("--callable", action="store_true",
                        help="give check_gradient the gradient as a callable of the point, "
                        "planted error included (check_model takes arrays only)")
    parser.add_argument("--json", help="write every outcome to this file")
    parser.add_argument("--case", type=int, help="print every report of one case")
    parser.add_argument("--checker", choices=CHECKERS, action="append", help="only these")
    parser.add_argument("--explain", metavar="JSON",
                        help="explain every false alarm recorded in JSON (from --json)")
    parser.add_argument("--tables", metavar="JSON", help="the two tables of a recorded run")
    parser.add_argument("--rounding", action="store_true",
                        help="the float32 backprop's error against check_model's allowance, "
                        "over --count cases from --seed")
    args = parser.parse_args(argv)
    checkers = args.checker or CHECKERS
    if args.case is not None:
        return show_case(args.case, checkers)
    if args.explain:
        return explain_alarms(args.explain)
    if args.tables:
        with open(args.tables) as f:
            recorded = [Outcome(**o) for o in json.load(f)["outcomes"]]
        print(tables(recorded))
        return 0
    if args.rounding:
        print(rounding_table(range(args.seed, args.seed + args.count)))
        return 0
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    skipped = []
    for i in range(args.count):
        if time.perf_counter() - started > 60 * args.minutes:
            print(f"time bound reached after {i} cases", file=sys.stderr)
            break
        case = random_case(args.seed + i)
        ok, error = confirmed(case)
        if not ok:
            skipped.append((case.seed, error))
            print(f"[{i + 1}/{args.count}] {case.describe()}: oracle error {error:.1e}, "
                  "skipped", file=sys.stderr)
            continue
        planted = None if args.no_planted else PLANTED_SIZES[i % len(PLANTED_SIZES)]
        mine = stress_case(case, checkers, planted, args.callable)
        outcomes += mine
        alarms = [o.checker for o in mine if o.planted == 0 and not o.passed]
        missed = [o.checker for o in mine if o.planted > 0 and o.passed]
        print(f"[{i + 1}/{args.count}] {case.describe()}: alarms {alarms or '-'}, "
              f"missed {planted and f'{planted:g}'} {missed or '-'} "
              f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    checks = sum(o.planted == 0 for o in outcomes)
    print(f"{checks} checks of correct gradients, {len(outcomes) - checks} of planted errors, "
          f"{len(skipped)} cases skipped (oracle did not confirm), "
          f"{time.perf_counter() - started:.0f} s\n")
    print(tables(outcomes))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"outcomes": [asdict(o) for o in outcomes], "skipped": skipped}, f)
    return 0


def explain_alarms(path: str) -> int:
    """Re-run every false alarm of a recorded run and count its failing comparisons."""
    with open(path) as f:
        alarms = [o for o in json.load(f)["outcomes"] if o["planted"] == 0 and not o["passed"]]
    rows = []
    for i, alarm in enumerate(alarms):
        case = random_case(alarm["seed"])
        found = explain(case, alarm["checker"])
        print(f"[{i + 1}/{len(alarms)}] seed {alarm['seed']} {alarm['checker']}: "
              f"{len(found)} failing comparisons", file=sys.stderr)
        rows += [{"checker": alarm["checker"], "dtype": case.dtype, **row} for row in found]
    print(explain_table(rows))
    return 0


def show_case(seed: int, checkers: Iterable[str]) -> int:
    """Print the case and every checker's report on its correct gradient."""
    case = random_case(seed)
    ok, error = confirmed(case)
    print(f"{case.describe()}; oracle error {error:.1e} ({'confirmed' if ok else 'NOT confirmed'})")
    _, grads = case.model.loss_and_grad(case.params, case.x)
    for checker in checkers:
        print(f"\n== {checker}")
        print(run_checker(checker, case, grads, case.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
