"""``accelsim validate``: accelsim's predictions against measured silicon (reference/silicon/)."""

from __future__ import annotations

import click

from simulator.cli.options import StrictCommand


@click.command(cls=StrictCommand)
@click.option("--preset", default=None, help="Only the measured chip this hardware preset models.")
@click.option("--out", type=click.Path(), default=None, help="Write points.csv, envelope.csv and the plot to DIR.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the points and the envelope as JSON.")
def validate(preset: str | None, out: str | None, force: bool, as_json: bool) -> None:
    """Every measured silicon point next to accelsim's prediction, and the accuracy envelope per regime."""
    import json

    from simulator.analysis.validation import compare, envelopes
    from simulator.report.files import check_out_dir, staged_dir
    from simulator.report.validation import format_validation, plot_validation, points_csv, validation_json
    from simulator.spec.hardware import load_hardware
    from simulator.spec.silicon import load_silicon, silicon_files
    from workloads.errors import InputError

    out_dir = check_out_dir(out, force) if out else None
    data = [load_silicon(path) for path in silicon_files()]
    if preset is not None:
        known = sorted({d.preset for d in data})
        data = [d for d in data if d.preset == preset]
        if not data:
            import difflib

            from simulator.spec.hardware import preset_names

            close = difflib.get_close_matches(preset, known, n=1)
            what = ("no measured silicon for it" if preset in preset_names() else
                    "no such preset" + (f"; did you mean {close[0]!r}?" if close else ""))
            raise InputError(f"--preset {preset}: {what} (measured: {', '.join(known)})")
    compared = [point for d in data for point in compare(d, load_hardware(d.preset))]
    envelope = envelopes(compared)
    if as_json:
        click.echo(json.dumps(validation_json(compared, envelope), indent=2))
    else:
        apart = [(n.key, n.measured, n.unit, n.reason) for d in data for n in d.not_simulated]
        click.echo(format_validation(compared, envelope, apart))
    if out_dir is not None:
        with staged_dir(out_dir) as staging:
            (staging / "points.csv").write_bytes(points_csv(compared))
            rows = ["regime,n,geomean_ratio,worst_error", *(f"{e.regime},{e.n},{e.geomean_ratio!r},{e.worst_error!r}"
                                                             for e in envelope)]
            (staging / "envelope.csv").write_text("\n".join(rows) + "\n")
            plot_validation(compared, staging / "validation")
        click.echo(f"wrote points.csv, envelope.csv and validation.png/.svg to {out_dir}", err=True)
