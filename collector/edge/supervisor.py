"""Starting, adopting, reloading and stopping the nginx of a collector.

nginx runs in its own process group (a terminal's Ctrl-C reaches the collector only, which
stops nginx gracefully) but in the collector's session, so that the kernel's autogroup scheduling
puts both in one group, where the collector's lower priority (``capture_nice``) makes capture yield to
nginx rather than to the whole machine. nginx keeps answering when the collector process dies:
the collector restarted on the same state directory finds it by its
pid file (a live ``nginx: master process`` whose command line names this state directory's
``nginx.conf``), *adopts* it (``SIGHUP``: re-read the regenerated configuration) and reads
what it logged meanwhile. A collector stopping normally stops nginx gracefully (``SIGQUIT``:
in-flight requests finish). While the collector runs, :meth:`Nginx.check` restarts an nginx
that died.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from driftwarden.collector.edge.nginx_conf import NJS_MODULE, Rendered
from driftwarden.errors import UserError

log = logging.getLogger("driftwarden.collector")

NGINX = "/usr/sbin/nginx"
INSTALL_HINT = "apt-get install -y --no-install-recommends nginx libnginx-mod-http-js"


def find_nginx(binary: str | None = None) -> str:
    """The nginx binary (with the njs module next to it); a clear UserError when either is missing."""
    path = binary or shutil.which("nginx") or NGINX
    if not Path(path).exists():
        raise UserError(f"the nginx engine needs nginx ({path} not found); on Debian/Ubuntu: {INSTALL_HINT}")
    if not Path(NJS_MODULE).exists():
        raise UserError(f"the nginx engine needs nginx's njs module ({NJS_MODULE} not found): {INSTALL_HINT}")
    return path


class Nginx:
    """One nginx master process serving ``rendered`` (ours or adopted)."""

    def __init__(self, rendered: Rendered, binary: str) -> None:
        self.rendered = rendered
        self.binary = binary
        self.nice = os.getpriority(os.PRIO_PROCESS, 0)  # nginx's; the collector may lower its own priority later
        self.pid: int | None = None
        self._child: subprocess.Popen | None = None
        self.restarts = 0

    def _cmd(self, *extra: str) -> list[str]:
        r = self.rendered
        return [self.binary, "-c", str(r.conf), "-p", str(r.state_dir), "-e", str(r.error_log), *extra]

    def test(self) -> None:
        """``nginx -t``: a clear UserError when the rendered configuration is refused."""
        out = subprocess.run(self._cmd("-t", "-q"), capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise UserError(f"nginx refused the generated configuration {self.rendered.conf}: {_last(out.stderr)}")

    def start_or_adopt(self, timeout: float = 15.0) -> str:
        """Adopt a live nginx of this state directory (reloading its configuration), else start one.

        Returns "adopted" or "started". Raises UserError when nginx cannot start (port in use, ...).
        """
        self.test()
        pid = self._running_pid()
        if pid is not None:
            self.pid = pid
            os.kill(pid, signal.SIGHUP)
            log.warning(
                "nginx (pid %d) of %s was still running: adopted it and reloaded its configuration",
                pid,
                self.rendered.state_dir,
            )
            return "adopted"
        self._spawn(timeout)
        return "started"

    def _spawn(self, timeout: float) -> None:
        self.rendered.pid_file.unlink(missing_ok=True)
        self._child = subprocess.Popen(
            self._cmd("-g", "daemon off; master_process on;"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            process_group=0,  # Ctrl-C at a terminal reaches the collector, which stops nginx gracefully
            preexec_fn=self._restore_priority,
        )
        self.pid = self._child.pid
        host = _connect_host(self.rendered)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._child.poll() is not None:
                err = self._child.stderr.read().decode(errors="replace") if self._child.stderr else ""
                self._child = None
                self.pid = None
                raise UserError(f"nginx did not start: {_last(err) or _last(_tail(self.rendered.error_log))}")
            try:
                with socket.create_connection((host, self.rendered.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise UserError(f"nginx did not listen on port {self.rendered.port} within {timeout:g} s")

    def _restore_priority(self) -> None:
        """In the child: nginx at the priority the collector started with (a restart after ``os.nice``)."""
        try:
            os.setpriority(os.PRIO_PROCESS, 0, self.nice)
        except OSError:
            pass  # raising a priority needs CAP_SYS_NICE: nginx then runs at the collector's

    def _running_pid(self) -> int | None:
        try:
            pid = int(self.rendered.pid_file.read_text().strip())
            # nginx rewrites its title: "nginx: master process /usr/sbin/nginx -c CONF -p DIR ..."
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            return None
        if cmdline.startswith("nginx: master process") and f" -c {self.rendered.conf} " in cmdline + " ":
            return pid
        return None

    def alive(self) -> bool:
        if self.pid is None:
            return False
        if self._child is not None:
            return self._child.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return Path(f"/proc/{self.pid}").exists() and _state(self.pid) != "Z"

    def check(self) -> None:
        """Restart nginx when it died (logged as an error)."""
        if self.alive():
            return
        self.restarts += 1
        log.error("nginx (pid %s) is gone; restarting it (restart %d)", self.pid, self.restarts)
        try:
            self._spawn(15.0)
        except UserError as exc:
            log.error("%s", exc)

    def reopen_logs(self) -> None:
        """``SIGUSR1``: nginx's workers reopen the capture log (after the collector renamed it)."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGUSR1)

    def stop(self, grace_s: float = 10.0) -> None:
        """``SIGQUIT`` (graceful: in-flight requests finish), then ``SIGTERM``/``SIGKILL`` if it lingers."""
        pid = self.pid
        if pid is None:
            return
        for sig, wait in ((signal.SIGQUIT, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            if self._wait_exit(wait):
                break
        if self._child is not None:
            if self._child.stderr is not None:
                self._child.stderr.close()
            self._child = None
        self.pid = None

    def _wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._child is not None:
                if self._child.poll() is not None:
                    return True
            elif not self.alive():
                return True
            time.sleep(0.02)
        return False


def _connect_host(rendered: Rendered) -> str:
    text = rendered.conf.read_text()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("listen "):
            host = line.split()[1].rsplit(":", 1)[0].strip("[]")
            return "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    return "127.0.0.1"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-4000:]
    except OSError:
        return ""


def _last(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
