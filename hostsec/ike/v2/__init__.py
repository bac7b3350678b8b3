"""IKEv2 (RFC 7296): the sans-I/O state machine and its manager."""
