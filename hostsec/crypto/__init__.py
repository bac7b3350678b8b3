"""Transforms, proposals and the cryptographic operations of IKE and IPsec.

All primitives come from pyca/cryptography; nothing here implements a cipher or a hash.
"""
