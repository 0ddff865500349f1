"""Every shipped run config and hardware preset re-validates to itself from its own dump.

Sweeps (and Dask workers) carry configs as dumped dicts and validate them again; a field whose default
counts as "given" once dumped (the legacy top-level ``precision.scale_bits`` did) breaks that.
"""

from __future__ import annotations

import pytest
from cli_helpers import ROOT

from simulator.spec.hardware import Hardware, load_hardware, preset_names
from simulator.spec.run_config import RunConfig, load_run_config

CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml") if p.stem != "reproduce")


@pytest.mark.parametrize("name", CONFIGS)
def test_run_config_round_trips(name: str) -> None:
    config = load_run_config(name).config
    assert RunConfig.model_validate(config.model_dump()) == config
    assert RunConfig.model_validate_json(config.model_dump_json()) == config


@pytest.mark.parametrize("name", preset_names())
def test_hardware_round_trips(name: str) -> None:
    hardware = load_hardware(name)
    assert Hardware.model_validate(hardware.model_dump()) == hardware
    assert Hardware.model_validate_json(hardware.model_dump_json()) == hardware


def test_legacy_scale_bits_still_applies_and_still_conflicts() -> None:
    base = {"name": "x", "hardware": "rapid_like", "precision": {"default": "int8"}}
    legacy = RunConfig.model_validate({**base, "precision": {"default": "int8", "scale_bits": 8}})
    assert legacy.precision.effective_weight_scales.scale_bits == 8
    assert RunConfig.model_validate(base).precision.effective_weight_scales.scale_bits == 16
    with pytest.raises(ValueError, match="not both"):
        RunConfig.model_validate({**base, "precision": {"default": "int8", "scale_bits": 16,
                                                        "weight_scales": {"per": "channel"}}})


def test_sweep_model_entries_round_trip():
    """A sweep re-validates its model entries at every design point (ModelEntry.at)."""
    from simulator.analysis.sweep import ModelEntry

    for data in ({"name": "gpt2"}, {"name": "gpt2", "tokens": 16, "new_tokens": 4},
                 {"name": "mixtral-8x7b", "expert_imbalance": 2.0, "phase": "decode"}):
        entry = ModelEntry.model_validate(data)
        assert ModelEntry.model_validate(entry.model_dump()) == entry
        assert entry.at({"model.batch": 2}).at({}) == entry.at({"model.batch": 2})
