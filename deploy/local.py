"""Local real services for development, demos and tests: Mosquitto and influxd on loopback.

Owns starting, watching and stopping the Debian `mosquitto` and `influxd` binaries as the
current user, each on a free 127.0.0.1 port, with config, data and logs under one runtime
directory, and the state file (`services.json`) through which other commands find them.
The pytest fixtures use this same class, so the suite never depends on a system service.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from greenmon.config import ServicesState, read_services_state, services_state_path
from greenmon.errors import ServicesError

if TYPE_CHECKING:
    from greenmon.deploy.broker_auth import BrokerAuthFiles
    from greenmon.deploy.tls import TlsFiles

SERVICES = ("mosquitto", "influxd")
_BINARIES = {"mosquitto": "mosquitto", "influxd": "influxd"}
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/usr/local/sbin"]
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


# Debian package of every program greenmon runs (services, and the C clients the bench uses).
_PACKAGES = {
    "mosquitto": "mosquitto",
    "influxd": "influxdb",
    "mosquitto_pub": "mosquitto-clients",
    "mosquitto_sub": "mosquitto-clients",
}


def find_binary(name: str) -> str:
    """The path of the program `name` (a key of `_PACKAGES`), or a `ServicesError` that says
    which Debian package to install."""
    program = _BINARIES.get(name, name)
    path = shutil.which(program, path=_SEARCH_PATH)
    if path is None:
        raise ServicesError(
            f"`{program}` not found; install it with `apt-get install -y {_PACKAGES[name]}`"
        )
    return path


def _pid_alive(pid: int, binary: str | None = None) -> bool:
    """True if `pid` runs (and, when given, runs `binary`): guards against reused pids."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
        if binary is not None:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            return Path(cmdline.decode(errors="replace")).name == Path(binary).name
        return True
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _conf_path(path: Path) -> str:
    """An absolute path for mosquitto.conf (which runs with cwd = its own directory)."""
    text = str(path.resolve())
    if not path.is_file() or any(ch in text for ch in "\r\n"):
        raise ServicesError(f"{path} is not a file mosquitto.conf can name")
    return text


def _template(name: str) -> str:
    return resources.files("greenmon.deploy").joinpath("templates", name).read_text("utf-8")


@dataclass
class _Proc:
    name: str
    port: int
    pid: int | None = None
    popen: subprocess.Popen[bytes] | None = None


class LocalServices:
    """Mosquitto + influxd under `runtime_dir`; ports are chosen once and kept on restart.

    By default Mosquitto has one anonymous plain listener. With `broker_auth` (from
    `greenmon.deploy.broker_auth.write_broker_auth`) it refuses anonymous clients and applies
    that password file and ACL; with `tls` (from `greenmon.deploy.tls.create_dev_tls`) the one
    listener speaks MQTT over TLS (`mqtts://`), requiring a client certificate only when
    `require_client_certificate` is set.
    """

    def __init__(
        self,
        runtime_dir: Path,
        *,
        startup_timeout: float = 30.0,
        broker_auth: BrokerAuthFiles | None = None,
        tls: TlsFiles | None = None,
        require_client_certificate: bool = False,
        retention_check: str = "30m",
    ) -> None:
        if require_client_certificate and tls is None:
            raise ServicesError("require_client_certificate needs TLS files (tls=...)")
        self.runtime_dir = runtime_dir.resolve()
        self.startup_timeout = startup_timeout
        self.broker_auth = broker_auth
        self.tls = tls
        self.require_client_certificate = require_client_certificate
        # How often influxd deletes what its retention policies no longer keep (its default;
        # tests of expiry use seconds).
        self.retention_check = retention_check
        self._procs: dict[str, _Proc] = {}
        self._rpc_port: int | None = None
        state = read_services_state(self.runtime_dir)
        if state is not None:
            for name in SERVICES:
                if name in state.ports:
                    self._procs[name] = _Proc(name, state.ports[name], state.pids.get(name))
            self._rpc_port = state.ports.get("influxd_rpc")

    # -- public --------------------------------------------------------------------------
    @property
    def mqtt_url(self) -> str:
        scheme = "mqtts" if self.tls is not None else "mqtt"
        return f"{scheme}://127.0.0.1:{self._proc('mosquitto').port}"

    @property
    def influx_url(self) -> str:
        return f"http://127.0.0.1:{self._proc('influxd').port}"

    @property
    def influx_rpc(self) -> str:
        """influxd's backup/restore (RPC) address, for `influxd backup -host`."""
        if self._rpc_port is None:
            raise ServicesError(f"influxd has not been started under {self.runtime_dir}")
        return f"127.0.0.1:{self._rpc_port}"

    def up(self) -> ServicesState:
        """Start whatever is not running (idempotent), wait until both answer."""
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        for name in SERVICES:
            if not self.running(name):
                self.start(name)
        return self._write_state()

    def down(self) -> list[str]:
        """Stop both services; returns the names that were running. Removes the state file."""
        stopped = [name for name in SERVICES if self.running(name)]
        for name in SERVICES:
            self.stop(name)
        with contextlib.suppress(FileNotFoundError):
            services_state_path(self.runtime_dir).unlink()
        return stopped

    def purge(self) -> None:
        """Delete the services' data, config and logs (they must be stopped)."""
        if any(self.running(n) for n in SERVICES):
            raise ServicesError("stop the services before purging their data")
        for name in SERVICES:
            shutil.rmtree(self._dir(name), ignore_errors=True)

    def status(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for name in SERVICES:
            proc = self._procs.get(name)
            running = self.running(name)
            out[name] = {
                "running": running,
                "pid": proc.pid if proc and running else None,
                "port": proc.port if proc else None,
                "url": (self.mqtt_url if name == "mosquitto" else self.influx_url)
                if proc
                else None,
                "answering": running and self._answers(name),
                "log": str(self._dir(name) / f"{name}.log"),
            }
        return out

    def running(self, name: str) -> bool:
        proc = self._procs.get(name)
        if proc is None or proc.pid is None:
            return False
        if proc.popen is not None:
            return proc.popen.poll() is None
        return _pid_alive(proc.pid, _BINARIES[name])

    def start(self, name: str) -> None:
        """Start one service (keeping its earlier port) and wait until it answers."""
        binary = find_binary(name)
        proc = self._procs.get(name)
        if proc is None:
            proc = self._procs[name] = _Proc(name, free_port())
        elif _port_open(proc.port):
            # Our old port was taken by someone else while we were down: pick a new one.
            proc.port = free_port()
        workdir = self._dir(name)
        workdir.mkdir(parents=True, exist_ok=True)
        conf = self._write_config(name, proc.port)
        log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            argv = (
                [binary, "-c", str(conf)] if name == "mosquitto" else [binary, "-config", str(conf)]
            )
            proc.popen = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                start_new_session=True,  # survives the CLI that started it; no stray signals
            )
        except OSError as exc:
            raise ServicesError(f"could not start {name}: {exc}") from exc
        finally:
            log.close()
        proc.pid = proc.popen.pid
        self._wait_answering(name)
        if self._procs.keys() >= set(SERVICES):
            self._write_state()

    def stop(self, name: str, *, timeout: float = 20.0) -> None:
        """SIGTERM, wait, then SIGKILL: never leaves the process behind."""
        proc = self._procs.get(name)
        if proc is None or proc.pid is None:
            return
        if self.running(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            if not self._wait_gone(proc, timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                if not self._wait_gone(proc, 5.0):
                    raise ServicesError(f"{name} (pid {proc.pid}) would not stop")
        if proc.popen is not None:
            proc.popen.wait()
        proc.pid = None
        proc.popen = None

    def kill(self, name: str) -> None:
        """SIGKILL (for crash tests)."""
        proc = self._procs.get(name)
        if proc is not None and proc.pid is not None and self.running(name):
            os.kill(proc.pid, signal.SIGKILL)
            self._wait_gone(proc, 5.0)
            if proc.popen is not None:
                proc.popen.wait()
            proc.pid = None
            proc.popen = None

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    # -- internals -----------------------------------------------------------------------
    def _proc(self, name: str) -> _Proc:
        proc = self._procs.get(name)
        if proc is None:
            raise ServicesError(f"{name} has not been started under {self.runtime_dir}")
        return proc

    def _dir(self, name: str) -> Path:
        return self.runtime_dir / name

    def _write_config(self, name: str, port: int) -> Path:
        workdir = self._dir(name)
        if name == "mosquitto":
            (workdir / "data").mkdir(exist_ok=True)
            text = _template("mosquitto.conf").format(
                port=port,
                data_dir=f"{workdir / 'data'}/",
                user=pwd.getpwuid(os.getuid()).pw_name,
                security=self._mosquitto_security(),
            )
            path = workdir / "mosquitto.conf"
        else:
            if self._rpc_port is None or _port_open(self._rpc_port):
                self._rpc_port = free_port()
            text = _template("influxdb.conf").format(
                http_port=port,
                rpc_port=self._rpc_port,
                dir=workdir,
                retention_check=self.retention_check,
            )
            path = workdir / "influxdb.conf"
        path.write_text(text, encoding="utf-8")
        return path

    def _mosquitto_security(self) -> str:
        """The lines after `listener`: anonymous by default, else password/ACL and/or TLS."""
        if self.broker_auth is None and self.tls is None:
            return "allow_anonymous true"
        lines: list[str] = []
        if self.broker_auth is None:
            lines.append("allow_anonymous true")
        else:
            lines += [
                "# Authentication and ACL from greenmon.deploy.broker_auth.",
                "allow_anonymous false",
                f"password_file {_conf_path(self.broker_auth.passwd)}",
                f"acl_file {_conf_path(self.broker_auth.acl)}",
            ]
        if self.tls is not None:
            lines += [
                "# TLS on this listener (throwaway dev certificates from greenmon.deploy.tls).",
                f"cafile {_conf_path(self.tls.ca_cert)}",
                f"certfile {_conf_path(self.tls.server_cert)}",
                f"keyfile {_conf_path(self.tls.server_key)}",
                f"require_certificate {str(self.require_client_certificate).lower()}",
            ]
        return "\n".join(lines)

    def _answers(self, name: str) -> bool:
        port = self._proc(name).port
        if name == "mosquitto":
            return _port_open(port)
        try:
            return httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1.0).status_code == 204
        except httpx.HTTPError:
            return False

    def _wait_answering(self, name: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if not self.running(name):
                raise ServicesError(
                    f"{name} exited during start-up; see {self._dir(name) / (name + '.log')}:\n"
                    + self._log_tail(name)
                )
            if self._answers(name):
                return
            time.sleep(0.05)
        self.stop(name)
        raise ServicesError(
            f"{name} did not answer within {self.startup_timeout:.0f}s:\n" + self._log_tail(name)
        )

    def _log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self._dir(name) / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _wait_gone(self, proc: _Proc, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen is not None:
                if proc.popen.poll() is not None:
                    return True
            elif proc.pid is None or not _pid_alive(proc.pid):
                return True
            time.sleep(0.05)
        return False

    def _write_state(self) -> ServicesState:
        state = ServicesState(
            mqtt_url=self.mqtt_url,
            influx_url=self.influx_url,
            pids={n: p.pid for n, p in self._procs.items() if p.pid is not None},
            ports={
                **{n: p.port for n, p in self._procs.items()},
                **({"influxd_rpc": self._rpc_port} if self._rpc_port else {}),
            },
        )
        path = services_state_path(self.runtime_dir)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.model_dump(), indent=2), encoding="utf-8")
        tmp.replace(path)
        return state
