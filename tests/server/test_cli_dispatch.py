"""The `vfnet` dispatcher: grouped commands, instant top-level help, examples in every command's help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vfnet.server.cli import COMMANDS, main


def test_top_level_help_lists_every_command_and_imports_none_of_them():
    script = "import sys; from vfnet.server.cli import main; main(['--help']); print(sorted(m for m in sys.modules if m.startswith(('vfnet.', 'torch', 'onnxruntime', 'fastapi'))))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    help_text, loaded = done.stdout.rsplit("\n", 2)[0], done.stdout.rsplit("\n", 2)[1]
    assert all(f"  {name} " in help_text for name in COMMANDS)
    assert loaded == "['vfnet.server', 'vfnet.server.cli']"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_examples(name, capsys):
    with pytest.raises(SystemExit) as exited:
        main([name, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: vfnet {name}") and "\nexamples:\n  vfnet " in out


def test_an_unknown_command_is_named(capsys):
    assert main(["sevre"]) == 2
    assert "unknown command 'sevre'" in capsys.readouterr().err
