"""The policies in force: one last good version per file, changed atomically per file.

Sans-I/O: :meth:`PolicySet.update` takes a file's path and new text (``None``: the file
is gone) and returns a :class:`PolicyDiff` for the agent to act on. Reading files and
watching the directory live in :mod:`hostsec.policy.files` and
:mod:`hostsec.policy.watch`; secrets are read through the injected ``read_secret``.

The rules (DESIGN.md section 4):

- A file is applied whole or not at all. A bad version (syntax error, half-written, wrong
  type, a name already used by another file, a flow naming a peer that no file defines,
  a change that would leave another file's flow without its peer) is reported and the
  file's last good version stays in force (none if it never had one). Other files'
  objects are never touched by it.
- A removed file takes its peers and flows with it. A flow of another file that named
  one of its peers is then down (reported on that flow's file) until a peer of that name
  is back.
- Changes given together (:meth:`PolicySet.update_many`, e.g. a debounced batch or a
  SIGHUP rescan) are judged together, so that a peer renamed in one file and in the
  flows of another can land at once. When they do not fit together, the largest set
  that does is applied, in path order, and the others are reported.
- A version rejected only because of other files (not because of its own errors) is
  retried with every later update, so load order does not matter.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeVar

from hostsec.crypto.proposals import Protocol
from hostsec.policy.link import link_flow
from hostsec.policy.loader import ParsedFile, SecretReader, parse_policy
from hostsec.policy.manual import ManualKeys
from hostsec.policy.names import is_policy_file_name
from hostsec.policy.problems import Problem, error, sort_problems
from hostsec.policy.schema import Flow, Peer

_T = TypeVar("_T")


@dataclass(frozen=True)
class Unreadable:
    """A policy file that exists but could not be read (permissions, not a regular file)."""

    reason: str


#: What :meth:`PolicySet.update` takes for a file: its text, or None when it is gone.
Content = str | bytes | Unreadable | None


@dataclass(frozen=True)
class PolicyDiff:
    """What changed in the policies in force, by name. Apply in this order: remove flows,
    remove peers, change peers (restarting ``flows_of_changed_peers``), add peers, change
    flows, add flows."""

    peers_added: tuple[Peer, ...] = ()
    peers_removed: tuple[Peer, ...] = ()
    peers_changed: tuple[tuple[Peer, Peer], ...] = ()  # (old, new)
    flows_added: tuple[Flow, ...] = ()
    flows_removed: tuple[Flow, ...] = ()
    flows_changed: tuple[tuple[Flow, Flow], ...] = ()  # (old, new); manual keys included
    flows_of_changed_peers: tuple[Flow, ...] = ()  # unchanged flows whose peer changed
    rejected: tuple[str, ...] = ()  # files of this update whose new version is not in force
    problems: Mapping[str, tuple[Problem, ...]] = field(default_factory=dict)  # every file

    @property
    def empty(self) -> bool:
        return not (
            self.peers_added
            or self.peers_removed
            or self.peers_changed
            or self.flows_added
            or self.flows_removed
            or self.flows_changed
            or self.flows_of_changed_peers
        )


@dataclass(frozen=True)
class _View:
    """The objects in force, computed from the good version of every file."""

    peers: dict[str, Peer] = field(default_factory=dict)
    flows: dict[str, Flow] = field(default_factory=dict)
    keys: dict[str, ManualKeys] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)  # name -> file
    notes: dict[str, list[Problem]] = field(default_factory=dict)  # file -> link problems


def _kind(obj: Peer | Flow) -> str:
    return "peer" if isinstance(obj, Peer) else "flow"


class PolicySet:
    def __init__(
        self, read_secret: SecretReader | None = None, *, ignore_temp_files: bool = True
    ) -> None:
        """``read_secret(path) -> bytes`` reads PSK, private-key and manual-keys files (the
        agent passes :func:`hostsec.policy.files.read_secret_file`); without it secrets are
        neither read nor checked, and manual flows carry no keys."""
        self._read_secret = read_secret
        self._ignore_temp_files = ignore_temp_files
        self._good: dict[str, ParsedFile] = {}
        self._pending: dict[str, ParsedFile] = {}  # rejected only because of other files
        self._own: dict[str, tuple[Problem, ...]] = {}  # problems of each file's last attempt
        self._summary: dict[str, Problem] = {}  # "this version is not applied"
        self._view = _View()

    # -- queries -------------------------------------------------------------------------

    @property
    def peers(self) -> Mapping[str, Peer]:
        return MappingProxyType(self._view.peers)

    @property
    def flows(self) -> Mapping[str, Flow]:
        return MappingProxyType(self._view.flows)

    @property
    def files(self) -> tuple[str, ...]:
        """Files with a version in force."""
        return tuple(sorted(self._good))

    @property
    def known_files(self) -> tuple[str, ...]:
        """Files with a version in force or with problems (for a full rescan)."""
        return tuple(sorted(set(self._good) | set(self._own) | set(self._summary)))

    def peer_of(self, flow: Flow | str) -> Peer:
        name = flow if isinstance(flow, str) else flow.name
        return self._view.peers[self._view.flows[name].peer]

    def flows_of(self, peer: str) -> tuple[Flow, ...]:
        return tuple(f for _, f in sorted(self._view.flows.items()) if f.peer == peer)

    def manual_keys(self, flow: str) -> ManualKeys | None:
        """This host's manual SAs of ``flow`` (None for IKE flows, or secrets not read)."""
        return self._view.keys.get(flow)

    def manual_inbound_spis(self) -> frozenset[tuple[Protocol, int]]:
        """Inbound (protocol, SPI) pairs taken by manual SAs: IKE must not allocate them."""
        return frozenset(
            (sa.protocol, sa.spi) for keys in self._view.keys.values() for sa in keys.inbound
        )

    def source_file(self, name: str) -> str | None:
        """The file that defines the peer or flow ``name`` in force."""
        return self._view.owner.get(name)

    def problems(self, summary: bool = True) -> dict[str, tuple[Problem, ...]]:
        """Current problems (errors and warnings) per policy file; files without any are
        left out. A problem may point into a secrets file that the policy file names.
        With ``summary``, a rejected file also gets a line-0 error saying whether an older
        version of it is in force."""
        out: dict[str, tuple[Problem, ...]] = {}
        for path in sorted(set(self._own) | set(self._view.notes) | set(self._summary)):
            found = [*self._own.get(path, ()), *self._view.notes.get(path, ())]
            if summary and path in self._summary:
                found.append(self._summary[path])
            if found:
                out[path] = tuple(sort_problems(list(dict.fromkeys(found))))
        return out

    # -- updates -------------------------------------------------------------------------

    def is_ignored(self, path: str) -> bool:
        return self._ignore_temp_files and not is_policy_file_name(os.path.basename(path))

    def update(self, path: str, content: Content) -> PolicyDiff:
        """Apply the new ``content`` of one file (None: removed)."""
        return self.update_many({path: content})

    def update_many(self, changes: Mapping[str, Content]) -> PolicyDiff:
        """Apply several files' new contents together (see the module's rules)."""
        before = self._view
        candidates: dict[str, ParsedFile] = {}
        touched: list[str] = []
        for path, content in sorted(changes.items()):
            if self.is_ignored(path):
                continue
            touched.append(path)
            self._pending.pop(path, None)
            self._summary.pop(path, None)
            if content is None:
                self._good.pop(path, None)
                self._own.pop(path, None)
                continue
            if isinstance(content, Unreadable):
                parsed = ParsedFile(path, (), (), (error(path, 0, content.reason),))
            else:
                parsed = parse_policy(path, content, self._read_secret)
            if parsed.ok:
                candidates[path] = parsed
            else:
                self._own[path] = parsed.problems
                self._summary[path] = self._not_applied(path)
        for path, parsed in self._pending.items():
            candidates.setdefault(path, parsed)
        self._pending = {}

        fixed = {p: f for p, f in self._good.items() if p not in candidates}
        accepted, reasons = _settle(fixed, self._good, candidates, before)
        for path, parsed in candidates.items():
            if path in accepted:
                self._good[path] = parsed
                self._own[path] = parsed.problems
                self._summary.pop(path, None)
            else:
                self._pending[path] = parsed
                self._own[path] = (*parsed.problems, *reasons[path])
                self._summary[path] = self._not_applied(path)
            if not self._own[path]:
                del self._own[path]
        self._view = _build_view(self._good)
        rejected = tuple(p for p in touched if p in self._summary)
        return _diff(before, self._view, rejected, self.problems())

    def _not_applied(self, path: str) -> Problem:
        if path in self._good:
            return error(path, 0, "this version is not applied: the last good one stays in force")
        return error(path, 0, "this version is not applied: nothing of this file is in force")


def _build_view(files: Mapping[str, ParsedFile]) -> _View:
    view = _View()
    for path in sorted(files):
        for peer in files[path].peers:
            if peer.name not in view.owner:
                view.peers[peer.name] = peer
                view.owner[peer.name] = path
    spis: dict[tuple[Protocol, int], str] = {}
    for path in sorted(files):
        for flow in files[path].flows:
            if flow.name in view.owner:
                continue  # cannot happen: _settle keeps names unique
            link = link_flow(flow, view.peers.get(flow.peer))
            notes = view.notes.setdefault(path, [])
            if not link.ok:
                errors = [p for p in link.problems if p.is_error]
                first = errors[0]
                notes.append(replace(first, message=f"{first.message} (the flow is down)"))
                notes.extend(errors[1:])
                continue
            taken = [
                (sa.protocol, sa.spi)
                for sa in (link.keys.inbound if link.keys else ())
                if (sa.protocol, sa.spi) in spis
            ]
            if taken:
                notes.append(
                    error(
                        path,
                        flow.line_of("manual_keys"),
                        f"flow '{flow.name}' is down: inbound {taken[0][0].name} SPI "
                        f"0x{taken[0][1]:08x} is taken by flow '{spis[taken[0]]}'",
                    )
                )
                continue
            notes.extend(link.problems)
            view.flows[flow.name] = flow
            view.owner[flow.name] = path
            if link.keys is not None:
                view.keys[flow.name] = link.keys
                for sa in link.keys.inbound:
                    spis[(sa.protocol, sa.spi)] = flow.name
    for path in [p for p, notes in view.notes.items() if not notes]:
        del view.notes[path]
    return view


def _settle(
    fixed: Mapping[str, ParsedFile],
    good: Mapping[str, ParsedFile],
    candidates: Mapping[str, ParsedFile],
    before: _View,
) -> tuple[set[str], dict[str, list[Problem]]]:
    """Which candidate versions to apply, and why the others cannot be."""

    def state(order: list[str]) -> dict[str, ParsedFile]:
        files = dict(fixed)
        for path in candidates:
            if path in order:
                files[path] = candidates[path]
            elif path in good:
                files[path] = good[path]
        return files

    def blame(order: list[str]) -> dict[str, list[Problem]]:
        return _blame(state(order), order, good, candidates, before)

    order = sorted(candidates)
    while True:  # drop the versions that do not fit, until the rest fits together
        blamed = blame(order)
        if not blamed:
            break
        order = [p for p in order if p not in blamed]
    progress = True
    while progress:  # then add back, one by one, each that fits with those applied
        progress = False
        for path in sorted(candidates):
            if path not in order and not blame([*order, path]):
                order.append(path)
                progress = True
    reasons: dict[str, list[Problem]] = {}
    for path in candidates:
        if path not in order:
            found = blame([*order, path]).get(path)
            reasons[path] = found or [error(path, 0, "conflicts with other policy files")]
    return set(order), reasons


def _blame(
    files: Mapping[str, ParsedFile],
    order: list[str],
    good: Mapping[str, ParsedFile],
    candidates: Mapping[str, ParsedFile],
    before: _View,
) -> dict[str, list[Problem]]:
    """The new versions (in ``order``, earlier wins) that break the consistency of
    ``files``, with the reasons. Versions already in force are never blamed."""
    rank = {path: i for i, path in enumerate(order)}
    blamed: dict[str, list[Problem]] = {}

    def winner_of(claims: list[tuple[str, _T]]) -> tuple[str, _T]:
        old = [c for c in claims if c[0] not in rank]
        return old[0] if old else min(claims, key=lambda c: rank[c[0]])

    # Peers and flows share one namespace (`hostsec up NAME`).
    claims: dict[str, list[tuple[str, Peer | Flow]]] = {}
    for path in sorted(files):
        objects: list[Peer | Flow] = [*files[path].peers, *files[path].flows]
        for obj in objects:
            claims.setdefault(obj.name, []).append((path, obj))
    winners: dict[str, tuple[str, Peer | Flow]] = {}
    for name, owners in claims.items():
        _, win = winners[name] = winner_of(owners)
        for path, obj in owners:
            if obj is not win and path in rank:
                blamed.setdefault(path, []).append(
                    error(
                        path,
                        obj.line_of("name"),
                        f"{_kind(obj)} name '{name}' is already used by the {_kind(win)} at "
                        f"{win.source}",
                    )
                )
    peers = {n: obj for n, (_, obj) in winners.items() if isinstance(obj, Peer)}

    spi_claims: dict[tuple[Protocol, int], list[tuple[str, Flow]]] = {}
    for name, (path, obj) in sorted(winners.items()):
        if not isinstance(obj, Flow):
            continue
        link = link_flow(obj, peers.get(obj.peer))
        if link.ok:
            for sa in link.keys.inbound if link.keys else ():
                spi_claims.setdefault((sa.protocol, sa.spi), []).append((path, obj))
            continue
        reasons = [p for p in link.problems if p.is_error]
        if path in rank:
            blamed.setdefault(path, []).extend(reasons)
        elif before.flows.get(name) == obj and before.owner.get(name) == path:
            # A flow in force that a new version would break: blame that version.
            for culprit in order:
                new = candidates[culprit].names.get(obj.peer)
                old = good[culprit].names.get(obj.peer) if culprit in good else None
                if new is None and old is None:
                    continue
                if isinstance(new, Peer):
                    message = (
                        f"this version of peer '{obj.peer}' would break flow '{name}' "
                        f"({obj.source}): {reasons[0].message}"
                    )
                    line = new.line_of("name")
                else:
                    message = (
                        f"peer '{obj.peer}' is still used by flow '{name}' ({obj.source}): keep "
                        "it, or change that flow first (or both at once)"
                    )
                    line = 0
                blamed.setdefault(culprit, []).append(error(culprit, line, message))
    for (protocol, spi), spi_owners in spi_claims.items():
        _, win_flow = winner_of(spi_owners)
        for path, flow in spi_owners:
            if flow is not win_flow and path in rank:
                blamed.setdefault(path, []).append(
                    error(
                        path,
                        flow.line_of("manual_keys"),
                        f"flow '{flow.name}': inbound {protocol.name} SPI 0x{spi:08x} is already "
                        f"used by flow '{win_flow.name}' ({win_flow.source})",
                    )
                )
    return blamed


def _diff(
    old: _View, new: _View, rejected: tuple[str, ...], problems: dict[str, tuple[Problem, ...]]
) -> PolicyDiff:
    def changed(a: Iterable[str]) -> list[str]:
        return sorted(a)

    peers_changed = [
        (old.peers[n], new.peers[n])
        for n in changed(old.peers.keys() & new.peers.keys())
        if old.peers[n] != new.peers[n]
    ]
    flows_changed = [
        (old.flows[n], new.flows[n])
        for n in changed(old.flows.keys() & new.flows.keys())
        if old.flows[n] != new.flows[n] or old.keys.get(n) != new.keys.get(n)
    ]
    changed_peers = {p.name for p, _ in peers_changed}
    changed_flows = {f.name for f, _ in flows_changed}
    return PolicyDiff(
        peers_added=tuple(new.peers[n] for n in changed(new.peers.keys() - old.peers.keys())),
        peers_removed=tuple(old.peers[n] for n in changed(old.peers.keys() - new.peers.keys())),
        peers_changed=tuple(peers_changed),
        flows_added=tuple(new.flows[n] for n in changed(new.flows.keys() - old.flows.keys())),
        flows_removed=tuple(old.flows[n] for n in changed(old.flows.keys() - new.flows.keys())),
        flows_changed=tuple(flows_changed),
        flows_of_changed_peers=tuple(
            new.flows[n]
            for n in changed(old.flows.keys() & new.flows.keys())
            if n not in changed_flows and new.flows[n].peer in changed_peers
        ),
        rejected=rejected,
        problems=MappingProxyType(problems),
    )
