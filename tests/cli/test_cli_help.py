"""Every command's --help reads well on an 80-column terminal: nothing is cut with "…" (rich's option
table did that to long defaults and help strings), no line is wider than the terminal, the command lists
show whole one-line summaries, and every option and argument says what it is for."""

from __future__ import annotations

import pytest
import typer

from critwin.cli import main
from critwin.cli.app import app


def _is_group(cmd) -> bool:
    """typer's groups are click commands with sub-commands (TyperGroup does not subclass click.Group)."""
    return hasattr(cmd, "list_commands")


def _commands() -> list[tuple[list[str], object]]:
    """(path of names, click command) of the root group and every command and sub-command under it."""
    out = []

    def walk(cmd, path):
        out.append((path, cmd))
        if _is_group(cmd):
            for name in cmd.list_commands(None):
                walk(cmd.get_command(None, name), [*path, name])

    walk(typer.main.get_command(app), [])
    return out


COMMANDS = _commands()


def test_every_command_is_covered():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"scan", "structured", "theory", "report", "demo", "jailbreak windows", "jailbreak repeat",
            "jailbreak detect"} <= names


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[" ".join(p) or "critwin" for p, _ in COMMANDS])
def test_help_at_80_columns_is_whole_and_documents_every_option(path, cmd, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "40")
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("Usage: critwin")
    assert "…" not in text
    wide = [line for line in text.splitlines() if len(line) > 80]
    assert not wide, wide
    if _is_group(cmd):
        listed = text.split("Commands:", 1)[1].splitlines()
        # click shortens a summary that does not fit with "..."; every one must fit whole.
        assert listed and not [line for line in listed if line.rstrip().endswith("...")], listed
        for name in cmd.list_commands(None):
            assert cmd.get_command(None, name).short_help, f"{' '.join([*path, name])}: no short_help"
    for param in cmd.params:
        if param.name == "help":
            continue
        assert (getattr(param, "help", None) or "").strip(), f"{' '.join(path)} {param.opts}: no help text"
        assert param.opts[-1].lstrip("-") in text or param.human_readable_name in text


def test_long_defaults_are_wrapped_not_cut(monkeypatch, capsys):
    """The longest default in any option (the repeat counts) shows in full."""
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main(["jailbreak", "repeat", "--help"])
    assert "[default: 0,1,2,4,8,16,32]" in " ".join(capsys.readouterr().out.split())
