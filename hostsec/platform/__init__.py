"""The operating system: TUN devices, routes and rules, firewall, sockets."""
