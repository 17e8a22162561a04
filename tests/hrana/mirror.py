"""Forwards every write the test server commits to a second server (``--mirror URL``).

Why: an embedded replica built on pyturso's sync pulls from a Turso sync server (``tursodb
--sync-server``, a real one), while durably writes to its primary over Hrana. On Turso Cloud
one database serves both. Here no single server does: tursodb's own ``/v2/pipeline`` has no
batons (no interactive transactions) and reports 0 affected rows, so durably cannot use it as
its primary. So the test server stays the primary, and this mirror replays each committed
write transaction on the sync server, as one ``/v2/pipeline`` batch (BEGIN, the statements,
COMMIT), before the client hears that its COMMIT succeeded. The replicas then hold what the
primary holds, and a sync after a write sees it.

The primary also serves the sync protocol, as a Turso Cloud database does at its one address:
any request that is not Hrana (pyturso's ``POST /pull-updates``, …) is checked against the
primary's auth token and then forwarded to the sync server (:meth:`Mirror.forward`). So a
replica configured with nothing but the primary's URL and token pulls what the primary holds.

It is statement replay: a statement whose result depends on the moment it runs
(``julianday('now')``) stores a slightly different value on the mirror. The writes are
serialised by the primary's write lock, so rowids come out the same.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

JsonObj = dict[str, Any]
# statement kinds (server.Analysis.kind) that change the database or a transaction's savepoints
RECORDED_KINDS = {"write", "ddl", "savepoint", "release"}


@dataclass(frozen=True)
class MirroredStatement:
    """What the mirror needs of a statement the primary ran."""

    stmt: JsonObj  # as a Hrana `Stmt`
    kind: str  # server.Analysis.kind
    first_word: str
    ok: bool


class Mirror:
    """Records each stream's writes, and sends those of a committed transaction to ``url``."""

    def __init__(
        self,
        url: str,
        encode: Callable[[Any], JsonObj],
        trace: Callable[[JsonObj], None],
        forward_delay: float = 0.0,
    ) -> None:
        self.pipeline_url = url.rstrip("/") + "/v2/pipeline"
        self.forward_delay = forward_delay
        """Seconds each forwarded request waits first (``--forward-delay``): a slow network."""
        self._encode = encode
        self._trace = trace
        self.lock = threading.Lock()

    def after_statement(
        self, conn: Any, statement: MirroredStatement, *, was_autocommit: bool
    ) -> None:
        """Called after each statement a stream ran (``ok`` or not). ``conn`` keeps the
        statements of its open transaction in ``conn.mirror_pending``."""
        if statement.ok and statement.kind in RECORDED_KINDS:
            conn.mirror_pending.append(statement.stmt)
        if not conn.is_autocommit:
            return
        pending, conn.mirror_pending = conn.mirror_pending, []
        if not statement.ok:
            return  # the statement failed: nothing it did stays (nor its transaction's writes)
        if was_autocommit or statement.first_word in {"COMMIT", "END"}:
            self.send(pending)  # an autocommit write, or a committed transaction
        # else a ROLLBACK: the pending statements are dropped with the transaction

    def encode_stmt(self, sql: str, args: list[Any], named: dict[str, Any] | None) -> JsonObj:
        stmt: JsonObj = {"sql": sql, "want_rows": False}
        if named:
            stmt["named_args"] = [{"name": k, "value": self._encode(v)} for k, v in named.items()]
        else:
            stmt["args"] = [self._encode(v) for v in args]
        return stmt

    def send(self, statements: list[JsonObj]) -> None:
        if not statements:
            return
        steps: list[JsonObj] = [{"stmt": {"sql": "BEGIN"}}]
        for stmt in [*statements, {"sql": "COMMIT"}]:
            steps.append({"stmt": stmt, "condition": {"type": "ok", "step": len(steps) - 1}})
        body = {"baton": None, "requests": [{"type": "batch", "batch": {"steps": steps}}]}
        problem = self._post(body)
        self._trace({"mirror": len(statements), **({"mirror_error": problem} if problem else {})})

    def _post(self, body: JsonObj) -> str | None:
        """Sends the batch; returns what went wrong, or None."""
        request = urllib.request.Request(
            self.pipeline_url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        result = answer["results"][0]
        if result.get("type") != "ok":
            return json.dumps(result)
        errors = [e for e in result["response"]["result"]["step_errors"] if e]
        return json.dumps(errors) if errors else None

    def forward(
        self, method: str, path: str, body: bytes | None, content_type: str | None
    ) -> tuple[int, bytes, str]:
        """Passes a sync-protocol request to the sync server; its (status, body, type)."""
        time.sleep(self.forward_delay)
        base = self.pipeline_url.removesuffix("/v2/pipeline")
        request = urllib.request.Request(base + path, data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read(), response.headers.get_content_type()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers.get_content_type()
        except (urllib.error.URLError, OSError) as exc:
            return 502, f"the sync server is unreachable: {exc}".encode(), "text/plain"
