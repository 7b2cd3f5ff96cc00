#!/usr/bin/env python3
"""Cross-checks SyncMe's session-token verification against tokens signed by PyJWT.

The Rust tests sign session tokens with jsonwebtoken, the crate the handler verifies with: a
mistake both share (in the header, the claims, the signature's encoding) would pass them. Here
every token is signed by PyPI's `PyJWT` on a key `cryptography` generates, and posted to the
built binary's `POST /api/me/sync`, configured as in production: `CLERK_JWT_KEY` (the PEM public
key), `CLERK_AUTHORIZED_PARTIES`, `CLERK_ISSUER`, and `CLERK_SECRET_KEY` + `CLERK_API_URL`
pointing at a double of Clerk's Backend API that this script serves (`GET /v1/users/{id}`).

As @clerk/backend judges session tokens: `sts: "pending"` is refused unless
`CLERK_ALLOW_PENDING_SESSIONS=true`; a header `typ` other than `JWT` (OAuth access tokens are
`at+jwt`) is refused; a token without `azp` is refused. Every refusal is 401 with
`WWW-Authenticate: Bearer error="invalid_token"`, and none reaches Clerk.

Usage: tests/session_cross_check.py [path/to/handler]   (or HANDLER_BIN; default target/debug/handler)
Needs: pip install -r tests/session_cross_check.requirements.txt  (PyJWT and cryptography, pinned)
Prints one line per check, then exactly "N passed, M failed".
"""

import json
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cross_check import PATIENCE, Checks, Handler, binary_from_arguments

SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CLERK_SECRET_KEY = "sk_test_session_cross_check"
PARTY = "https://app.example.com"
ISSUER = "https://clerk.example.com"
KID = "ins_pyjwt_cross_check"
T0 = 1_700_000_000_000
INVALID_TOKEN = 'Bearer error="invalid_token"'

check = Checks()


def clerk_user(user_id):
    """A user as `GET /v1/users/{id}` answers it (Clerk's `User` schema, trimmed)."""
    return {
        "id": user_id,
        "object": "user",
        "username": None,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "image_url": "https://img.clerk.com/ada.png",
        "has_image": True,
        "external_id": None,
        "primary_email_address_id": "idn_primary",
        "email_addresses": [
            {"id": "idn_other", "object": "email_address", "email_address": "other@example.com",
             "verification": {"status": "verified", "strategy": "email_code"}, "linked_to": []},
            {"id": "idn_primary", "object": "email_address", "email_address": "ada@example.com",
             "verification": {"status": "verified", "strategy": "email_code"}, "linked_to": []},
        ],
        "primary_phone_number_id": None,
        "phone_numbers": [],
        "web3_wallets": [],
        "external_accounts": [],
        "public_metadata": {"plan": "pro"},
        "private_metadata": {"internal": True},
        "unsafe_metadata": {},
        "password_enabled": False,
        "two_factor_enabled": False,
        "banned": False,
        "locked": False,
        "created_at": T0,
        "updated_at": int(time.time() * 1000),
        "last_sign_in_at": None,
        "last_active_at": None,
    }


class ClerkApiDouble:
    """`GET /v1/users/{id}` for the users it holds, Clerk's 404 body for others, 401 without the
    secret key; records what it was asked."""

    def __init__(self, users):
        self.users = users
        self.requests = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                double.requests.append(
                    {
                        "path": self.path,
                        "authorization": self.headers.get("authorization"),
                        "version": self.headers.get("clerk-api-version"),
                    }
                )
                if self.headers.get("authorization") != f"Bearer {CLERK_SECRET_KEY}":
                    return self.answer(401, errors("authentication_invalid", "Unauthorized"))
                match = re.fullmatch(r"/v1/users/([A-Za-z0-9_]+)", self.path)
                if match and match.group(1) in double.users:
                    return self.answer(200, double.users[match.group(1)])
                return self.answer(404, errors("resource_not_found", "not found"))

            def answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def user_fetches(self):
        return [r for r in self.requests if r["path"].startswith("/v1/users/")]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def errors(code, message):
    return {"errors": [{"code": code, "message": message, "long_message": message}],
            "clerk_trace_id": "trace_cross_check"}


class SessionHandler(Handler):
    """The built binary with SyncMe configured by `session_env`."""

    def __init__(self, binary, session_env):
        super().__init__(binary, SIGNING_SECRET, session_env)

    def sync(self, token):
        """(status, WWW-Authenticate, JSON body) of `POST /api/me/sync` with `token`."""
        request = urllib.request.Request(
            self.url + "/api/me/sync",
            data=b"",
            headers={"authorization": f"Bearer {token}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=PATIENCE) as response:
                return response.status, response.headers.get("www-authenticate"), json.loads(
                    response.read() or b"null"
                )
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("www-authenticate"), json.loads(
                error.read() or b"null"
            )


def session_claims(user_id, **changes):
    """Clerk's v2 session-token claims, 60 s of life; a change to None removes the claim."""
    now = int(time.time())
    claims = {
        "azp": PARTY,
        "exp": now + 60,
        "fva": [0, -1],
        "iat": now,
        "iss": ISSUER,
        "jti": "0123456789abcdef0123",
        "nbf": now - 5,
        "sid": "sess_2pyjwtcrosscheck",
        "sts": "active",
        "sub": user_id,
        "v": 2,
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def sign(private_key, claims, typ="JWT"):
    """RS256 by PyJWT, as Clerk signs: `kid` and `typ` (None leaves `typ` out) in the header."""
    return jwt.encode(claims, private_key, algorithm="RS256", headers={"kid": KID, "typ": typ})


def header_of(token):
    return jwt.get_unverified_header(token)


def main():
    binary = binary_from_arguments()

    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    # PyJWT takes the key in PEM too; the handler never sees it.
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )

    users = {
        uid: clerk_user(uid)
        for uid in ["user_2pyjwtgood", "user_2pyjwtpending", "user_2pyjwtnotyp", "user_2pyjwtrefused"]
    }
    clerk = ClerkApiDouble(users)
    session_env = {
        "CLERK_JWT_KEY": public_pem,
        "CLERK_AUTHORIZED_PARTIES": f"{PARTY},http://localhost:3000",
        "CLERK_ISSUER": ISSUER,
        "CLERK_SECRET_KEY": CLERK_SECRET_KEY,
        "CLERK_API_URL": clerk.url,
        "CLERK_API_RATE": "1000",
    }
    refused_id = "user_2pyjwtrefused"
    refusals = [
        ("sts pending", sign(private_pem, session_claims(refused_id, sts="pending"))),
        ("typ at+jwt", sign(private_pem, session_claims(refused_id), typ="at+jwt")),
        ("typ application/at+jwt",
         sign(private_pem, session_claims(refused_id), typ="application/at+jwt")),
        ("no azp", sign(private_pem, session_claims(refused_id, azp=None))),
        ("azp of another origin",
         sign(private_pem, session_claims(refused_id, azp="https://evil.example"))),
    ]
    check("PyJWT wrote typ at+jwt", header_of(refusals[1][1]).get("typ") == "at+jwt",
          header_of(refusals[1][1]))

    handler = SessionHandler(binary, session_env)
    try:
        for name, token in refusals:
            status, challenge, body = handler.sync(token)
            check(
                f"{name} -> 401 invalid_token",
                status == 401 and challenge == INVALID_TOKEN
                and isinstance(body, dict) and "error" in body,
                (status, challenge, body),
            )
        check("no refused token reached Clerk", clerk.user_fetches() == [], clerk.requests)

        token = sign(private_pem, session_claims("user_2pyjwtgood"))
        check("a good token's header is PyJWT's", header_of(token) == {
            "alg": "RS256", "kid": KID, "typ": "JWT"}, header_of(token))
        status, challenge, body = handler.sync(token)
        user = (body or {}).get("user") or {}
        check(
            "good -> 200 applied",
            status == 200 and body.get("status") == "applied" and challenge is None
            and user.get("id") == "user_2pyjwtgood" and user.get("email") == "ada@example.com",
            (status, challenge, body),
        )
        fetches = clerk.user_fetches()
        check(
            "the user was fetched from Clerk once, with the secret key and a pinned version",
            len(fetches) == 1
            and fetches[0]["path"] == "/v1/users/user_2pyjwtgood"
            and fetches[0]["authorization"] == f"Bearer {CLERK_SECRET_KEY}"
            and bool(fetches[0]["version"]),
            fetches,
        )
        status, _, body = handler.sync(sign(private_pem, session_claims("user_2pyjwtgood")))
        check("good again -> 200 present", status == 200 and body.get("status") == "present",
              (status, body))

        token = sign(private_pem, session_claims("user_2pyjwtnotyp"), typ=None)
        check("PyJWT left typ out", "typ" not in header_of(token), header_of(token))
        status, _, body = handler.sync(token)
        check("no typ -> 200", status == 200 and body.get("status") == "applied", (status, body))
    finally:
        code = handler.stop()
    check("exits 0 on SIGTERM", code == 0, code)

    handler = SessionHandler(binary, {**session_env, "CLERK_ALLOW_PENDING_SESSIONS": "true"})
    try:
        token = sign(private_pem, session_claims("user_2pyjwtpending", sts="pending"))
        status, challenge, body = handler.sync(token)
        check(
            "pending with CLERK_ALLOW_PENDING_SESSIONS=true -> 200",
            status == 200 and body.get("status") == "applied"
            and (body.get("user") or {}).get("id") == "user_2pyjwtpending",
            (status, challenge, body),
        )
        for name, token in refusals[1:4]:
            status, challenge, _ = handler.sync(token)
            check(f"{name}, pending sessions allowed -> 401 invalid_token",
                  status == 401 and challenge == INVALID_TOKEN, (status, challenge))
    finally:
        code = handler.stop()
    check("exits 0 on SIGTERM", code == 0, code)
    clerk.stop()

    return check.summary()


if __name__ == "__main__":
    sys.exit(main())
