#!/usr/bin/env python3
"""Write the synthetic telemetry under tests/kql/fixtures/ (run it after changing this file).

    make_fixtures.py [OUT]    (default tests/kql/fixtures; selfcheck.py writes to a temporary
                               directory and compares, so the committed files cannot drift)

Each fixture is a directory with traces.jsonl and requests.jsonl shaped like Application Insights'
classic tables, and fixture.json: {"now": the moment the alert queries run at, "fires": the alert
queries (infra/queries/alert-*.kql, without prefix and suffix) that must return rows; every other
alert must return none}. The rows follow the telemetry contract and what the Functions host
does (/work/scratch/functions-host.md, from the host's source):
- each JSON line the handler prints is a `traces` row of category Host.Function.Console at
  severityLevel 1/2/3 by level, with no operation_Id (the host logs console lines outside any
  invocation), message = the line, also in customDimensions["prop__{OriginalFormat}"];
- the Reconcile timer's `Logs` entries are traces of category Function.Reconcile.User at
  Information, under the invocation's operation_Id; a timer answer that is not 2xx loses them;
- one `requests` row per invocation: for the HTTP functions resultCode is the status the handler
  answered and success stays true whatever it is; for the timer resultCode is "0" and success is
  false when the invocation failed, which also writes an "Executed ... (Failed ...)" trace.

`healthy` is an ordinary day, including incidents older than every alert's window, which must not
count. Every other fixture is `healthy` plus (or, for reconcile-missing, minus) the rows of one
failure.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "fixtures"
NOW = dt.datetime(2026, 11, 29, 22, 0, 0, tzinfo=dt.timezone.utc)
SEVERITY = {"DEBUG": 0, "INFO": 1, "WARN": 2, "ERROR": 3}
HOST_LEVEL = {1: "Information", 2: "Warning", 3: "Error"}
ROLE = {"cloud_RoleName": "func-clerk-cosmos", "cloud_RoleInstance": "instance-0"}
HOST_INSTANCE = "6f1c5a52-1d1b-4f55-9a43-0c6c2f6f3b10"
COUNTS = ("clerk", "store", "created", "updated", "deleted", "unchanged", "newer_in_store")


def iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


class Telemetry:
    def __init__(self) -> None:
        self.traces: list[dict] = []
        self.requests: list[dict] = []
        self.n = 0

    def _op(self) -> str:
        self.n += 1
        return f"{self.n:032x}"

    def trace(self, at: dt.datetime, message: str, severity: int, category: str, op: str = "", function: str = "") -> None:
        dims = {"Category": category, "LogLevel": HOST_LEVEL[severity], "HostInstanceId": HOST_INSTANCE,
                "ProcessId": "4242", "prop__{OriginalFormat}": message}
        if op:
            dims["InvocationId"] = op[:8] + "-0000-4000-8000-" + op[-12:]
        self.traces.append({
            "timestamp": iso(at),
            "message": message,
            "severityLevel": severity,
            "itemType": "trace",
            "customDimensions": dims,
            "operation_Id": op,
            "operation_Name": function,
            **ROLE,
        })

    def line(self, at: dt.datetime, fields: dict) -> None:
        """One JSON line the handler prints, as the host records it: no invocation context."""
        record = {"timestamp": iso(at), **fields}
        self.trace(at, json.dumps(record, separators=(",", ":")), SEVERITY[record["level"]], "Host.Function.Console")

    def text(self, at: dt.datetime, message: str, category: str, severity: int = 1, op: str = "", function: str = "") -> None:
        """A line that is not one of ours: host chatter, a panic, a human line from the timer's Logs."""
        self.trace(at, message, severity, category, op, function)

    def request(self, at: dt.datetime, name: str, result_code: str, success: bool, duration: float, op: str) -> None:
        url = {"ClerkWebhook": "/api/ClerkWebhook", "SyncMe": "/api/me/sync"}.get(name, "")
        if not success:
            self.text(at, f"Executed 'Functions.{name}' (Failed, Duration={duration:.0f}ms)", f"Function.{name}", 3, op, name)
        self.requests.append({
            "timestamp": iso(at),
            "id": op[-16:],
            "name": name,
            "url": f"https://func-clerk-cosmos.azurewebsites.net{url}" if url else "",
            "resultCode": result_code,
            "success": success,
            "duration": duration,
            "itemType": "request",
            "operation_Id": op,
            "operation_Name": name,
            "customDimensions": {"Category": "Host.Results", "LogLevel": "Information" if success else "Error",
                                 "FullName": f"Functions.{name}", "InvocationId": op[:8] + "-0000-4000-8000-" + op[-12:]},
            **ROLE,
        })

    def delivery(self, at: dt.datetime, status: int, outcome: str, reason: str | None = None,
                 event_type: str = "user.updated", latency_ms: float = 18.5, charge: float = 10.29) -> None:
        op = self._op()
        level = "INFO" if status < 400 else ("ERROR" if status == 500 else "WARN")
        usable = reason not in ("bad_signature", "bad_request")
        self.line(at, {
            "level": level, "event": "delivery",
            "event_id": f"msg_{self.n:06d}" if usable else None,
            "event_type": event_type if usable else None,
            "kind": "user" if usable else None,
            "item_id": f"user_{self.n:06d}" if usable else None,
            "user_id": f"user_{self.n:06d}" if usable else None,
            "organization_id": None, "membership_id": None,
            "outcome": outcome, "reason": reason, "status": status, "latency_ms": latency_ms,
            "cascaded": 0, "request_charge": charge if outcome == "applied" else 1.0,
            "round_trips": 2 if outcome == "applied" else 1,
            "message": f"delivery {outcome}",
        })
        # The host records the status the handler answered; success stays true for a 4xx or 5xx.
        self.request(at, "ClerkWebhook", str(status), True, latency_ms + 3.0, op)

    def syncme(self, at: dt.datetime, status: int, outcome: str, reason: str | None = None) -> None:
        op = self._op()
        level = "INFO" if status < 400 else ("ERROR" if status == 500 else "WARN")
        self.line(at, {
            "level": level, "event": "syncme", "user_id": f"user_{self.n:06d}" if status < 400 else None,
            "outcome": outcome, "reason": reason, "status": status, "latency_ms": 41.0,
            "message": f"syncme {outcome}",
        })
        self.request(at, "SyncMe", str(status), True, 44.0, op)

    def reconcile(self, at: dt.datetime, *, complete: bool = True, drift: int = 0, dry_run: bool = False,
                  trigger: str = "timer", stopped: str | None = None, request_success: bool | None = True) -> None:
        """One run: its summary line on stdout and, for the timer, in Logs; the host's request row."""
        op = self._op()
        started = at - dt.timedelta(minutes=4)
        fields = {
            "level": "ERROR" if not complete else ("WARN" if drift else "INFO"),
            "event": "reconcile", "run_id": f"reconcile:{iso(started)}", "trigger": trigger,
            "dry_run": dry_run, "complete": complete, "stopped": stopped, "duration_ms": 240000.0,
            "drift": drift, "request_charge": 5200.5, "clerk_requests": 12,
        }
        for kind in ("users", "organizations", "memberships"):
            for count in COUNTS:
                fields[f"{kind}_{count}"] = 0
            fields[f"{kind}_clerk"] = fields[f"{kind}_store"] = {"users": 1000, "organizations": 20, "memberships": 300}[kind]
            fields[f"{kind}_unchanged"] = fields[f"{kind}_clerk"]
        fields["users_updated"] = drift
        fields["users_unchanged"] -= drift
        fields["message"] = "reconcile finished" if complete else "reconcile stopped"
        self.line(at, fields)
        if trigger == "timer" and request_success:
            # A 2xx answer carries the same line in Logs, recorded under the invocation.
            record = json.dumps({"timestamp": iso(at), **fields}, separators=(",", ":"))
            self.text(at, record, "Function.Reconcile.User", 1, op, "Reconcile")
            self.text(at, "users: 1000 in Clerk, 1000 in the store", "Function.Reconcile.User", 1, op, "Reconcile")
        if trigger == "timer" and request_success is not None:
            self.request(at, "Reconcile", "0", request_success, 240100.0, op)

    def write(self, out: Path, name: str, fires: list[str]) -> None:
        directory = out / name
        directory.mkdir(parents=True)
        for table, rows in (("traces", self.traces), ("requests", self.requests)):
            rows = sorted(rows, key=lambda r: r["timestamp"])
            (directory / f"{table}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (directory / "fixture.json").write_text(json.dumps({"now": iso(NOW), "fires": sorted(fires)}, indent=1) + "\n")


def ago(**kw: float) -> dt.datetime:
    return NOW - dt.timedelta(**kw)


def healthy(last_complete: dt.timedelta = dt.timedelta(hours=19)) -> Telemetry:
    t = Telemetry()
    # The last hour's traffic: applied, skipped, ignored, a malformed post (400) and SyncMe calls,
    # one with a bad session token (401), none of which is an alert.
    for i in range(12):
        at = ago(minutes=58 - i * 5)
        kind = i % 4
        if kind == 0:
            t.delivery(at, 200, "applied", event_type="user.created")
        elif kind == 1:
            t.delivery(at, 200, "skipped", "not_newer", latency_ms=9.0)
        elif kind == 2:
            t.delivery(at, 200, "ignored", event_type="email.created", latency_ms=2.0, charge=0.0)
        else:
            t.delivery(at, 200, "applied", event_type="organizationMembership.created", latency_ms=25.0, charge=21.0)
    t.delivery(ago(minutes=7), 400, "refused", "bad_request", latency_ms=1.0)
    t.syncme(ago(minutes=12), 200, "present")
    t.syncme(ago(minutes=6), 200, "applied")
    t.syncme(ago(minutes=5), 401, "refused", "invalid_token")
    # Incidents long over: each alert's window must leave them out.
    t.delivery(ago(hours=3), 500, "refused", "internal")
    t.delivery(ago(hours=3, minutes=1), 503, "refused", "unavailable")
    t.delivery(ago(hours=2, minutes=30), 401, "refused", "bad_signature")
    t.syncme(ago(hours=3), 503, "refused", "unavailable")
    t.reconcile(ago(hours=2), complete=False, drift=2, trigger="timer", stopped="clerk_unavailable", request_success=False)
    # The last good run of the daily timer, and a later dry run from the command line.
    t.reconcile(NOW - last_complete, drift=0)
    t.reconcile(ago(hours=1, minutes=30), dry_run=True, trigger="command")
    # Lines that are not JSON: parse_json must not make them count.
    t.text(ago(minutes=50), "thread 'main' panicked at src/main.rs: example", "Host.Function.Console", 3)
    t.text(ago(minutes=49), "Executed 'Functions.ClerkWebhook' (Succeeded, Duration=21ms)", "Function.ClerkWebhook", 1, "e" * 32, "ClerkWebhook")
    return t


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else OUT
    if out.exists():
        shutil.rmtree(out)

    healthy().write(out, "healthy", [])

    t = healthy()
    t.delivery(ago(minutes=5), 500, "refused", "internal")
    t.write(out, "deliveries-failing", ["deliveries-failing"])

    t = healthy()
    t.delivery(ago(minutes=4), 401, "refused", "bad_signature")
    t.write(out, "signature-failures", ["signature-failures"])

    t = healthy()
    for m in (6, 4, 2):
        t.delivery(ago(minutes=m), 503, "refused", "unavailable", latency_ms=3000.0)
    # A 503 is a 5xx too: both alerts fire.
    t.write(out, "store-down", ["deliveries-failing", "store-unavailable"])

    t = healthy()
    t.syncme(ago(minutes=3), 503, "refused", "unavailable")
    t.write(out, "syncme-down", ["syncme-unavailable"])

    t = healthy()
    t.reconcile(ago(minutes=20), drift=4)
    t.write(out, "reconcile-drift", ["reconcile-drift"])

    t = healthy()
    t.reconcile(ago(minutes=30), complete=False, stopped="deadline")
    t.write(out, "reconcile-incomplete", ["reconcile-failed"])

    t = healthy()
    # The invocation failed without a summary line (the handler crashed or timed out).
    t.request(ago(minutes=10), "Reconcile", "0", False, 3600000.0, "f" * 32)
    t.write(out, "reconcile-crashed", ["reconcile-failed"])

    # The last complete run 27 hours ago; a recent dry run does not count.
    healthy(last_complete=dt.timedelta(hours=27)).write(out, "reconcile-missing", ["reconcile-missing"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
