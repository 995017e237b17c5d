import subprocess
import sys

import pytest

from gags.cli import main
from gags.config import STAGES


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for verb in STAGES:
        assert verb in out


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "gags", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "reconstruct" in proc.stdout


def test_atomic_writes_follow_the_umask(tmp_path):

    from gags.io import _process_umask, write_json

    write_json(tmp_path / "a.json", {"x": 1})
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~_process_umask()
    assert (tmp_path / "a.json").stat().st_mode & 0o077 != 0 or _process_umask() & 0o044
