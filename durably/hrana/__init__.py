"""durably's driver for remote libSQL servers (sqld, Turso): Hrana over HTTP, in pure Python.

Why durably ships its own driver instead of using the stock ``libsql``
client for remote URLs (the measurements are in ``docs/turso.md``):

* the stock client keeps the GIL while it waits on the network, so one slow
  round trip freezes the heartbeat thread, the event loop and the web app;
* its connections fail forever once the server drops an idle stream (after
  10 s on sqld) or restarts;
* it sends integers above 32 bits as floats and reports every error as a
  bare ``ValueError``.

This package is small on purpose:

* :mod:`.protocol` encodes values and speaks the ``/v3/pipeline`` endpoint
  over one keep-alive HTTP connection (stdlib ``http.client``, which releases
  the GIL while it waits);
* :mod:`.dbapi` is a PEP 249 driver over it: one Hrana stream per
  connection, transactions begun in the same request as their first
  statement, stale streams replaced only when no transaction is open;
* :mod:`.dialect` registers it with SQLAlchemy as ``sqlite+hrana://``.
  durably picks it for ``sqlite+libsql://HOST`` URLs.
"""
