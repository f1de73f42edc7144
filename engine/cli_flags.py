"""Options an operator may put anywhere on a command line: before or after any sub-command's verb.

kubectl, git and supervisorctl accept `--config FILE` (and `--json`) on either side of the verb;
so does backfill-console:

    backfill-console --config c.toml ctl status      backfill-console ctl status --config c.toml
    backfill-console ctl --config c.toml status      backfill-console ctl --json status

Two generic pieces make that work for every sub-command, present and future:

- `hoist(argv, verbs)` finds the sub-command verb (the first word naming one, skipping the values of
  options) and moves the shared options written before it to after it, so the sub-command's own
  parser sees them. Only SHARED options move; others stay where they are (and argparse names them
  when they do not apply).
- `share(parser, json=...)` adds the shared options to a parser and to every nested sub-parser,
  with SUPPRESS defaults so a value given at one level is not reset by a lower level's default.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

CONFIG_HELP = (
    "config file (default ./config.toml; its relative paths resolve against its folder); "
    "accepted before or after the sub-command"
)
JSON_HELP = "machine-readable output (accepted before or after the sub-command)"

#: Options that may appear anywhere, and whether they take a value.
SHARED: dict[str, bool] = {"--config": True, "--json": False}
#: Main-parser options that take a value (their value is never a verb).
VALUED = {"--config", "--shard-ids"}


def _split_option(token: str) -> str:
    return token.split("=", 1)[0] if token.startswith("--") else token


def find_verb(argv: list[str], verbs: Iterable[str]) -> int | None:
    """Index of the sub-command verb in argv, or None (the main command)."""
    names = set(verbs)
    skip = False
    for i, token in enumerate(argv):
        if skip:
            skip = False
            continue
        if token == "--":
            return None
        if token.startswith("-"):
            skip = "=" not in token and _split_option(token) in VALUED
            continue
        return i if token in names else None
    return None


def hoist(argv: list[str], verbs: Iterable[str]) -> tuple[str | None, list[str]]:
    """(verb or None, the sub-command's arguments with the shared options before the verb moved
    after it). With no verb, argv comes back unchanged."""
    at = find_verb(argv, verbs)
    if at is None:
        return None, list(argv)
    before, after = argv[:at], argv[at + 1 :]
    moved: list[str] = []
    kept: list[str] = []
    i = 0
    while i < len(before):
        token = before[i]
        name = _split_option(token)
        if name in SHARED:
            moved.append(token)
            if SHARED[name] and "=" not in token and i + 1 < len(before):
                moved.append(before[i + 1])
                i += 1
        else:
            kept.append(token)
        i += 1
    return argv[at], moved + kept + after


def share(parser: argparse.ArgumentParser, json: bool | Iterable[str] = False) -> None:
    """Add --config (and --json) to `parser` and to every sub-parser under it.

    `json`: True for every level, or the names of the sub-commands it applies to (then also
    accepted on the levels above them, e.g. `ctl --json status`).
    """
    _share(parser, json, top=True)


def _share(parser: argparse.ArgumentParser, json: bool | Iterable[str], top: bool) -> None:
    json_names = None if isinstance(json, bool) else set(json)
    existing = {s for a in parser._actions for s in a.option_strings}
    default = None if top else argparse.SUPPRESS
    if "--config" not in existing:
        parser.add_argument("--config", metavar="FILE", default=default, help=CONFIG_HELP)
    wants_json = json is True or bool(json_names)
    if wants_json and "--json" not in existing:
        parser.add_argument(
            "--json",
            action="store_true",
            default=False if top else argparse.SUPPRESS,
            help=JSON_HELP,
        )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if json_names is None:
                    _share(sub, json, top=False)
                else:
                    _share(sub, name in json_names, top=False)
