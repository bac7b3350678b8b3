"""The Linux backend of the OS layer: TUN (python-pytun), policy routing (pyroute2),
nftables, raw and UDP sockets, per-namespace sysctls."""
