"""Bad inputs of ``iw.datasets.breast_cancer_clinic_b`` (issue 16, notebook 05): each case is a
call that must raise the exception type given, with a message matching a regex that names the
argument first. Self-contained, to be merged into tests/test_bad_input.py."""

from __future__ import annotations

import pytest

import influence_widgets as iw

CASES = [
    ("keep_negative", lambda: iw.datasets.breast_cancer_clinic_b(keep=-1), ValueError, r"^keep: "),
    ("keep_too_many", lambda: iw.datasets.breast_cancer_clinic_b(keep=500), ValueError, r"^keep: "),
    ("keep_float", lambda: iw.datasets.breast_cancer_clinic_b(keep=2.0), ValueError, r"^keep: "),
    ("keep_bool", lambda: iw.datasets.breast_cancer_clinic_b(keep=True), ValueError, r"^keep: "),
    (
        "fraction_zero",
        lambda: iw.datasets.breast_cancer_clinic_b(fraction=0),
        ValueError,
        r"^fraction: ",
    ),
    (
        "fraction_one",
        lambda: iw.datasets.breast_cancer_clinic_b(fraction=1.0),
        ValueError,
        r"^fraction: ",
    ),
    (
        "fraction_str",
        lambda: iw.datasets.breast_cancer_clinic_b(fraction="0.2"),
        ValueError,
        r"^fraction: ",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_raises_naming_the_argument(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
