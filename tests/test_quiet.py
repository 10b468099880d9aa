"""core.cli.quiet: the command line's stderr carries its answer, not TensorFlow's start-up notices."""

from __future__ import annotations

from core.cli.quiet import passed_on

CAUGHT = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
          "I0000 00:00:1796423154.570079   25805 port.cc:153] oneDNN custom operations are on. You may see ...\n"
          "\n"
          "UserWarning: a real warning the user should see\n")


def test_the_start_up_notices_are_dropped():
    assert not any("oneDNN" in line or "absl" in line for line in passed_on(CAUGHT))


def test_every_other_line_is_passed_on():
    assert passed_on(CAUGHT) == ["UserWarning: a real warning the user should see"]
