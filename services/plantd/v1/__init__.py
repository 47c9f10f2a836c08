"""Generated gRPC code for the plantd.v1 protos (protos/plantd/v1). Do not edit.

Regenerate with ``make protos``; ``make protos-check`` fails when this package differs from
what the protos and the pinned generators produce.
"""
