"""The plantd.v1 API contract in Python: what the gateway serves on top of the generated code.

The generated messages and stubs are :mod:`plantd.v1` (``make protos``); this package holds the
hand-written, pure parts of the contract (the error mapping).
"""
