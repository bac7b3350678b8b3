"""The Linux backend of the OS layer: TUN (python-pytun), policy routing (pyroute2),
nftables, raw and UDP sockets, per-namespace sysctls."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mypy checks that the backend fills the interfaces of hostsec.platform.api
    from hostsec.platform import api
    from hostsec.platform.linux import firewall, routing, tun

    def _conforms(
        r: routing.LinuxPolicyRouter, f: firewall.NftablesFirewall, t: tun.LinuxTun
    ) -> tuple[api.FlowRouter, api.Firewall, api.TunDevice]:
        return r, f, t
