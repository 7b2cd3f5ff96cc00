"""What the Python cross-checks (svix_cross_check.py, session_cross_check.py) share: the built
binary serving as the Functions host runs it, and the tally of checks they print."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

# A bound on what takes milliseconds, so that a hang fails instead of blocking CI.
PATIENCE = 20.0


class Checks:
    """One line per check ("ok" or "FAIL", with a label before the name), then "N passed, M failed"."""

    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.label = ""

    def __call__(self, name, ok, detail=""):
        prefix = f"[{self.label}] " if self.label else ""
        if ok:
            self.passed += 1
            print(f"ok    {prefix}{name}")
        else:
            self.failed += 1
            print(f"FAIL  {prefix}{name}: {detail}")

    def summary(self):
        """Prints the tally; the exit status: 1 if any check failed."""
        print(f"{self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0


def binary_from_arguments():
    """The handler to check: the first argument, else HANDLER_BIN, else target/debug/handler."""
    default = os.environ.get("HANDLER_BIN", "target/debug/handler")
    return sys.argv[1] if len(sys.argv) > 1 else default


class Handler:
    """The built binary, serving on a free port with its own embedded store, ready once `GET /`
    answers 200; `stop()` sends SIGTERM and gives its exit status."""

    def __init__(self, binary, secret, extra_env=None):
        self.dir = tempfile.TemporaryDirectory()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.binary = binary
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "CLERK_WEBHOOK_SIGNING_SECRET": secret,
            "LOCAL_STORE_PATH": os.path.join(self.dir.name, "users.sqlite3"),
            "FUNCTIONS_CUSTOMHANDLER_PORT": str(port),
            "RUST_LOG": "warn",
            **(extra_env or {}),
        }
        # A file, not a pipe nobody reads while it runs: what startup said, should it fail.
        self.stderr = open(os.path.join(self.dir.name, "stderr"), "w+b")
        self.process = subprocess.Popen(
            [binary], env=self.env, stdout=subprocess.DEVNULL, stderr=self.stderr
        )
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                with urllib.request.urlopen(self.url + "/", timeout=PATIENCE) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None:
                self.stderr.seek(0)
                sys.exit(
                    f"handler exited {self.process.returncode} before answering GET /: "
                    f"{self.stderr.read().decode(errors='replace')}"
                )
            if time.monotonic() > deadline:
                self.stop()
                sys.exit("handler never answered GET /")
            time.sleep(0.02)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.stderr.close()
        self.dir.cleanup()
        return self.process.returncode
