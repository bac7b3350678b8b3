"""The `hostsec` command (DESIGN.md section 5)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hostsec import __version__

DEFAULT_CONFIG_DIR = "/etc/hostsec"
DEFAULT_RUN_DIR = "/run/hostsec"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hostsec", description="per-host IPsec agent")
    parser.add_argument("--version", action="version", version=f"hostsec {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_agent(commands)
    _add_status(commands)
    _add_policy(commands)
    _add_up_down(commands)
    _add_keys(commands)
    _add_demo(commands)
    return parser


_Commands = argparse._SubParsersAction  # argparse's type for subcommand registries


def _dirs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-dir", default=DEFAULT_CONFIG_DIR, help=f"default {DEFAULT_CONFIG_DIR}"
    )
    parser.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help=f"default {DEFAULT_RUN_DIR}")


# -- hostsec agent ----------------------------------------------------------------------


def _add_agent(commands: _Commands[argparse.ArgumentParser]) -> None:
    agent = commands.add_parser("agent", help="run the daemon")
    _dirs(agent)
    agent.add_argument(
        "--foreground", action="store_true", help="stay in the foreground (the only mode)"
    )
    agent.set_defaults(func=_agent)


def _agent(args: argparse.Namespace) -> int:
    import logging

    from hostsec.agent.config import ConfigError, load_config
    from hostsec.agent.daemon import run_agent

    try:
        config = load_config(Path(args.config_dir), Path(args.run_dir))
    except ConfigError as exc:
        print(f"hostsec agent: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper()),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if os.geteuid() != 0:
        print("hostsec agent: needs root (TUN device, routes, raw sockets)", file=sys.stderr)
        return 2
    return run_agent(config)


# -- hostsec status / up / down / keys ----------------------------------------------------


def _add_status(commands: _Commands[argparse.ArgumentParser]) -> None:
    status = commands.add_parser("status", help="IKE SAs, CHILD SAs, flows, counters, errors")
    status.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help=f"default {DEFAULT_RUN_DIR}")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)


def _request(args: argparse.Namespace, command: str, **extra: str) -> object:
    from hostsec.agent.control import request

    result: object = request(Path(args.run_dir), command, dict(extra))
    return result


def _status(args: argparse.Namespace) -> int:
    import json

    from hostsec.agent.control import ControlError
    from hostsec.agent.status import format_status

    try:
        result = _request(args, "status")
    except ControlError as exc:
        print(f"hostsec status: {exc}", file=sys.stderr)
        return 1
    assert isinstance(result, dict)
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else format_status(result))
    return 0


def _add_up_down(commands: _Commands[argparse.ArgumentParser]) -> None:
    for name, helptext in (
        ("up", "initiate a flow or peer"),
        ("down", "tear one down"),
        ("rekey", "rekey a flow's CHILD SAs, or a peer's IKE SA, now"),
    ):
        cmd = commands.add_parser(name, help=helptext)
        cmd.add_argument("name", metavar="PEER|FLOW")
        cmd.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help=f"default {DEFAULT_RUN_DIR}")
        if name == "up":
            cmd.add_argument(
                "--wait",
                action="store_true",
                help="return once the IKE SA and CHILD SAs are up or failed; exit status 1 "
                "unless all are up",
            )
            cmd.add_argument(
                "--timeout", type=float, default=30.0, help="seconds to wait (default 30)"
            )
        cmd.set_defaults(func=_up_down, verb=name)


def _up_down(args: argparse.Namespace) -> int:
    from hostsec.agent.control import ControlError, request

    if getattr(args, "wait", False):
        try:
            result = request(
                Path(args.run_dir),
                "up",
                {"name": args.name, "wait": True, "timeout": args.timeout},
                timeout=args.timeout + 10.0,
            )
        except ControlError as exc:
            print(f"hostsec up: {exc}", file=sys.stderr)
            return 1
        assert isinstance(result, dict)
        for flow, state in sorted(result["flows"].items()):
            error = f": {state['error']}" if state["error"] else ""
            print(f"{flow}: {state['state']}{error}")
        what = "up" if result["ok"] else "timed out" if result["timed_out"] else "not up"
        print(f"{args.name}: {what} after {result['elapsed'] * 1000:.1f} ms")
        return 0 if result["ok"] else 1
    try:
        print(_request(args, args.verb, name=args.name))
    except ControlError as exc:
        print(f"hostsec {args.verb}: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_keys(commands: _Commands[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="write the live keys for Wireshark")
    keys.add_argument(
        "--wireshark",
        metavar="PATH",
        required=True,
        help="a directory (e.g. ~/.config/wireshark: writes its esp_sa and "
        "ikev2_decryption_table files) or a file (esp_sa lines; IKEv2 lines go to PATH.ikev2)",
    )
    keys.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help=f"default {DEFAULT_RUN_DIR}")
    keys.set_defaults(func=_keys)


def _write_private(path: Path, lines: list[str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("".join(line + "\n" for line in lines))


def _keys(args: argparse.Namespace) -> int:
    from hostsec.agent.control import ControlError

    try:
        result = _request(args, "keys")
    except ControlError as exc:
        print(f"hostsec keys: {exc}", file=sys.stderr)
        return 1
    assert isinstance(result, dict)
    target = Path(args.wireshark)
    if target.is_dir():
        esp_path, ike_path = target / "esp_sa", target / "ikev2_decryption_table"
    else:
        esp_path, ike_path = target, target.with_name(target.name + ".ikev2")
    _write_private(esp_path, result["esp_sa"])
    _write_private(ike_path, result["ikev2_decryption_table"])
    print(
        f"wrote {len(result['esp_sa'])} esp_sa lines to {esp_path} and "
        f"{len(result['ikev2_decryption_table'])} ikev2_decryption_table lines to {ike_path}"
    )
    return 0


# -- hostsec demo --------------------------------------------------------------------------


def _add_demo(commands: _Commands[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo", help="two hosts in network namespaces, telnet through ESP, what the wire showed"
    )
    demo.add_argument("--capture", metavar="FILE.pcap", help="keep the veth capture here")
    demo.add_argument("--keys", metavar="FILE", help="keep the Wireshark esp_sa lines here")
    demo.add_argument(
        "--keying", choices=("ike", "manual"), default="ike", help="default: ike (PSK)"
    )
    demo.add_argument("--auth", choices=("psk", "cert"), default="psk", help="IKE auth")
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from hostsec.agent.demo import run_demo

    code: int = run_demo(capture=args.capture, keys=args.keys, keying=args.keying, auth=args.auth)
    return code


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
    from hostsec.policy.check import check_paths

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
