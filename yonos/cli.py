"""`yonos` command line. Each subcommand lives in its own module under yonos/commands/ and exposes
`register(subparsers)`; this file only lists them. Errors the user can fix print one line, exit 2."""

from __future__ import annotations

import argparse
import importlib
import sys

from yonos.errors import UserError

# Explicit list, no folder scanning: the order here is the order in `yonos --help`.
COMMANDS = (
    "yonos.commands.upscale",
    "yonos.commands.evaluate",
    "yonos.commands.score",
    "yonos.commands.check_drift",
    "yonos.commands.download",
)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("yonos-bench")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yonos", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"yonos {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"yonos {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
