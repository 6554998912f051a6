"""`vfnet serve --help` is made from the settings themselves: one flag per setting, with its description and default."""

from __future__ import annotations

import argparse

from vfnet.server.app.cli import add_setting_flags
from vfnet.server.app.settings import ServeSettings


def test_every_setting_has_a_documented_flag_with_its_default():
    parser = argparse.ArgumentParser()
    add_setting_flags(parser)
    flags = {action.dest: action for action in parser._actions if action.dest != "help"}
    assert set(flags) == set(ServeSettings.model_fields)
    for name, field in ServeSettings.model_fields.items():
        assert field.description, f"setting {name} has no description"
        assert flags[name].option_strings == [f"--{name.replace('_', '-')}"]
        assert flags[name].help.startswith(field.description)
    assert flags["max_queue_wait_ms"].help.endswith("(default 1000.0)")
    assert parser.parse_args(["--max-batch-size", "4"]).max_batch_size == "4"  # validated by the settings
    assert ServeSettings(max_batch_size="4", _env_file=None).max_batch_size == 4
