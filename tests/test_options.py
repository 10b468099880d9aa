"""core.protocol.options: every protocol option is declared once, and the command line, the flags that
reproduce a protocol, the range checks and the Train form all come from that declaration."""

from __future__ import annotations

import argparse
from dataclasses import field, fields, make_dataclass

import pytest

from core.protocol.config import Protocol
from core.protocol.options import add_arguments, declared, form_fields, option, to_flags, values_from_args


def extended() -> type:
    """The protocol with one more option, declared the way every field is."""
    return make_dataclass("Extended", [("dummy_knob", float, field(default=0.5, metadata=option(
        flag="--dummy-knob", kind="float", low=0.0, high=1.0, label="Dummy knob", section="open",
        help="a knob only this test has")))], bases=(Protocol,), frozen=True)


def test_a_new_declared_field_appears_in_the_cli_the_flags_the_checks_and_the_form():
    cls = extended()
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
    values = values_from_args(parser.parse_args(["--dummy-knob", "0.7", "--epochs", "3"]), cls)
    protocol = cls(**values)
    assert protocol.dummy_knob == 0.7 and protocol.epochs == 3
    assert to_flags({"dummy_knob": 0.7, "epochs": 3}, cls) == ["--epochs", "3", "--dummy-knob", "0.7"]
    assert "dummy_knob" in [f.name for f, _ in form_fields(cls, "open")]
    with pytest.raises(ValueError, match="dummy_knob must be between 0 and 1"):
        cls(dummy_knob=2.0)


def test_the_train_form_shows_a_new_declared_field():
    from streamlit.testing.v1 import AppTest

    def page():
        from dataclasses import field, make_dataclass

        import streamlit as st

        from core.protocol.config import Protocol
        from core.protocol.options import option
        from ui.protocol_form import option_inputs

        cls = make_dataclass("Extended", [("dummy_knob", float, field(default=0.5, metadata=option(
            flag="--dummy-knob", kind="float", low=0.0, high=1.0, label="Dummy knob", section="open",
            help="a knob only this test has")))], bases=(Protocol,), frozen=True)
        values = option_inputs(cls, "open")
        st.write(repr(cls(**values)))

    app = AppTest.from_function(page, default_timeout=60).run()
    assert not app.exception
    knob = next(n for n in app.number_input if n.label == "Dummy knob")
    knob.set_value(0.25).run()
    assert "dummy_knob=0.25" in app.markdown[-1].value
    assert {r.label for r in app.radio} >= {"Augmentation", "Stage-two softmax", "Precision"}


def test_every_protocol_field_but_the_nested_ranges_is_declared_once():
    names = {f.name for f, _ in declared(Protocol)}
    assert names == {f.name for f in fields(Protocol)} - {"augmentation"}
    flags = [opt.flag for _, opt in declared(Protocol)]
    assert len(flags) == len(set(flags))


@pytest.mark.parametrize("protocol", [
    Protocol(dataset="dogs-cats", data_path="/d", resplit=True, bn_momentum=0.9, limit=2000, precision="tf32"),
    Protocol(dataset="face-mask", data_path="/f", augment=False, patience=5, reduce_lr=True, seed=7),
    Protocol(dataset="cifar10", architecture="004-model1", optimizer="sgd", learning_rate=0.05, per_class=41),
])
def test_a_protocol_survives_the_round_trip_through_its_command_line(protocol):
    """The flags the Related reports page prints for a plan give back exactly that protocol."""
    values = {f.name: getattr(protocol, f.name) for f, _ in declared(Protocol)}
    parser = argparse.ArgumentParser()
    add_arguments(parser, Protocol)
    assert Protocol(**values_from_args(parser.parse_args(to_flags(values, Protocol)), Protocol)) == protocol
