"""Inputs: the schemas of hardware presets, run configs and sweeps, and loading the shipped files."""
