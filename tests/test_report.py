"""GradReport's renderings: verdicts that cannot be misread, findings said once, Jupyter's HTML.

A wrongly shaped gradient never reads ``ok``; a finding that says the same of every tensor
is shown once (JSON keeps one record each, with a shared ``group``); the HTML a notebook
shows is the same table and findings, escaped.
"""

from __future__ import annotations

import re
from dataclasses import replace
from html.parser import HTMLParser

import numpy as np
import pytest

import gradproof as gp
from gradproof.report import Finding, GradReport, TensorResult, group_findings

N = 9


def result(name, shape=(2, 3), passed=True, **extra):
    return TensorResult(name, shape, int(np.prod(shape)), 1e-9, 1e-7, passed, **extra)


def rounding(name, amount):
    return Finding(
        "precision", (name,),
        f"the gradient of {name} is float32: its entries carry rounding of up to about "
        f"{amount:.1e}, which the tolerance includes",
    )


@pytest.fixture(scope="module")
def float32_case():
    """A float32 seed-style network whose decoder gradient comes back transposed."""
    model = gp.Autoencoder(n_visible=N, n_hidden=4, dtype="float32")
    params = model.init_params(seed=1)
    x = np.random.default_rng(1).random((3, N))
    _, grads = model.loss_and_grad(params, x)
    return model, params, x, {**grads, "W2": grads["W2"].T.copy()}


def test_a_transposed_gradient_reads_transposed_in_the_table_and_fails_in_json(float32_case):
    model, params, x, grads = float32_case
    report = gp.check_model(model, params, x, grad=grads)
    row = next(line for line in str(report).splitlines() if line.startswith("W2 "))
    assert row.split()[-1] == "transposed" and " ok" not in row
    entry = next(t for t in report.to_dict()["tensors"] if t["name"] == "W2")
    assert entry["passed"] is False and entry["verdict"] == "transposed"
    assert entry["gradient_shape"] == [N, 4] and "agree with" in entry["reason"]
    assert [t.verdict for t in report.tensors if t.name != "W2"] == ["ok", "ok", "ok"]


def test_a_result_built_with_a_wrong_shape_fails_whatever_its_values():
    right = result("W", passed=True, gradient_shape=(3, 2))
    wrong = result("W", passed=False, gradient_shape=(3, 2))
    same = result("W", passed=True, gradient_shape=(2, 3))
    assert (right.passed, right.verdict, right.values_passed) == (False, "transposed", True)
    assert (wrong.passed, wrong.verdict, wrong.values_passed) == (False, "FAIL, transposed", False)
    assert "agree with" in right.reason and "differ from" in wrong.reason
    assert replace(right, checked=1).reason == right.reason  # rebuilt, it still knows its values
    assert (same.passed, same.verdict, same.reason) == (True, "ok", None)


def test_a_finding_on_every_tensor_is_shown_once_with_the_range_of_its_numbers(float32_case):
    model, params, x, grads = float32_case
    report = gp.check_model(model, params, x, grad={**grads, "W2": grads["W2"].T})
    text = str(report)
    assert text.count("is float32: its entries carry rounding") == 1
    line = next(line for line in text.splitlines() if "its entries carry rounding" in line)
    assert line.startswith("- [precision] every tensor (W1, b1, W2, b2): the gradient of each tensor")
    low, high = re.search(r"≈ (\S+) to (\S+),", line).groups()
    amounts = [f.details["rounding"] for f in report.findings if f.tensor in ("W1", "b1", "W2", "b2")]
    assert float(low) == pytest.approx(min(amounts), rel=0.05)
    assert float(high) == pytest.approx(max(amounts), rel=0.05)
    # JSON keeps one record per finding, tied together by a shared group number.
    records = [f for f in report.to_dict()["findings"] if "group" in f]
    assert len(records) == 4 and len({f["group"] for f in records}) == 1


def test_findings_on_some_tensors_name_them_and_differing_integers_keep_findings_apart():
    findings = [rounding("W1", 1e-7), rounding("W2", 3e-7)]
    groups = group_findings(findings, ["W1", "b1", "W2"])
    assert len(groups) == 1 and not groups[0].every
    assert groups[0].label() == "W1, W2" and "1.0e-07 to 3.0e-07" in groups[0].message
    shapes = [
        Finding("transposed", (name,), f"the gradient of {name} has shape {shape}")
        for name, shape in (("W1", "3x2"), ("W2", "2x3"))
    ]
    assert [g.tensors for g in group_findings(shapes)] == [("W1",), ("W2",)]


def test_a_tensor_named_like_an_english_word_is_not_replaced_inside_the_sentence():
    # "a" is also an article: its finding's template differs from b's, so they stay apart.
    findings = [
        Finding("precision", (name,), f"the gradient of {name} is float32: a tolerance covers it")
        for name in ("a", "b")
    ]
    assert [g.message for g in group_findings(findings)] == [f.message for f in findings]


class _Cells(HTMLParser):
    """The text of each table cell and each list item, as a browser would show it."""

    def __init__(self):
        super().__init__()
        self.cells, self.items, self.tags, self._in = [], [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag in ("td", "li"):
            self._in = tag
            (self.cells if tag == "td" else self.items).append("")

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in:
            (self.cells if self._in == "td" else self.items)[-1] += data


def test_jupyter_shows_the_table_with_its_findings_under_it_escaped():
    name = "<b>enc</b> & W"
    report = GradReport(
        tensors=[result(name, passed=False), result("b", shape=(3,))],
        findings=[
            Finding("scaled", (name,), "the gradient is 1/10 times the true one <sum> & more",
                    fix="multiply by `10` & <retry>"),
        ],
    )
    page = report._repr_html_()
    assert "<b>enc</b>" not in page and "<sum>" not in page and "<retry>" not in page
    parsed = _Cells()
    parsed.feed(page)
    assert parsed.tags.index("table") < parsed.tags.index("ul")  # findings under the table
    assert parsed.cells[0] == name and parsed.cells[6] == "FAIL" and parsed.cells[-1] == "ok"
    assert parsed.items == [
        f"[scaled] {name}: the gradient is 1/10 times the true one <sum> & more"
        "fix: multiply by `10` & <retry>"
    ]


def test_a_passing_reports_html_has_no_findings_list():
    page = GradReport(tensors=[result("W")])._repr_html_()
    parsed = _Cells()
    parsed.feed(page)
    assert "ul" not in parsed.tags and "PASSED" in page
