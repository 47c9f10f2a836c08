"""org.plantd.Identity: users, roles, tokens verified offline everywhere (docs/identity.md).

Modules: ``settings`` (PLANTD_IDENTITY_*), ``protocol`` (frames and envelopes), ``wire``
(records as the original's Go client decodes them), ``service`` (request path and operation
table) over ``core`` (authorization, credentials, sessions, audit), ``auth_ops`` and
``admin_ops`` (the operations); ``store``/``sqlite_store`` (persistence), ``keys``/``keygen``
(signing keys), ``tokens``, ``passwords``, ``totp``, ``throttle``, ``audit``, ``bootstrap``,
``main`` (the process).
"""
