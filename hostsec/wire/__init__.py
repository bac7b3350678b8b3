"""Byte formats only: no state, no I/O."""
