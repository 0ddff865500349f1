"""A regular (non-editable) install finds the shipped presets, run configs and reference figures."""

import shutil
import subprocess
import sys
import textwrap

import pytest
from cli_helpers import ROOT

from simulator.spec.shipped import data_root

pytestmark = pytest.mark.slow


def test_data_root_prefers_the_checkout_then_the_installed_copy(tmp_path):
    checkout, installed = tmp_path / "checkout", tmp_path / "installed"
    assert data_root(checkout, [installed]) == checkout  # neither exists: lookups fail naming the checkout
    (installed / "configs" / "hardware").mkdir(parents=True)
    assert data_root(checkout, [installed]) == installed
    (checkout / "configs" / "hardware").mkdir(parents=True)
    assert data_root(checkout, [installed]) == checkout


def test_wheel_install_finds_shipped_data(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "simulator", "workloads", "configs", "reference"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name)
    shutil.rmtree(source / "simulator" / "__pycache__", ignore_errors=True)
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", str(source), "-w", str(wheels)], check=True, capture_output=True)
    wheel = next(wheels.glob("accelsim-*.whl"))
    # A venv of its own (pip --python targets it), so the developer's editable install is left alone.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)], check=True,
                   capture_output=True)
    dependencies = next(p for p in sys.path if p.endswith("site-packages"))
    probe = textwrap.dedent("""
        import simulator, simulator.spec.shipped as shipped
        from simulator.spec.hardware import load_hardware
        from simulator.analysis.paper import load_paper_targets, load_setup
        from simulator.spec.run_config import load_run_config, resolve_run_config
        assert "site-packages" in simulator.__file__, simulator.__file__
        assert "share/accelsim" in str(shipped.DATA_ROOT), shipped.DATA_ROOT
        print(load_hardware("rapid_like").name, load_run_config(resolve_run_config("int8", None)).name,
              len(load_paper_targets()), load_setup().hardware)
    """)
    # numpy & co. come from the dev venv through PYTHONPATH, whose .pth files (the editable install's
    # hook) are not processed, so `simulator` can only come from the wheel; the checkout is not on the path.
    env = {"PYTHONPATH": dependencies, "PATH": "/usr/bin:/bin", "PYTHONUSERBASE": str(tmp_path / "nouser")}
    done = subprocess.run([str(python), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["rapid_like", "int8", "18", "rapid_like"]
