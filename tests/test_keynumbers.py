"""Key numbers: validated, shown as text, stored machine-readably in the output, compared with a tolerance."""
from dataclasses import asdict

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nbformat.v4 import new_code_cell, new_notebook, new_output

from labkit import LabError
from labkit.notebook import keynumbers
from labkit.notebook.keynumbers import KeyNumber, key_number

finite = st.floats(-1e6, 1e6, allow_nan=False)
bound = st.none() | st.floats(0, 1e3, allow_nan=False)


@given(finite, finite, bound, bound)
def test_a_value_is_accepted_exactly_when_it_is_within_the_larger_tolerance(ref, value, tolerance, relative):
    key = KeyNumber("x", ref, tolerance=tolerance, relative=relative)
    allowed = max(tolerance or 0.0, (relative or 0.0) * abs(ref))
    assert key.graded == (tolerance is not None or relative is not None)
    assert key.allowed() == allowed
    if abs(value - ref) <= allowed:
        assert key.accepts(value)
    elif abs(value - ref) > allowed * (1 + 1e-6) + 1e-9:
        assert not key.accepts(value)


@pytest.mark.parametrize("bad", [dict(name="1st", value=1), dict(name="a b", value=1), dict(name="x", value=float("nan")),
                                 dict(name="x", value="98"), dict(name="x", value=True), dict(name="x", value=1, tolerance=-1),
                                 dict(name="x", value=1, relative="wide")])
def test_bad_key_numbers_are_clear_errors(bad):
    with pytest.raises(LabError, match="key number"):
        KeyNumber(**bad)


def test_key_numbers_round_trip_through_a_notebook_output():
    key = KeyNumber("test_acc", 98.25, "%", "accuracy", tolerance=1.0)
    later = KeyNumber("test_acc", 97.0, "%")
    shown = [new_output("display_data", data={"text/plain": k.text(), keynumbers.MIME: asdict(k)}) for k in (key, later)]
    broken = new_output("display_data", data={keynumbers.MIME: {"name": "y", "value": "not a number"}})
    nb = new_notebook(cells=[new_code_cell("a()", outputs=[shown[0], broken]), new_code_cell("b()", outputs=[shown[1]])])
    assert keynumbers.read(nb) == {"test_acc": later}  # a later cell overrides; a damaged record is skipped
    assert key.text() == "test_acc = 98.25 %"


def test_outside_a_notebook_key_number_prints_its_text(capsys):
    key_number("speedup", 1.7349, "x", relative=0.5)
    assert capsys.readouterr().out == "speedup = 1.735 x\n"
