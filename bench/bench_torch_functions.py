"""gradproof.torch.check_function beside torch.autograd.gradcheck on planted backward bugs.

For every case of ``CASES`` in ``tests/torch_planted.py``, the buggy Function and its correct
version are checked on the same float64 inputs by gradproof and by gradcheck (its default
full-Jacobian mode, and ``fast_mode=True``, which compares one random projection). Prints a
Markdown table: the verdicts (gradproof's with its finding kinds and inputs, gradcheck's with
the first line of its error) and the median wall time of ``--repeats`` runs each, after one
warm-up run.

Run: python bench/bench_torch_functions.py [--repeats 5] [--n 6] [--d 4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch.autograd.gradcheck import GradcheckError

from gradproof.torch import check_function

from _timing import timed

# The planted Functions are test material, kept beside the tests that use them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from torch_planted import CASES  # noqa: E402


def gradproof_verdict(
    function: Any, inputs: tuple[torch.Tensor, ...], names: tuple[str, ...]
) -> str:
    report = check_function(function.apply, *inputs, names=names)
    findings = ", ".join(f"{f.kind} {' <-> '.join(f.tensors)}" for f in report.findings)
    verdict = "pass" if report.passed else "FAIL"
    return f"{verdict}: {findings}" if findings else verdict


def gradcheck_verdict(function: Any, inputs: tuple[torch.Tensor, ...], fast: bool) -> str:
    try:
        torch.autograd.gradcheck(function.apply, inputs, fast_mode=fast)
    except GradcheckError as exc:
        return f"FAIL: {str(exc).splitlines()[0].rstrip(',')}"
    return "pass"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs per cell (median; at least 3)"
    )
    parser.add_argument("--n", type=int, default=6, help="batch rows of the inputs")
    parser.add_argument("--d", type=int, default=4, help="width of the inputs")
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats must be at least 3")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, inputs n={args.n} "
        f"d={args.d}, median of {args.repeats} runs\n"
    )
    print(
        "| case | version | gradproof verdict | gradproof s | gradcheck verdict | gradcheck s "
        "| gradcheck fast_mode | fast_mode s |"
    )
    print("|---|---|---|---:|---|---:|---|---:|")
    for name, case in CASES.items():
        inputs = case.inputs(0, args.n, args.d)
        for version, function in (("buggy", case.buggy), ("correct", case.correct)):
            ours, ours_s, _ = timed(
                lambda: gradproof_verdict(function, inputs, case.names), args.repeats
            )
            full, full_s, _ = timed(
                lambda: gradcheck_verdict(function, inputs, False), args.repeats
            )
            fast, fast_s, _ = timed(
                lambda: gradcheck_verdict(function, inputs, True), args.repeats
            )
            label = f"{name} ({case.bug})" if version == "buggy" else name
            print(
                f"| {label} | {version} | {ours} | {ours_s:.4f} | {full} | {full_s:.4f} "
                f"| {fast} | {fast_s:.4f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
