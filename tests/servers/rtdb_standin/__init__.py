"""A stand-in for Google's Firebase Realtime Database emulator, for tests.

Google's RTDB emulator can't be downloaded on the machines this project runs on, so this is a
small server written from Firebase's public REST documentation (the "Firebase Database REST
API" reference, and the "Saving Data", "Retrieving Data" and "Streaming from the REST API"
guides). It is no copy of Google's code, and it is no production database: one process, all
data in memory (optionally saved to a JSON file).

Run it::

    python -m tests.servers.rtdb_standin --host 127.0.0.1 --port PORT \
        [--data-file PATH] [--keepalive SECONDS]

It prints ``rtdb-standin listening on http://127.0.0.1:PORT`` once it accepts connections
(``--port 0`` picks a free port and prints it). In-process, :func:`create_app` returns the
ASGI application.

Implemented (as documented)
---------------------------
* ``/<path>.json`` on one JSON tree per namespace; the namespace comes from ``?ns=NAME``
  (else the ``<name>.firebaseio.com`` host, else ``default``). An unknown namespace is empty.
* ``GET`` (``shallow=true``, ``print=pretty``, ``print=silent``, ``callback`` (JSONP),
  ``download``, ``format=export`` (accepted; there are no priorities to export), ``timeout``
  (validated)), ``PUT``, ``PATCH`` (multi-path updates, keys with ``/``), ``POST`` (20-character
  chronological push ids, answers ``{"name": id}``), ``DELETE``; ``X-HTTP-Method-Override``
  header and ``x-http-method-override`` parameter on POST; ``writeSizeLimit`` (validated).
* Storage rules: writing ``null`` or ``{}`` deletes, empty parents disappear, arrays are stored
  as objects with index keys and read back as arrays when the largest index is less than twice
  the number of keys, integral numbers read back as integers.
* ``print=silent`` answers ``204 No Content`` with no body.
* Invalid keys (empty, ``. $ # [ ] /``, ASCII control characters, > 768 bytes), data or paths
  deeper than 32 levels, unparsable JSON or missing body, unknown or unsupported query
  parameters: ``400`` with ``{"error": "..."}``.
* Server values ``{".sv": "timestamp"}`` and ``{".sv": {"increment": n}}`` at any depth; any
  other server value is a 400.
* Conditional requests: ``X-Firebase-ETag: true`` returns an ``ETag`` header (GET: the data
  at the location, also when a query filters it;
  PUT/POST: the written data; DELETE: ``null_etag``); ``if-match`` on PUT and DELETE succeeds
  only when it matches the current ETag, else ``412`` with the current value as body and its
  ``ETag`` header; ``if-match`` on GET/POST and either header on PATCH are 400, per the
  reference's table. The ETag is the base64 SHA-1 of the canonical JSON of the value, and
  ``null_etag`` when there is no data. Also ``if-none-match`` on GET (``304`` when it
  matches), which firebase-admin's ``get_if_changed`` sends.
* Queries: ``orderBy`` (``"$key"``, ``"$value"``, a child path such as ``"a/b"``) with
  ``startAt``, ``endAt``, ``equalTo``, ``limitToFirst``, ``limitToLast`` (JSON-encoded values,
  inclusive bounds, documented ordering rules); filters without ``orderBy`` are a 400. Results
  are JSON objects (unordered, as documented). No ``.indexOn`` is required.
* Streaming (``Accept: text/event-stream``): a first ``put`` at ``/`` with the current value,
  then ``put``/``patch`` events with paths relative to the listened location, ``keep-alive``
  (data ``null``) every ``--keepalive`` seconds (default 30, whether or not events flowed in
  between), ``cancel`` (data
  ``"Permission denied"``) when the location stops being readable, ``auth_revoked`` (data
  ``"credential is no longer valid"``) when the token is revoked; both end the stream.
  Streaming a query is allowed: see :mod:`.hub` for the events it produces.
* Auth: ``?auth=``, ``?access_token=`` or ``Authorization: Bearer``. Tokens are not verified;
  ``owner`` (what firebase-admin sends to an emulator) is the admin and bypasses the rules.

Test control endpoints (under ``/.standin/``; not part of the RTDB API)
---------------------------------------------------------------------------
* ``POST /.standin/reset``: wipe all namespaces (listeners get ``null``), rules, revoked
  tokens and counters.
* ``POST /.standin/rules`` ``{"deny": ["path/prefix", ...]}``: replaces the denied prefixes. A
  non-admin request is denied (``401 {"error": "Permission denied"}``) when its path is at,
  below or above a denied prefix; open streams that lose access get ``cancel``.
  ``GET /.standin/rules`` shows the rules and revoked tokens.
* ``POST /.standin/revoke`` ``{"token": "..."}``: the token gets 401 on REST requests and its
  open streams get ``auth_revoked``.
* ``GET /.standin/stats``: ``{"requests": {"GET": n, "PUT": n, ...}, "writes": n,
  "writes_applied": n, "stream_opens": n, "open_streams": n}``. ``requests`` counts every REST
  request received (also refused ones), by effective method; ``writes_applied`` the writes that
  passed validation; ``stream_opens`` the event streams opened (they are not counted as GET).
* ``POST /.standin/drop-streams``: aborts every open event stream's connection (no clean end
  of the response), as a dropped listener would see it.

Not implemented
---------------
* The security rules language (``.read``/``.write``/``.validate`` expressions, ``auth``
  variables), ``/.settings/rules.json``, ``.indexOn`` checks (every query is allowed).
* Token verification (ID tokens, OAuth access tokens, database secrets): any token is accepted
  unless revoked through the control endpoint.
* Priorities (``.priority``, ``.value``, ``orderBy="$priority"``, and so ``format=export``
  exporting them): such keys are rejected with a 400.
* SDK-only features: transactions (use conditional requests), ``onDisconnect``, the WebSocket
  protocol, ``startAfter``/``endBefore``, ``.info`` paths. No 307 redirects are ever sent.
* Limits other than depth, key length and a 256 MiB body: ``timeout`` and ``writeSizeLimit``
  are validated but don't abort anything, and the 512 MB ``cancel`` of huge streams never
  happens.
* Multi-namespace security, quotas, billing, and HTTPS (plain HTTP on loopback only).
"""

from __future__ import annotations

from .app import DEFAULT_NAMESPACE, StandinApp, create_app
from .main import main

__all__ = ["DEFAULT_NAMESPACE", "StandinApp", "create_app", "main"]
