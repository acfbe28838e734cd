"""The command line's parser: a mistake is answered first, in one line, with the closest
valid option, instead of after the whole usage."""

from __future__ import annotations

import difflib
import re
import sys
from argparse import RawDescriptionHelpFormatter
from typing import NoReturn

from jsonargparse import ArgumentParser, DefaultHelpFormatter
from lightning.pytorch.cli import LightningArgumentParser


class EpilogAsWritten(RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """Keeps the lines of the main ``--help``'s epilog (the experiments' list) as written."""


def closest_options(message: str, parser: ArgumentParser) -> list[str]:
    """For each unknown ``--option`` in an error message, the valid one nearest to it."""
    valid = [option for option in parser._option_string_actions if option.startswith("--")]
    unknown = re.findall(r"(--[\w.]+)", message)
    return [
        match[0]
        for option in unknown
        if option not in valid and (match := difflib.get_close_matches(option, valid, n=1))
    ]


class ProjectParser(LightningArgumentParser):
    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse tries alternatives: not the user's mistake
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        suggestions = closest_options(message, parser)
        hint = f" (did you mean {', '.join(suggestions)}?)" if suggestions else ""
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"error: {message}{hint}\nAll options: {prog} --help\n")
        raise SystemExit(2)
