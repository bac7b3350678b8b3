"""PolicySet: files applied atomically, one by one or together; the diff the agent acts on."""

from __future__ import annotations

import pytest

from hostsec.crypto.proposals import Protocol
from hostsec.policy import PolicyDiff, PolicySet, Problem, Unreadable
from tests.unit.policy_helpers import (
    FLOW,
    KEY_GCM_1,
    KEYS_ESP,
    PEER,
    PSK,
    FakeSecrets,
    manual_sa,
    policy_path,
    secrets_for,
)

PEERS = policy_path("10-peers.toml")
FLOWS = policy_path("20-flows.toml")
OTHER = policy_path("30-other.toml")

PEER2 = (
    PEER.replace('"db1"', '"db2"')
    .replace("198.51.100.20", "198.51.100.30")
    .replace("db1.psk", "db2.psk")
)
FLOW2 = FLOW.replace('"telnet"', '"ssh"').replace("23", "22")
MANUAL = 'keying = "manual"\nmanual_keys = "../secrets/telnet.keys"\n'


def names(objects: tuple[object, ...]) -> list[str]:
    return [o.name for o in objects]  # type: ignore[attr-defined]


def messages(ps: PolicySet, path: str) -> list[str]:
    return [str(p) for p in ps.problems().get(path, ())]


def errors(ps: PolicySet, path: str) -> list[Problem]:
    return [p for p in ps.problems().get(path, ()) if p.is_error]


@pytest.fixture
def ps() -> PolicySet:
    return PolicySet(secrets_for())


def test_new_file_adds_its_peers_and_flows(ps: PolicySet) -> None:
    diff = ps.update(PEERS, PEER + FLOW)
    assert names(diff.peers_added) == ["db1"]
    assert names(diff.flows_added) == ["telnet"]
    assert diff.rejected == () and dict(diff.problems) == {}
    assert set(ps.peers) == {"db1"} and set(ps.flows) == {"telnet"}
    assert ps.source_file("telnet") == PEERS
    assert ps.peer_of("telnet").name == "db1"
    assert ps.files == (PEERS,)


def test_changed_file_replaces_and_reports_old_and_new(ps: PolicySet) -> None:
    ps.update(PEERS, PEER + FLOW)
    diff = ps.update(PEERS, PEER + FLOW + 'mode = "tunnel"\n')
    ((old, new),) = diff.flows_changed
    assert old.mode.value == "transport" and new.mode.value == "tunnel"
    assert diff.peers_changed == () and diff.flows_added == () and diff.flows_removed == ()


def test_comments_and_moves_are_not_changes(ps: PolicySet) -> None:
    ps.update(PEERS, PEER + FLOW)
    diff = ps.update(PEERS, "# a new comment\n\n" + FLOW + PEER)
    assert diff.empty
    assert ps.flows["telnet"].source.line == 4  # the object in force knows its new place


def test_syntax_error_keeps_the_last_good_version(ps: PolicySet) -> None:
    ps.update(PEERS, PEER + FLOW)
    good_flow = ps.flows["telnet"]
    diff = ps.update(PEERS, PEER + FLOW + 'mode = "tunnel\n')
    assert diff.empty
    assert diff.rejected == (PEERS,)
    assert ps.flows["telnet"] is good_flow
    found = messages(ps, PEERS)
    assert f"{PEERS}:{(PEER + FLOW).count(chr(10)) + 1}: error: syntax error" in found[1]
    assert (
        found[0] == f"{PEERS}: error: this version is not applied: the last good one stays in force"
    )
    assert diff.problems[PEERS] == ps.problems()[PEERS]
    # fixing the file applies it and clears the problems
    diff = ps.update(PEERS, PEER + FLOW + 'mode = "tunnel"\n')
    assert len(diff.flows_changed) == 1 and diff.rejected == ()
    assert ps.problems() == {}


def test_bad_file_that_never_was_good_puts_nothing_in_force(ps: PolicySet) -> None:
    diff = ps.update(PEERS, PEER + "dpd = 3\n" + FLOW)
    assert diff.empty and ps.peers == {} and ps.flows == {}
    assert any("nothing of this file is in force" in m for m in messages(ps, PEERS))
    assert PEERS in ps.known_files and PEERS not in ps.files


@pytest.mark.parametrize(
    "bad",
    [
        "",  # truncated to nothing: valid TOML, but then its flows would go: see below
        PEER + FLOW[:40],  # half-written
        PEER.replace('"db1"', "1", 1) + FLOW,  # wrong type
        Unreadable("cannot read: permission denied"),
        b"\xff\xfe",  # not text
    ],
    ids=["empty", "half", "type", "unreadable", "binary"],
)
def test_other_files_are_never_touched(ps: PolicySet, bad: str | bytes | Unreadable) -> None:
    ps.update(PEERS, PEER)
    ps.update(FLOWS, FLOW)
    ps.update(OTHER, PEER2 + FLOW2)
    peers_before, flows_before = dict(ps.peers), dict(ps.flows)
    diff = ps.update(OTHER, bad)
    if bad == "":
        # An empty file is a valid (empty) policy: its own objects go, nobody else's.
        assert names(diff.peers_removed) == ["db2"] and names(diff.flows_removed) == ["ssh"]
    else:
        assert diff.empty and diff.rejected == (OTHER,)
        assert dict(ps.peers) == peers_before and dict(ps.flows) == flows_before
    assert ps.flows["telnet"] is flows_before["telnet"]
    assert ps.peers["db1"] is peers_before["db1"]
    assert PEERS not in ps.problems() and FLOWS not in ps.problems()


def test_removal_tears_down_the_files_objects(ps: PolicySet) -> None:
    ps.update(PEERS, PEER + FLOW)
    ps.update(OTHER, PEER2 + FLOW2)
    diff = ps.update(OTHER, None)
    assert names(diff.peers_removed) == ["db2"] and names(diff.flows_removed) == ["ssh"]
    assert diff.peers_added == () and diff.flows_changed == ()
    assert set(ps.flows) == {"telnet"} and OTHER not in ps.known_files


def test_removing_a_bad_file_clears_its_problems(ps: PolicySet) -> None:
    ps.update(OTHER, "nonsense = [")
    assert OTHER in ps.problems()
    ps.update(OTHER, None)
    assert ps.problems() == {}


def test_duplicate_flow_name_across_files(ps: PolicySet) -> None:
    ps.update(PEERS, PEER + FLOW)
    text = PEER2 + FLOW.replace('"db1"', '"db2"')
    diff = ps.update(OTHER, text)
    assert diff.empty and diff.rejected == (OTHER,)
    (problem,) = errors(ps, OTHER)[1:]
    line = text.split("\n").index('name = "telnet"') + 1
    assert str(problem) == (
        f"{OTHER}:{line}: error: flow name 'telnet' is already used by the flow at "
        f"{PEERS}:{(PEER + FLOW).split(chr(10)).index('[[flow]]') + 1}"
    )
    assert ps.peers.keys() == {"db1"}  # nothing of the rejected file, not even its new peer


def test_duplicate_peer_name_across_files(ps: PolicySet) -> None:
    ps.update(PEERS, PEER)
    diff = ps.update(OTHER, PEER)
    assert diff.empty and "peer name 'db1' is already used by the peer at" in messages(ps, OTHER)[1]


def test_duplicates_in_one_batch_first_path_wins(ps: PolicySet) -> None:
    diff = ps.update_many({OTHER: PEER + FLOW, PEERS: PEER + FLOW})
    assert names(diff.flows_added) == ["telnet"] and diff.rejected == (OTHER,)
    assert ps.source_file("telnet") == PEERS


def test_flow_naming_a_missing_peer_waits_for_it(ps: PolicySet) -> None:
    diff = ps.update(FLOWS, FLOW)
    assert diff.empty and diff.rejected == (FLOWS,)
    line = FLOW.split("\n").index('peer = "db1"') + 1
    assert (
        f"{FLOWS}:{line}: error: flow 'telnet': peer 'db1' is not defined in any policy file"
        in messages(ps, FLOWS)
    )
    diff = ps.update(PEERS, PEER)  # the pending flow file is retried with it
    assert names(diff.peers_added) == ["db1"] and names(diff.flows_added) == ["telnet"]
    assert ps.problems() == {}


def test_load_order_does_not_matter(ps: PolicySet) -> None:
    diff = ps.update_many({policy_path("a-flows.toml"): FLOW, policy_path("b-peers.toml"): PEER})
    assert names(diff.flows_added) == ["telnet"] and diff.rejected == ()


def test_a_change_that_drops_a_peer_in_use_is_rejected(ps: PolicySet) -> None:
    ps.update(PEERS, PEER + PEER2)
    ps.update(FLOWS, FLOW)
    diff = ps.update(PEERS, PEER2)
    assert diff.empty and diff.rejected == (PEERS,)
    assert any("peer 'db1' is still used by flow 'telnet'" in m for m in messages(ps, PEERS))
    assert set(ps.peers) == {"db1", "db2"} and "telnet" in ps.flows


def test_a_peer_change_that_breaks_another_files_flow_is_rejected(ps: PolicySet) -> None:
    ps.update(PEERS, PEER)
    ps.update(FLOWS, FLOW)
    no_ike = PEER.replace('auth = "psk"\npsk_file = "../secrets/db1.psk"\n', "")
    diff = ps.update(PEERS, no_ike)
    assert diff.empty and diff.rejected == (PEERS,)
    assert any(
        "this version of peer 'db1' would break flow 'telnet'" in m for m in messages(ps, PEERS)
    )


def test_removing_a_peer_file_takes_down_flows_that_use_it_until_it_returns(
    ps: PolicySet,
) -> None:
    ps.update(PEERS, PEER)
    ps.update(FLOWS, FLOW)
    diff = ps.update(PEERS, None)
    assert names(diff.peers_removed) == ["db1"] and names(diff.flows_removed) == ["telnet"]
    assert any(
        "is not defined in any policy file (the flow is down)" in m for m in messages(ps, FLOWS)
    )
    diff = ps.update(PEERS, PEER)
    assert names(diff.peers_added) == ["db1"] and names(diff.flows_added) == ["telnet"]
    assert ps.problems() == {}


def test_rename_across_two_files_in_one_batch(ps: PolicySet) -> None:
    ps.update(PEERS, PEER)
    ps.update(FLOWS, FLOW)
    renamed_peer = PEER.replace('name = "db1"', 'name = "database"')
    renamed_flow = FLOW.replace('peer = "db1"', 'peer = "database"')
    diff = ps.update_many({PEERS: renamed_peer, FLOWS: renamed_flow})
    assert diff.rejected == ()
    assert names(diff.peers_removed) == ["db1"] and names(diff.peers_added) == ["database"]
    assert [new.peer for _, new in diff.flows_changed] == ["database"]


def test_rename_one_file_at_a_time(ps: PolicySet) -> None:
    ps.update(PEERS, PEER)
    ps.update(FLOWS, FLOW)
    diff = ps.update(PEERS, PEER.replace('name = "db1"', 'name = "database"'))
    assert diff.empty and diff.rejected == (PEERS,)  # db1 is still used
    diff = ps.update(FLOWS, FLOW.replace('peer = "db1"', 'peer = "database"'))
    assert diff.rejected == ()  # the pending peers file lands with it
    assert set(ps.peers) == {"database"} and ps.flows["telnet"].peer == "database"
    assert ps.problems() == {}


def test_a_bad_file_in_a_batch_does_not_hold_back_the_others(ps: PolicySet) -> None:
    diff = ps.update_many({PEERS: PEER, FLOWS: FLOW, OTHER: FLOW2.replace('"db1"', '"nobody"')})
    assert names(diff.flows_added) == ["telnet"] and diff.rejected == (OTHER,)


@pytest.mark.parametrize(
    "name",
    [
        ".10-peers.toml.swp",
        "10-peers.toml~",
        ".#10-peers.toml",
        "#10-peers.toml#",
        "4913",
        "10-peers.toml.tmp",
        ".hidden.toml",
        "notes.txt",
        "peers.swx",
    ],
)
def test_editor_temp_files_are_ignored(ps: PolicySet, name: str) -> None:
    diff = ps.update(policy_path(name), PEER + FLOW)
    assert diff.empty and diff.rejected == () and ps.problems() == {}
    assert ps.known_files == ()
    assert ps.is_ignored(policy_path(name))


def test_peer_change_lists_the_flows_to_restart(ps: PolicySet) -> None:
    ps.update(PEERS, PEER + FLOW + FLOW2)
    diff = ps.update(PEERS, PEER + 'dpd = "10s"\n' + FLOW + FLOW2 + 'mode = "tunnel"\n')
    ((old, new),) = diff.peers_changed
    assert old.dpd == 30 and new.dpd == 10
    assert names(diff.flows_of_changed_peers) == ["telnet"]  # ssh is in flows_changed
    assert names(tuple(n for _, n in diff.flows_changed)) == ["ssh"]
    assert ps.flows_of("db1") == (ps.flows["ssh"], ps.flows["telnet"])


def test_secrets_are_reread_on_update(ps: PolicySet) -> None:
    secrets = secrets_for()
    ps = PolicySet(secrets)
    ps.update(PEERS, PEER)
    secrets.files["/etc/hostsec/secrets/db1.psk"] = b"0x" + b"cd" * 32
    diff = ps.update(PEERS, PEER)  # e.g. a SIGHUP rescan: same text
    ((old, new),) = diff.peers_changed
    assert old.psk != new.psk
    assert "cdcd" not in repr(diff)


def test_secret_refused_keeps_the_old_version() -> None:
    secrets = secrets_for()
    ps = PolicySet(secrets)
    ps.update(PEERS, PEER)
    secrets.refuse["/etc/hostsec/secrets/db1.psk"] = "mode 0644 is readable by others"
    diff = ps.update(PEERS, PEER + 'dpd = "10s"\n')
    assert diff.empty and diff.rejected == (PEERS,)
    assert ps.peers["db1"].dpd == 30
    assert any("mode 0644" in m for m in messages(ps, PEERS))


def test_insecure_flow_proposal_needs_the_peers_opt_in(ps: PolicySet) -> None:
    ps.update(PEERS, PEER)
    insecure = FLOW + 'esp_proposals = ["3des-sha1"]\n'
    diff = ps.update(FLOWS, insecure)
    assert diff.rejected == (FLOWS,)
    line = insecure.split("\n").index('esp_proposals = ["3des-sha1"]') + 1
    assert any(
        m.startswith(f"{FLOWS}:{line}: error:") and "3des, sha1" in m for m in messages(ps, FLOWS)
    )
    diff = ps.update(PEERS, PEER + "allow_insecure = true\n")  # the opt-in lands the flow
    assert names(diff.flows_added) == ["telnet"]
    (warning,) = ps.problems()[FLOWS]
    assert warning.severity.value == "warning" and warning.location.line == line


def test_manual_keys_this_hosts_view_and_key_changes() -> None:
    secrets = secrets_for()
    ps = PolicySet(secrets)
    diff = ps.update(PEERS, PEER + FLOW + MANUAL)
    assert names(diff.flows_added) == ["telnet"]
    keys = ps.manual_keys("telnet")
    assert keys is not None
    out = keys.outbound_sa(Protocol.ESP)
    assert out is not None and out.spi == 0x1001 and str(out.dst) == "198.51.100.20"
    assert ps.manual_inbound_spis() == {(Protocol.ESP, 0x1002)}
    secrets.files["/etc/hostsec/secrets/telnet.keys"] = KEYS_ESP.replace(
        KEY_GCM_1[2:], "aa" * 20
    ).encode()
    diff = ps.update(PEERS, PEER + FLOW + MANUAL)
    assert names(tuple(n for _, n in diff.flows_changed)) == ["telnet"]


def test_manual_inbound_spi_collision_across_files() -> None:
    secrets = secrets_for()
    other_keys = manual_sa(spi="0x3001", encryption_key="0x" + "a1" * 20) + manual_sa(
        src="198.51.100.20", dst="198.51.100.10", spi="0x1002", encryption_key="0x" + "a2" * 20
    )
    secrets.files["/etc/hostsec/secrets/other.keys"] = other_keys.encode()
    ps = PolicySet(secrets)
    ps.update(PEERS, PEER + FLOW + MANUAL)
    other = FLOW2 + MANUAL.replace("telnet.keys", "other.keys")
    diff = ps.update(OTHER, other)
    assert diff.rejected == (OTHER,)
    line = other.split("\n").index('manual_keys = "../secrets/other.keys"') + 1
    assert any(
        m.startswith(f"{OTHER}:{line}: error:") and "inbound ESP SPI 0x00001002" in m
        for m in messages(ps, OTHER)
    )


def test_a_peer_without_auth_takes_manual_flows_only(ps: PolicySet) -> None:
    no_ike = PEER.replace('auth = "psk"\npsk_file = "../secrets/db1.psk"\n', "")
    diff = ps.update(PEERS, no_ike + FLOW + MANUAL)
    assert names(diff.flows_added) == ["telnet"]
    diff = ps.update(FLOWS, FLOW2)
    assert diff.rejected == (FLOWS,)
    assert any("keyed by IKE but peer 'db1' has no auth" in m for m in messages(ps, FLOWS))


def test_without_a_secrets_reader_manual_flows_have_no_keys() -> None:
    ps = PolicySet()
    ps.update(PEERS, PEER + FLOW + MANUAL)
    assert "telnet" in ps.flows and ps.manual_keys("telnet") is None
    assert ps.peers["db1"].psk is None


def test_diff_is_empty_when_nothing_changed(ps: PolicySet) -> None:
    ps.update(PEERS, PEER + FLOW)
    diff = ps.update(PEERS, PEER + FLOW)
    assert isinstance(diff, PolicyDiff) and diff.empty and diff.rejected == ()


def test_psk_value_is_a_secret(ps: PolicySet) -> None:
    ps.update(PEERS, PEER)
    psk = ps.peers["db1"].psk
    assert psk is not None and psk.value == bytes.fromhex(PSK.decode()[2:])
    assert "abab" not in repr(ps.peers["db1"])


def test_fake_reader_is_used_for_secrets() -> None:
    secrets = FakeSecrets({"/etc/hostsec/secrets/db1.psk": PSK})
    ps = PolicySet(secrets)
    ps.update(PEERS, PEER)
    assert secrets.reads == ["/etc/hostsec/secrets/db1.psk"]
