"""hostsec: a per-host IPsec agent with a userspace data path."""

__version__ = "0.1.0"
