"""gradproof.torch: check_function / check_module on custom autograd Functions and modules.

The planted-bug catalogue (``torch_planted``, beside these tests) is the spec: each buggy
Function must get exactly its finding (kind and input), each correct one must pass, at random
shapes. Torch's own autograd, applied to the same forward written in plain torch operations,
is the independent oracle for the hand-written backward code.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip(
    "torch", reason="the torch adapter needs torch (pip install gradproof[torch])"
)

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gradproof.errors import InputError  # noqa: E402
from gradproof.torch import check_function, check_module  # noqa: E402
from torch_planted import (  # noqa: E402
    CASES,
    Linear,
    LinearBroadcastBias,
    LinearTransposedWeight,
    Mul,
    ScaleByConstant,
    SquareAddsGradOutput,
    SquareAndTriple,
    SquareAndTripleMissingSecond,
    SquarePair,
)

Function = torch.autograd.Function
SCALAR_LOSS = CASES["ignores_grad_output"]


def bug_findings(report):
    return {(f.kind, *f.tensors) for f in report.findings if f.is_bug}


def kinds(report):
    return {(f.kind, *f.tensors) for f in report.findings}


def randn(*shape, seed=0, grad=True, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_(grad)


# ------------------------------------------------------------------ planted bugs, named


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_each_planted_bug_gets_its_finding_on_its_input(case):
    report = check_function(case.buggy.apply, *case.inputs(), names=case.names)
    assert not report.passed
    assert bug_findings(report) == {(case.kind, *case.tensors)}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_each_correct_version_passes(case):
    report = check_function(case.correct.apply, *case.inputs(), names=case.names)
    assert report.passed, str(report)
    assert report.findings == []
    checked = [name for name, x in zip(case.names, case.inputs()) if x.requires_grad]
    assert [t.name for t in report.tensors] == checked


@settings(max_examples=8, deadline=None)
@given(
    name=st.sampled_from(sorted(CASES)),
    seed=st.integers(0, 2**16),
    n=st.integers(2, 7),
    d=st.integers(2, 6),
)
def test_verdicts_agree_with_torch_autograd_at_random_shapes(name, seed, n, d):
    case = CASES[name]
    inputs = case.inputs(seed, n, d)
    checked = [x for x in inputs if x.requires_grad]
    # Not `seed` itself: the weight would then equal x, and x.T @ x hides a transpose.
    generator = torch.Generator().manual_seed(seed + 2**20)
    weight = torch.randn(case.reference(*inputs).shape, generator=generator, dtype=torch.float64)
    oracle = torch.autograd.grad((case.reference(*inputs) * weight).sum(), checked)
    mine = torch.autograd.grad((case.correct.apply(*inputs) * weight).sum(), checked)
    buggy = torch.autograd.grad(
        (case.buggy.apply(*inputs) * weight).sum(), checked, materialize_grads=True
    )
    # The hand-written correct backward is right; the planted bug really changes a gradient.
    assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(mine, oracle))
    assert not all(torch.allclose(a, b) for a, b in zip(buggy, oracle))
    assert check_function(case.correct.apply, *inputs, names=case.names).passed
    report = check_function(case.buggy.apply, *inputs, names=case.names, seed=seed)
    assert bug_findings(report) == {(case.kind, *case.tensors)}


def test_default_names_follow_the_input_positions():
    case = CASES["missing_mean"]
    report = check_function(case.buggy.apply, *case.inputs())
    assert [t.name for t in report.tensors] == ["input0"]
    assert bug_findings(report) == {("scaled", "input0")}
    assert report.findings[0].details["factor_text"] == "24"  # 6 x 4 entries: the missing 1/N


def test_a_large_input_is_checked_by_probes_and_still_diagnosed():
    case = CASES["transposed_weight"]
    report = check_function(case.buggy.apply, *case.inputs(0, 64, 48), names=case.names)
    assert report.tensor("W").checked < 48 * 48  # sampled, not every entry
    assert bug_findings(report) == {("transposed", "W")}


# -------------------------------------------------------------- what backward must obey


class ScaleIgnoringGradOutput(Function):
    """3 * x whose backward ignores grad_output entirely."""

    @staticmethod
    def forward(ctx, x):
        return 3 * x

    @staticmethod
    def backward(ctx, g):
        return torch.full_like(g, 3.0)


@pytest.mark.parametrize(
    ("function", "inputs", "behaviour"),
    [
        (ScaleIgnoringGradOutput, (randn(4, 3),), "did not change at all"),
        (SCALAR_LOSS.buggy, SCALAR_LOSS.inputs(), "did not change at all"),
        (CASES["grad_output_sign_only"].buggy, (randn(4, 3),), "changed by a factor -1"),
    ],
    ids=["tensor-output", "scalar-output", "sign-only"],
)
def test_a_backward_not_linear_in_grad_output_is_named(function, inputs, behaviour):
    report = check_function(function.apply, *inputs)
    assert bug_findings(report) == {("scaled", "input0")}
    (finding,) = report.findings
    assert finding.details["cause"] == "upstream_scale_ignored"
    assert behaviour in finding.message


class NoisyBackward(Function):
    """2 * x whose backward adds fresh noise at every call."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, g):
        return 2 * g + 1e-3 * torch.rand_like(g)


def test_a_nondeterministic_backward_is_noted():
    report = check_function(NoisyBackward.apply, randn(3, 3))
    assert ("nondeterministic", "input0") in kinds(report)
    assert not report.passed  # the noise is far beyond the finite-difference tolerance


def test_a_function_with_hidden_state_is_nondeterministic():
    calls = []

    def drifting(x):
        calls.append(1)
        return x * (1 + 1e-6 * len(calls))

    report = check_function(drifting, randn(3))
    assert "nondeterministic" in {f.kind for f in report.findings}


class Relu(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0)


def test_a_kink_at_the_point_is_a_note_not_a_failure():
    x = torch.tensor([[-1.0, 0.0, 2.0], [0.5, -0.25, 1.5]], dtype=torch.float64, requires_grad=True)
    report = check_function(Relu.apply, x)
    assert report.passed, str(report)
    assert [f.kind for f in report.findings] == ["kink"]


def test_dropout_inside_draws_the_same_mask_at_every_evaluation():
    def dropout_square(x):
        return torch.nn.functional.dropout(x * x, p=0.5, training=True)

    state = torch.get_rng_state()
    report = check_function(dropout_square, randn(5, 4))
    assert report.passed, str(report)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched


# ------------------------------------------------------------------ inputs and precision


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_low_precision_inputs_are_checked_in_float64_with_a_note(dtype):
    a, b = randn(3, 4, dtype=dtype), randn(3, 4, seed=1, dtype=dtype)
    report = check_function(Mul.apply, a, b, names=["a", "b"])
    assert report.passed, str(report)
    (note,) = report.findings
    # named by the inputs' own names, never a group word the user did not write
    assert (note.kind, note.tensors) == ("precision", ("a", "b"))
    assert note.details["dtypes"] == {"a": str(dtype), "b": str(dtype)}
    assert note.message.startswith(f"{str(dtype).removeprefix('torch.')}, checked as float64 copies")
    assert "[precision] every tensor (a, b): " in str(report)
    assert a.dtype == dtype and a.requires_grad  # the user's tensors are left alone
    swapped = check_function(CASES["swapped_inputs"].buggy.apply, a, b, names=["a", "b"])
    assert bug_findings(swapped) == {("swapped", "a", "b")}


def test_one_low_precision_input_is_named_in_the_note():
    x = randn(4, 3, dtype=torch.float32)
    report = check_function(CASES["sign_flipped"].correct.apply, x)
    assert kinds(report) == {("precision", "input0")}
    assert report.findings[0].message.startswith("float32, checked as a float64 copy, on its")


def test_inputs_of_different_precisions_each_get_their_own_in_the_note():
    a, b = randn(3, 4, dtype=torch.float32), randn(3, 4, seed=1, dtype=torch.float16)
    report = check_function(Mul.apply, a, b, names=["a", "b"])
    assert kinds(report) == {("precision", "a", "b")}
    assert report.findings[0].message.startswith("a float32, b float16, checked as float64 copies")


def test_constants_of_any_type_are_passed_through():
    def scaled_power(x, power, scale, label):
        assert label == "keep"
        return scale * x**power

    x = randn(3, 2)
    report = check_function(scaled_power, x, 3, torch.tensor(2.0), "keep")
    assert report.passed
    assert [t.name for t in report.tensors] == ["input0"]


def test_a_scalar_input_is_checked():
    scale = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    report = check_function(lambda s, x: (s * x).sin(), scale, randn(4), names=["s", "x"])
    assert report.passed, str(report)
    assert report.tensor("s").shape == ()


def test_a_constant_changed_in_place_by_fn_is_fresh_at_every_call():
    def accumulate(x, total):
        total.add_(1.0)
        return x * total

    total = torch.zeros(3, dtype=torch.float64)
    report = check_function(accumulate, randn(3), total)
    assert report.passed, str(report)
    assert torch.equal(total, torch.zeros(3, dtype=torch.float64))


def test_a_detached_output_gives_a_zero_gradient_finding():
    report = check_function(lambda x: (x * x).detach(), randn(4))
    assert bug_findings(report) == {("zero", "input0")}


def test_integer_outputs_are_left_out_of_the_projection():
    report = check_function(lambda x: (x.sin(), x.argmax()), randn(5))
    assert report.passed, str(report)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def on_gpu(inputs):
    return [x.detach().cuda().requires_grad_(x.requires_grad) for x in inputs]


@needs_cuda
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_cuda_tensors_get_the_same_verdicts_as_on_the_cpu(case):
    inputs = on_gpu(case.inputs())
    report = check_function(case.buggy.apply, *inputs, names=case.names)
    assert bug_findings(report) == {(case.kind, *case.tensors)}
    report = check_function(case.correct.apply, *inputs, names=case.names)
    assert report.passed, str(report)


@needs_cuda
def test_a_float32_module_on_the_gpu_is_checked_and_left_unchanged():
    model = mlp(torch.float32).cuda()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    report = check_module(model, randn(5, 4, grad=False, dtype=torch.float32).cuda())
    assert report.passed, str(report)
    for name, p in model.named_parameters():
        assert p.is_cuda and p.dtype == torch.float32 and torch.equal(p.detach(), before[name])
    buggy = torch.nn.Sequential(CustomLinear(LinearTransposedWeight)).cuda()
    report = check_module(buggy, randn(6, 4, grad=False).cuda())
    assert bug_findings(report) == {("transposed", "0.weight")}


@needs_cuda
def test_inputs_on_two_devices_are_reported_through_fn():
    with pytest.raises(InputError, match=r"fn raised RuntimeError: .*device"):
        check_function(lambda a, b: a * b, randn(3).cuda(), randn(3, seed=1))


# -------------------------------------------------------------------------- bad input


class TooFewGradients(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a * b

    @staticmethod
    def backward(ctx, g):
        return g


class Rectangular(Function):
    """x @ W with W (3, 2) whose backward returns W's gradient transposed: torch refuses it."""

    @staticmethod
    def forward(ctx, x, W):
        ctx.save_for_backward(x, W)
        return x @ W

    @staticmethod
    def backward(ctx, g):
        x, W = ctx.saved_tensors
        return g @ W.T, g.T @ x  # (2, 3): transposed


class RaisingBackward(Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        raise ValueError("not implemented yet")


def test_wrong_number_of_gradients_is_explained():
    with pytest.raises(InputError, match=r"returned 1 gradients where its forward took 2 arg"):
        check_function(TooFewGradients.apply, randn(3), randn(3, seed=1))


def test_a_gradient_of_the_transposed_shape_is_explained():
    with pytest.raises(InputError, match=r"shape \(2, 3\) for forward's argument 1.*transposed"):
        check_function(Rectangular.apply, randn(4, 3), randn(3, 2, seed=1))


def test_a_backward_taking_too_few_gradient_arguments_names_the_rule():
    with pytest.raises(
        InputError,
        match=r"accepts 1 gradient argument\(s\) but forward returned 2 outputs.*one gradient "
        r"argument per output of forward",
    ):
        check_function(SquarePair.apply, randn(3))


def test_a_gradient_for_a_non_tensor_argument_names_the_rule():
    with pytest.raises(
        InputError, match=r"gradient for forward's argument 1, which is not a tensor.*None for"
    ):
        check_function(ScaleByConstant.apply, randn(3), 2.0)


def test_a_broadcast_gradient_summed_back_by_autograd_is_noted_with_its_shapes():
    report = check_function(LinearBroadcastBias.apply, randn(4, 3), randn(3, 2, seed=1),
                            randn(2, seed=2), names=["x", "W", "b"])
    assert report.passed  # the values autograd sums back are right
    (note,) = report.findings_of("convention")
    assert note.tensors == ("b",)
    assert note.details == {"gradient_shape": [4, 2], "input_shape": [2]}


def test_a_gradient_lacking_the_path_through_one_output_is_a_missing_term():
    assert check_function(SquareAndTriple.apply, randn(4, 3)).passed
    report = check_function(SquareAndTripleMissingSecond.apply, randn(4, 3))
    (finding,) = [f for f in report.findings if f.is_bug]
    assert (finding.kind, finding.tensors, finding.details) == (
        "missing_term", ("input0",), {"output": 1}
    )


def test_a_backward_affine_in_grad_output_says_so():
    report = check_function(SquareAddsGradOutput.apply, randn(4, 3))
    (finding,) = report.findings_of("scaled")
    assert finding.details["cause"] == "affine_in_upstream"
    assert "affine rather than linear in grad_output" in finding.message


def test_a_backward_that_raises_is_reported():
    with pytest.raises(InputError, match=r"backward of fn raised ValueError: not implemented yet"):
        check_function(RaisingBackward.apply, randn(3))


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (lambda x: 1.0, r"must return a tensor or a tuple of tensors; it returned a float"),
        (lambda x: (x, "extra"), r"output 1 of its tuple is a str"),
        (lambda x: None, r"it returned None"),
        (lambda x: x.argmax(), r"no floating-point tensor \(dtypes torch.int64\)"),
    ],
    ids=["float", "tuple-with-str", "none", "integer-only"],
)
def test_an_output_that_is_not_tensors_is_refused(fn, words):
    with pytest.raises(InputError, match=words):
        check_function(fn, randn(3))


def test_no_input_requiring_grad_is_refused():
    with pytest.raises(InputError, match=r"no input requires grad \(tensors x, y are constants\)"):
        check_function(Mul.apply, randn(3, grad=False), randn(3, grad=False), names=["x", "y"])
    with pytest.raises(InputError, match=r"no input requires grad: fn got no tensors"):
        check_function(lambda a: a, 3.0)


def test_nan_in_an_input_is_refused_with_its_place():
    x = randn(2, 3, grad=False)
    x[1, 2] = float("nan")
    with pytest.raises(InputError, match=r"input x holds nan at \[1, 2\] \(1 such entries"):
        check_function(Mul.apply, x.requires_grad_(), randn(2, 3), names=["x", "y"])
    with pytest.raises(InputError, match=r"input input1 holds nan"):
        check_function(lambda a, c: a * c, randn(2, 3), x.detach())


def test_inf_is_refused_in_a_checked_input_but_allowed_in_a_constant_mask():
    x = randn(3, grad=False)
    x[0] = float("inf")
    with pytest.raises(InputError, match=r"input input0 holds inf at \[0\].*finite values only"):
        check_function(torch.sin, x.requires_grad_())
    mask = torch.tensor([0.0, -float("inf"), 0.0], dtype=torch.float64)
    report = check_function(lambda a, m: torch.softmax(a + m, dim=0), randn(3), mask)
    assert report.passed, str(report)


def test_complex_input_is_refused():
    z = torch.randn(3, dtype=torch.complex128, requires_grad=True)
    with pytest.raises(InputError, match=r"input input0 is complex"):
        check_function(lambda a: a.abs(), z)


def test_fn_raising_is_reported():
    def broken(x):
        raise RuntimeError("shapes do not fit")

    with pytest.raises(InputError, match=r"fn raised RuntimeError: shapes do not fit"):
        check_function(broken, randn(3))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"names": ["x"]}, r"names has 1 entries \(\['x'\]\) but fn gets 2 inputs"),
        ({"names": ["x", "x"]}, r"names must be distinct"),
        ({"names": "xy"}, r"names must be a list of non-empty strings"),
        ({"tolerance": 1e-3}, r"unknown option\(s\) \['tolerance'\]"),
        ({"shapes": [(3,)]}, r"unknown option\(s\) \['shapes'\]"),
        ({"seed": 1.5}, r"seed must be an integer"),
        ({"mode": "fast"}, r"mode must be one of"),
    ],
    ids=["names-count", "names-repeat", "names-str", "unknown-option", "shapes", "seed", "mode"],
)
def test_bad_options_are_refused(kwargs, words):
    with pytest.raises(InputError, match=words):
        check_function(Mul.apply, randn(3), randn(3, seed=1), **kwargs)


def test_fn_not_callable_is_refused():
    with pytest.raises(InputError, match=r"fn must be a callable of tensors"):
        check_function(3, randn(3))
    with pytest.raises(InputError, match=r"fn is the autograd.Function class Mul; pass Mul.apply"):
        check_function(Mul, randn(3), randn(3, seed=1))


def test_options_reach_check_gradient():
    case = CASES["transposed_weight"]
    inputs = case.inputs()
    report = check_function(case.correct.apply, *inputs, names=case.names, mode="directional")
    assert report.mode == "directional"
    assert report.passed


# ---------------------------------------------------------------------------- modules


def mlp(dtype=torch.float64):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)]
    return torch.nn.Sequential(*layers).to(dtype)


class CustomLinear(torch.nn.Module):
    """A square linear layer through a custom Function (buggy or not)."""

    def __init__(self, function, d=4):
        super().__init__()
        self.function = function
        g = torch.Generator().manual_seed(3)
        self.weight = torch.nn.Parameter(torch.randn(d, d, generator=g))
        self.bias = torch.nn.Parameter(torch.randn(d, generator=g))

    def forward(self, x):
        return self.function.apply(x, self.weight, self.bias)


def test_a_module_passes_and_its_parameters_keep_their_names():
    report = check_module(mlp(), randn(5, 4, grad=False))
    assert report.passed, str(report)
    assert [t.name for t in report.tensors] == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_a_custom_function_inside_a_module_is_diagnosed():
    model = torch.nn.Sequential(CustomLinear(LinearTransposedWeight), torch.nn.Sigmoid())
    report = check_module(model, randn(6, 4, grad=False))
    assert bug_findings(report) == {("transposed", "0.weight")}
    assert check_module(torch.nn.Sequential(CustomLinear(Linear)), randn(6, 4, grad=False)).passed


def test_a_loss_fn_reduces_the_output():
    target = randn(5, 2, seed=2, grad=False)
    report = check_module(mlp(), randn(5, 4, grad=False), lambda out: ((out - target) ** 2).mean())
    assert report.passed, str(report)


def test_a_float32_module_is_checked_as_a_float64_copy_and_left_unchanged():
    model = mlp(torch.float32)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    report = check_module(model, randn(5, 4, grad=False, dtype=torch.float32))
    assert report.passed, str(report)
    [note] = report.findings
    assert note.kind == "precision"
    assert note.tensors == tuple(name for name, _ in model.named_parameters())
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p.detach(), before[name])


def test_frozen_parameters_are_left_out_and_dropout_is_seeded():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 2))
    model.to(torch.float64).train()
    model[0].weight.requires_grad_(False)
    report = check_module(model, randn(6, 4, grad=False))
    assert report.passed, str(report)
    assert [t.name for t in report.tensors] == ["0.bias", "2.weight", "2.bias"]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (
            lambda: (torch.nn.Linear(2, 2).requires_grad_(False), randn(3, 2), None),
            r"has no parameter that requires grad",
        ),
        (lambda: (lambda x: x, randn(3, 2), None), r"must be a torch.nn.Module, got function"),
        (
            lambda: (mlp(), randn(5, 4), lambda out: out.sum(0)),
            r"loss_fn must return a scalar floating-point tensor; it returned a tensor of shape",
        ),
        (
            lambda: (mlp(), randn(5, 4), lambda out: out.sum().item()),
            r"it returned a float \(.item\(\) drops the graph",
        ),
        (lambda: (mlp(), randn(5, 3), None), r"the module raised RuntimeError"),
    ],
    ids=["frozen", "not-a-module", "loss-not-scalar", "loss-item", "forward-raises"],
)
def test_bad_module_input_is_refused(make, words):
    module, inputs, loss_fn = make()
    with pytest.raises(InputError, match=words):
        check_module(module, inputs, loss_fn)


def test_nan_in_a_parameter_is_refused_with_its_name():
    model = mlp()
    with torch.no_grad():
        model[2].bias[1] = float("nan")
    with pytest.raises(InputError, match=r"parameter 2.bias holds nan at \[1\]"):
        check_module(model, randn(5, 4))


# ---------------------------------------------------------------------------- packaging


def test_importing_gradproof_never_imports_torch():
    code = (
        "import sys, gradproof; gradproof.check_gradient; gradproof.GradReport; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_without_torch_the_adapter_says_how_to_install_it():
    code = "import sys; sys.modules['torch'] = None; import gradproof.torch"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "pip install 'gradproof[torch]'" in result.stderr


def test_the_planted_wrong_functions_do_not_ship_in_the_package():
    import pkgutil

    import gradproof

    modules = {info.name for info in pkgutil.walk_packages(gradproof.__path__, "gradproof.")}
    assert "gradproof.torch" in modules  # the walk does reach the adapter
    assert not [name for name in modules if "planted" in name]
