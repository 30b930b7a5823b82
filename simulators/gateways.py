"""Gateways: publish a run's messages to the broker, one MQTT client per gateway.

This module owns the network side of the simulator. Each gateway is a `paho.mqtt.client.Client`
whose client id is the gateway id (so a broker ACL from `greenmon.deploy.broker_auth` applies,
with the per-gateway credentials of its ``credentials.csv`` when given), driven by an asyncio
loop through paho's external-loop callbacks (`_Link`): a publish is one paho call, with no task,
future or thread per message. Messages go out at QoS 1 in the order the plan gives (per
gateway: publication time), with a window of unacknowledged messages per client; the run
succeeds only when the broker has acknowledged (PUBACK) every message.

- Bounded concurrency: at most ``concurrency`` gateways are connected at once (the broker and
  this process have file-descriptor limits; the soft RLIMIT_NOFILE is raised to the hard one).
- ``speed``: simulated seconds per real second (None: as fast as possible). When paced, a
  gateway waits for each message's time, stays connected while its next message is due within
  ``linger_s`` and no other gateway waits for a slot, and disconnects otherwise.
- ``rate``: a cap on messages per second over all gateways (token bucket).
- ``processes``: publish from that many processes (`publish_processes`), each with its share of
  whole gateways, loaded and encoded before a common start: one Python process tops out at
  about 12,000 QoS 1 messages/s, most of it paho's own per-message work.
- ``reconnect`` on a message: the gateway disconnects after its in-flight messages are
  acknowledged and connects again before publishing it (the ``disconnect`` fault).
- Connection failures are retried with capped backoff; after ``connect_attempts`` a gateway
  gives up and the run fails with a `PublishError`; so does a lost connection or a broker
  silent for ``timeout_s`` with messages unacknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import paho.mqtt.client as paho
import polars as pl
from paho.mqtt.enums import CallbackAPIVersion

from greenmon.simulators.errors import PublishError
from greenmon.simulators.mqtt import GatewayClient

__all__ = [
    "PublishOptions",
    "PublishResult",
    "default_processes",
    "load_credentials",
    "publish",
    "publish_async",
    "publish_processes",
    "raise_nofile_limit",
]

DEFAULT_CONCURRENCY: Final = 256
DEFAULT_WINDOW: Final = 32


@dataclass(frozen=True)
class PublishOptions:
    """Where and how to publish. ``origin_ms``: the simulated instant that maps to the start
    of publishing when paced (the run's start)."""

    mqtt_url: str
    origin_ms: int = 0
    speed: float | None = None
    rate: float | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    window: int = DEFAULT_WINDOW
    linger_s: float = 5.0
    username: str | None = None
    password: str | None = None
    credentials: Mapping[str, str] = field(default_factory=dict)  # gateway username -> password
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    connect_attempts: int = 8
    timeout_s: float = 30.0
    #: Publisher processes, each with its share of the gateways (whole gateways, so each
    #: gateway's messages keep their order); concurrency and rate are shared out.
    processes: int = 1


@dataclass
class PublishResult:
    """What happened: messages acknowledged by the broker, connections, time."""

    published: int = 0
    connects: int = 0
    reconnects: int = 0
    retries: int = 0
    seconds: float = 0.0
    max_late_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.published / self.seconds if self.seconds > 0 else 0.0


def default_processes() -> int:
    """Publisher processes by default: one per CPU, at most 4 (the broker needs CPU too)."""
    return max(1, min(4, os.cpu_count() or 1))


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft open-files limit to the hard limit; return (soft, hard) after."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return (-1, -1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft, hard


def load_credentials(path: Path) -> dict[str, str]:
    """Read ``credentials.csv`` (``username,password,topic``) written by
    `greenmon.deploy.broker_auth.write_broker_auth`: gateway user name -> password."""
    try:
        frame = pl.read_csv(path, infer_schema=False, columns=["username", "password"])
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise PublishError(f"cannot read credentials {path}: {exc}") from exc
    return dict(frame.iter_rows())


class _Limiter:
    """Token bucket shared by every gateway: at most `rate` messages per second."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next = 0.0

    async def take(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self.next <= now:
            self.next = now + self.interval
            return
        wait = self.next - now
        self.next += self.interval
        await asyncio.sleep(wait)


@dataclass(frozen=True)
class _Gateway:
    """One gateway's messages, ready to send: topics and payloads encoded (and the topics
    checked) before the clock starts."""

    client_id: str
    enterprise: str
    at: list[int]
    topics: list[bytes]
    payloads: list[bytes]
    reconnect: list[bool]


@dataclass
class _Shared:
    opts: PublishOptions
    host: str
    port: int
    tls: ssl.SSLContext | None
    slots: asyncio.Semaphore
    limiter: _Limiter
    t0: float
    result: PublishResult
    progress: Callable[[int], None] | None
    waiting: int = 0
    links: set[_Link] = field(default_factory=set)

    def due(self, at_ms: int) -> float:
        speed = self.opts.speed
        if not speed:
            return 0.0
        return self.t0 + (at_ms - self.opts.origin_ms) / 1000.0 / speed

    def acked(self, n: int) -> None:
        self.result.published += n
        if self.progress is not None:
            self.progress(n)


def _endpoint(opts: PublishOptions) -> tuple[str, int, ssl.SSLContext | None]:
    """Host, port and (for mqtts) one TLS context shared by every gateway of the process."""
    url = urlsplit(opts.mqtt_url)
    if url.scheme not in ("mqtt", "mqtts"):
        raise PublishError(
            f"--mqtt-url must be mqtt://host:port or mqtts://host:port: {opts.mqtt_url}"
        )
    context = None
    if url.scheme == "mqtts":
        try:
            context = ssl.create_default_context(cafile=str(opts.ca_file) if opts.ca_file else None)
            if opts.cert_file:
                context.load_cert_chain(
                    str(opts.cert_file), str(opts.key_file) if opts.key_file else None
                )
        except (OSError, ssl.SSLError) as exc:
            raise PublishError(f"cannot load the TLS files for {opts.mqtt_url}: {exc}") from exc
    tls = context is not None
    return url.hostname or "127.0.0.1", url.port or (8883 if tls else 1883), context


class _Lost(Exception):
    """The broker closed a gateway's connection, or refused it (the reason as text)."""


class _Link:
    """One gateway's MQTT connection: a paho client driven by the running asyncio loop
    through paho's external-loop callbacks (socket open and close, "want to write"), so a
    publish costs one `paho.Client.publish` call and no task, future or thread hop.

    The window of unacknowledged messages is kept here, not by paho: with paho's own
    ``max_inflight_messages`` every PUBACK rescans the client's whole outgoing queue.
    """

    def __init__(self, shared: _Shared, client_id: str, username: str | None,
                 password: str | None) -> None:  # fmt: skip
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()
        self.shared = shared
        self.client_id = client_id
        client = GatewayClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=paho.MQTTv311,
        )
        client.max_inflight_messages_set(0)  # the window is ours (see the class docstring)
        client.max_queued_messages_set(0)
        if username is not None:
            client.username_pw_set(username, password)
        if shared.tls is not None:
            client.tls_set_context(shared.tls)
        client.on_socket_open = self._on_open
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._on_want_write
        client.on_socket_unregister_write = self._on_done_writing
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        self.client = client
        self.connected = False
        self.inflight = 0
        self.acked = 0
        self.reported = 0
        self._until = 0  # wake the waiter when `inflight` falls to this
        self._waiter: asyncio.Future[None] | None = None
        self._connack: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None

    # -- paho's callbacks (on this loop's thread, except socket callbacks during connect)

    def _in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        if threading.get_ident() == self.thread:
            fn(*args)
        else:  # paho's connect runs in the executor: hand the socket work to the loop
            self.loop.call_soon_threadsafe(fn, *args)

    def _on_open(self, _c: Any, _u: Any, sock: Any) -> None:
        self._in_loop(self._watch, sock)

    def _watch(self, sock: socket.socket) -> None:
        if self.client.socket() is not sock:  # closed again before the loop got to it
            return
        self.loop.add_reader(sock, self._readable)

    def _on_close(self, _c: Any, _u: Any, sock: Any) -> None:
        # paho closes the socket right after this callback: pass on its number, still valid
        self._in_loop(self._unwatch, sock.fileno())

    def _unwatch(self, fd: int) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(fd)
            self.loop.remove_writer(fd)

    def _on_want_write(self, _c: Any, _u: Any, sock: Any) -> None:
        self._in_loop(self._want_write, sock)

    def _want_write(self, sock: socket.socket) -> None:
        if self.client.socket() is not sock:
            return
        self.loop.add_writer(sock, self.client.loop_write)

    def _on_done_writing(self, _c: Any, _u: Any, sock: Any) -> None:
        self._in_loop(self._done_writing, sock.fileno())

    def _done_writing(self, fd: int) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_writer(fd)

    def _readable(self) -> None:
        client = self.client
        # every packet waiting, including whole ones already read ahead (or held by TLS)
        while client.loop_read() == paho.MQTT_ERR_SUCCESS:
            if not (client.buffered or _tls_pending(client)):
                break
        if self.acked != self.reported:
            self.shared.acked(self.acked - self.reported)
            self.reported = self.acked

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        fut, self._connack = self._connack, None
        if fut is None or fut.done():
            return
        if reason.is_failure:
            fut.set_exception(_Lost(f"the broker refused the connection: {reason}"))
        else:
            self.connected = True
            fut.set_result(None)

    def _on_publish(self, _c: Any, _u: Any, _mid: int, _reason: Any, _p: Any) -> None:
        self.inflight -= 1
        self.acked += 1
        if self.inflight <= self._until and self._waiter is not None:
            if not self._waiter.done():
                self._waiter.set_result(None)
            self._waiter = None

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected = False
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
            return
        lost = _Lost(f"connection lost: {reason}")
        for fut in (self._waiter, self._connack):
            if fut is not None and not fut.done():
                fut.set_exception(lost)

    # -- what a gateway does

    async def connect(self) -> None:
        shared = self.shared
        self._connack = fut = self.loop.create_future()
        try:
            # paho's connect blocks (TCP, TLS handshake): in the executor, like aiomqtt does
            await self.loop.run_in_executor(None, self.client.connect, shared.host, shared.port, 60)
            await asyncio.wait_for(fut, shared.opts.timeout_s)
        except (OSError, ssl.SSLError, TimeoutError, _Lost) as exc:
            self._connack = None
            self._drop()
            raise _Lost(str(exc) or type(exc).__name__) from exc
        self.inflight = 0

    def publish(self, topic: bytes, payload: bytes) -> None:
        rc = self.client.publish_qos1(topic, payload)
        if rc != paho.MQTT_ERR_SUCCESS:
            raise _Lost(f"publish refused: {paho.error_string(rc)}")
        self.inflight += 1

    async def wait(self, until: int) -> None:
        """Until at most `until` messages are unacknowledged (PublishError after the
        timeout without a PUBACK, or when the connection is lost)."""
        while self.inflight > until:
            if not self.connected:
                raise _Lost("connection lost")
            self._until = until
            self._waiter = fut = self.loop.create_future()
            before = self.acked
            try:
                await asyncio.wait_for(fut, self.shared.opts.timeout_s)
            except TimeoutError:
                if self.acked == before:
                    raise PublishError(
                        f"gateway {self.client_id}: no PUBACK from the broker for "
                        f"{self.shared.opts.timeout_s:g}s"
                    ) from None
            finally:
                self._waiter = None

    async def close(self) -> None:
        """Disconnect cleanly (DISCONNECT written, socket closed)."""
        if self.connected:
            self._closed = fut = self.loop.create_future()
            try:
                self.client.disconnect()
                await asyncio.wait_for(fut, self.shared.opts.timeout_s)
            except (TimeoutError, OSError):
                pass
            finally:
                self._closed = None
        self._drop()

    def _drop(self) -> None:
        # a socket paho still holds (a CONNACK that never came): DISCONNECT and close it;
        # paho itself closes the socket of a refused or lost connection
        self.connected = False
        if self.client.socket() is not None:
            self.client.disconnect()


def _tls_pending(client: paho.Client) -> bool:
    sock = client.socket()
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


async def _gateway(shared: _Shared, gateway: _Gateway) -> None:
    opts = shared.opts
    username, password = opts.username, opts.password
    gw_user = f"{gateway.enterprise}.{gateway.client_id}"
    if gw_user in opts.credentials:
        username, password = gw_user, opts.credentials[gw_user]
    link = _Link(shared, gateway.client_id, username, password)
    n = len(gateway.at)
    i = 0
    loop = asyncio.get_running_loop()
    while i < n:
        delay = shared.due(gateway.at[i]) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        shared.waiting += 1
        try:
            await shared.slots.acquire()
        finally:
            shared.waiting -= 1
        try:
            i = await _session(shared, link, gateway, i)
        finally:
            shared.slots.release()


async def _connect(shared: _Shared, link: _Link) -> None:
    opts = shared.opts
    for attempt in range(opts.connect_attempts):
        try:
            await link.connect()
            shared.result.connects += 1
            shared.links.add(link)
            return
        except _Lost as exc:
            shared.result.retries += 1
            if attempt + 1 == opts.connect_attempts:
                raise PublishError(
                    f"gateway {link.client_id}: cannot connect to {opts.mqtt_url}: {exc}"
                ) from exc
            await asyncio.sleep(min(5.0, 0.1 * 2**attempt))


async def _session(shared: _Shared, link: _Link, gateway: _Gateway, i: int) -> int:
    """One connected stretch of a gateway: publish from message `i`; return where it stopped."""
    opts = shared.opts
    loop = asyncio.get_running_loop()
    at, topics, payloads, reconnect = (
        gateway.at,
        gateway.topics,
        gateway.payloads,
        gateway.reconnect,
    )
    n = len(at)
    window = max(1, opts.window)
    refill = window // 2  # wake up when half the window is acknowledged, not on every PUBACK
    await _connect(shared, link)
    try:
        while i < n:
            due = shared.due(at[i])
            now = loop.time()
            if due > now:
                if due - now > opts.linger_s or shared.waiting:
                    break
                await asyncio.sleep(due - now)
            elif opts.speed:
                shared.result.max_late_s = max(shared.result.max_late_s, now - due)
            if reconnect[i]:  # the `disconnect` fault: drop the connection, come back
                await link.wait(0)
                await link.close()
                shared.result.reconnects += 1
                await _connect(shared, link)
            await shared.limiter.take()
            link.publish(topics[i], payloads[i])
            i += 1
            if link.inflight >= window:
                await link.wait(refill)
        await link.wait(0)
    except _Lost as exc:
        raise PublishError(f"gateway {link.client_id}: publish failed: {exc}") from exc
    finally:
        shared.links.discard(link)
        await link.close()
    return i


async def _keepalive(shared: _Shared) -> None:
    """paho's housekeeping (keep-alive PINGREQ, its timeout) for every connected gateway."""
    while True:
        await asyncio.sleep(1.0)
        for link in list(shared.links):
            if link.connected:
                link.client.loop_misc()


def _gateways(messages: pl.DataFrame) -> list[_Gateway]:
    """`messages` (columns ``at_ms, client, topic, payload, reconnect``, in order) split by
    gateway, each gateway's in its order, topics and payloads encoded to the bytes that are
    sent (each topic checked once: a wildcard or an empty topic is a `PublishError`)."""
    checked: dict[str, bytes] = {}

    def topic(text: str) -> bytes:
        if text not in checked:
            try:
                checked[text] = GatewayClient.check_topic(text)
            except ValueError as exc:
                raise PublishError(f"cannot publish to topic {text!r}: {exc}") from exc
        return checked[text]

    frame = messages.select(
        "at_ms",
        "client",
        "topic",
        "payload",
        "reconnect",
        pl.col("topic").str.split("/").list.get(-3).alias("enterprise"),
    )
    return [
        _Gateway(
            client_id=str(g["client"][0]),
            enterprise=str(g["enterprise"].mode().sort()[0]),
            at=g["at_ms"].to_list(),
            topics=[topic(t) for t in g["topic"].to_list()],
            payloads=[p.encode("utf-8") for p in g["payload"].to_list()],
            reconnect=g["reconnect"].to_list(),
        )
        for g in frame.partition_by("client", maintain_order=True, as_dict=False)
    ]


async def publish_async(
    messages: pl.DataFrame | list[_Gateway],
    opts: PublishOptions,
    progress: Callable[[int], None] | None = None,
    *,
    t0: float | None = None,
) -> PublishResult:
    """Publish `messages` (columns ``at_ms, client, topic, payload, reconnect``, in order; or
    `_gateways` of them). `t0`: the ``time.monotonic()`` instant that maps to
    ``opts.origin_ms`` when paced (default: now), shared by the processes of a run."""
    host, port, tls = _endpoint(opts)
    raise_nofile_limit()
    gateways = _gateways(messages) if isinstance(messages, pl.DataFrame) else messages
    loop = asyncio.get_running_loop()
    result = PublishResult()
    shared = _Shared(
        opts=opts,
        host=host,
        port=port,
        tls=tls,
        slots=asyncio.Semaphore(max(1, opts.concurrency)),
        limiter=_Limiter(opts.rate),
        t0=loop.time() if t0 is None else t0,
        result=result,
        progress=progress,
    )
    started = time.perf_counter()
    tasks = [asyncio.create_task(_gateway(shared, gateway)) for gateway in gateways]
    housekeeping = asyncio.create_task(_keepalive(shared))
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        housekeeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await housekeeping
    result.seconds = time.perf_counter() - started
    return result


def publish(
    messages: pl.DataFrame,
    opts: PublishOptions,
    progress: Callable[[int], None] | None = None,
) -> PublishResult:
    """Publish `messages` and wait: in this process (`publish_async`), or with
    ``opts.processes`` > 1 in that many processes (`publish_processes`)."""
    gateways = messages.get_column("client").n_unique() if messages.height else 0
    if opts.processes > 1 and gateways > 1:
        return publish_processes(messages, opts, progress)
    return asyncio.run(publish_async(messages, opts, progress))


# --------------------------------------------------------------------------- processes


def shares(messages: pl.DataFrame, parts: int) -> list[list[str]]:
    """Gateways (client ids) dealt to `parts` publishers, whole gateways, balanced by their
    message counts (largest first to the least loaded; ties by id: deterministic)."""
    counts = (
        messages.group_by("client")
        .len()
        .sort(["len", "client"], descending=[True, False])
        .iter_rows()
    )
    load = [0] * parts
    out: list[list[str]] = [[] for _ in range(parts)]
    for client, n in counts:
        i = min(range(parts), key=lambda k: (load[k], k))
        out[i].append(str(client))
        load[i] += int(n)
    return [share for share in out if share]


def _publisher(
    path: str,
    opts: PublishOptions,
    ready: Any,
    go: Any,
    start: Any,
    sent: Any,
    results: Any,
) -> None:
    """A publisher process: load its share, wait for the start, publish, report."""
    try:
        gateways = _gateways(pl.read_ipc(path))  # ready to send before the common start
        ready.release()
        go.wait()
        pending = [0]
        last = [time.monotonic()]

        def advance(n: int) -> None:
            pending[0] += n
            now = time.monotonic()
            if now - last[0] >= 0.1:
                with sent.get_lock():
                    sent.value += pending[0]
                pending[0], last[0] = 0, now

        result = asyncio.run(publish_async(gateways, opts, advance, t0=start.value))
        with sent.get_lock():
            sent.value += pending[0]
        results.put(("ok", result.published, result.connects, result.reconnects,
                     result.retries, result.max_late_s))  # fmt: skip
    except BaseException as exc:  # reported to the parent, which raises
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def publish_processes(
    messages: pl.DataFrame,
    opts: PublishOptions,
    progress: Callable[[int], None] | None = None,
) -> PublishResult:
    """Publish with ``opts.processes`` processes, each with its share of the gateways
    (`shares`), each loaded before a common start; the same messages, byte for byte, and each
    gateway's in its order. ``seconds`` runs from the common start to the last PUBACK."""
    import multiprocessing
    import tempfile

    parts = shares(messages, max(1, opts.processes))
    ctx = multiprocessing.get_context("spawn")  # no fork: Polars and asyncio hold threads
    each = replace(
        opts,
        processes=1,
        concurrency=max(1, opts.concurrency // len(parts)),
        rate=opts.rate / len(parts) if opts.rate else None,
    )
    ready, go = ctx.Semaphore(0), ctx.Event()
    start, sent = ctx.Value("d", 0.0), ctx.Value("q", 0)
    results = ctx.Queue()
    procs: list[Any] = []
    result = PublishResult()
    with tempfile.TemporaryDirectory(prefix="greenmon-publish-") as tmp:
        try:
            for i, share in enumerate(parts):
                path = f"{tmp}/share-{i}.arrow"
                messages.filter(pl.col("client").is_in(share)).write_ipc(path)
                proc = ctx.Process(
                    target=_publisher,
                    args=(path, each, ready, go, start, sent, results),
                    name=f"greenmon-publisher-{i}",
                    daemon=True,
                )
                proc.start()
                procs.append(proc)
            for _ in procs:  # every share loaded (or a publisher died trying)
                while not ready.acquire(timeout=0.5):
                    if not any(p.is_alive() for p in procs):
                        break
            start.value = time.monotonic()
            go.set()
            started = time.perf_counter()
            reported, done = 0, 0
            while done < len(procs):
                try:
                    item = results.get(timeout=0.1)
                except Exception:  # queue.Empty: report progress, look for a dead process
                    item = None
                if progress is not None and sent.value > reported:
                    progress(sent.value - reported)
                    reported = sent.value
                if item is None:
                    if not any(p.is_alive() for p in procs) and results.empty():
                        raise PublishError("a publisher process died without a report")
                    continue
                if item[0] == "error":
                    raise PublishError(f"publisher process failed: {item[1]}")
                done += 1
                result.published += item[1]
                result.connects += item[2]
                result.reconnects += item[3]
                result.retries += item[4]
                result.max_late_s = max(result.max_late_s, item[5])
            result.seconds = time.perf_counter() - started
            if progress is not None and sent.value > reported:
                progress(sent.value - reported)
        finally:
            for proc in procs:
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(timeout=5)
    return result
