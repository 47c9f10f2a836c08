"""``plantd gateway``: plantd.v1 over gRPC in front of the MDP bus (docs/api.md).

This release serves StateService (every RPC, WatchEntries included), grpc.health.v1 and
server reflection.
"""
