"""The bench commands are declared once (bench/specs.py, bench/commands.py): their options, and the
defaults their help shows, come from the specs that run; an option given reaches the spec."""

from __future__ import annotations

import dataclasses

from typer.testing import CliRunner

from barcode_harness.bench import commands, specs
from barcode_pipeline.cli import app


def test_every_option_field_is_an_option_whose_help_shows_both_presets() -> None:
    for cmd in commands.COMMANDS:
        options = dict(commands.spec_options(cmd.spec, cmd.quick))
        declared = {
            f.name: f.metadata["option"] for f in dataclasses.fields(cmd.spec) if "option" in f.metadata
        }
        assert list(options) == list(declared) and declared, cmd.name
        for name, option in declared.items():
            full, quick = getattr(cmd.spec, name), getattr(cmd.quick, name)
            help = options[name].annotation.__metadata__[0].help
            if isinstance(full, bool) or option.shown is not None:
                continue  # a switch, or a default shown in words
            assert f"[{commands._show(full)}" in help, (cmd.name, name, help)
            assert (f"; quick {commands._show(quick)}]" in help) == (quick != full), (cmd.name, name, help)


def test_the_soak_quick_preset_and_an_option_reach_the_spec() -> None:
    # --quick lasts 40 s: a 50 s warm-up is refused before anything starts
    out = CliRunner().invoke(app, ["bench", "soak", "--quick", "--warmup", "50"])
    assert out.exit_code == 2 and "must be shorter than --duration" in out.output, out.output
    assert specs.SOAK_QUICK.duration_s == 40.0 < 50
    # with a longer duration the same warm-up passes that check (and would run: not here)
    chosen: list[specs.Spec] = []
    soak = next(c for c in commands.COMMANDS if c.name == "soak")
    record = dataclasses.replace(soak, body=lambda cmd, spec, opts, extra: chosen.append(spec))
    commands.register_command(record)  # the same name again: typer keeps the last
    try:
        out = CliRunner().invoke(app, ["bench", "soak", "--quick", "--warmup", "50", "--duration", "60"])
        assert out.exit_code == 0, out.output
        assert chosen == [dataclasses.replace(specs.SOAK_QUICK, warmup_s=50.0, duration_s=60.0)]
    finally:
        commands.register_command(soak)


def test_switches_and_lists_become_spec_values() -> None:
    chosen: list[specs.Spec] = []
    compare = next(c for c in commands.COMMANDS if c.name == "compare")
    commands.register_command(dataclasses.replace(compare, body=lambda c, spec, o, e: chosen.append(spec)))
    try:
        args = ["bench", "compare", "--no-kafka-probe", "--sweep-delay", "0", "--sweep-delay", "70"]
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 0, out.output
        assert chosen == [
            dataclasses.replace(specs.CompareSpec(), kafka_probe=False, sweep_delays_ms=(0, 70))
        ]
    finally:
        commands.register_command(compare)
