"""Jobs area: what admins see of background work (the outbox and its failures), and the `jobs` commands.

The machinery itself (outbox, RQ wrapper, relay) is `app.core.jobs`.
"""
