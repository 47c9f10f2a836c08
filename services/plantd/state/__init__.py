"""org.plantd.State: a scoped key/value store on the bus (docs/state.md).

Public API (import from the submodules; this package imports nothing so `plant --help` stays
fast):

- ``plantd.state.main:cli``: the ``plantd state`` command; ``plantd.state.cli:state``: the
  ``plant state`` group.
- ``plantd.state.client``: ``StateClient(mdp_client)`` / ``AsyncStateClient(mdp_async_client)``
  with one method per operation, ``encode(op, body)``, ``parse_reply(frames)``,
  ``StateReplyError(code, message, field, details)``.
- ``plantd.state.watch``: ``Watcher(client, subscriber, scope, from_revision=, snapshot=)``
  ``.events(idle_timeout=)`` yields gap-free, ordered ``WatchEvent``s.
- ``plantd.state.events``: ``decode(topic, payload) -> Change`` for raw bus subscribers.
- ``plantd.state.auth``: ``RequestContext``, ``Authorizer`` (the seam for identity),
  permission names ``PERM_*``.
- ``plantd.state.errors.Code``: the stable error codes.
"""
