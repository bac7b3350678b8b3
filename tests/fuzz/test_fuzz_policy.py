"""Fuzz the policy loader, the manual-keys parser and the policy set: problems, never crashes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostsec.policy import PolicySet, Problem, parse_manual_keys, parse_policy
from hostsec.policy.tomllines import TomlLines
from tests.unit.policy_helpers import FLOW, KEYS_ESP, PEER, secrets_for

pytestmark = pytest.mark.fuzz

PATH = "/etc/hostsec/policies.d/fuzz.toml"
KEYS_PATH = "/etc/hostsec/secrets/telnet.keys"
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

KEYS = [
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
    "peer",
    "protocol",
    "local_port",
    "remote_port",
    "protection",
    "mode",
    "esp_proposals",
    "ah_proposals",
    "lifetime",
    "idle_timeout",
    "start",
    "require",
    "keying",
    "manual_keys",
    "replay_window",
    "bogus",
    "src",
    "dst",
    "spi",
    "proposal",
    "encryption_key",
    "integrity_key",
    "esn",
]
VALUES = [
    '"db1"',
    '"198.51.100.20"',
    '"2001:db8::2"',
    "2",
    "1",
    '"psk"',
    '"cert"',
    '"../secrets/db1.psk"',
    '"../secrets/telnet.keys"',
    '["aes128-sha256-modp2048"]',
    '["3des-md5-modp1024"]',
    '["aes128gcm16"]',
    '"1h"',
    '"30s"',
    '"off"',
    "true",
    "false",
    '"tcp"',
    "23",
    '"1024-65535"',
    '"esp"',
    '"ah"',
    '"esp+ah"',
    '"tunnel"',
    '"manual"',
    "64",
    "0x1001",
    '"0x' + "11" * 20 + '"',
    '"aes128gcm16"',
    "1.5",
    "[]",
    "{}",
    '""',
    "-1",
    "1979-05-27",
    '"""\nx\n"""',
    "[1, [2, 3]]",
    "{a = 1}",
]
HEADERS = ["[[peer]]", "[[flow]]", "[[sa]]", "[peer]", "[flow.x]", "[[peer.y]]", "[x]"]

line = st.one_of(
    st.tuples(st.sampled_from(KEYS), st.sampled_from(VALUES)).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.sampled_from(HEADERS),
    st.text(max_size=40),
    st.just("# comment"),
)
toml_ish = st.lists(line, max_size=30).map("\n".join)
mutated = st.tuples(
    st.sampled_from([PEER + FLOW, KEYS_ESP, PEER + FLOW + 'keying = "manual"\n']),
    st.integers(min_value=0, max_value=400),
    st.integers(min_value=0, max_value=40),
    st.text(max_size=20),
).map(lambda t: t[0][: t[1]] + t[3] + t[0][t[1] + t[2] :])


def check_problems(problems: tuple[Problem, ...] | list[Problem]) -> None:
    for problem in problems:
        assert isinstance(problem, Problem)
        assert problem.location.file in (PATH, KEYS_PATH) or problem.location.file.startswith("/")
        assert problem.location.line >= 0
        if problem.location.file == KEYS_PATH:
            assert "111111111111" not in problem.message  # never key material


@FUZZ
@given(st.one_of(toml_ish, mutated))
def test_loader_never_crashes(text: str) -> None:
    secrets = secrets_for()
    secrets.files[KEYS_PATH] = text.encode()  # the same text as a keys file, too
    parsed = parse_policy(PATH, text, secrets)
    check_problems(parsed.problems)
    if parsed.ok:
        assert all(p.source.file == PATH for p in parsed.peers + parsed.flows)  # type: ignore[operator]
    lines = text.count("\n") + 1
    assert all(p.location.line <= lines for p in parsed.problems if p.location.file == PATH)


@FUZZ
@given(st.binary(max_size=300))
def test_loader_on_raw_bytes(data: bytes) -> None:
    check_problems(parse_policy(PATH, data, secrets_for()).problems)


@FUZZ
@given(st.one_of(toml_ish, mutated))
def test_manual_keys_never_crash(text: str) -> None:
    keyfile, problems = parse_manual_keys(KEYS_PATH, text)
    check_problems(problems)
    assert (keyfile is None) == any(p.is_error for p in problems)


@FUZZ
@given(st.text(max_size=300))
def test_line_locator_never_crashes(text: str) -> None:
    lines = TomlLines(text)
    for name in ("peer", "flow", "sa"):
        table = lines.table_or_key(name, 0)
        assert 1 <= table.line <= text.count("\n") + 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a.toml", "b.toml", "c.toml", ".a.toml.swp"]),
            st.one_of(st.none(), toml_ish, mutated, st.sampled_from([PEER, FLOW, PEER + FLOW])),
        ),
        max_size=8,
    )
)
def test_policy_set_invariants(updates: list[tuple[str, str | None]]) -> None:
    ps = PolicySet(secrets_for())
    for name, text in updates:
        diff = ps.update(f"/etc/hostsec/policies.d/{name}", text)
        assert diff is not None
        # what is in force is consistent: every flow has its peer, names are unique
        for flow in ps.flows.values():
            assert flow.peer in ps.peers
        assert not set(ps.flows) & set(ps.peers)
        for problems in ps.problems().values():
            check_problems(problems)
