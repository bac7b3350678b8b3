"""Manual keying (RFC 4301 4.5): the keys file, its checks, and each host's view of it."""

from __future__ import annotations

import ipaddress

import pytest

from hostsec.crypto.proposals import Protocol
from hostsec.crypto.transforms import EncrId, IntegId
from hostsec.policy import (
    Location,
    ManualKeyFile,
    Problem,
    Secret,
    Severity,
    parse_manual_keys,
    select_manual_keys,
)
from tests.unit.policy_helpers import KEY_GCM_1, KEY_GCM_2, KEYS_ESP, A, B, manual_sa

PATH = "/etc/hostsec/secrets/telnet.keys"
WHERE = Location("/etc/hostsec/policies.d/a.toml", 9)
ADDR_A = ipaddress.ip_address(A)
ADDR_B = ipaddress.ip_address(B)
SHA256_KEY_1 = "0x" + "33" * 32
SHA256_KEY_2 = "0x" + "44" * 32
AES_KEY_1 = "0x" + "55" * 16
AES_KEY_2 = "0x" + "66" * 16
ALL_KEYS = [KEY_GCM_1, KEY_GCM_2, SHA256_KEY_1, SHA256_KEY_2, AES_KEY_1, AES_KEY_2]


def parse_ok(text: str) -> ManualKeyFile:
    keyfile, problems = parse_manual_keys(PATH, text)
    assert keyfile is not None, problems
    assert problems == []
    return keyfile


def assert_no_key_material(problems: list[Problem]) -> None:
    for problem in problems:
        for key in ALL_KEYS:
            assert key[2:12] not in str(problem), problem


def test_parse_two_directions() -> None:
    keyfile = parse_ok(KEYS_ESP)
    first, second = keyfile.sas
    assert first.src == ADDR_A and first.dst == ADDR_B
    assert first.spi == 0x1001 and second.spi == 0x1002
    assert first.protocol is Protocol.ESP
    assert first.encryption is not None and first.encryption.id is EncrId.AES_GCM_16
    assert first.encryption.key_bits == 128
    assert first.integrity is None
    assert first.encryption_key == Secret(bytes.fromhex(KEY_GCM_1[2:]))
    assert not first.integrity_key
    assert first.esn is False
    assert first.source == Location(PATH, 1)
    assert second.source.line == KEYS_ESP.split("\n").index("[[sa]]", 1) + 1


def test_key_material_never_in_repr() -> None:
    keyfile = parse_ok(KEYS_ESP)
    keys, _ = select_manual_keys(
        keyfile,
        protocols=(Protocol.ESP,),
        peer_name="db1",
        peer_address=ADDR_B,
        local_address=None,
        allow_insecure=False,
        where=WHERE,
    )
    for text in (repr(keyfile), str(keyfile), repr(keys), repr(keyfile.sas[0].encryption_key)):
        assert "1111" not in text and "2222" not in text
        assert "\\x11" not in text


def test_non_aead_and_ah_and_esn() -> None:
    text = (
        manual_sa(
            proposal="aes128-sha256-esn", encryption_key=AES_KEY_1, integrity_key=SHA256_KEY_1
        )
        + manual_sa(
            src=B,
            dst=A,
            spi="4098",
            proposal="aes128-sha256",
            encryption_key=AES_KEY_2,
            integrity_key=SHA256_KEY_2,
            extra="esn = true\n",
        )
        + manual_sa(
            protocol="ah",
            proposal="sha256",
            encryption_key=None,
            integrity_key=SHA256_KEY_2[:-2] + "77",
        )
    )
    keyfile = parse_ok(text)
    esp_out, esp_in, ah = keyfile.sas
    assert esp_out.integrity is IntegId.HMAC_SHA2_256_128
    assert esp_out.esn and esp_in.esn and not ah.esn
    assert esp_in.spi == 4098
    assert ah.protocol is Protocol.AH and ah.encryption is None
    assert len(ah.integrity_key) == 32


ERRORS = [
    ("syntax", "[[sa]\n", 1, "syntax error"),
    ("top-key", "version = 1\n" + KEYS_ESP, 1, "unknown key 'version'"),
    ("sa-not-array", "[sa]\nspi = 1\n", 1, "[[sa]] tables"),
    ("empty", "# nothing\n", 0, "no [[sa]] tables"),
    ("unknown-key", manual_sa(extra='lifetime = "1h"\n'), 8, "unknown key 'lifetime'"),
    ("missing", manual_sa().replace('dst = "198.51.100.20"\n', ""), 1, "'dst' is missing"),
    ("src-bad", manual_sa(src="web1"), 2, "src "),
    ("family", manual_sa(dst="2001:db8::2"), 3, "IPv4 or both IPv6"),
    ("same", manual_sa(dst=A), 3, "same address"),
    ("protocol", manual_sa(protocol="ipcomp"), 4, '"esp" | "ah"'),
    ("spi-reserved", manual_sa(spi="255"), 5, "reserved"),
    ("spi-big", manual_sa(spi="0x100000000"), 5, "256 to 0xffffffff"),
    ("spi-text", manual_sa(spi='"0xzz"'), 5, "must be a number"),
    ("spi-float", manual_sa(spi="1.5"), 5, "not float"),
    ("proposal-token", manual_sa(proposal="aes128gcm17"), 6, "unknown algorithm 'aes128gcm17'"),
    ("proposal-dh", manual_sa(proposal="aes128gcm16-ecp256"), 6, "no key exchange"),
    ("proposal-two", manual_sa(proposal="aes128gcm16-aes256gcm16"), 6, "exactly one"),
    ("ah-encrypts", manual_sa(protocol="ah", proposal="aes128-sha256"), 6, "AH does not"),
    ("key-short", manual_sa(encryption_key="0x" + "11" * 16), 7, "20 octets (16 key + 4 salt)"),
    ("key-missing", manual_sa(encryption_key=None), 1, "encryption_key is missing"),
    ("key-odd", manual_sa(encryption_key="0x111"), 7, "odd number of hex digits"),
    ("key-not-hex", manual_sa(encryption_key="0x11zz"), 7, "is not hex"),
    ("key-type", manual_sa(encryption_key=None, extra="encryption_key = 5\n"), 7, "hex string"),
    ("integ-aead", manual_sa(integrity_key=SHA256_KEY_1), 8, "has no use"),
    (
        "integ-missing",
        manual_sa(proposal="aes128-sha256", encryption_key=AES_KEY_1),
        1,
        "integrity_key is missing",
    ),
    (
        "ah-enc-key",
        manual_sa(protocol="ah", proposal="sha256", integrity_key=SHA256_KEY_1),
        7,
        "has no use",
    ),
    (
        "esn-conflict",
        manual_sa(proposal="aes128gcm16-esn", extra="esn = false\n"),
        8,
        "contradicts",
    ),
    ("esn-type", manual_sa(extra='esn = "yes"\n'), 8, "true or false"),
    (
        "dup-spi",
        manual_sa() + manual_sa(encryption_key=KEY_GCM_2),
        9,
        "SPI 0x00001001 to 198.51.100.20 is already used by the SA at line 1",
    ),
    (
        "key-reuse",
        manual_sa() + manual_sa(src=B, dst=A, spi="0x1002"),
        9,
        "reuses a key of the SA at line 1",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "fragment"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_keys_file_errors(text: str, line: int, fragment: str) -> None:
    keyfile, problems = parse_manual_keys(PATH, text)
    assert keyfile is None
    errors = [p for p in problems if p.is_error]
    assert len(errors) == 1, errors
    assert errors[0].location == Location(PATH, line), errors[0]
    assert fragment in errors[0].message, errors[0]
    assert_no_key_material(problems)


def test_syntax_error_inside_a_key_does_not_echo_it() -> None:
    text = manual_sa(encryption_key=KEY_GCM_1[:10] + "\\q" + KEY_GCM_1[10:])
    keyfile, problems = parse_manual_keys(PATH, text)
    assert keyfile is None and problems[0].location.line == 7
    assert_no_key_material(problems)


@pytest.mark.parametrize("field", ["proposal", "src", "protocol", "spi"])
def test_a_key_pasted_into_another_field_is_not_echoed(field: str) -> None:
    text = manual_sa().replace(f"{field} = ", f'{field} = "{KEY_GCM_2}"\n# ', 1)
    keyfile, problems = parse_manual_keys(PATH, text)
    assert keyfile is None and problems
    assert_no_key_material(problems)


def test_bytes_not_utf8() -> None:
    keyfile, problems = parse_manual_keys(PATH, b"# \xff\n")
    assert keyfile is None and problems[0].message == "not UTF-8 text"


# -- each host's view of the same file -------------------------------------------------------


def select(
    keyfile: ManualKeyFile,
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address,
    protocols: tuple[Protocol, ...] = (Protocol.ESP,),
    local: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None,
    allow_insecure: bool = False,
) -> tuple[object, list[Problem]]:
    return select_manual_keys(
        keyfile,
        protocols=protocols,
        peer_name="peer",
        peer_address=peer,
        local_address=local,
        allow_insecure=allow_insecure,
        where=WHERE,
    )


def test_the_same_file_gives_each_host_its_own_direction() -> None:
    keyfile = parse_ok(KEYS_ESP)
    at_a, problems = select_manual_keys(
        keyfile,
        protocols=(Protocol.ESP,),
        peer_name="db1",
        peer_address=ADDR_B,
        local_address=ADDR_A,
        allow_insecure=False,
        where=WHERE,
    )
    at_b, problems_b = select_manual_keys(
        keyfile,
        protocols=(Protocol.ESP,),
        peer_name="web1",
        peer_address=ADDR_A,
        local_address=None,
        allow_insecure=False,
        where=WHERE,
    )
    assert problems == [] and problems_b == []
    assert at_a is not None and at_b is not None
    out_a, in_a = at_a.outbound_sa(Protocol.ESP), at_a.inbound_sa(Protocol.ESP)
    assert out_a is not None and in_a is not None
    assert (out_a.spi, out_a.src, out_a.dst) == (0x1001, ADDR_A, ADDR_B)
    assert (in_a.spi, in_a.src, in_a.dst) == (0x1002, ADDR_B, ADDR_A)
    # B sends with what A receives with, and the other way round
    assert at_b.outbound == at_a.inbound and at_b.inbound == at_a.outbound
    assert at_a.outbound_sa(Protocol.AH) is None


def test_esp_and_ah_bundle_outer_first() -> None:
    text = (
        KEYS_ESP
        + manual_sa(
            protocol="ah",
            spi="0x2001",
            proposal="sha256",
            encryption_key=None,
            integrity_key=SHA256_KEY_1,
        )
        + manual_sa(
            src=B,
            dst=A,
            protocol="ah",
            spi="0x2002",
            proposal="sha256",
            encryption_key=None,
            integrity_key=SHA256_KEY_2,
        )
    )
    keys, problems = select(parse_ok(text), ADDR_B, (Protocol.AH, Protocol.ESP))
    assert problems == []
    assert keys is not None
    assert [sa.protocol for sa in keys.outbound] == [Protocol.AH, Protocol.ESP]  # type: ignore[attr-defined]
    assert [sa.spi for sa in keys.inbound] == [0x2002, 0x1002]  # type: ignore[attr-defined]


def errors_of(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity is Severity.ERROR]


def test_sa_between_other_hosts_is_an_error() -> None:
    keyfile = parse_ok(KEYS_ESP)
    keys, problems = select(keyfile, ipaddress.ip_address("198.51.100.99"))
    assert keys is None
    lines = {(p.location.file, p.location.line) for p in errors_of(problems)}
    assert (PATH, 1) in lines and (WHERE.file, WHERE.line) in lines
    assert any("neither is the address of" in p.message for p in problems)


def test_missing_inbound_sa() -> None:
    keys, problems = select(parse_ok(manual_sa()), ADDR_B)
    assert keys is None
    (problem,) = errors_of(problems)
    assert problem.location == WHERE
    assert "no ESP SA from peer 'peer'" in problem.message and "inbound" in problem.message


def test_ah_sa_in_an_esp_flow() -> None:
    text = KEYS_ESP + manual_sa(
        protocol="ah",
        spi="0x2001",
        proposal="sha256",
        encryption_key=None,
        integrity_key=SHA256_KEY_1,
    )
    keys, problems = select(parse_ok(text), ADDR_B)
    assert keys is None
    (problem,) = errors_of(problems)
    assert "the flow's protection is esp" in problem.message


def test_two_outbound_sas_of_one_protocol() -> None:
    text = KEYS_ESP + manual_sa(spi="0x1003", encryption_key="0x" + "99" * 20)
    keys, problems = select(parse_ok(text), ADDR_B)
    assert keys is None
    (problem,) = errors_of(problems)
    assert "a second outbound ESP SA" in problem.message and problem.location.line == 17


def test_local_address_must_match() -> None:
    keys, problems = select(parse_ok(KEYS_ESP), ADDR_B, local=ipaddress.ip_address("198.51.100.11"))
    assert keys is None
    assert any("uses local address 198.51.100.11" in p.message for p in errors_of(problems))


def test_insecure_manual_algorithm_needs_allow_insecure() -> None:
    text = manual_sa(
        proposal="null-sha1", encryption_key=None, integrity_key="0x" + "12" * 20
    ) + manual_sa(
        src=B,
        dst=A,
        spi="0x1002",
        proposal="null-sha1",
        encryption_key=None,
        integrity_key="0x" + "34" * 20,
    )
    keyfile = parse_ok(text)
    keys, problems = select(keyfile, ADDR_B)
    assert keys is None and len(errors_of(problems)) == 2
    assert "insecure algorithm null, sha1" in problems[0].message
    keys, problems = select(keyfile, ADDR_B, allow_insecure=True)
    assert keys is not None
    assert [p.severity for p in problems] == [Severity.WARNING, Severity.WARNING]
