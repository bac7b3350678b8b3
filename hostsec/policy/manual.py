"""Manual keying (RFC 4301 4.5): SPIs and keys of a flow's SAs in a TOML secrets file.

One file holds the SAs of one flow, for both directions, and the SAME file is copied to
both hosts (like a PSK). Each SA names its sender and receiver, so each host finds its
own view: the SAs sent to the peer's address are outbound, those sent by it inbound::

    [[sa]]
    src = "198.51.100.10"            # the sender of the packets this SA protects
    dst = "198.51.100.20"            # their receiver
    protocol = "esp"                 # "esp" | "ah"
    spi = 0x00001001                 # 256 .. 2^32-1 (RFC 4303 2.1); or "0x1001"
    proposal = "aes128gcm16"         # one algorithm of each kind; "aes128-sha256", "sha256" for AH
    encryption_key = "0x..."         # hex; key plus salt/nonce (RFC 4106 4 for GCM: 16 + 4 octets)
    integrity_key = "0x..."          # hex; for non-AEAD ESP and for AH
    esn = false                      # optional; or "-esn" in the proposal

Nothing here ever puts key material in a message or a ``repr``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field

from hostsec.crypto.proposals import (
    Encryption,
    Proposal,
    ProposalError,
    Protocol,
    parse_proposal,
)
from hostsec.crypto.transforms import ENCRYPTION, INTEGRITY, EsnId, IntegId
from hostsec.policy import values
from hostsec.policy.problems import Location, Problem, error, has_errors, warning
from hostsec.policy.secret import Secret
from hostsec.policy.tomllines import TomlLines
from hostsec.policy.values import FieldError, IPAddress

SPI_MIN = 256  # RFC 4303 2.1: 1-255 are reserved by IANA
SPI_MAX = 0xFFFFFFFF
MAX_SAS = 16
_SA_KEYS = ("src", "dst", "protocol", "spi", "proposal", "encryption_key", "integrity_key", "esn")


@dataclass(frozen=True)
class ManualSA:
    """One unidirectional SA, keys included (hidden from ``repr``)."""

    spi: int
    protocol: Protocol  # Protocol.ESP or Protocol.AH
    src: IPAddress
    dst: IPAddress
    proposal: Proposal  # exactly one algorithm of each kind; esn says YES or NO
    encryption_key: Secret = field(default=Secret(b""), repr=False)
    integrity_key: Secret = field(default=Secret(b""), repr=False)
    source: Location = field(default=Location("<none>"), compare=False)

    @property
    def encryption(self) -> Encryption | None:
        return self.proposal.encryption[0] if self.proposal.encryption else None

    @property
    def integrity(self) -> IntegId | None:
        return self.proposal.integrity[0] if self.proposal.integrity else None

    @property
    def esn(self) -> bool:
        return EsnId.YES in self.proposal.esn


@dataclass(frozen=True)
class ManualKeyFile:
    """All SAs of a manual-keys file, as read (before choosing this host's view)."""

    path: str
    sas: tuple[ManualSA, ...]


@dataclass(frozen=True)
class ManualKeys:
    """This host's view of a flow's manual SAs: what it sends with, what it receives with."""

    outbound: tuple[ManualSA, ...]
    inbound: tuple[ManualSA, ...]

    def outbound_sa(self, protocol: Protocol) -> ManualSA | None:
        return next((sa for sa in self.outbound if sa.protocol is protocol), None)

    def inbound_sa(self, protocol: Protocol) -> ManualSA | None:
        return next((sa for sa in self.inbound if sa.protocol is protocol), None)


def parse_manual_keys(path: str, data: bytes | str) -> tuple[ManualKeyFile | None, list[Problem]]:
    """Read a manual-keys file; the file is usable only if no problem is an error."""
    problems: list[Problem] = []
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            return None, [error(path, line, "not UTF-8 text")]
    else:
        text = data
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line, message = syntax_error_position(str(exc), text)
        return None, [error(path, line, f"syntax error: {message}")]
    except RecursionError:
        return None, [error(path, 0, "syntax error: nested too deeply")]
    lines = TomlLines(text)
    for key in doc:
        if key != "sa":
            problems.append(
                error(path, lines.top.key(key), f"unknown key '{key}' (expected [[sa]] tables)")
            )
    raw = doc.get("sa", [])
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        problems.append(error(path, lines.top.key("sa"), "'sa' must be [[sa]] tables"))
        return None, problems
    if not raw:
        problems.append(error(path, 0, "no [[sa]] tables: a manual-keys file lists its SAs"))
    if len(raw) > MAX_SAS:
        problems.append(error(path, 0, f"too many SAs ({len(raw)}; at most {MAX_SAS})"))
        return None, problems
    sas: list[ManualSA] = []
    for index, table in enumerate(raw):
        sa = _parse_sa(path, table, index, lines, problems)
        if sa is not None:
            sas.append(sa)
    _check_unique(sas, problems)
    problems = [_scrub(p) for p in problems]
    if has_errors(problems):
        return None, problems
    return ManualKeyFile(path, tuple(sas)), problems


_KEYLIKE = re.compile(r"(?:0[xX])?[0-9a-fA-F]{12,}")


def _scrub(problem: Problem) -> Problem:
    """A secrets file's problem with anything that looks like key material (a long run of
    hex digits, e.g. a key pasted into the wrong field) cut out of the message."""
    message = _KEYLIKE.sub("<hidden>", problem.message)
    return problem if message == problem.message else dataclasses.replace(problem, message=message)


def _parse_sa(
    path: str, table: dict[str, object], index: int, lines: TomlLines, problems: list[Problem]
) -> ManualSA | None:
    where = lines.table_or_key("sa", index)
    what = f"sa #{index + 1}"
    start = len(problems)

    def failed() -> bool:
        return len(problems) > start

    def bad(key: str | None, message: str) -> None:
        problems.append(error(path, where.key(key) if key else where.line, f"{what}: {message}"))

    for key in table:
        if key not in _SA_KEYS:
            bad(key, f"unknown key '{key}' (known: {', '.join(_SA_KEYS)})")
    for key in ("src", "dst", "protocol", "spi", "proposal"):
        if key not in table:
            bad(None, f"'{key}' is missing")
    if failed():
        return None

    try:
        src = values.address(table["src"])
    except FieldError as exc:
        bad("src", f"src {exc}")
    try:
        dst = values.address(table["dst"])
    except FieldError as exc:
        bad("dst", f"dst {exc}")
    try:
        protocol = {"esp": Protocol.ESP, "ah": Protocol.AH}[
            values.choice(table["protocol"], ("esp", "ah"))
        ]
    except FieldError as exc:
        bad("protocol", f"protocol {exc}")
    try:
        spi = _spi(table["spi"])
    except FieldError as exc:
        bad("spi", f"spi {exc}")
    if failed():
        return None
    if src.version != dst.version:
        bad("dst", "src and dst must both be IPv4 or both IPv6")
    elif src == dst:
        bad("dst", "src and dst are the same address")

    proposal: Proposal | None = None
    try:
        text = values.expect_str(table["proposal"], "a proposal string")
        proposal = parse_proposal(text, protocol)
    except FieldError as exc:
        bad("proposal", f"proposal {exc}")
    except ProposalError as exc:
        bad("proposal", str(exc))
    if proposal is None:
        return None
    if len(proposal.encryption) > 1 or len(proposal.integrity) > 1 or len(proposal.esn) > 1:
        bad("proposal", f"a manual SA uses exactly one algorithm of each kind ('{text}')")
    if proposal.dh:
        bad("proposal", f"manual keying has no key exchange: remove the DH group from '{text}'")
    esn = EsnId.YES in proposal.esn
    if "esn" in table:
        try:
            wanted = values.expect_bool(table["esn"])
        except FieldError as exc:
            bad("esn", f"esn {exc}")
        else:
            if esn and not wanted:
                bad("esn", f"esn = false contradicts 'esn' in proposal '{text}'")
            esn = esn or wanted
    if failed():
        return None
    proposal = dataclasses.replace(proposal, esn=(EsnId.YES if esn else EsnId.NO,))

    enc = proposal.encryption[0] if proposal.encryption else None
    integ = proposal.integrity[0] if proposal.integrity else None
    enc_len = ENCRYPTION[enc.id].key_material_len(enc.key_bits) if enc else 0
    integ_len = INTEGRITY[integ].key_len if integ else 0
    keys: dict[str, bytes] = {}
    for key, want, algorithm in (
        ("encryption_key", enc_len, enc),
        ("integrity_key", integ_len, integ),
    ):
        try:
            octets = _hex(table.get(key, ""))
        except FieldError as exc:
            bad(key, f"{key} {exc}")
            continue
        if want == 0 and octets:
            bad(key, f"{key} has no use with '{text}' (remove it)")
        elif len(octets) != want:
            detail = ""
            if enc is not None and key == "encryption_key":
                salt = ENCRYPTION[enc.id].salt_len
                if salt:
                    detail = f" ({want - salt} key + {salt} salt)"
            missing = "is missing: it " if not octets else ""
            bad(
                key,
                f"{key} {missing}must be {want} octets{detail} for '{text}', got {len(octets)}",
            )
        elif algorithm is not None:
            keys[key] = octets
    if failed():
        return None
    return ManualSA(
        spi=spi,
        protocol=protocol,
        src=src,
        dst=dst,
        proposal=proposal,
        encryption_key=Secret(keys.get("encryption_key", b"")),
        integrity_key=Secret(keys.get("integrity_key", b"")),
        source=Location(path, where.line),
    )


def _spi(value: object) -> int:
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            number = int(text, 16) if text.startswith("0x") else int(text, 10)
        except ValueError:
            raise FieldError("must be a number (e.g. 0x1001)") from None
        value = number
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(f"must be a number (e.g. 0x1001), not {values.type_name(value)}")
    if not SPI_MIN <= value <= SPI_MAX:
        raise FieldError("must be 256 to 0xffffffff (RFC 4303 2.1: 1-255 are reserved)")
    return value


_HEX = re.compile(r"[0-9a-fA-F]*")


def _hex(value: object) -> bytes:
    """Hex key text (``0x`` prefix, ``:`` and white space allowed) -> octets. The value
    itself is never quoted in an error."""
    if not isinstance(value, str):
        raise FieldError(f"must be a hex string, not {values.type_name(value)}")
    text = value.strip()
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    text = re.sub(r"[\s:_]", "", text)
    if not _HEX.fullmatch(text):
        raise FieldError("is not hex (0x followed by hex digits)")
    if len(text) % 2:
        raise FieldError("has an odd number of hex digits")
    return bytes.fromhex(text)


def _check_unique(sas: list[ManualSA], problems: list[Problem]) -> None:
    seen_spi: dict[tuple[Protocol, IPAddress, int], ManualSA] = {}
    seen_key: dict[Secret, ManualSA] = {}
    for sa in sas:
        ident = (sa.protocol, sa.dst, sa.spi)
        if ident in seen_spi:
            first = seen_spi[ident]
            problems.append(
                error(
                    sa.source.file,
                    sa.source.line,
                    f"{sa.protocol.name} SPI 0x{sa.spi:08x} to {sa.dst} is already used by the "
                    f"SA at line {first.source.line}",
                )
            )
        seen_spi.setdefault(ident, sa)
        for key in (sa.encryption_key, sa.integrity_key):
            if not key:
                continue
            if key in seen_key:
                problems.append(
                    error(
                        sa.source.file,
                        sa.source.line,
                        f"this SA reuses a key of the SA at line {seen_key[key].source.line}: "
                        "every SA needs keys of its own",
                    )
                )
                break
            seen_key[key] = sa


def select_manual_keys(
    keyfile: ManualKeyFile,
    *,
    protocols: tuple[Protocol, ...],
    peer_name: str,
    peer_address: IPAddress,
    local_address: IPAddress | None,
    allow_insecure: bool,
    where: Location,
) -> tuple[ManualKeys | None, list[Problem]]:
    """This host's view of ``keyfile`` for a flow to ``peer_address`` protected by
    ``protocols``: SAs sent to the peer are outbound, SAs sent by it inbound. Whole-file
    problems are reported at ``where`` (the flow's ``manual_keys`` line)."""
    problems: list[Problem] = []
    outbound: list[ManualSA] = []
    inbound: list[ManualSA] = []
    peer = f"peer '{peer_name}' ({peer_address})"
    for sa in keyfile.sas:
        at = sa.source
        if sa.protocol not in protocols:
            problems.append(
                error(
                    at.file,
                    at.line,
                    f"{sa.protocol.name} SA, but the flow's protection is "
                    f"{'+'.join(p.name.lower() for p in protocols)}",
                )
            )
            continue
        if sa.dst == peer_address:
            if local_address is not None and sa.src != local_address:
                problems.append(
                    error(
                        at.file,
                        at.line,
                        f"SA from {sa.src}, but {peer} uses local address {local_address}",
                    )
                )
                continue
            outbound.append(sa)
        elif sa.src == peer_address:
            if local_address is not None and sa.dst != local_address:
                problems.append(
                    error(
                        at.file,
                        at.line,
                        f"SA to {sa.dst}, but {peer} uses local address {local_address}",
                    )
                )
                continue
            inbound.append(sa)
        else:
            problems.append(
                error(
                    at.file,
                    at.line,
                    f"SA from {sa.src} to {sa.dst}: neither is the address of {peer}",
                )
            )
            continue
        insecure = sa.proposal.insecure_algorithms()
        if insecure:
            names = ", ".join(insecure)
            if allow_insecure:
                problems.append(
                    warning(at.file, at.line, f"insecure algorithm {names} (allowed by {peer})")
                )
            else:
                problems.append(
                    error(
                        at.file,
                        at.line,
                        f"insecure algorithm {names}; set allow_insecure = true on {peer} "
                        "only if a legacy peer needs it",
                    )
                )
    for protocol in protocols:
        for direction, sas, how in (
            ("outbound", outbound, f"to {peer}"),
            ("inbound", inbound, f"from {peer}"),
        ):
            found = [sa for sa in sas if sa.protocol is protocol]
            if not found:
                problems.append(
                    error(
                        where.file,
                        where.line,
                        f"{keyfile.path} has no {protocol.name} SA {how} ({direction})",
                    )
                )
            elif len(found) > 1:
                problems.append(
                    error(
                        found[1].source.file,
                        found[1].source.line,
                        f"a second {direction} {protocol.name} SA {how} (the first is at line "
                        f"{found[0].source.line})",
                    )
                )
    if has_errors(problems):
        return None, problems
    order = {p: i for i, p in enumerate(protocols)}
    outbound.sort(key=lambda sa: order[sa.protocol])
    inbound.sort(key=lambda sa: order[sa.protocol])
    return ManualKeys(tuple(outbound), tuple(inbound)), problems


_POSITION = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$", re.DOTALL)


def syntax_error_position(message: str, text: str) -> tuple[int, str]:
    """(line, message) of a tomllib error message: its position is in the text."""
    match = _POSITION.match(message)
    if match:
        return int(match.group(2)), f"{match.group(1)} (column {match.group(3)})"
    if message.endswith(" (at end of document)"):
        return max(1, text.count("\n") + (0 if text.endswith("\n") else 1)), message[
            : -len(" (at end of document)")
        ] + " (at end of file)"
    return 0, message


def same_family(a: IPAddress, b: IPAddress) -> bool:
    return isinstance(a, ipaddress.IPv4Address) == isinstance(b, ipaddress.IPv4Address)
