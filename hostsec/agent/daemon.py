"""The agent: one asyncio loop wiring policy, the OS, the data path and IKE together.

    policy files --(PolicySet diff)--> flows: routing rule + firewall + SPD entry
                                        keys: manual SAs, or IKE (trap / start / up)
    IKE events ---> SAs installed in the data-path workers
    data-path events (acquire, lifetimes) ---> IKE
    control socket ---> status, up, down, keys, rescan

Everything that decides lives in the sans-I/O layers; this module only moves information
between them and the OS, and logs one line per event (never a secret).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hostsec import __version__
from hostsec.agent import messages as m
from hostsec.agent.config import AgentConfig
from hostsec.agent.control import ControlError, ControlServer, socket_path
from hostsec.agent.datapath import DataPath
from hostsec.agent.translate import (
    IkeCredentials,
    child_config,
    flow_match,
    flow_selectors,
    ike_config,
    ike_sa_configs,
    manual_sa_configs,
    moved_config,
    with_volume_lifetimes,
)
from hostsec.agent.wireshark import esp_sa_lines, ikev2_lines
from hostsec.crypto.certs import (
    CertificateError,
    Identity,
    TrustStore,
    load_credentials,
)
from hostsec.crypto.proposals import Protocol
from hostsec.ike.v2.config import CertAuth, Retransmit
from hostsec.ike.v2.events import (
    AuthenticationFailed,
    ChildSADown,
    ChildSAFailed,
    ChildSAUp,
    IkeEndpointChanged,
    IkeSADown,
    IkeSAUp,
    Log,
    NatKeepalive,
    Transmit,
)
from hostsec.ike.v2.manager import IkeManager
from hostsec.ipsec.dataplane import Acquire
from hostsec.ipsec.sa import LifetimeExpired, Mode, SAConfig
from hostsec.platform.api import FlowMatch
from hostsec.platform.linux.firewall import FirewallConfig, NftablesFirewall
from hostsec.platform.linux.routing import LinuxPolicyRouter, RoutingConfig
from hostsec.platform.linux.sockets import UdpSocket
from hostsec.platform.linux.sysctl import ipv6_available
from hostsec.platform.linux.tun import LinuxTun, TunConfig
from hostsec.policy import (
    Auth,
    Flow,
    Keying,
    Peer,
    PolicyDiff,
    PolicySet,
    Start,
    read_policy_file,
    read_secret_file,
    scan_directory,
)
from hostsec.policy.watch import PolicyWatcher
from hostsec.wire.udpencap import NAT_KEEPALIVE

log = logging.getLogger("hostsec")
_T = TypeVar("_T")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
LINGER = 5.0  # seconds an inbound SA outlives its replacement or deletion (in-flight packets)
IDLE_CHECK = 5.0  # seconds between looks at the data path's counters (idle, liveness)


@dataclass
class InstalledSA:
    """What the agent knows of an SA it installed (for status and Wireshark keys)."""

    flow: str
    peer: str
    config: SAConfig
    keying: str  # "manual" or "ike"
    installed: float
    ike: str = ""


@dataclass
class FlowState:
    flow: Flow
    peer: Peer
    local: IPAddress
    state: str = "down"  # down, trap, acquiring, up, failed
    error: str = ""
    outbound_spi: int | None = None
    inbound: list[tuple[Protocol, int]] = field(default_factory=list)
    last_packets: int = -1  # packets both ways at the last idle check
    idle_since: float = 0.0


@dataclass
class IkeRecord:
    peer: str
    spi_i: bytes
    spi_r: bytes
    initiator: bool
    proposal: str
    local: str
    remote: str
    local_id: str
    remote_id: str
    established: float
    nat: str


def local_address_for(peer: IPAddress) -> IPAddress:
    """The source address the kernel would use towards ``peer`` (a connected UDP socket
    asks the routing table; nothing is sent)."""
    family = socket.AF_INET if peer.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((str(peer), 9))
        return ipaddress.ip_address(probe.getsockname()[0])


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.policies = PolicySet(read_secret=self._read_secret)
        self.flows: dict[str, FlowState] = {}
        self.sas: dict[tuple[Protocol, int, str], InstalledSA] = {}  # (proto, spi, "in"/"out")
        self.ike_records: dict[tuple[bytes, bytes], IkeRecord] = {}
        # Outbound halves of pairs not sent on yet, by the pair's inbound SPI.
        self.pending_out: dict[int, tuple[str, str, SAConfig]] = {}
        # Each IKE pair by its outbound SPI (its inbound one), and what it rekeyed.
        self.pair_of_out: dict[int, int] = {}
        self.pair_replaces: dict[int, int | None] = {}
        self.auth_failures: dict[str, str] = {}
        self.errors: list[str] = []
        self.started = time.monotonic()
        self.stop_event = asyncio.Event()
        self.exit_code = 0
        self.ike = IkeManager(reserved_spis=self.policies.manual_inbound_spis)
        # pyroute2's synchronous API runs an event loop of its own: it cannot run in the
        # agent's asyncio thread. Every routing/firewall call goes to one OS thread.
        self._os = ThreadPoolExecutor(1, thread_name_prefix="hostsec-os")
        self.router: LinuxPolicyRouter = self._os_call(
            LinuxPolicyRouter,
            RoutingConfig(
                tun=config.interface,
                table_base=config.table_base,
                priority=config.rule_priority,
            ),
        )
        self.firewall = NftablesFirewall(
            FirewallConfig(table=config.nft_table, tun=config.interface)
        )
        self.tun: LinuxTun | None = None
        self.nat_t: dict[int, UdpSocket] = {}  # UDP 4500 by IP version
        self.ike500: dict[int, UdpSocket] = {}  # UDP 500 by IP version
        self.ipv6 = False
        self.datapath: DataPath | None = None
        self.control: ControlServer | None = None
        self.watcher: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._linger: list[asyncio.TimerHandle] = []
        self._idle_task: asyncio.Task[None] | None = None
        self.trust: TrustStore | None = None
        self._retransmit = Retransmit(
            config.retransmit_timeout, config.retransmit_base, config.retransmit_tries
        )
        # `up` requests waiting for flows, by flow: futures set to the time the flow came
        # up or failed (time.monotonic()).
        self._waiters: dict[str, list[asyncio.Future[float]]] = {}

    def _os_call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run a routing/firewall operation on the OS thread and wait for it."""
        return self._os.submit(fn, *args).result()

    # ------------------------------------------------------------------ life cycle

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        try:
            self._setup()
            await self.stop_event.wait()
        finally:
            await self._teardown()
        return self.exit_code

    def _setup(self) -> None:
        cfg = self.config
        assert self._loop is not None
        log.info(
            "hostsec %s starting (config %s, run %s)", __version__, cfg.config_dir, cfg.run_dir
        )
        cfg.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (cfg.run_dir / "agent.pid").write_text(f"{os.getpid()}\n")
        # Make-before-break: start() finds what a previous run left; its blackholes keep the
        # flows dropped until drop_leftovers() below.
        self._os_call(self.router.start)
        self._os_call(self.firewall.start)
        # virtio-net header: the inbound worker writes TCP super-packets (GSO); no TSO
        # reads, whose checksums would have to be computed in Python (hostsec.agent.worker)
        self.ipv6 = ipv6_available()
        self.tun = self._os_call(
            LinuxTun, TunConfig(name=cfg.interface, mtu=cfg.mtu, vnet_hdr=True, ipv6=self.ipv6)
        )
        # IKE on UDP 500 (here) and 4500 (received by the inbound worker, which also gets
        # ESP in UDP there), for IPv4 and, when the host has it, IPv6.
        versions = (4, 6) if self.ipv6 else (4,)
        for version in versions:
            self.nat_t[version] = UdpSocket(version, 4500)
            ike = self.ike500[version] = UdpSocket(version, 500)
            ike.setblocking(False)
            self._loop.add_reader(ike.fileno(), self._ike_readable, ike)
        self.datapath = DataPath(
            self.tun.fileno(),
            {v: sock.fileno() for v, sock in self.nat_t.items()},
            self.ipv6,
            self._on_worker_message,
            self._on_worker_death,
        )
        self.datapath.start(self._loop)
        self._load_trust()
        diff = self.policies.update_many(scan_directory(str(cfg.policy_dir)))
        self._apply(diff)
        self._os_call(self.router.drop_leftovers)
        self._os_call(self.firewall.drop_leftovers)
        self._start_watcher()
        self.control = ControlServer(
            socket_path(cfg.run_dir),
            {
                "status": self._cmd_status,
                "up": self._cmd_up,
                "down": self._cmd_down,
                "rekey": self._cmd_rekey,
                "keys": self._cmd_keys,
                "rescan": self._cmd_rescan,
            },
        )
        self._loop.create_task(self.control.start())
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self.stop, f"signal {sig.name}")
        self._loop.add_signal_handler(signal.SIGHUP, self.rescan)
        self._schedule_timer()
        self._idle_task = self._loop.create_task(self._idle_loop())
        log.info("agent ready: %d peers, %d flows", len(self.policies.peers), len(self.flows))

    def stop(self, why: str = "stop requested") -> None:
        log.info("stopping: %s", why)
        self.stop_event.set()

    async def _teardown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._idle_task is not None:
            self._idle_task.cancel()
        for handle in self._linger:
            handle.cancel()
        if self.watcher is not None:
            with contextlib.suppress(Exception):
                self.watcher.stop()
        # Tell peers we are going (best effort), then take the data path down.
        for peer in list(self.policies.peers):
            self.ike.delete_peer(peer, time.monotonic())
        self._flush_ike()
        if self.control is not None:
            await self.control.close()
        if self.datapath is not None:
            self.datapath.stop()
        loop = self._loop
        for sock in (*self.ike500.values(), *self.nat_t.values()):
            if sock is not None:
                if loop is not None:
                    with contextlib.suppress(Exception):
                        loop.remove_reader(sock.fileno())
                sock.close()
        with contextlib.suppress(Exception):
            self._os_call(self.firewall.stop)
        with contextlib.suppress(Exception):
            self._os_call(self.router.stop)
        if self.tun is not None:
            with contextlib.suppress(Exception):
                self._os_call(self.tun.close)
        with contextlib.suppress(Exception):
            self._os_call(self.router.close)
        self._os.shutdown(wait=True)
        with contextlib.suppress(FileNotFoundError):
            (self.config.run_dir / "agent.pid").unlink()
        log.info("stopped")

    def _on_worker_death(self, what: str) -> None:
        log.error("data path failure: %s; stopping (flows stay blocked)", what)
        self.exit_code = 1
        self.stop(what)

    # ------------------------------------------------------------------ secrets and trust

    def _read_secret(self, path: str) -> bytes:
        return read_secret_file(path)

    def _load_trust(self) -> None:
        cacerts = self.config.cacerts or self.config.config_dir / "cacerts"
        if cacerts.is_dir():
            try:
                self.trust = TrustStore.from_directory(cacerts)
            except CertificateError as exc:
                log.warning("trust store: %s", exc.reason)
                return
            for problem in self.trust.load_errors:
                log.warning("trust store: %s", problem)

    # ------------------------------------------------------------------ policy

    def _start_watcher(self) -> None:
        policy_dir = self.config.policy_dir
        if not policy_dir.is_dir():
            log.warning("%s does not exist: no policies", policy_dir)
            return
        loop = self._loop
        assert loop is not None

        def changed(paths: set[str]) -> None:
            loop.call_soon_threadsafe(self._policy_changed, paths)

        self.watcher = PolicyWatcher(str(policy_dir), changed)
        self.watcher.start()

    def _policy_changed(self, paths: set[str]) -> None:
        diff = self.policies.update_many({p: read_policy_file(p) for p in paths})
        self._apply(diff)

    def rescan(self) -> None:
        log.info("rescanning %s", self.config.policy_dir)
        diff = self.policies.update_many(
            scan_directory(str(self.config.policy_dir), self.policies.known_files)
        )
        self._apply(diff)

    def _apply(self, diff: PolicyDiff) -> None:
        for problems in diff.problems.values():
            for problem in problems:
                log.warning("%s", problem)
        for path in diff.rejected:
            log.warning("%s: not applied; its previous version (if any) stays in force", path)
        now = time.monotonic()
        restart = {f.name for f in diff.flows_of_changed_peers}
        removing = [f.name for f in diff.flows_removed]
        removing += [old.name for old, _new in diff.flows_changed]
        removing += sorted(restart)
        if removing:
            self._remove_flows(list(dict.fromkeys(removing)), now)
        for gone in diff.peers_removed:
            self.ike.delete_peer(gone.name, now)
        for old_peer, _new_peer in diff.peers_changed:
            self.ike.delete_peer(old_peer.name, now)
        self._sync_ike_configs()
        adding = [new for _old, new in diff.flows_changed] + list(diff.flows_added)
        adding += [f for name in restart if (f := self.policies.flows.get(name)) is not None]
        if adding:
            self._add_flows(list({f.name: f for f in adding}.values()), now)
        self._flush_ike()
        self._schedule_timer()

    def _credentials(self, peer: Peer) -> IkeCredentials:
        if peer.auth is Auth.PSK:
            psk = peer.psk.value if peer.psk is not None else None
            if not psk:
                raise ValueError(f"peer {peer.name}: pre-shared key not available")
            return IkeCredentials(psk=psk)
        cert_path = Path(peer.cert) if peer.cert else self.config.certificate
        key_path = Path(peer.key) if peer.key else self.config.private_key
        if cert_path is None or key_path is None:
            raise ValueError(f"peer {peer.name}: no certificate/key configured")
        if self.trust is None:
            raise ValueError("no trusted CA certificates (cacerts/)")
        try:
            creds = load_credentials(cert_path, key_path)
        except CertificateError as exc:
            raise ValueError(exc.reason) from None
        return IkeCredentials(cert_auth=CertAuth(creds, self.trust))

    def _sync_ike_configs(self) -> None:
        configs = []
        for peer in self.policies.peers.values():
            if peer.auth is None:
                continue
            if peer.ike_version != 2:
                log.error("peer %s: IKEv1 is not implemented yet; its flows stay down", peer.name)
                continue
            flows = [f for f in self.policies.flows_of(peer.name) if f.keying is Keying.IKE]
            try:
                local = peer.local_address or local_address_for(peer.address)
                creds = self._credentials(peer)
                own: Identity | None = None
                configs.append(
                    ike_config(
                        peer, flows, local, creds, own, self._retransmit, self.config.nat_keepalive
                    )
                )
            except (ValueError, OSError, CertificateError) as exc:
                log.error("peer %s: cannot configure IKE: %s", peer.name, exc)
        self.ike.set_configs(configs)

    def _add_flows(self, flows: list[Flow], now: float) -> None:
        """Install ``flows``: their firewall rules in one transaction, then each one's
        routing, then one read-back of all their rules (an agent starting with hundreds of
        flows pays for each step once, not once per flow)."""
        assert self.datapath is not None
        ready: list[tuple[FlowState, FlowMatch]] = []
        for flow in flows:
            peer = self.policies.peer_of(flow)
            try:
                local = peer.local_address or local_address_for(peer.address)
            except OSError as exc:
                log.error("flow %s: no route to %s: %s", flow.name, peer.address, exc)
                continue
            state = FlowState(flow, peer, local)
            self.flows[flow.name] = state
            ready.append((state, flow_match(flow, peer)))
        # Firewall first: if steering a flow into the TUN fails, its plaintext is still
        # dropped both ways (fail closed).
        required = [match for state, match in ready if state.flow.require]
        try:
            if required:
                self._os_call(self.firewall.add_flows, required)
        except Exception as exc:  # the OS refused: keep the agent, report the flows
            for state, _match in ready:
                self._flow_failed(state, f"cannot install firewall rules: {exc}")
            return
        routed: list[FlowState] = []
        for state, match in ready:
            try:
                self._os_call(self.router.add_flow, match, state.local, self.config.mtu, False)
            except Exception as exc:
                self._flow_failed(state, f"cannot install routing: {exc}")
                continue
            routed.append(state)
        names = [state.flow.name for state in routed]
        problems = self._os_call(self.router.verify, names) if names else {}
        for state in routed:
            problem = problems.get(state.flow.name)
            if problem is not None:
                with contextlib.suppress(Exception):
                    self._os_call(self.router.remove_flow, state.flow.name)
                self._flow_failed(state, f"cannot install routing: {problem}")
                continue
            self._start_flow(state, now)

    def _flow_failed(self, state: FlowState, why: str) -> None:
        log.error("flow %s: %s", state.flow.name, why)
        state.state, state.error = "failed", why

    def _start_flow(self, state: FlowState, now: float) -> None:
        """The flow is routed: hand it to the data path and key it."""
        assert self.datapath is not None
        flow, peer = state.flow, state.peer
        self.datapath.to_out(m.AddFlow(flow.name, flow_selectors(flow, peer, state.local)))
        if flow.keying is Keying.MANUAL:
            keys = self.policies.manual_keys(flow.name)
            if keys is None:
                state.state, state.error = "failed", "manual keys not available"
                return
            outbound, inbound = manual_sa_configs(flow, peer, keys, state.local)
            self._install(flow.name, peer.name, outbound, inbound, "manual", now)
            state.state = "up"
        else:
            state.state = "trap"
            if flow.start is Start.START:
                self._initiate(flow.name, now)
        log.info(
            "flow %s: %s %s to %s (%s, %s keying)",
            flow.name, flow.protection, flow.mode.value, peer.address, state.state, flow.keying,
        )  # fmt: skip

    def _remove_flows(self, names: list[str], now: float) -> None:
        """Take ``names`` out of the data path and IKE, then their routing and firewall
        rules, each of those once for all of them."""
        assert self.datapath is not None
        gone: list[str] = []
        for name in names:
            state = self.flows.pop(name, None)
            if state is None:
                continue
            gone.append(name)
            self.datapath.to_out(m.RemoveFlow(name))
            for key, sa in list(self.sas.items()):
                if sa.flow == name:
                    if key[2] == "in":
                        self.datapath.to_in(m.RemoveInbound(key[0], key[1]))
                    del self.sas[key]
            if state.flow.keying is Keying.IKE:
                self.ike.delete_child(state.peer.name, name, now)
        if not gone:
            return
        for remove in (self.router.remove_flows, self.firewall.remove_flows):
            try:
                self._os_call(remove, gone)
            except Exception as exc:  # what is left still fails closed
                log.error("removing flows %s: %s", ", ".join(gone), exc)
        for name in gone:
            log.info("flow %s removed", name)

    def _install(
        self,
        flow: str,
        peer: str,
        outbound: list[SAConfig],
        inbound: list[SAConfig],
        keying: str,
        now: float,
        ike: str = "",
    ) -> None:
        assert self.datapath is not None
        if inbound:
            self.datapath.to_in(m.InstallInbound(inbound))
            for c in inbound:
                self.sas[(c.protocol, c.spi, "in")] = InstalledSA(flow, peer, c, keying, now, ike)
        if outbound:
            self.datapath.to_out(m.InstallOutbound(flow, outbound))
            # A manual SA replaces its predecessor; an IKE one stays known until its
            # ChildSADown (after a rekey collision the pair installed last may be the
            # redundant one, and the survivor must take over again when it goes).
            for key in [k for k, v in self.sas.items() if v.flow == flow and k[2] == "out"]:
                if keying == "manual" or self.sas[key].keying == "manual":
                    del self.sas[key]
            for c in outbound:
                self.sas[(c.protocol, c.spi, "out")] = InstalledSA(flow, peer, c, keying, now, ike)
        state = self.flows.get(flow)
        if state is not None:
            state.state = "up"
            state.error = ""
            if outbound:
                state.outbound_spi = outbound[0].spi

    # ------------------------------------------------------------------ IKE

    def _initiate(self, flow_name: str, now: float) -> None:
        state = self.flows.get(flow_name)
        if state is None or state.flow.keying is not Keying.IKE:
            return
        if state.state == "up" and state.outbound_spi is not None:
            return  # an acquire that raced with an install: the flow has its SA
        peer = state.peer
        config = self.ike.configs.get(peer.name)
        if config is None:
            why = (
                "IKEv1 is not implemented yet"
                if peer.ike_version != 2
                else "IKE could not be configured for its peer (see the log)"
            )
            state.state, state.error = "failed", why
            return
        child = child_config(state.flow, peer, state.local)
        state.state = "acquiring"
        self.ike.initiate(peer.name, [child], now, local=(state.local, 500))
        self._flush_ike()

    def _ike_readable(self, sock: UdpSocket) -> None:
        for _ in range(64):
            try:
                dgram = sock.recv()
            except BlockingIOError:
                break
            except OSError as exc:
                log.warning("IKE socket: %s", exc)
                break
            if dgram.dst is None:
                continue
            now = time.monotonic()
            self.ike.handle_datagram(
                dgram.payload, (dgram.src, dgram.sport), (dgram.dst, dgram.dport), now
            )
        self._flush_ike()
        self._schedule_timer()

    def _flush_ike(self) -> None:
        # Events first: a responder's new inbound SA is installed before the IKE response
        # that lets the initiator send ESP leaves (no first packet lost to "unknown SPI").
        for _ in range(4):  # handling events may produce more (e.g. a delete)
            out, events = self.ike.poll()
            for event in events:
                self._on_ike_event(event)
            for item in out:
                self._send_ike(item)
            if not events and not out:
                break
        if self._waiters:
            self._wake_waiters()

    def _send_ike(self, item: Transmit | NatKeepalive) -> None:
        local, remote = item.local, item.remote
        data = item.data if isinstance(item, Transmit) else NAT_KEEPALIVE
        sockets = self.nat_t if local[1] == 4500 else self.ike500
        sock = sockets.get(remote[0].version)
        if sock is None:
            log.warning("no IPv%d socket for IKE to %s", remote[0].version, remote[0])
            return
        try:
            sock.send(data, remote[0], remote[1], source=local[0])
        except OSError as exc:
            log.warning("cannot send IKE to %s:%d: %s", remote[0], remote[1], exc)

    def _on_ike_event(self, event: object) -> None:
        now = time.monotonic()
        if isinstance(event, Log):
            level = logging.WARNING if event.level == "warning" else logging.INFO
            log.log(level, "ike %s: %s", event.ike, event.message)
        elif isinstance(event, IkeSAUp):
            nat = "local" if event.nat_local else "remote" if event.nat_remote else ""
            self.ike_records[(event.spi_i, event.spi_r)] = IkeRecord(
                event.ike, event.spi_i, event.spi_r, event.initiator, str(event.proposal),
                f"{event.local[0]}:{event.local[1]}", f"{event.remote[0]}:{event.remote[1]}",
                event.local_id, event.remote_id, now, nat,
            )  # fmt: skip
            self.auth_failures.pop(event.ike, None)
            log.info(
                "IKE SA %s up: %s_i %s_r %s %s <-> %s %s",
                event.ike, event.spi_i.hex(), event.spi_r.hex(), event.proposal,
                event.local_id, event.remote_id, f"(NAT: {nat})" if nat else "",
            )  # fmt: skip
        elif isinstance(event, IkeSADown):
            was_up = self.ike_records.pop((event.spi_i, event.spi_r), None) is not None
            log.info("IKE SA %s down: %s", event.ike, event.reason)
            if not was_up:
                # It never came up (refused, no answer): the flows waiting on it say why;
                # their next packet (or `hostsec up`) tries again.
                for state in self.flows.values():
                    if state.peer.name == event.ike and state.state == "acquiring":
                        state.state = "failed"
                        state.error = f"IKE SA not established: {event.reason}"
        elif isinstance(event, AuthenticationFailed):
            self.auth_failures[event.ike] = event.reason
            log.warning("IKE SA %s: authentication failed: %s", event.ike, event.reason)
            for state in self.flows.values():
                if state.peer.name == event.ike and state.flow.keying is Keying.IKE:
                    state.state, state.error = "failed", f"authentication failed: {event.reason}"
        elif isinstance(event, IkeEndpointChanged):
            self._endpoint_changed(event)
        elif isinstance(event, ChildSAUp):
            self._child_up(event, now)
        elif isinstance(event, ChildSADown):
            self._child_down(event)
        elif isinstance(event, ChildSAFailed):
            failed = self.flows.get(event.child)
            if failed is not None:
                failed.state, failed.error = "failed", event.reason
            log.warning("CHILD SA %s/%s failed: %s", event.ike, event.child, event.reason)

    def _child_up(self, event: ChildSAUp, now: float) -> None:
        outbound, inbound = ike_sa_configs(event)
        state = self.flows.get(event.child)
        if state is None:
            log.warning("CHILD SA %s for an unknown flow: deleting it", event.child)
            self.ike.delete_child(event.ike, event.child, now)
            return
        # Volume lifetimes count on our SAs (RFC 4301 4.4.2.1): rekey between 80 and 90 %
        # of them, at random, so that both ends do not rekey at once.
        flow = state.flow
        outbound, inbound = (
            with_volume_lifetimes(
                c, flow.lifetime_bytes, flow.lifetime_packets, random.uniform(0.8, 0.9)
            )
            for c in (outbound, inbound)
        )
        # Our own rekey of a pair that the peer rekeyed too (we answered it, and its pair
        # waits or is already sent on): a collision (RFC 7296 2.8.1). Keep sending where we
        # do; ChildSADown.replaced_by names the survivor. Switching now would leave, if our
        # pair loses, only an outbound SA already used to go back to, and reinstalling it
        # restarts its sequence numbers: the peer drops them as replays.
        self.pair_of_out[event.spi_out] = event.spi_in
        self.pair_replaces[event.spi_in] = event.replaces
        rivals = [spi for spi, p in self.pending_out.items() if p[0] == event.child]
        if state.outbound_spi in self.pair_of_out:
            rivals.append(self.pair_of_out[state.outbound_spi])
        collision = event.replaces is not None and any(
            spi != event.spi_in and self.pair_replaces.get(spi, -1) == event.replaces
            for spi in rivals
        )
        if event.outbound and not collision:
            self._install(event.child, event.ike, [outbound], [inbound], "ike", now, event.ike)
        else:
            # We answered a rekey: the peer can only receive on the new pair once our answer
            # has arrived, so keep sending on the old pair until it goes (RFC 7296 2.8).
            self._install(event.child, event.ike, [], [inbound], "ike", now, event.ike)
            self.pending_out[event.spi_in] = (event.child, event.ike, outbound)
        log.info(
            "CHILD SA %s up: %s %s in 0x%08x out 0x%08x %s%s%s",
            event.child, event.protocol.name, event.mode.value, event.spi_in, event.spi_out,
            event.proposal, " udp-encap" if event.encapsulation else "",
            f" (rekey of 0x{event.replaces:08x})" if event.replaces else "",
        )  # fmt: skip

    def _endpoint_changed(self, event: IkeEndpointChanged) -> None:
        """The peer's NAT mapping changed (RFC 7296 2.23): its CHILD SAs' ESP in UDP goes to
        the new address and port, on the same SAs (sequence numbers and replay windows
        kept). Inbound SAs do not look at the outer ports: only the records change."""
        (old_addr, old_port), (address, port) = event.old, event.new
        record = self.ike_records.get((event.spi_i, event.spi_r))
        if record is not None:
            record.remote = f"{address}:{port}"
        spis: list[int] = []
        transport = False
        for (_proto, spi, direction), sa in self.sas.items():
            if sa.keying == "ike" and sa.ike == event.ike and sa.config.encapsulation:
                sa.config = moved_config(sa.config, address, port)
                transport |= sa.config.mode is Mode.TRANSPORT
                if direction == "out":
                    spis.append(spi)
        for spi_in, (flow, ike, config) in list(self.pending_out.items()):
            if ike == event.ike:
                self.pending_out[spi_in] = (flow, ike, moved_config(config, address, port))
        if spis and self.datapath is not None:
            self.datapath.to_out(m.MoveOutbound(tuple(spis), address.packed, port))
        log.info(
            "IKE SA %s: peer behind a NAT moved from %s:%d to %s:%d; %d outbound SA(s) follow%s",
            event.ike, old_addr, old_port, address, port, len(spis),
            " (transport mode: its selectors still name the old address)"
            if transport and address != old_addr else "",
        )  # fmt: skip

    def _child_down(self, event: ChildSADown) -> None:
        assert self.datapath is not None and self._loop is not None
        log.info(
            "CHILD SA %s down: in 0x%08x out 0x%08x (%s)",
            event.child, event.spi_in, event.spi_out, event.reason,
        )  # fmt: skip
        state = self.flows.get(event.child)
        self.pending_out.pop(event.spi_in, None)  # a pair never sent on
        self.pair_replaces.pop(event.spi_in, None)
        key_out = (event.protocol, event.spi_out, "out")
        if key_out in self.sas:  # the pair the flow sends on
            del self.sas[key_out]
            if state is not None and state.outbound_spi == event.spi_out:
                # The flow sent on this pair. Its successor (the pair we answered a rekey
                # with, kept back until now) or another pair of the flow still up (the
                # survivor of a rekey collision) carries it from now on; installing it
                # replaces the carrier at once, with no gap in which a packet is held.
                successor = (
                    self.pending_out.pop(event.replaced_by, None)
                    if event.replaced_by is not None
                    else None
                )
                others = [
                    sa
                    for k, sa in self.sas.items()
                    if sa.flow == event.child and k[2] == "out" and sa.keying == "ike"
                ]
                if successor is not None:
                    flow, ike, config = successor
                    self._install(flow, ike, [config], [], "ike", time.monotonic(), ike)
                    log.info("flow %s: outbound now on 0x%08x", event.child, config.spi)
                elif others:
                    survivor = max(others, key=lambda sa: sa.installed)
                    self.datapath.to_out(m.InstallOutbound(event.child, [survivor.config]))
                    state.outbound_spi = survivor.config.spi
                    log.info("flow %s: outbound now on 0x%08x", event.child, survivor.config.spi)
                else:
                    self.datapath.to_out(m.UninstallOutbound(event.child, event.spi_out))
                    state.outbound_spi = None
                    # Back to trap, unless the SA went with a failure (authentication) that
                    # the flow's state shows until the next attempt.
                    if state.state != "failed":
                        state.state = "trap"
        self.pair_of_out.pop(event.spi_out, None)
        # The inbound half lingers a little for packets still in flight (RFC 7296 2.8).
        key_in = (event.protocol, event.spi_in, "in")

        def remove() -> None:
            if self.datapath is not None:
                self.datapath.to_in(m.RemoveInbound(event.protocol, event.spi_in))
            self.sas.pop(key_in, None)

        self._linger.append(self._loop.call_later(LINGER, remove))

    # ------------------------------------------------------------------ workers

    def _on_worker_message(self, message: object) -> None:
        now = time.monotonic()
        if isinstance(message, m.IkeDatagram):
            src = ipaddress.ip_address(message.src.split("%", 1)[0])
            dst = ipaddress.ip_address(message.dst) if message.dst else None
            if dst is not None:
                self.ike.handle_datagram(message.data, (src, message.src_port), (dst, 4500), now)
                self._flush_ike()
                self._schedule_timer()
        elif isinstance(message, m.Events):
            for event in message.events:
                if isinstance(event, Acquire):
                    state = self.flows.get(event.flow)
                    if (
                        state is not None
                        and state.flow.keying is Keying.IKE
                        and state.flow.start is not Start.MANUAL
                    ):
                        log.info("flow %s: first packet, starting IKE", event.flow)
                        self._initiate(event.flow, now)
                elif isinstance(event, LifetimeExpired):
                    self._sa_lifetime(event, now)
        elif isinstance(message, m.Error):
            log.error("data path: %s", message.message)

    def _sa_lifetime(self, event: LifetimeExpired, now: float) -> None:
        direction = "in" if event.direction.value == "in" else "out"
        installed = next(
            (v for k, v in self.sas.items() if k[1] == event.spi and k[2] == direction), None
        )
        if installed is None or installed.keying != "ike":
            if event.hard:
                log.warning("SA 0x%08x reached its hard %s lifetime", event.spi, event.cause)
            return
        sa = self.ike.sa_for(installed.peer)
        if sa is None:
            return
        spi_in = (
            installed.config.spi
            if direction == "in"
            else next((c.spi_in for c in sa.children.values() if c.spi_out == event.spi), None)
        )
        if spi_in is None:
            return
        if event.hard:
            sa.delete_child(spi_in, now, reason=f"hard {event.cause} lifetime")
        else:
            sa.rekey_child(spi_in, now)
        self._flush_ike()

    # ------------------------------------------------------------------ timers

    def _schedule_timer(self) -> None:
        if self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        when = self.ike.next_timer()
        delay = 1.0
        if when is not None:
            delay = max(0.0, min(delay, when - time.monotonic()))
        self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        now = time.monotonic()
        self.ike.handle_timer(now)
        self._flush_ike()
        self._schedule_timer()

    async def _idle_loop(self) -> None:
        """Every few seconds, from the data path's counters: tell IKE which peers sent
        protected traffic (no liveness check is needed while they do, RFC 7296 2.4), and
        delete the CHILD SAs of flows idle for their idle_timeout (DESIGN.md 1.5: the flow
        falls back to its trap)."""
        inbound_seen: dict[str, int] = {}
        while True:
            await asyncio.sleep(IDLE_CHECK)
            ike_flows = [
                s for s in self.flows.values() if s.flow.keying is Keying.IKE and s.state == "up"
            ]
            if not ike_flows or self.datapath is None:
                continue
            out_stats, in_stats = await self.datapath.stats()
            now = time.monotonic()
            in_sas = in_stats.get("sas", {})
            per_peer: dict[str, int] = {}
            for (_proto, spi, direction), sa in self.sas.items():
                if direction == "in" and sa.keying == "ike":
                    packets = in_sas.get(spi, {}).get("packets", 0)
                    per_peer[sa.peer] = per_peer.get(sa.peer, 0) + packets
            for peer, packets in per_peer.items():
                if packets != inbound_seen.get(peer):
                    inbound_seen[peer] = packets
                    self.ike.note_traffic(peer, now)
            for state in ike_flows:
                if not state.flow.idle_timeout:
                    continue
                name = state.flow.name
                packets = out_stats.get("flows", {}).get(name, {}).get("packets", 0)
                packets += sum(
                    in_sas.get(spi, {}).get("packets", 0)
                    for (_proto, spi, direction), sa in self.sas.items()
                    if sa.flow == name and direction == "in"
                )
                if packets != state.last_packets:
                    state.last_packets, state.idle_since = packets, now
                    continue
                if now - state.idle_since >= state.flow.idle_timeout:
                    idle = state.flow.idle_timeout
                    log.info("flow %s idle for %ss: deleting its SAs", name, idle)
                    self.ike.delete_child(state.peer.name, name, now)
                    self._flush_ike()
                    state.last_packets = -1

    # ------------------------------------------------------------------ control commands

    async def _cmd_status(self, request: dict[str, Any]) -> dict[str, Any]:
        out_stats: dict[str, Any] = {}
        in_stats: dict[str, Any] = {}
        if self.datapath is not None:
            out_stats, in_stats = await self.datapath.stats()
        return self.status(out_stats, in_stats)

    def status(self, out_stats: dict[str, Any], in_stats: dict[str, Any]) -> dict[str, Any]:
        now = time.monotonic()
        flow_stats = out_stats.get("flows", {})
        sa_out = out_stats.get("sas", {})
        sa_in = in_stats.get("sas", {})
        fw = {}
        with contextlib.suppress(Exception):
            fw = self._os_call(self.firewall.dropped)
        flows = []
        for name, state in sorted(self.flows.items()):
            fs = flow_stats.get(name, {})
            children = []
            for (proto, spi, direction), sa in sorted(self.sas.items(), key=lambda i: i[0][1]):
                if sa.flow != name:
                    continue
                stats = (sa_in if direction == "in" else sa_out).get(spi, {})
                c = sa.config
                children.append(
                    {
                        "protocol": proto.name.lower(),
                        "direction": direction,
                        "spi": f"0x{spi:08x}",
                        "mode": c.mode.value,
                        "encryption": str(c.encryption.algorithm.name) if c.encryption else None,
                        "key_bits": c.encryption.effective_key_bits if c.encryption else None,
                        "integrity": c.integrity.name.lower() if c.integrity else None,
                        "esn": c.esn,
                        "replay_window": c.replay_window if direction == "in" else None,
                        "udp_encapsulation": c.encapsulation is not None,
                        "keying": sa.keying,
                        "age": round(now - sa.installed, 1),
                        "packets": stats.get("packets", 0),
                        "bytes": stats.get("bytes", 0),
                        "drops": stats.get("drops", {}),
                    }
                )
            flows.append(
                {
                    "name": name,
                    "peer": state.peer.name,
                    "peer_address": str(state.peer.address),
                    "selectors": str(flow_selectors(state.flow, state.peer, state.local)),
                    "protection": str(state.flow.protection),
                    "mode": state.flow.mode.value,
                    "keying": str(state.flow.keying),
                    "start": str(state.flow.start),
                    "require": state.flow.require,
                    "state": state.state,
                    "error": state.error,
                    "packets_out": fs.get("packets", 0),
                    "bytes_out": fs.get("bytes", 0),
                    "held": fs.get("held", 0),
                    "drops_out": fs.get("drops", {}),
                    "plaintext_dropped": fw.get(name, 0),
                    "sas": children,
                }
            )
        ike_sas = [
            {
                "peer": r.peer,
                "spi_i": r.spi_i.hex(),
                "spi_r": r.spi_r.hex(),
                "initiator": r.initiator,
                "proposal": r.proposal,
                "local": r.local,
                "remote": r.remote,
                "local_id": r.local_id,
                "remote_id": r.remote_id,
                "age": round(now - r.established, 1),
                "nat": r.nat,
                "rekey_in": self._rekey_in(r, now),
            }
            for r in self.ike_records.values()
        ]
        problems = {
            path: [
                {
                    "file": p.location.file,  # a secrets file the policy file names, maybe
                    "line": p.location.line,
                    "severity": str(p.severity),
                    "message": p.message,
                }
                for p in probs
            ]
            for path, probs in self.policies.problems().items()
            if probs
        }
        drops = dict(in_stats.get("drops", {}))
        for reason, count in out_stats.get("drops", {}).items():
            drops[reason] = drops.get(reason, 0) + count
        return {
            "agent": {
                "version": __version__,
                "pid": os.getpid(),
                "uptime": round(now - self.started, 1),
                "interface": self.config.interface,
                "config_dir": str(self.config.config_dir),
                "workers": self.datapath.pids if self.datapath else [],
            },
            "ike_sas": ike_sas,
            "flows": flows,
            "drops": drops,
            "ike_drops": dict(self.ike.drops),
            "auth_failures": dict(self.auth_failures),
            "send_errors": out_stats.get("send_errors", {}),
            # system calls and batching of the data path (hostsec.agent.worker)
            "datapath_io": {"out": out_stats.get("io", {}), "in": in_stats.get("io", {})},
            "keepalives_received": in_stats.get("keepalives", 0),
            "policy_errors": problems,
        }

    def _rekey_in(self, record: IkeRecord, now: float) -> float | None:
        sa = self.ike.sas.get((record.spi_i, record.spi_r))
        if sa is None or sa.rekey_at is None:
            return None
        return round(sa.rekey_at - now, 1)

    async def _cmd_up(self, request: dict[str, Any]) -> str | dict[str, Any]:
        """Initiate a flow, or every flow of a peer. With ``wait``, answer once each is up
        or failed (or ``timeout`` seconds passed): the state of each flow and ``elapsed``,
        the seconds from the request to the last one, measured here (no client start-up)."""
        name = str(request.get("name", ""))
        now = time.monotonic()
        if name in self.flows:
            names = [name]
        elif name in self.policies.peers:
            names = [s.flow.name for s in self.flows.values() if s.peer.name == name]
        else:
            raise ControlError(f"no flow or peer named {name!r}")
        if not request.get("wait"):
            for flow in names:
                self._initiate(flow, now)
            return f"initiating {name}" if name in self.flows else f"initiating the flows of {name}"
        try:
            timeout = float(request.get("timeout", 30.0))
        except (TypeError, ValueError):
            raise ControlError("timeout must be a number of seconds") from None
        assert self._loop is not None
        waiting: list[asyncio.Future[float]] = []
        for flow in names:
            if self.flows[flow].state == "up":
                continue  # nothing to negotiate
            future: asyncio.Future[float] = self._loop.create_future()
            self._waiters.setdefault(flow, []).append(future)
            waiting.append(future)
            self._initiate(flow, now)
        self._wake_waiters()  # flows that failed at once (no IKE configuration)
        if waiting:
            _done, pending = await asyncio.wait(waiting, timeout=max(0.0, timeout))
            for future in pending:
                future.cancel()
            for flow in names:
                left = [f for f in self._waiters.get(flow, []) if not f.done()]
                if left:
                    self._waiters[flow] = left
                else:
                    self._waiters.pop(flow, None)
        ends = [f.result() for f in waiting if f.done() and not f.cancelled()]
        flows = {}
        for flow in names:
            state = self.flows.get(flow)
            flows[flow] = {
                "state": state.state if state is not None else "removed",
                "error": state.error if state is not None else "",
            }
        return {
            "name": name,
            "ok": all(f["state"] == "up" for f in flows.values()),
            "timed_out": len(ends) < len(waiting),
            "elapsed": round(max(ends, default=now) - now, 6),
            "started": now,  # the agent's time.monotonic(), to relate concurrent requests
            "finished": max(ends, default=now),
            "flows": flows,
        }

    def _wake_waiters(self) -> None:
        """Answer the ``up --wait`` requests whose flows are up or failed (or removed)."""
        now = time.monotonic()
        for flow in list(self._waiters):
            state = self.flows.get(flow)
            if state is not None and state.state not in ("up", "failed"):
                continue
            for future in self._waiters.pop(flow):
                if not future.done():
                    future.set_result(now)

    async def _cmd_down(self, request: dict[str, Any]) -> str:
        name = str(request.get("name", ""))
        now = time.monotonic()
        if name in self.flows:
            state = self.flows[name]
            self.ike.delete_child(state.peer.name, name, now)
            self._flush_ike()
            return f"deleting the CHILD SAs of {name}"
        if name in self.policies.peers:
            self.ike.delete_peer(name, now)
            self._flush_ike()
            return f"deleting the IKE SA with {name}"
        raise ControlError(f"no flow or peer named {name!r}")

    async def _cmd_rekey(self, request: dict[str, Any]) -> str:
        """Rekey now: a flow's CHILD SAs, or a peer's IKE SA (RFC 7296 1.3.2, 1.3.3)."""
        name = str(request.get("name", ""))
        now = time.monotonic()
        peer = self.flows[name].peer.name if name in self.flows else name
        if name not in self.flows and name not in self.policies.peers:
            raise ControlError(f"no flow or peer named {name!r}")
        sa = self.ike.sa_for(peer)
        if sa is None or not sa.established:
            raise ControlError(f"no established IKE SA with {peer}")
        if name in self.flows:
            spis = [c.spi_in for c in sa.children.values() if c.name == name and c.live]
            if not spis:
                raise ControlError(f"flow {name} has no CHILD SA to rekey")
            for spi in spis:
                sa.rekey_child(spi, now)
            what = f"rekeying the CHILD SAs of {name}"
        else:
            sa.rekey(now)
            what = f"rekeying the IKE SA with {name}"
        self._flush_ike()
        self._schedule_timer()
        return what

    async def _cmd_rescan(self, request: dict[str, Any]) -> str:
        self.rescan()
        return "rescanned"

    async def _cmd_keys(self, request: dict[str, Any]) -> dict[str, Any]:
        """The live keys, for `hostsec keys --wireshark` (root-only socket)."""
        esp = esp_sa_lines([sa.config for sa in self.sas.values()])
        ike = ikev2_lines(list(self.ike.sas.values()))
        return {"esp_sa": esp, "ikev2_decryption_table": ike}


def run_agent(config: AgentConfig) -> int:
    agent = Agent(config)
    return asyncio.run(agent.run())
