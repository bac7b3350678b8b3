"""Parse one policy file (DESIGN.md section 4) into peers and flows, with file:line problems.

tomllib checks the syntax (its errors carry a position); every semantic check here reports
the line of the offending table or key, found by :class:`TomlLines`. Unknown keys are
errors. The checks that need another file (a flow's peer may live elsewhere) are in
:mod:`hostsec.policy.link`.

Secrets (PSK files, private keys, manual-keys files) are read through an injected
``read_secret(path) -> bytes`` (see :func:`hostsec.policy.files.read_secret_file`), so
this module does no I/O of its own; without a reader, secrets are not read or checked.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from hostsec.crypto.proposals import Proposal, ProposalError, Protocol, parse_proposal
from hostsec.policy import values
from hostsec.policy.manual import ManualKeyFile, parse_manual_keys, syntax_error_position
from hostsec.policy.problems import (
    Location,
    Problem,
    SecretFileError,
    error,
    has_errors,
    warning,
)
from hostsec.policy.schema import (
    DEFAULT_AH_PROPOSALS,
    DEFAULT_DPD,
    DEFAULT_ESP_PROPOSALS,
    DEFAULT_IKE_LIFETIME,
    DEFAULT_IKE_PROPOSALS_V1,
    DEFAULT_IKE_PROPOSALS_V2,
    DEFAULT_LIFETIME,
    DEFAULT_REPLAY_WINDOW,
    MAX_REPLAY_WINDOW,
    MIN_REPLAY_WINDOW,
    Auth,
    Encapsulation,
    Flow,
    IkeV1Mode,
    Keying,
    Mode,
    Peer,
    Protection,
    Start,
)
from hostsec.policy.secret import Secret
from hostsec.policy.tomllines import TableLines, TomlLines
from hostsec.policy.values import FieldError

#: ``read_secret(path) -> bytes``; raises SecretFileError or OSError.
SecretReader = Callable[[str], bytes]

MAX_POLICY_SIZE = 1 << 20
MAX_OBJECTS = 1000
MIN_PSK_LEN = 16

PEER_KEYS = (
    "name",
    "address",
    "local_address",
    "ike_version",
    "ikev1_mode",
    "auth",
    "psk_file",
    "cert",
    "key",
    "local_id",
    "remote_id",
    "ike_proposals",
    "ike_lifetime",
    "dpd",
    "encapsulation",
    "allow_insecure",
)
#: Keys that only mean something when the peer speaks IKE (has ``auth``).
IKE_PEER_KEYS = (
    "ike_version",
    "ikev1_mode",
    "psk_file",
    "cert",
    "key",
    "local_id",
    "remote_id",
    "ike_proposals",
    "ike_lifetime",
    "dpd",
)
FLOW_KEYS = (
    "name",
    "peer",
    "protocol",
    "local_port",
    "remote_port",
    "protection",
    "mode",
    "esp_proposals",
    "ah_proposals",
    "lifetime",
    "lifetime_bytes",
    "lifetime_packets",
    "idle_timeout",
    "start",
    "require",
    "keying",
    "manual_keys",
    "replay_window",
)
#: Keys that only mean something with IKE keying.
IKE_FLOW_KEYS = (
    "esp_proposals",
    "ah_proposals",
    "lifetime",
    "lifetime_bytes",
    "lifetime_packets",
    "idle_timeout",
    "start",
)
MIN_LIFETIME_BYTES = 64 << 10
MIN_LIFETIME_PACKETS = 100
MAX_VOLUME = 1 << 62

_T = TypeVar("_T")


@dataclass(frozen=True)
class ParsedFile:
    """One policy file: its peers and flows, usable only when ``ok`` (no errors)."""

    path: str
    peers: tuple[Peer, ...]
    flows: tuple[Flow, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not has_errors(self.problems)

    @property
    def names(self) -> dict[str, Peer | Flow]:
        objects: list[Peer | Flow] = [*self.peers, *self.flows]
        return {obj.name: obj for obj in objects}


def resolve_path(policy_path: str, target: str) -> str:
    """``target`` relative to the directory of ``policy_path`` (unless absolute)."""
    return os.path.normpath(os.path.join(os.path.dirname(policy_path), target))


def parse_policy(
    path: str, data: str | bytes, read_secret: SecretReader | None = None
) -> ParsedFile:
    """Parse the text of the policy file ``path``; never raises for bad input."""
    problems: list[Problem] = []

    def failed(line: int, message: str) -> ParsedFile:
        return ParsedFile(path, (), (), (error(path, line, message),))

    if len(data) > MAX_POLICY_SIZE:
        return failed(0, f"file too large ({len(data)} octets; at most {MAX_POLICY_SIZE})")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return failed(data[: exc.start].count(b"\n") + 1, "not UTF-8 text")
    else:
        text = data
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line, message = syntax_error_position(str(exc), text)
        return failed(line, f"syntax error: {message}")
    except RecursionError:
        return failed(0, "syntax error: nested too deeply")
    lines = TomlLines(text)
    ctx = _Context(path, lines, problems, read_secret)

    tables: dict[str, list[dict[str, object]]] = {"peer": [], "flow": []}
    for key, value in doc.items():
        line = lines.top.key(key)
        if key not in tables:
            problems.append(
                error(path, line, f"unknown key '{key}' (expected [[peer]] or [[flow]])")
            )
        elif not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            problems.append(
                error(path, line, f"'{key}' must be written as [[{key}]] tables, one per {key}")
            )
        elif len(value) > MAX_OBJECTS:
            problems.append(error(path, line, f"too many [[{key}]] tables (at most {MAX_OBJECTS})"))
        else:
            tables[key] = value

    peers = [
        p
        for i, t in enumerate(tables["peer"])
        if (p := _parse_peer(ctx, _Fields(ctx, "peer", i, t))) is not None
    ]
    flows = [
        f
        for i, t in enumerate(tables["flow"])
        if (f := _parse_flow(ctx, _Fields(ctx, "flow", i, t))) is not None
    ]
    seen: dict[str, Peer | Flow] = {}
    objects: list[Peer | Flow] = [*peers, *flows]
    for obj in objects:
        kind = "peer" if isinstance(obj, Peer) else "flow"
        if obj.name in seen:
            first = seen[obj.name]
            first_kind = "peer" if isinstance(first, Peer) else "flow"
            problems.append(
                error(
                    path,
                    obj.line_of("name"),
                    f"{kind} name '{obj.name}' is already used by the {first_kind} at line "
                    f"{first.source.line} (peers and flows share one namespace)",
                )
            )
        else:
            seen[obj.name] = obj
    if not doc:
        problems.append(warning(path, 0, "the file defines no peers and no flows"))
    return ParsedFile(path, tuple(peers), tuple(flows), tuple(problems))


class _Context:
    def __init__(
        self,
        path: str,
        lines: TomlLines,
        problems: list[Problem],
        read_secret: SecretReader | None,
    ) -> None:
        self.path = path
        self.lines = lines
        self.problems = problems
        self.read_secret = read_secret


class _Fields:
    """One [[peer]] or [[flow]] table: typed access to its keys, problems at their lines."""

    def __init__(self, ctx: _Context, kind: str, index: int, raw: dict[str, object]) -> None:
        self.ctx = ctx
        self.kind = kind
        self.raw = raw
        self.table: TableLines = ctx.lines.table_or_key(kind, index)
        self.what = f"{kind} #{index + 1}"
        self.ok = True

    def line(self, key: str | None) -> int:
        return self.table.key(key) if key else self.table.line

    def bad(self, key: str | None, message: str) -> None:
        self.ok = False
        self.ctx.problems.append(error(self.ctx.path, self.line(key), f"{self.what}: {message}"))

    def bad_at(self, line: int, message: str) -> None:
        self.ok = False
        self.ctx.problems.append(error(self.ctx.path, line, f"{self.what}: {message}"))

    def warn_at(self, line: int, message: str) -> None:
        self.ctx.problems.append(warning(self.ctx.path, line, f"{self.what}: {message}"))

    def warn(self, key: str | None, message: str) -> None:
        self.ctx.problems.append(warning(self.ctx.path, self.line(key), f"{self.what}: {message}"))

    def has(self, key: str) -> bool:
        return key in self.raw

    def get(self, key: str, parse: Callable[[object], _T], default: _T) -> _T:
        if key not in self.raw:
            return default
        try:
            return parse(self.raw[key])
        except FieldError as exc:
            self.bad(key, f"{key} {exc}")
            return default

    def required(self, key: str, parse: Callable[[object], _T]) -> _T | None:
        if key not in self.raw:
            self.bad(None, f"'{key}' is missing")
            return None
        try:
            return parse(self.raw[key])
        except FieldError as exc:
            self.bad(key, f"{key} {exc}")
            return None

    def check_unknown(self, known: tuple[str, ...]) -> None:
        for key in self.raw:
            if key not in known:
                hint = _closest(key, known)
                self.bad(
                    key, f"unknown key '{key}'" + (f" (did you mean '{hint}'?)" if hint else "")
                )

    def lines(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(self.table.keys.items()))

    def location(self) -> Location:
        return Location(self.ctx.path, self.table.line)

    def proposals(
        self, key: str, protocol: Protocol, defaults: tuple[str, ...]
    ) -> tuple[tuple[Proposal, int], ...]:
        """The proposals of ``key`` (or the defaults), each with the line it is written on."""
        if key in self.raw:
            raw = self.raw[key]
            texts: list[str] = []
            if isinstance(raw, str):
                texts = [raw]
            elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
                texts = [t for t in raw if isinstance(t, str)]
            else:
                self.bad(key, f"{key} must be a non-empty array of proposal strings")
                return ()
        else:
            texts = list(defaults)
        result: list[tuple[Proposal, int]] = []
        for text in texts:
            for part in text.split(","):
                line = self.line(key)
                if key in self.raw:
                    line = self.ctx.lines.find(part.strip(), line)
                try:
                    result.append((parse_proposal(part, protocol), line))
                except ProposalError as exc:
                    self.ok = False
                    self.ctx.problems.append(
                        error(self.ctx.path, line, f"{self.what}: {key}: {exc}")
                    )
        return tuple(result)

    def secret(self, key: str, target: str) -> bytes | None:
        """Read the secrets file ``target`` named by ``key``, if a reader was given."""
        if self.ctx.read_secret is None:
            return None
        try:
            return self.ctx.read_secret(target)
        except SecretFileError as exc:
            self.bad(key, f"{key}: {exc}")
        except OSError as exc:
            self.bad(key, f"{key}: cannot read {target}: {exc.strerror or exc}")
        return None


def _some(value: int) -> int | None:
    """``value``, typed as optional (for defaults of keys that may say "off")."""
    return value


def _closest(key: str, known: tuple[str, ...]) -> str | None:
    import difflib  # noqa: PLC0415 - only on this error path

    matches = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    return matches[0] if matches else None


def _parse_peer(ctx: _Context, f: _Fields) -> Peer | None:
    name = f.required("name", values.name)
    if name is not None:
        f.what = f"peer '{name}'"
    f.check_unknown(PEER_KEYS)
    address = f.required("address", values.address)
    local_address = f.get("local_address", values.address, None)
    if (
        address is not None
        and local_address is not None
        and (address.version != local_address.version)
    ):
        f.bad("local_address", "local_address and address must both be IPv4 or both IPv6")
    allow_insecure = f.get("allow_insecure", values.expect_bool, False)
    encapsulation = Encapsulation(
        f.get("encapsulation", lambda v: values.choice(v, tuple(Encapsulation)), "auto")
    )
    auth_text = f.get("auth", lambda v: values.choice(v, tuple(Auth)), None)
    auth = Auth(auth_text) if auth_text is not None else None

    if auth is None:
        for key in IKE_PEER_KEYS if not f.has("auth") else ():
            if f.has(key):
                f.bad(
                    key,
                    f'{key} only applies to a peer that speaks IKE: set auth = "psk" or '
                    '"cert" (a peer without auth carries manually keyed flows only)',
                )
        if not f.ok or name is None or address is None:
            return None
        return Peer(
            name=name,
            address=address,
            auth=None,
            ike_version=2,
            ike_proposals=(),
            dpd=None,
            local_address=local_address,
            encapsulation=encapsulation,
            allow_insecure=allow_insecure,
            source=f.location(),
            lines=f.lines(),
        )

    ike_version = f.get("ike_version", lambda v: values.expect_int(v, 1, 2), 2)
    ikev1_mode: IkeV1Mode | None = None
    if ike_version == 1:
        ikev1_mode = IkeV1Mode(
            f.get("ikev1_mode", lambda v: values.choice(v, tuple(IkeV1Mode)), "main")
        )
        if ikev1_mode is IkeV1Mode.AGGRESSIVE and auth is Auth.PSK:
            f.warn(
                "ikev1_mode",
                "IKEv1 aggressive mode with a PSK lets an eavesdropper guess the PSK offline; "
                "prefer main mode or IKEv2",
            )
    elif f.has("ikev1_mode"):
        f.bad("ikev1_mode", "ikev1_mode only applies with ike_version = 1")

    psk_file: str | None = None
    psk: Secret | None = None
    if auth is Auth.PSK:
        psk_rel = f.required("psk_file", values.path)
        if psk_rel is not None:
            psk_file = resolve_path(ctx.path, psk_rel)
            psk = _psk(f, psk_file)
        for name_ in ("cert", "key"):
            if f.has(name_):
                f.bad(name_, f'{name_} only applies with auth = "cert"')
    elif f.has("psk_file"):
        f.bad("psk_file", 'psk_file only applies with auth = "psk"')

    cert: str | None = None
    private_key: str | None = None
    if auth is Auth.CERT:
        cert_rel = f.get("cert", values.path, None)
        key_rel = f.get("key", values.path, None)
        if (cert_rel is None) != (key_rel is None) and f.ok:
            f.bad("cert" if cert_rel is None else "key", "cert and key go together (or neither)")
        cert = resolve_path(ctx.path, cert_rel) if cert_rel else None
        private_key = resolve_path(ctx.path, key_rel) if key_rel else None
        if private_key is not None:
            f.secret("key", private_key)  # permissions checked; the agent loads the key itself

    local_id = f.get("local_id", values.identity, None)
    remote_id = f.get("remote_id", values.identity, None)
    defaults = DEFAULT_IKE_PROPOSALS_V1 if ike_version == 1 else DEFAULT_IKE_PROPOSALS_V2
    ike_proposals = f.proposals("ike_proposals", Protocol.IKE, defaults)
    for proposal, line in ike_proposals:
        if ike_version == 1 and proposal.aead:
            f.bad_at(
                line,
                f"ike_proposals: IKEv1 cannot protect its own messages with AEAD ('{proposal}')",
            )
        _check_insecure(f, line, "ike_proposals", proposal, allow_insecure)
    ike_lifetime = f.get(
        "ike_lifetime", lambda v: values.seconds(v, 60, 7 * 86400), DEFAULT_IKE_LIFETIME
    )
    dpd = f.get("dpd", lambda v: values.duration(v, 5, 3600, allow_off=True), _some(DEFAULT_DPD))
    if not f.ok or name is None or address is None:
        return None
    return Peer(
        name=name,
        address=address,
        auth=auth,
        ike_version=ike_version,
        ikev1_mode=ikev1_mode,
        psk_file=psk_file,
        psk=psk,
        cert=cert,
        key=private_key,
        local_id=local_id,
        remote_id=remote_id,
        local_address=local_address,
        ike_proposals=tuple(p for p, _ in ike_proposals),
        ike_lifetime=ike_lifetime,
        dpd=dpd,
        encapsulation=encapsulation,
        allow_insecure=allow_insecure,
        source=f.location(),
        lines=f.lines(),
    )


def _psk(f: _Fields, psk_file: str) -> Secret | None:
    data = f.secret("psk_file", psk_file)
    if data is None:
        return None
    data = data.strip()
    if data[:2] in (b"0x", b"0X"):
        try:
            data = bytes.fromhex(data[2:].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            f.bad("psk_file", f"psk_file {psk_file} starts with 0x but is not hex")
            return None
    if not data:
        f.bad("psk_file", f"psk_file {psk_file} is empty")
        return None
    if len(data) < MIN_PSK_LEN:
        f.warn(
            "psk_file",
            f"the PSK in {psk_file} is shorter than {MIN_PSK_LEN} octets: use a long random one "
            "(e.g. openssl rand -hex 32)",
        )
    return Secret(data)


def _check_insecure(
    f: _Fields, line: int, key: str, proposal: Proposal, allow_insecure: bool
) -> None:
    insecure = proposal.insecure_algorithms()
    if not insecure:
        return
    names = ", ".join(insecure)
    if allow_insecure:
        f.warn_at(
            line, f"{key}: insecure algorithm {names} in '{proposal}' (allowed by allow_insecure)"
        )
    else:
        f.bad_at(
            line,
            f"{key}: insecure algorithm {names} in '{proposal}'; set allow_insecure = true on "
            "the peer only if a legacy peer needs it",
        )


def _parse_flow(ctx: _Context, f: _Fields) -> Flow | None:
    name = f.required("name", values.name)
    if name is not None:
        f.what = f"flow '{name}'"
    f.check_unknown(FLOW_KEYS)
    peer = f.required("peer", values.name)
    before = len(ctx.problems)
    protocol = f.get("protocol", values.ip_protocol, None)
    protocol_ok = len(ctx.problems) == before  # only then check that the ports fit it
    local_port = f.get("local_port", values.port_range, None)
    remote_port = f.get("remote_port", values.port_range, None)
    for key, port in (("local_port", local_port), ("remote_port", remote_port)):
        if port is not None and protocol_ok and protocol not in values.PORT_PROTOCOLS:
            f.bad(
                key,
                f'{key} needs protocol = "tcp", "udp", "sctp" or "udplite" (protocol is '
                f"{values.protocol_name(protocol)})",
            )
    protection = Protection(
        f.get("protection", lambda v: values.choice(v, tuple(Protection)), "esp")
    )
    modes = tuple(m.value for m in Mode)
    mode = Mode(f.get("mode", lambda v: values.choice(v, modes), "transport"))
    keying = Keying(f.get("keying", lambda v: values.choice(v, tuple(Keying)), "ike"))
    require = f.get("require", values.expect_bool, True)
    replay_window = f.get(
        "replay_window",
        lambda v: values.expect_int(v, MIN_REPLAY_WINDOW, MAX_REPLAY_WINDOW),
        DEFAULT_REPLAY_WINDOW,
    )

    esp_proposals: tuple[Proposal, ...] = ()
    ah_proposals: tuple[Proposal, ...] = ()
    lifetime: int | None = None
    idle_timeout: int | None = None
    lifetime_bytes: int | None = None
    lifetime_packets: int | None = None
    start = Start.TRAP
    manual_keys: str | None = None
    manual: ManualKeyFile | None = None
    if keying is Keying.IKE:
        if protection.esp:
            esp_proposals = tuple(
                p for p, _ in f.proposals("esp_proposals", Protocol.ESP, DEFAULT_ESP_PROPOSALS)
            )
        elif f.has("esp_proposals"):
            f.bad("esp_proposals", 'esp_proposals needs protection = "esp" or "esp+ah"')
        if protection.ah:
            ah_proposals = tuple(
                p for p, _ in f.proposals("ah_proposals", Protocol.AH, DEFAULT_AH_PROPOSALS)
            )
        elif f.has("ah_proposals"):
            f.bad("ah_proposals", 'ah_proposals needs protection = "ah" or "esp+ah"')
        lifetime = f.get(
            "lifetime", lambda v: values.seconds(v, 60, 7 * 86400), _some(DEFAULT_LIFETIME)
        )
        idle_timeout = f.get(
            "idle_timeout", lambda v: values.duration(v, 10, 7 * 86400, allow_off=True), None
        )
        lifetime_bytes = f.get(
            "lifetime_bytes", lambda v: values.volume(v, MIN_LIFETIME_BYTES, MAX_VOLUME), None
        )
        lifetime_packets = f.get(
            "lifetime_packets",
            lambda v: values.volume(v, MIN_LIFETIME_PACKETS, MAX_VOLUME),
            None,
        )
        start = Start(f.get("start", lambda v: values.choice(v, tuple(Start)), "trap"))
        if lifetime is not None and idle_timeout is not None and idle_timeout >= lifetime:
            f.warn("idle_timeout", "idle_timeout is not shorter than lifetime: it never fires")
        if f.has("manual_keys"):
            f.bad("manual_keys", 'manual_keys only applies with keying = "manual"')
    else:
        for key in IKE_FLOW_KEYS:
            if f.has(key):
                f.bad(
                    key,
                    f'{key} has no meaning with keying = "manual" (the manual-keys file names '
                    "the algorithms; manual SAs are installed with the policy and never rekeyed)",
                )
        rel = f.required("manual_keys", values.path)
        if rel is not None:
            manual_keys = resolve_path(ctx.path, rel)
            data = f.secret("manual_keys", manual_keys)
            if data is not None:
                manual, key_problems = parse_manual_keys(manual_keys, data)
                ctx.problems.extend(key_problems)
                if manual is None:
                    f.bad(
                        "manual_keys", f"manual_keys: {manual_keys} is not usable (see its errors)"
                    )
    if not f.ok or name is None or peer is None:
        return None
    return Flow(
        name=name,
        peer=peer,
        protocol=protocol,
        local_port=local_port,
        remote_port=remote_port,
        protection=protection,
        mode=mode,
        keying=keying,
        esp_proposals=esp_proposals,
        ah_proposals=ah_proposals,
        lifetime=lifetime,
        idle_timeout=idle_timeout,
        lifetime_bytes=lifetime_bytes,
        lifetime_packets=lifetime_packets,
        start=start,
        require=require,
        manual_keys=manual_keys,
        manual=manual,
        replay_window=replay_window,
        source=f.location(),
        lines=f.lines(),
    )
