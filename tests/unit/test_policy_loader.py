"""The policy file loader: every field, its defaults, and every error with its file:line."""

from __future__ import annotations

import ipaddress

import pytest

from hostsec.crypto.proposals import Protocol, parse_proposal
from hostsec.policy import (
    Auth,
    Encapsulation,
    IkeV1Mode,
    Keying,
    Mode,
    ParsedFile,
    PortRange,
    Protection,
    Secret,
    Severity,
    Start,
    parse_policy,
)
from hostsec.policy.loader import MAX_POLICY_SIZE
from tests.unit.policy_helpers import (
    FLOW,
    PEER,
    PSK,
    B,
    FakeSecrets,
    policy_path,
    secrets_for,
)

PATH = policy_path("a.toml")


def parse(text: str | bytes, secrets: FakeSecrets | None = None) -> ParsedFile:
    return parse_policy(PATH, text, secrets if secrets is not None else secrets_for())


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The line (from 1) of the nth line containing needle."""
    count = 0
    for number, line in enumerate(text.split("\n"), start=1):
        if needle in line:
            count += 1
            if count == nth:
                return number
    raise AssertionError(f"{needle!r} not in text")


def only_error(parsed: ParsedFile) -> str:
    errors = [str(p) for p in parsed.problems if p.severity is Severity.ERROR]
    assert len(errors) == 1, errors
    return errors[0]


def test_full_peer_and_flow() -> None:
    text = f"""
[[peer]]
name = "db1"
address = "{B}"
local_address = "198.51.100.10"
ike_version = 2
auth = "psk"
psk_file = "../secrets/db1.psk"
local_id = "web1.example.net"
remote_id = "db1.example.net"
ike_proposals = ["aes256gcm16-prfsha384-ecp384", "aes128-sha256-modp2048"]
ike_lifetime = "24h"
dpd = "30s"
encapsulation = "force"

[[flow]]
name = "telnet-to-db1"
peer = "db1"
protocol = "tcp"
remote_port = 23
local_port = "1024-65535"
protection = "esp"
mode = "tunnel"
esp_proposals = ["aes128gcm16-ecp256"]
lifetime = "1h"
lifetime_bytes = "10G"
lifetime_packets = 1000000
idle_timeout = "10m"
start = "start"
require = false
replay_window = 1024
"""
    parsed = parse(text)
    assert parsed.ok, parsed.problems
    assert parsed.problems == ()
    (peer,) = parsed.peers
    assert peer.name == "db1"
    assert peer.address == ipaddress.ip_address(B)
    assert peer.local_address == ipaddress.ip_address("198.51.100.10")
    assert peer.auth is Auth.PSK
    assert peer.ike_version == 2
    assert peer.ikev1_mode is None
    assert peer.psk_file == "/etc/hostsec/secrets/db1.psk"
    assert peer.psk == Secret(PSK.strip()[2:] and bytes.fromhex(PSK.decode()[2:]))
    assert peer.local_id == "web1.example.net"
    assert peer.remote_id == "db1.example.net"
    assert peer.ike_proposals == (
        parse_proposal("aes256gcm16-prfsha384-ecp384", Protocol.IKE),
        parse_proposal("aes128-sha256-modp2048", Protocol.IKE),
    )
    assert peer.ike_lifetime == 86400
    assert peer.dpd == 30
    assert peer.encapsulation is Encapsulation.FORCE
    assert peer.allow_insecure is False
    assert peer.source.file == PATH and peer.source.line == line_of(text, "[[peer]]")
    assert peer.line_of("dpd") == line_of(text, "dpd =")

    (flow,) = parsed.flows
    assert flow.name == "telnet-to-db1"
    assert flow.peer == "db1"
    assert flow.protocol == 6
    assert flow.remote_port == PortRange(23, 23)
    assert flow.local_port == PortRange(1024, 65535)
    assert flow.protection is Protection.ESP
    assert flow.mode is Mode.TUNNEL
    assert flow.esp_proposals == (parse_proposal("aes128gcm16-ecp256", Protocol.ESP),)
    assert flow.ah_proposals == ()
    assert flow.pfs
    assert flow.lifetime == 3600
    assert flow.idle_timeout == 600
    assert flow.lifetime_bytes == 10 << 30 and flow.lifetime_packets == 1_000_000
    assert flow.start is Start.START
    assert flow.require is False
    assert flow.keying is Keying.IKE
    assert flow.replay_window == 1024
    assert flow.source.line == line_of(text, "[[flow]]")


def test_defaults_are_secure() -> None:
    parsed = parse(PEER + FLOW)
    assert parsed.ok, parsed.problems
    (peer,) = parsed.peers
    (flow,) = parsed.flows
    assert peer.ike_version == 2
    assert peer.ike_proposals and all(not p.insecure_algorithms() for p in peer.ike_proposals)
    assert peer.ike_lifetime == 4 * 3600
    assert peer.dpd == 30
    assert peer.encapsulation is Encapsulation.AUTO
    assert peer.allow_insecure is False
    assert flow.protection is Protection.ESP
    assert flow.mode is Mode.TRANSPORT
    assert flow.esp_proposals and all(not p.insecure_algorithms() for p in flow.esp_proposals)
    assert flow.ah_proposals == ()
    assert flow.lifetime == 3600
    assert flow.idle_timeout is None
    assert flow.lifetime_bytes is None and flow.lifetime_packets is None
    assert flow.start is Start.TRAP
    assert flow.require is True
    assert flow.replay_window == 64
    assert flow.keying is Keying.IKE
    assert flow.local_port is None


def test_ikev1_and_ah_defaults() -> None:
    text = PEER.replace('auth = "psk"', 'auth = "psk"\nike_version = 1') + FLOW.replace(
        "remote_port = 23", 'remote_port = 23\nprotection = "esp+ah"'
    )
    parsed = parse(text)
    assert parsed.ok, parsed.problems
    assert parsed.peers[0].ikev1_mode is IkeV1Mode.MAIN
    assert all(not p.aead for p in parsed.peers[0].ike_proposals)
    flow = parsed.flows[0]
    assert flow.ah_proposals == (parse_proposal("sha256", Protocol.AH),)
    assert flow.esp_proposals


def test_durations_and_off() -> None:
    text = PEER + 'dpd = "off"\nike_lifetime = "1d2h"\n' + FLOW + 'idle_timeout = "off"\n'
    parsed = parse(text)
    assert parsed.ok, parsed.problems
    assert parsed.peers[0].dpd is None
    assert parsed.peers[0].ike_lifetime == 26 * 3600
    assert parsed.flows[0].idle_timeout is None


def test_protocols_and_ports() -> None:
    for value, number in (('"udp"', 17), ('"icmp"', 1), ("47", 47), ('"any"', None)):
        text = PEER + FLOW.replace('protocol = "tcp"\nremote_port = 23', f"protocol = {value}")
        parsed = parse(text)
        assert parsed.ok, (value, parsed.problems)
        assert parsed.flows[0].protocol == number
    parsed = parse(PEER + FLOW.replace("remote_port = 23", 'remote_port = "any"'))
    assert parsed.ok and parsed.flows[0].remote_port is None


def test_inline_array_of_tables_is_accepted() -> None:
    psk = 'psk_file = "../secrets/db1.psk"'
    text = f'peer = [{{name = "db1", address = "{B}", auth = "psk", {psk}}}]\n'
    parsed = parse(text)
    assert parsed.ok, parsed.problems
    assert parsed.peers[0].source.line == 1


def test_psk_forms() -> None:
    secrets = secrets_for()
    secrets.files["/etc/hostsec/secrets/db1.psk"] = b"a long passphrase of many words\n"
    parsed = parse(PEER, secrets)
    assert parsed.ok
    assert parsed.peers[0].psk == Secret(b"a long passphrase of many words")
    assert "long passphrase" not in repr(parsed.peers[0])
    assert "long passphrase" not in repr(parsed)


def test_without_secret_reader_secrets_are_not_read() -> None:
    parsed = parse_policy(PATH, PEER + FLOW)
    assert parsed.ok
    assert parsed.peers[0].psk is None


# -- errors, each at its own line ------------------------------------------------------

# (text, the line that must be reported (a needle in the text), fragment of the message)
ERROR_CASES = [
    ("unknown-top", PEER + 'colour = "blue"\n', 'colour = "blue"', "unknown key 'colour'"),
    ("unknown-top-table", "[settings]\nx = 1\n", "[settings]", "unknown key 'settings'"),
    ("not-array", '[peer]\nname = "db1"\n', "[peer]", "[[peer]] tables"),
    ("unknown-peer-key", PEER + 'encapslation = "auto"\n', "encapslation", "did you mean"),
    ("unknown-flow-subtable", PEER + FLOW + "[flow.extra]\nx = 1\n", "[flow.extra]", "'extra'"),
    ("unknown-flow-dotted", PEER + FLOW + "a.b = 1\n", "a.b = 1", "unknown key 'a'"),
    ("missing-name", f'[[peer]]\naddress = "{B}"\n', "[[peer]]", "'name' is missing"),
    ("name-type", PEER.replace('name = "db1"', "name = 7"), "name = 7", "must be a string"),
    ("name-chars", PEER.replace('name = "db1"', 'name = "d b"'), 'name = "d b"', "not a valid"),
    ("address-missing", PEER.replace(f'address = "{B}"\n', ""), "[[peer]]", "'address'"),
    ("address-host", PEER.replace(B, "db1.example"), "db1.example", "address literal"),
    ("address-prefix", PEER.replace(B, "198.51.100.0/24"), "198.51.100.0/24", "literal"),
    ("address-multicast", PEER.replace(B, "224.0.0.1"), "224.0.0.1", "not a unicast"),
    ("address-unspec", PEER.replace(B, "::"), '"::"', "not a unicast"),
    ("address-int", PEER.replace(f'"{B}"', "3"), "address = 3", "not integer"),
    (
        "local-family",
        PEER + 'local_address = "2001:db8::1"\n',
        "local_address",
        "IPv4 or both IPv6",
    ),
    ("ike-version", PEER + "ike_version = 3\n", "ike_version", "must be 1 to 2"),
    ("ikev1-mode-v2", PEER + 'ikev1_mode = "main"\n', "ikev1_mode", "ike_version = 1"),
    (
        "ikev1-mode-bad",
        PEER + 'ike_version = 1\nikev1_mode = "quick"\n',
        "ikev1_mode",
        '"main" | "aggressive"',
    ),
    ("auth-bad", PEER.replace('"psk"', '"password"'), "auth =", '"psk" | "cert"'),
    (
        "psk-missing",
        PEER.replace('psk_file = "../secrets/db1.psk"\n', ""),
        "[[peer]]",
        "'psk_file' is missing",
    ),
    (
        "psk-with-cert",
        PEER.replace('"psk"', '"cert"'),
        "psk_file",
        'only applies with auth = "psk"',
    ),
    (
        "cert-with-psk",
        PEER + 'cert = "../certs/a.pem"\n',
        "cert =",
        'only applies with auth = "cert"',
    ),
    (
        "cert-without-key",
        PEER.replace('auth = "psk"\npsk_file = "../secrets/db1.psk"', 'auth = "cert"')
        + 'cert = "../certs/a.pem"\n',
        "[[peer]]",
        "cert and key go together",
    ),
    (
        "ike-key-without-auth",
        f'[[peer]]\nname = "db1"\naddress = "{B}"\ndpd = "10s"\n',
        "dpd",
        "only applies to a peer that speaks IKE",
    ),
    (
        "proposal-token",
        PEER + 'ike_proposals = [\n  "aes128-sha256-modp2048",\n  "aes128-sha256-modp9999",\n]\n',
        "modp9999",
        "unknown algorithm 'modp9999'",
    ),
    (
        "proposal-not-list",
        PEER + "ike_proposals = [1, 2]\n",
        "ike_proposals",
        "array of proposal strings",
    ),
    ("proposal-empty-list", PEER + "ike_proposals = []\n", "ike_proposals", "non-empty"),
    (
        "proposal-wrong-protocol",
        PEER + FLOW + 'esp_proposals = ["aes128-sha256-prfsha256"]\n',
        "esp_proposals",
        "only IKE proposals take",
    ),
    (
        "insecure-refused",
        PEER + 'ike_proposals = ["3des-md5-modp1024"]\n',
        "3des-md5",
        "insecure algorithm 3des, md5, modp1024",
    ),
    (
        "ikev1-aead",
        PEER + 'ike_version = 1\nike_proposals = ["aes128gcm16-prfsha256-ecp256"]\n',
        "aes128gcm16-prfsha256",
        "IKEv1 cannot protect its own messages with AEAD",
    ),
    ("ike-lifetime-range", PEER + 'ike_lifetime = "10s"\n', "ike_lifetime", "out of range"),
    ("ike-lifetime-off", PEER + 'ike_lifetime = "off"\n', "ike_lifetime", 'cannot be "off"'),
    ("dpd-int", PEER + "dpd = 30\n", "dpd", 'write "30s"'),
    ("dpd-unit", PEER + 'dpd = "30 parsecs"\n', "dpd", "is not a duration"),
    ("encap-bad", PEER + 'encapsulation = "yes"\n', "encapsulation", '"auto" | "force"'),
    ("allow-insecure-type", PEER + 'allow_insecure = "yes"\n', "allow_insecure", "true or false"),
    ("flow-peer-missing", PEER + FLOW.replace('peer = "db1"\n', ""), "[[flow]]", "'peer'"),
    ("protocol-name", PEER + FLOW.replace('"tcp"', '"tpc"'), "protocol", "unknown protocol"),
    ("protocol-zero", PEER + FLOW.replace('"tcp"', "0"), "protocol", "must be 1 to 255"),
    ("protocol-256", PEER + FLOW.replace('"tcp"', "256"), "protocol", "must be 1 to 255"),
    (
        "port-needs-tcp",
        PEER + FLOW.replace('"tcp"', '"icmp"'),
        "remote_port",
        'needs protocol = "tcp"',
    ),
    (
        "port-any-protocol",
        PEER + FLOW.replace('protocol = "tcp"\n', ""),
        "remote_port",
        "protocol is any",
    ),
    ("port-range-empty", PEER + FLOW.replace("23", '"30-20"'), "remote_port", "is empty"),
    ("port-too-big", PEER + FLOW.replace("23", "70000"), "remote_port", "0 to 65535"),
    ("port-text", PEER + FLOW.replace("23", '"telnet"'), "remote_port", "not a port"),
    ("protection-bad", PEER + FLOW + 'protection = "ipsec"\n', "protection", '"esp" | "ah"'),
    (
        "esp-proposals-with-ah",
        PEER + FLOW + 'protection = "ah"\nesp_proposals = ["aes128gcm16"]\n',
        "esp_proposals",
        'needs protection = "esp"',
    ),
    (
        "ah-proposals-with-esp",
        PEER + FLOW + 'ah_proposals = ["sha256"]\n',
        "ah_proposals",
        'needs protection = "ah"',
    ),
    (
        "ah-encrypts",
        PEER + FLOW + 'protection = "ah"\nah_proposals = ["aes128-sha256"]\n',
        "aes128-sha256",
        "AH does not encrypt",
    ),
    ("mode-bad", PEER + FLOW + 'mode = "beet"\n', "mode", '"transport" | "tunnel"'),
    ("lifetime-range", PEER + FLOW + 'lifetime = "8d"\n', "lifetime", "out of range"),
    ("idle-bad", PEER + FLOW + 'idle_timeout = "soon"\n', "idle_timeout", "not a duration"),
    ("bytes-bad", PEER + FLOW + 'lifetime_bytes = "12Q"\n', "lifetime_bytes", '"500M"'),
    ("bytes-small", PEER + FLOW + "lifetime_bytes = 1000\n", "lifetime_bytes", "out of range"),
    ("packets-small", PEER + FLOW + "lifetime_packets = 10\n", "lifetime_packets", "100 to"),
    ("packets-bool", PEER + FLOW + "lifetime_packets = true\n", "lifetime_packets", "number"),
    (
        "manual-with-volume",
        PEER + FLOW + 'keying = "manual"\nmanual_keys = "../secrets/telnet.keys"\n'
        'lifetime_bytes = "1G"\n',
        "lifetime_bytes",
        'no meaning with keying = "manual"',
    ),
    ("start-bad", PEER + FLOW + 'start = "now"\n', "start", '"trap" | "start" | "manual"'),
    ("require-type", PEER + FLOW + 'require = "yes"\n', "require", "true or false"),
    ("replay-small", PEER + FLOW + "replay_window = 16\n", "replay_window", "32 to 4096"),
    ("replay-big", PEER + FLOW + "replay_window = 5000\n", "replay_window", "32 to 4096"),
    ("replay-bool", PEER + FLOW + "replay_window = true\n", "replay_window", "not boolean"),
    ("keying-bad", PEER + FLOW + 'keying = "psk"\n', "keying", '"ike" | "manual"'),
    (
        "manual-keys-with-ike",
        PEER + FLOW + 'manual_keys = "../secrets/telnet.keys"\n',
        "manual_keys",
        'only applies with keying = "manual"',
    ),
    ("manual-without-keys", PEER + FLOW + 'keying = "manual"\n', "[[flow]]", "'manual_keys'"),
    (
        "manual-with-proposals",
        PEER + FLOW + 'keying = "manual"\nmanual_keys = "../secrets/telnet.keys"\n'
        'esp_proposals = ["aes128gcm16"]\n',
        "esp_proposals",
        'no meaning with keying = "manual"',
    ),
    (
        "dup-peer",
        PEER + PEER,
        'name = "db1"',
        "already used by the peer at line 2",
    ),
    (
        "peer-flow-same-name",
        PEER + FLOW.replace('name = "telnet"', 'name = "db1"'),
        'name = "db1"',
        "already used by the peer",
    ),
]


@pytest.mark.parametrize(
    ("text", "needle", "fragment"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_error_at_its_line(text: str, needle: str, fragment: str) -> None:
    parsed = parse(text)
    assert not parsed.ok
    message = only_error(parsed)
    # duplicates report the second occurrence
    nth = 2 if needle == 'name = "db1"' else 1
    assert message.startswith(f"{PATH}:{line_of(text, needle, nth)}: error: "), message
    assert fragment in message, message
    assert parsed.peers == () or parsed.flows == () or not parsed.ok


def test_syntax_error_reports_tomllib_position() -> None:
    text = PEER + "ike_lifetime = \n" + FLOW
    parsed = parse(text)
    message = only_error(parsed)
    assert message.startswith(f"{PATH}:{line_of(text, 'ike_lifetime')}: error: syntax error: ")
    assert "column" in message
    assert parsed.peers == () and parsed.flows == ()


def test_half_written_file_is_a_syntax_error_at_its_end() -> None:
    text = (PEER + FLOW)[: len(PEER) + 30]  # cut in the middle of the flow table
    parsed = parse(text)
    message = only_error(parsed)
    assert "syntax error" in message
    assert f"{PATH}:{text.count(chr(10)) + 1}:" in message


def test_not_utf8() -> None:
    data = (PEER + "# caf\xe9\n").encode("latin-1")
    message = only_error(parse(data))
    assert message.startswith(f"{PATH}:{PEER.count(chr(10)) + 1}: error: not UTF-8")


def test_too_large() -> None:
    message = only_error(parse("#" * (MAX_POLICY_SIZE + 1)))
    assert "too large" in message


def test_nesting_bomb() -> None:
    message = only_error(parse("a = " + "[" * 5000 + "]" * 5000))
    assert "nested too deeply" in message or "syntax error" in message


def test_empty_file_warns() -> None:
    parsed = parse("# nothing yet\n")
    assert parsed.ok
    assert [p.severity for p in parsed.problems] == [Severity.WARNING]


def test_all_errors_are_reported_not_only_the_first() -> None:
    text = PEER.replace(B, "nowhere") + 'dpd = "x"\n' + FLOW.replace('"tcp"', '"tpc"')
    parsed = parse(text)
    lines = sorted(p.location.line for p in parsed.problems if p.is_error)
    assert lines == sorted([line_of(text, "nowhere"), line_of(text, "dpd"), line_of(text, '"tpc"')])


def test_insecure_allowed_is_a_warning_at_its_line() -> None:
    text = PEER + 'allow_insecure = true\nike_proposals = [\n  "aes128-sha1-modp1024",\n]\n'
    parsed = parse(text)
    assert parsed.ok
    (problem,) = parsed.problems
    assert problem.severity is Severity.WARNING
    assert problem.location.line == line_of(text, "aes128-sha1-modp1024")
    assert "sha1" in problem.message and "modp1024" in problem.message


def test_aggressive_mode_psk_warns() -> None:
    text = PEER + 'ike_version = 1\nikev1_mode = "aggressive"\n'
    parsed = parse(text)
    assert parsed.ok
    assert parsed.peers[0].ikev1_mode is IkeV1Mode.AGGRESSIVE
    assert [p.location.line for p in parsed.problems] == [line_of(text, "ikev1_mode")]


def test_idle_timeout_not_shorter_than_lifetime_warns() -> None:
    text = PEER + FLOW + 'lifetime = "1h"\nidle_timeout = "2h"\n'
    parsed = parse(text)
    assert parsed.ok
    assert [p.location.line for p in parsed.problems] == [line_of(text, "idle_timeout")]


# -- secrets -----------------------------------------------------------------------------


def test_psk_refused_by_reader_is_reported_at_psk_file_line() -> None:
    secrets = secrets_for()
    secrets.refuse["/etc/hostsec/secrets/db1.psk"] = "mode 0644 is group/world readable"
    message = only_error(parse(PEER, secrets))
    assert message.startswith(f"{PATH}:{line_of(PEER, 'psk_file')}: error:")
    assert "mode 0644" in message


def test_psk_missing_file() -> None:
    message = only_error(parse(PEER, FakeSecrets()))
    assert "cannot read /etc/hostsec/secrets/db1.psk" in message


@pytest.mark.parametrize(("content", "fragment"), [(b"\n", "is empty"), (b"0xzz\n", "not hex")])
def test_psk_content_errors(content: bytes, fragment: str) -> None:
    secrets = FakeSecrets({"/etc/hostsec/secrets/db1.psk": content})
    message = only_error(parse(PEER, secrets))
    assert fragment in message


def test_short_psk_warns_without_revealing_it() -> None:
    secrets = FakeSecrets({"/etc/hostsec/secrets/db1.psk": b"hunter2"})
    parsed = parse(PEER, secrets)
    assert parsed.ok
    (problem,) = parsed.problems
    assert problem.severity is Severity.WARNING and "shorter than 16" in problem.message
    assert "hunter2" not in str(problem)


def test_cert_key_is_checked_as_a_secret() -> None:
    text = PEER.replace(
        'auth = "psk"\npsk_file = "../secrets/db1.psk"',
        'auth = "cert"\ncert = "../certs/web1.pem"\nkey = "../secrets/web1.key"',
    )
    secrets = secrets_for()
    secrets.refuse["/etc/hostsec/secrets/web1.key"] = "mode 0640 is group readable"
    message = only_error(parse(text, secrets))
    assert message.startswith(f"{PATH}:{line_of(text, 'key =')}:")
    secrets.refuse.clear()
    secrets.files["/etc/hostsec/secrets/web1.key"] = b"-----BEGIN PRIVATE KEY-----"
    parsed = parse(text, secrets)
    assert parsed.ok
    assert parsed.peers[0].cert == "/etc/hostsec/certs/web1.pem"
    assert parsed.peers[0].key == "/etc/hostsec/secrets/web1.key"


def test_manual_flow_reads_its_keys() -> None:
    text = PEER + FLOW + 'keying = "manual"\nmanual_keys = "../secrets/telnet.keys"\n'
    parsed = parse(text)
    assert parsed.ok, parsed.problems
    flow = parsed.flows[0]
    assert flow.keying is Keying.MANUAL
    assert flow.lifetime is None
    assert flow.manual is not None and len(flow.manual.sas) == 2
    assert flow.manual_keys == "/etc/hostsec/secrets/telnet.keys"
    assert "11111111" not in repr(flow)


def test_manual_keys_file_errors_point_into_it() -> None:
    text = PEER + FLOW + 'keying = "manual"\nmanual_keys = "../secrets/telnet.keys"\n'
    secrets = secrets_for()
    secrets.files["/etc/hostsec/secrets/telnet.keys"] = b'[[sa]]\nsrc = "x"\n'
    parsed = parse(text, secrets)
    assert not parsed.ok
    files = {p.location.file for p in parsed.problems}
    assert files == {PATH, "/etc/hostsec/secrets/telnet.keys"}
    flow_error = [p for p in parsed.problems if p.location.file == PATH]
    assert flow_error[0].location.line == line_of(text, "manual_keys")
