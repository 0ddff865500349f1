"""Shared fixtures: the CLI run in-process, and presets with some fields changed."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from cli_helpers import ROOT

from simulator.spec.hardware import Hardware, load_hardware
from workloads.torch_cache import own_torch_cache

own_torch_cache()  # tests that import compressed-tensors or transformers themselves: the same folder of their own


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., str]:
    """Runs ``accelsim ARGS`` in this process (the CLI's own entry point, exit code and all) and returns
    its stdout; a non-zero exit fails the test with its stderr."""
    from simulator.cli.main import main

    def run(*argv: str) -> str:
        with pytest.raises(SystemExit) as done:
            main(list(argv))
        captured = capsys.readouterr()
        assert done.value.code == 0, captured.err
        return captured.out

    return run


@pytest.fixture
def accelsim_here(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                  ) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs ``accelsim ARGS`` in this process from the repository root, as cli_helpers.accelsim runs it in a
    subprocess: the same entry point, exit code, stdout and stderr, without a new interpreter's start-up."""
    from simulator.cli.main import main

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        monkeypatch.chdir(ROOT)
        with pytest.raises(SystemExit) as done:
            main(list(argv))
        captured = capsys.readouterr()
        code = done.value.code if isinstance(done.value.code, int) else 1
        return subprocess.CompletedProcess(list(argv), code, captured.out, captured.err)

    return run


def preset_with(base: str | Hardware, **sections: Any) -> Hardware:
    """A preset (by name, or a hardware) with fields of its sections replaced (``sparse={"patterns": []}``)
    or whole top-level fields set (``macs_per_pe={"fp16": 1}``), validated anew."""
    data = (load_hardware(base) if isinstance(base, str) else base).model_dump()
    for section, fields in sections.items():
        if isinstance(data.get(section), dict):
            data[section] = {**data[section], **fields}
        else:
            data[section] = fields
    return Hardware.model_validate(data)
