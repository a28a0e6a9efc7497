"""`--help` says what every command and option is, `embed --help` gives the exit codes, and `--version` answers."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator
from importlib.metadata import version

import pytest

from providers.ray_engine.__main__ import main as ray_main
from server.cli import main as cli_main


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def parser_of(main: Callable[[list[str]], int], monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser `main` builds, caught as it starts parsing (the commands build theirs inside `main`)."""

    def caught(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise _Parsed(self)

    with monkeypatch.context() as patched:
        patched.setattr(argparse.ArgumentParser, "parse_args", caught)
        with pytest.raises(_Parsed) as parsed:
            main([])
    return parsed.value.parser


def commands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from commands(sub)


@pytest.mark.parametrize("main", [cli_main, ray_main], ids=["signal-hub-embeddings", "ray_engine"])
def test_every_command_has_a_description_and_every_option_a_help_text(
    main: Callable[[list[str]], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, parser in commands(parser_of(main, monkeypatch)):
        assert parser.description, f"{name} has no description"
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{name}: {action.option_strings or action.dest} has no help text"


def test_embed_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["embed", "--help"])
    assert exited.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    codes = re.search(r"exit codes: (.*)", shown)
    assert codes is not None, shown
    meanings = [("0", "done"), ("1", "the provider"), ("2", "bad usage"), ("75", "--no-wait"), ("130", "interrupted")]
    for code, meaning in meanings:
        assert re.search(rf"\b{code} [^,]*{meaning}", codes.group(1)), (code, codes.group(1))


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"signal-hub-embeddings {version('signal-hub-embeddings')}"
