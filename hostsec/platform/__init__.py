"""The operating system: TUN devices, routes and rules, firewall, sockets.

- :mod:`hostsec.platform.api`: the interfaces (``FlowMatch``, ``TunDevice``,
  ``FlowRouter``, ``Firewall``) the agent's data path is written against.
- :mod:`hostsec.platform.linux`: the Linux backend (``tun``, ``routing``, ``firewall``,
  ``sockets``, ``sysctl``). A BSD backend would sit next to it.
- :mod:`hostsec.platform.mtu`: how much ESP/AH/UDP take, the MTU left for the TUN.
- :mod:`hostsec.platform.netns`, :mod:`.nsenter`, :mod:`.capture`: network-namespace labs
  (Linux) for the tests and ``hostsec demo``.

Everything works in the network namespace of the calling thread. Nothing here imports
the agent, IKE, the IPsec engine or the policy (checked by ``lint-imports``).
"""
