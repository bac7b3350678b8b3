"""The daemon: wires policy, IKE, the data path and the control socket together."""
