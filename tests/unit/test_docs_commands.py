"""The commands the docs tell operators to run are the ones the repo ships."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main

from orchestrator.cli.main import app

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOCS = [
    "README.md",
    "docs/operations.md",
    "docs/webhooks.md",
    "deploy/README.md",
    "docs/conformance.md",
]
CLI = typer.main.get_command(app)
MAKE_TARGETS = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.M))


def _code(doc: str) -> list[str]:
    """The lines of a doc's code blocks and inline code."""
    text = (REPO / doc).read_text()
    blocks = re.findall(r"```.*?\n(.*?)```", text, re.S) + re.findall(r"`([^`\n]+)`", text)
    return [line for block in blocks for line in block.splitlines()]


def _invocations(line: str, program: str) -> list[str]:
    """Each place in a shell line where `program` is what runs (not an argument)."""
    found = []
    for part in re.split(r"\s*(?:;|&&|\|\||(?<!\\)\||\$\(|\s--\s)\s*", line):
        words = part.strip().split()
        while words and (words[0] in ("sudo", "exec", "$") or re.fullmatch(r"\w+=\S*", words[0])):
            words = words[1:]
        if words and words[0].rsplit("/", 1)[-1] == program:
            found.append(" ".join(words))
    return found


CERTFLEET = [(d, c) for d in DOCS for line in _code(d) for c in _invocations(line, "certfleet")]
MAKE = [(d, c) for d in DOCS for line in _code(d) for c in _invocations(line, "make")]


def _is_group(command: Any) -> bool:
    return isinstance(getattr(command, "commands", None), dict)


def _resolve(words: list[str]) -> tuple[Any, list[str]]:
    command: Any = CLI
    rest = list(words)
    while rest and _is_group(command) and rest[0] in command.commands:
        command = command.commands[rest.pop(0)]
    return command, rest


def test_the_docs_show_commands() -> None:
    """The scan finds the commands (so the checks below are not vacuous)."""
    assert len(CERTFLEET) > 30
    assert len(MAKE) > 5


@pytest.mark.parametrize(("doc", "line"), CERTFLEET, ids=[f"{d}:{c}" for d, c in CERTFLEET])
def test_every_certfleet_command_and_flag_exists(doc: str, line: str) -> None:
    """Each `certfleet VERB ...` is a real (sub)command, and each --flag one of its options."""
    try:
        words = shlex.split(line.replace("\\|", "|"))
    except ValueError:
        words = line.split()
    words = words[1:]
    if not words or words[0].startswith(("-", '"', "$")) or words[0] in ("is", "the", "and"):
        pytest.skip("prose or a wrapper, not a command")
    # `rollout pause|resume|abort ID` in a table: check every alternative
    for index, word in enumerate(words[:3]):
        if "|" in word:
            for alternative in word.replace("\\", "").split("|"):
                _check(doc, line, [*words[:index], alternative, *words[index + 1 :]])
            return
    _check(doc, line, words)


def _check(doc: str, line: str, words: list[str]) -> None:
    command, rest = _resolve(words)
    assert command is not CLI, f"{doc}: no command `certfleet {words[0]}`"
    if _is_group(command):
        assert not rest or rest[0].startswith(("-", "[", "{", "<")) or rest[0].isupper(), (
            f"{doc}: `{line}` names no subcommand of `{command.name}`"
        )
        return
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for word in rest:
        flag = word.split("=", 1)[0].strip("[]")
        if flag.startswith("--") and re.fullmatch(r"--[a-z][a-z-]*", flag):
            assert flag in options, f"{doc}: `certfleet {command.name}` has no {flag}"


@pytest.mark.parametrize(("doc", "line"), MAKE, ids=[f"{d}:{c}" for d, c in MAKE])
def test_every_make_target_exists(doc: str, line: str) -> None:
    """Each `make TARGET` the docs show is a Makefile target."""
    if len(line.split()) < 2:
        pytest.skip("make without a target")
    assert line.split()[1] in MAKE_TARGETS, f"{doc}: no make target {line.split()[1]}"
