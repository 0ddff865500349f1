"""Running the CLI as a user does (a subprocess from the repo root) and checking one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"  # the suite's own data: configs/, golden/


def accelsim(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simulator.cli.main", *args], capture_output=True, text=True,
                          cwd=kwargs.pop("cwd", ROOT), **kwargs)


def assert_one_line_error(result: subprocess.CompletedProcess, needle: str, code: int = 2) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def accelsim_leaving_nothing(scratch: Path, *args: str) -> subprocess.CompletedProcess:
    """``accelsim ARGS`` with ``scratch`` (an empty folder) as its temporary directory and torch's compiler cache
    left to accelsim (workloads/torch_cache.py); it must succeed and leave ``scratch`` empty."""
    scratch.mkdir()
    env = {**{key: value for key, value in os.environ.items() if key != "TORCHINDUCTOR_CACHE_DIR"},
           "TMPDIR": str(scratch)}
    done = accelsim(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert not list(scratch.iterdir())
    return done
