"""The `hostsec` command (DESIGN.md section 5)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from hostsec import __version__

DEFAULT_CONFIG_DIR = "/etc/hostsec"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hostsec", description="per-host IPsec agent")
    parser.add_argument("--version", action="version", version=f"hostsec {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_policy(commands)
    return parser


# -- hostsec policy ---------------------------------------------------------------------


def _add_policy(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = commands.add_parser("policy", help="policy files")
    sub = policy.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)
    check = sub.add_parser(
        "check",
        help="validate policy files",
        description="Validate policy files; print every problem as file:line: message. "
        "Exit status 1 if any is an error.",
    )
    check.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="policy files or directories (default: CONFIG_DIR/policies.d)",
    )
    check.add_argument(
        "--config-dir",
        default=DEFAULT_CONFIG_DIR,
        help=f"configuration directory (default {DEFAULT_CONFIG_DIR})",
    )
    check.add_argument(
        "--no-secrets",
        action="store_true",
        help="do not read PSK, key and manual-keys files (e.g. on another machine)",
    )
    check.set_defaults(func=_policy_check)


def _policy_check(args: argparse.Namespace) -> int:
    from hostsec.policy.check import check_paths  # noqa: PLC0415 - keep `hostsec` start fast

    paths = args.paths or [os.path.join(args.config_dir, "policies.d")]
    result = check_paths(paths, read_secrets=not args.no_secrets)
    for problem in result.problems:
        print(problem)
    if not result.ok:
        return 1
    print(f"OK: {len(result.files)} files, {result.peers} peers, {result.flows} flows")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    result: int = func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
