"""Sans-I/O IKE state machines (IKEv2 in v2/, IKEv1 in v1/)."""
