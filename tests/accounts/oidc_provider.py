"""A small but real OpenID Connect provider for the SSO tests, served over HTTP on loopback.

Discovery, authorization endpoint (code flow; PKCE S256 required), token endpoint (client_secret_basic, single-use
codes, redirect URI and PKCE verifier checked), JWKS, RS256-signed ID tokens (joserfc). The authorization
endpoint signs in whoever the test put in `next_user` (the provider's own login page is not what is tested).

Like a real provider it keeps a login session per subject: a request without `prompt=login` reuses it (the ID
token's `auth_time` is that of the earlier login), while `prompt=login` or `max_age=0` (or an older session than
`max_age`) forces a fresh login, counted in `logins`, with a fresh `auth_time`. `ignore_prompt` makes it a
non-compliant provider that reuses the session anyway; `auth_time_shift` / `omit_auth_time` bend the claim.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

from flask import Flask, abort, jsonify, redirect, request
from joserfc import jwt
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server


class Provider:
    """State of the running provider, readable and steerable by the tests."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig", "alg": "RS256"})
        self.clients: dict[str, tuple[str, str]] = {}  # client_id -> (secret, redirect_uri)
        self.codes: dict[str, dict[str, Any]] = {}
        self.next_user: dict[str, Any] = {}
        self.tamper: str = ""  # "aud" | "nonce" | "iss" | "sig": issue a bad ID token on purpose
        self.token_requests: list[dict[str, Any]] = []
        self.issuer = ""
        self.authorize_requests: list[dict[str, str]] = []  # query of every /authorize request
        self.sessions: dict[str, int] = {}  # subject -> auth_time of its login session here
        self.logins: list[str] = []  # subjects, one entry per fresh login
        self.ignore_prompt = False
        self.auth_time_shift = 0
        self.omit_auth_time = False

    def register(self, client_id: str, secret: str, redirect_uri: str) -> None:
        """Register an OAuth client."""
        self.clients[client_id] = (secret, redirect_uri)


def _app(provider: Provider) -> Flask:
    app = Flask("test_oidc_provider")

    @app.get("/.well-known/openid-configuration")
    def discovery() -> Any:
        base = provider.issuer
        return jsonify(issuer=base, authorization_endpoint=f"{base}/authorize", token_endpoint=f"{base}/token",
                       jwks_uri=f"{base}/jwks", response_types_supported=["code"],
                       subject_types_supported=["public"], id_token_signing_alg_values_supported=["RS256"],
                       code_challenge_methods_supported=["S256"], token_endpoint_auth_methods_supported=[
                           "client_secret_basic"])

    @app.get("/jwks")
    def jwks() -> Any:
        return jsonify(keys=[provider.key.as_dict(private=False)])

    @app.get("/authorize")
    def authorize() -> Any:
        args = request.args
        client = provider.clients.get(args.get("client_id", ""))
        if client is None or args.get("redirect_uri") != client[1]:
            abort(400, "unknown client or redirect_uri")
        if args.get("response_type") != "code" or "openid" not in args.get("scope", "").split():
            abort(400, "code flow with the openid scope only")
        if args.get("code_challenge_method") != "S256" or not args.get("code_challenge"):
            abort(400, "PKCE with S256 is required")
        provider.authorize_requests.append(dict(args))
        subject, now = str(provider.next_user.get("sub", "")), int(time.time())
        existing = provider.sessions.get(subject)
        max_age = args.get("max_age")
        forced = args.get("prompt") == "login" or (max_age is not None and existing is not None
                                                   and now - existing >= int(max_age))
        if existing is None or (forced and not provider.ignore_prompt):
            existing = provider.sessions[subject] = now
            provider.logins.append(subject)
        code = secrets.token_urlsafe(24)
        provider.codes[code] = {"client_id": args["client_id"], "redirect_uri": args["redirect_uri"],
                                "challenge": args["code_challenge"], "nonce": args.get("nonce"),
                                "user": dict(provider.next_user), "auth_time": existing + provider.auth_time_shift}
        return redirect(f"{args['redirect_uri']}?{urlencode({'code': code, 'state': args.get('state', '')})}")

    @app.post("/token")
    def token() -> Any:
        auth = request.authorization
        form = request.form
        record = {"client_id": auth.username if auth else None, "verifier_ok": False, "ok": False}
        provider.token_requests.append(record)
        client = provider.clients.get(auth.username if auth else "")
        if client is None or auth is None or auth.password != client[0]:
            return jsonify(error="invalid_client"), 401
        grant = provider.codes.pop(form.get("code", ""), None)  # single use
        if grant is None or grant["client_id"] != auth.username or form.get("redirect_uri") != grant["redirect_uri"]:
            return jsonify(error="invalid_grant"), 400
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if digest != grant["challenge"]:
            return jsonify(error="invalid_grant", error_description="PKCE verification failed"), 400
        record["verifier_ok"] = True
        now = int(time.time())
        claims = {"iss": provider.issuer, "aud": auth.username, "iat": now, "exp": now + 300,
                  "nonce": grant["nonce"], **grant["user"]}
        if not provider.omit_auth_time:
            claims["auth_time"] = grant["auth_time"]
        if provider.tamper == "aud":
            claims["aud"] = "someone-else"
        elif provider.tamper == "nonce":
            claims["nonce"] = "replayed-nonce"
        elif provider.tamper == "iss":
            claims["iss"] = "https://evil.example.com"
        key = RSAKey.generate_key(2048, parameters={"kid": "test-key"}) if provider.tamper == "sig" else provider.key
        id_token = jwt.encode({"alg": "RS256", "kid": "test-key"}, claims, key)
        record["ok"] = True
        return jsonify(access_token=secrets.token_urlsafe(16), token_type="Bearer", expires_in=300,
                       id_token=id_token)

    return app


#: Ports the providers of this test run have served on.
_PORTS_USED: set[int] = set()


@contextmanager
def running_provider() -> Iterator[Provider]:
    """Serve a provider on 127.0.0.1 (a free port) in a thread for the duration of the block.

    The port is one no earlier provider of this test run had: the issuer is its URL, and SSO identities are
    unique per (issuer, subject) across tenants, so a provider reborn on a reused port would meet the identities
    an earlier test linked (tests reuse subjects such as `idp-sam`).
    """
    provider = Provider()
    refused = []
    server = make_server("127.0.0.1", 0, _app(provider), threaded=True)
    while server.server_port in _PORTS_USED:
        refused.append(server)  # kept bound until a fresh port is found, so the OS cannot hand it out again
        server = make_server("127.0.0.1", 0, _app(provider), threaded=True)
    for other in refused:
        other.server_close()
    _PORTS_USED.add(server.server_port)
    provider.issuer = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
