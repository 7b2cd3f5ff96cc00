#!/usr/bin/env python3
"""Cross-checks the handler's webhook verification against Svix's own Python library.

The Rust tests sign with the svix crate, which the handler also verifies with: a shared mistake
(say, in how the signed content is assembled) would pass them. Here every delivery is signed by
the PyPI `svix` package, `svix.webhooks.Webhook(secret).sign(msg_id, timestamp, data)`, and sent
to the built binary over HTTP, as Svix sends it; what was stored is read back with
`handler users get`, `organizations get` and `memberships list`. With SVIX_NODE_MODULES naming a node_modules directory holding the npm
`svix` package, every check runs a second time with its signer (`new Webhook(secret).sign(...)`).

Usage: tests/svix_cross_check.py [path/to/handler]   (or HANDLER_BIN; default target/debug/handler)
Needs: pip install svix.  Prints one line per check, then exactly "N passed, M failed".
"""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

from svix.webhooks import Webhook

from cross_check import PATIENCE, Checks, Handler, binary_from_arguments

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# Configured alongside SECRET, as during a rotation.
ROTATED_SECRET = "whsec_c2Vjb25kIHNlY3JldCBmb3Igcm90YXRpb24="
# Valid, but configured nowhere.
UNKNOWN_SECRET = "whsec_YSB0aGlyZCBzZWNyZXQsIG5ldmVyIGNvbmZpZ3VyZWQ="
T0 = 1_700_000_000_000
# Each check line names the signer of the run (set by main()).
check = Checks()


def clerk_user(user_id, updated_at, first_name="Ada"):
    return {
        "id": user_id,
        "object": "user",
        "first_name": first_name,
        "last_name": "Lovelace",
        "primary_email_address_id": "idn_primary",
        "email_addresses": [
            {"id": "idn_other", "object": "email_address", "email_address": "other@example.com"},
            {"id": "idn_primary", "object": "email_address", "email_address": "ada@example.com"},
        ],
        "phone_numbers": [],
        "public_metadata": {},
        "private_metadata": None,
        "created_at": T0,
        "updated_at": updated_at,
        "last_sign_in_at": None,
    }


def clerk_organization(org_id, updated_at):
    return {
        "object": "organization",
        "id": org_id,
        "name": "Analytical Engines",
        "slug": "engines",
        "public_metadata": {},
        "private_metadata": {"billing": "internal"},
        "created_by": "user_svix",
        "created_at": T0,
        "updated_at": updated_at,
    }


def clerk_membership(membership_id, org_id, user_id, updated_at, role="org:member"):
    return {
        "object": "organization_membership",
        "id": membership_id,
        "role": role,
        "permissions": [],
        "public_metadata": {},
        "organization": clerk_organization(org_id, T0),
        "public_user_data": {"user_id": user_id, "first_name": "Ada", "identifier": "ada@example.com"},
        "created_at": T0,
        "updated_at": updated_at,
    }


def event(event_type, data):
    return {"data": data, "object": "event", "type": event_type, "timestamp": T0}


msg_counter = 0


def msg_id():
    global msg_counter
    msg_counter += 1
    return f"msg_pycheck_{os.getpid()}_{msg_counter}"


def python_sign(secret, mid, at, body):
    """The PyPI package's signer; `at` is an aware UTC datetime, as Svix stamps a message."""
    return Webhook(secret).sign(mid, at, body)


NODE_SIGNER = """
const { Webhook } = require("svix");
let input = "";
process.stdin.on("data", (chunk) => (input += chunk)).on("end", () => {
  const { secret, id, timestamp, body } = JSON.parse(input);
  process.stdout.write(new Webhook(secret).sign(id, new Date(timestamp * 1000), body));
});
"""


def node_sign(secret, mid, at, body):
    """The npm package's signer, run by node with SVIX_NODE_MODULES on its module path."""
    request = {"secret": secret, "id": mid, "timestamp": int(at.timestamp()), "body": body}
    result = subprocess.run(
        ["node", "-e", NODE_SIGNER],
        input=json.dumps(request),
        env={**os.environ, "NODE_PATH": os.environ["SVIX_NODE_MODULES"]},
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=True,
    )
    return result.stdout


# Set per run by main(): the library whose signatures the handler must accept.
sign = python_sign


def svix_headers(secret, body, mid=None, at=None, prefix="svix"):
    mid = mid or msg_id()
    at = at or datetime.now(tz=timezone.utc)
    return {
        f"{prefix}-id": mid,
        f"{prefix}-timestamp": str(int(at.timestamp())),
        f"{prefix}-signature": sign(secret, mid, at, body),
    }


class WebhookHandler(Handler):
    """The built binary with both secrets of a rotation configured."""

    def __init__(self, binary):
        super().__init__(binary, f"{SECRET}, {ROTATED_SECRET}")

    def post(self, headers, body):
        """(status, JSON body) of a delivery of the exact `body` bytes."""
        data = body.encode() if isinstance(body, str) else body
        request = urllib.request.Request(
            self.url + "/api/ClerkWebhook",
            data=data,
            headers={"content-type": "application/json", **headers},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=PATIENCE) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def users_get(self, user_id):
        return self.get("users", user_id)

    def get(self, noun, item_id):
        """The stored document, or None when `<noun> get` exits 1 with nothing on stdout."""
        result = subprocess.run(
            [self.binary, noun, "get", item_id],
            env=self.env,
            capture_output=True,
            timeout=PATIENCE,
        )
        if result.returncode == 0:
            return json.loads(result.stdout)
        if result.returncode == 1 and not result.stdout:
            return None
        raise RuntimeError(f"{noun} get exited {result.returncode}: {result.stderr!r}")

    def memberships(self, *args):
        """Membership ids `memberships list <args>` prints, sorted."""
        result = subprocess.run(
            [self.binary, "memberships", "list", *args],
            env=self.env,
            capture_output=True,
            timeout=PATIENCE,
            check=True,
        )
        return sorted(json.loads(line)["id"] for line in result.stdout.splitlines())


def compact(value):
    return json.dumps(value, separators=(",", ":"))


def run(handler):
    applied = (200, {"status": "applied"})

    # Accepted: each header family, each configured secret, several signatures in one header.
    body = compact(event("user.created", clerk_user("user_svix", T0)))
    headers = svix_headers(SECRET, body)
    check("svix-* headers, svix signer", handler.post(headers, body) == applied)
    document = handler.users_get("user_svix") or {}
    check(
        "stored as signed",
        document.get("email") == "ada@example.com"
        and document.get("lastEventId") == headers["svix-id"]
        and document.get("clerkUpdatedAt") == T0,
        document,
    )

    body = compact(event("user.created", clerk_user("user_std", T0)))
    headers = svix_headers(SECRET, body, prefix="webhook")
    check("webhook-* headers, svix signer", handler.post(headers, body) == applied)
    document = handler.users_get("user_std") or {}
    check(
        "lastEventId is webhook-id",
        document.get("lastEventId") == headers["webhook-id"],
        document,
    )

    body = compact(event("user.created", clerk_user("user_rotated", T0)))
    check(
        "second configured secret",
        handler.post(svix_headers(ROTATED_SECRET, body), body) == applied,
    )

    body = compact(event("user.created", clerk_user("user_multi", T0)))
    mid, at = msg_id(), datetime.now(tz=timezone.utc)
    headers = svix_headers(SECRET, body, mid, at)
    headers["svix-signature"] = " ".join(
        [sign(UNKNOWN_SECRET, mid, at, body), "v2,bm90IGEgc2lnbmF0dXJl", headers["svix-signature"]]
    )
    check("one matching signature among several", handler.post(headers, body) == applied)

    # Non-ASCII text, signed by Python as UTF-8 and verified by Rust on the raw bytes.
    name = "Zoë Ñúñez 日本 🦀"
    body = json.dumps(event("user.created", clerk_user("user_utf8", T0, name)), ensure_ascii=False)
    check("UTF-8 body", handler.post(svix_headers(SECRET, body), body) == applied)
    document = handler.users_get("user_utf8") or {}
    check("UTF-8 name stored intact", document.get("firstName") == name, document)

    # Pretty-printed JSON as signed: the handler must verify the bytes, not a re-serialization.
    body = json.dumps(event("user.created", clerk_user("user_pretty", T0)), indent=2)
    check(
        "pretty-printed body as signed",
        handler.post(svix_headers(SECRET, body), body) == applied,
    )

    # Refused, and the store unchanged.
    before = handler.users_get("user_svix")
    newer = event("user.updated", clerk_user("user_svix", T0 + 1, "Mallory"))
    signed_body = compact(newer)
    now = datetime.now(tz=timezone.utc)
    refusals = [
        ("wrong secret", svix_headers(UNKNOWN_SECRET, signed_body), signed_body, 401),
        (
            "tampered: re-serialized with other whitespace",
            svix_headers(SECRET, signed_body),
            json.dumps(newer, indent=2),
            401,
        ),
        (
            "tampered: one value changed",
            svix_headers(SECRET, signed_body),
            signed_body.replace("Mallory", "Mallorz"),
            401,
        ),
        (
            "timestamp 6 minutes old",
            svix_headers(SECRET, signed_body, at=now - timedelta(minutes=6)),
            signed_body,
            401,
        ),
        (
            "timestamp 6 minutes ahead",
            svix_headers(SECRET, signed_body, at=now + timedelta(minutes=6)),
            signed_body,
            401,
        ),
        (
            "wrong secret, webhook-* headers",
            svix_headers(UNKNOWN_SECRET, signed_body, prefix="webhook"),
            signed_body,
            401,
        ),
    ]
    headers = svix_headers(SECRET, signed_body)
    del headers["svix-signature"]
    refusals.append(("missing signature header", headers, signed_body, 400))
    not_json = "user_svix is now Mallory"
    refusals.append(("signed, not JSON", svix_headers(SECRET, not_json), not_json, 400))
    for name, headers, body, expected in refusals:
        status, answer = handler.post(headers, body)
        check(
            f"{name} -> {expected}",
            status == expected and isinstance(answer, dict) and "error" in answer,
            (status, answer),
        )
        after = handler.users_get("user_svix")
        check(f"{name}: store unchanged", after == before, after)

    # The ordering rules with Python-signed events.
    body = compact(event("user.updated", clerk_user("user_svix", T0 + 10, "Newer")))
    check("newer update applies", handler.post(svix_headers(SECRET, body), body) == applied)
    body = compact(event("user.updated", clerk_user("user_svix", T0 + 5, "Older")))
    status, answer = handler.post(svix_headers(SECRET, body), body)
    document = handler.users_get("user_svix") or {}
    check(
        "older update acknowledged, not applied",
        status == 200
        and answer.get("status") == "skipped"
        and document.get("firstName") == "Newer",
        (status, answer, document),
    )
    body = compact(event("user.deleted", {"id": "user_svix", "object": "user", "deleted": True}))
    check("delete applies", handler.post(svix_headers(SECRET, body), body) == applied)
    check("deleted user reads as not found", handler.users_get("user_svix") is None)

    # Organizations and memberships, shuffled: a membership before its organization, a late
    # update, a duplicate, and a delete that cascades.
    deliveries = [
        event("organizationMembership.created", clerk_membership("orgmem_a", "org_py", "user_a", T0)),
        event("organization.created", clerk_organization("org_py", T0)),
        event("organizationMembership.updated", clerk_membership("orgmem_a", "org_py", "user_a", T0 + 2, "org:admin")),
        event("organizationMembership.created", clerk_membership("orgmem_b", "org_py", "user_b", T0)),
        event("organizationMembership.updated", clerk_membership("orgmem_a", "org_py", "user_a", T0 + 1)),
    ]
    deliveries.append(deliveries[2])
    for delivery in deliveries:
        body = compact(delivery)
        status, answer = handler.post(svix_headers(SECRET, body), body)
        check(f"{delivery['type']} {delivery['data']['id']} acknowledged", status == 200, (status, answer))
    organization = handler.get("organizations", "org_py") or {}
    check(
        "organization stored without private metadata",
        organization.get("type") == "organization" and "billing" not in json.dumps(organization),
        organization,
    )
    check("memberships of the organization", handler.memberships("--organization", "org_py") == ["orgmem_a", "orgmem_b"])
    check("memberships of a user", handler.memberships("--user", "user_a") == ["orgmem_a"])
    newest = subprocess.run(
        [handler.binary, "memberships", "list", "--user", "user_a"],
        env=handler.env, capture_output=True, timeout=PATIENCE, check=True,
    )
    role = json.loads(newest.stdout.splitlines()[0]).get("role")
    check("the newest membership version won, whatever the order", role == "org:admin", role)
    body = compact(event("organization.deleted", {"object": "organization", "id": "org_py", "deleted": True}))
    check("organization delete applies", handler.post(svix_headers(SECRET, body), body) == applied)
    check("its memberships are gone with it", handler.memberships() == [], handler.memberships())
    body = compact(event("organizationMembership.created", clerk_membership("orgmem_c", "org_py", "user_c", T0 + 5)))
    status, answer = handler.post(svix_headers(SECRET, body), body)
    check(
        "a membership of the deleted organization is a no-op",
        status == 200 and answer.get("reason") == "parent_deleted" and handler.memberships() == [],
        (status, answer),
    )
    body = compact(event("organization.updated", {"object": "organization", "id": "user_a", "updated_at": T0}))
    status, answer = handler.post(svix_headers(SECRET, body), body)
    check("an organization event with a user id -> 400", status == 400 and "error" in answer, (status, answer))


def main():
    global sign
    binary = binary_from_arguments()
    signers = [("svix PyPI", python_sign)]
    if os.environ.get("SVIX_NODE_MODULES"):
        signers.append(("svix npm", node_sign))
    for check.label, sign in signers:
        handler = WebhookHandler(binary)
        try:
            run(handler)
        finally:
            code = handler.stop()
        check("exits 0 on SIGTERM", code == 0, code)
    return check.summary()


if __name__ == "__main__":
    sys.exit(main())
