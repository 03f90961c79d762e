"""The ``rsfiqa`` console script.

Subcommands live in sibling modules ``cli_<name>.py``, each exposing ``register(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed args, returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser"]

# name -> module providing register(subparsers); a missing optional module simply hides its command.
SUBCOMMAND_MODULES = ("score", "regions", "demo", "annotate", "evaluate", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsfiqa", description="Region-aware image quality assessment.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"modeling_rsfiqa.cli_{name}")
        except ModuleNotFoundError as err:
            if err.name == f"modeling_rsfiqa.cli_{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
