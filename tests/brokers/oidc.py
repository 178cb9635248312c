"""A tiny OAuth 2 token endpoint (client-credentials grant, RFC 6749 §4.4) for OIDC tests.

It checks the client id and secret from HTTP basic auth and ``grant_type``, issues random
tokens valid for ``lifetime_s`` and adds each to ``accepted`` (the SASL front's token set), so
a broker behind the front accepts exactly the tokens this endpoint issued. Runs an
http.server in a thread, over TLS when given a context. Imports no kpd code.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.brokers.ports import LOOPBACK


class TokenEndpoint:
    def __init__(
        self,
        client_id: str,
        client_secret: str,
        accepted: set[str],
        *,
        lifetime_s: int = 3600,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.issued: list[str] = []
        self.scopes: list[str | None] = []
        self.refused = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                expected = (
                    "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
                )
                if self.headers.get("Authorization") != expected or form.get("grant_type") != [
                    "client_credentials"
                ]:
                    endpoint.refused += 1
                    self._answer(401, {"error": "invalid_client"})
                    return
                token = secrets.token_urlsafe(16)
                accepted.add(token)
                endpoint.issued.append(token)
                endpoint.scopes.append(form.get("scope", [None])[0])
                body = {"access_token": token, "token_type": "Bearer", "expires_in": lifetime_s}
                self._answer(200, body)

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass  # keep test output quiet

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://{LOOPBACK}:{self._server.server_address[1]}/oauth2/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> TokenEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
