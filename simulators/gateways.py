"""Gateways: publish a run's messages to the broker, one MQTT client per gateway (asyncio).

This module owns the network side of the simulator. Each gateway is an `aiomqtt.Client` whose
client id is the gateway id (so a broker ACL from `greenmon.deploy.broker_auth` applies, with
the per-gateway credentials of its ``credentials.csv`` when given). Messages go out at QoS 1
in the order the plan gives (per gateway: publication time), with a window of unacknowledged
messages per client; a gateway's publish completes only on the broker's PUBACK.

- Bounded concurrency: at most ``concurrency`` gateways are connected at once (the broker and
  this process have file-descriptor limits; the soft RLIMIT_NOFILE is raised to the hard one).
- ``speed``: simulated seconds per real second (None: as fast as possible). When paced, a
  gateway waits for each message's time, stays connected while its next message is due within
  ``linger_s`` and no other gateway waits for a slot, and disconnects otherwise.
- ``rate``: a cap on messages per second over all gateways (token bucket).
- ``processes``: publish from that many processes (`publish_processes`), each with its share of
  whole gateways, started together: one Python process tops out at about 9,000 messages/s.
- ``reconnect`` on a message: the gateway disconnects after its in-flight messages are
  acknowledged and connects again before publishing it (the ``disconnect`` fault).
- Connection failures are retried with capped backoff; after ``connect_attempts`` a gateway
  gives up and the run fails with a `PublishError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiomqtt
import polars as pl

from greenmon.simulators.errors import PublishError

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

_LOG: Final = logging.getLogger("greenmon.simulators.gateways")
DEFAULT_CONCURRENCY: Final = 256
DEFAULT_WINDOW: Final = 8


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


@dataclass
class _Shared:
    opts: PublishOptions
    host: str
    port: int
    tls: aiomqtt.TLSParameters | None
    slots: asyncio.Semaphore
    limiter: _Limiter
    t0: float
    result: PublishResult
    progress: Callable[[int], None] | None
    waiting: int = 0

    def due(self, at_ms: int) -> float:
        speed = self.opts.speed
        if not speed:
            return 0.0
        return self.t0 + (at_ms - self.opts.origin_ms) / 1000.0 / speed


def _endpoint(opts: PublishOptions) -> tuple[str, int, aiomqtt.TLSParameters | None]:
    url = urlsplit(opts.mqtt_url)
    if url.scheme not in ("mqtt", "mqtts"):
        raise PublishError(
            f"--mqtt-url must be mqtt://host:port or mqtts://host:port: {opts.mqtt_url}"
        )
    tls = url.scheme == "mqtts"
    params = (
        aiomqtt.TLSParameters(
            ca_certs=str(opts.ca_file) if opts.ca_file else None,
            certfile=str(opts.cert_file) if opts.cert_file else None,
            keyfile=str(opts.key_file) if opts.key_file else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        if tls
        else None
    )
    return url.hostname or "127.0.0.1", url.port or (8883 if tls else 1883), params


async def _gateway(
    shared: _Shared,
    client_id: str,
    enterprise: str,
    at: list[int],
    topics: list[str],
    payloads: list[bytes],
    reconnect: list[bool],
) -> None:
    opts = shared.opts
    username, password = opts.username, opts.password
    gw_user = f"{enterprise}.{client_id}"
    if gw_user in opts.credentials:
        username, password = gw_user, opts.credentials[gw_user]
    client = aiomqtt.Client(
        shared.host,
        shared.port,
        identifier=client_id,
        username=username,
        password=password,
        clean_session=True,
        keepalive=60,
        timeout=opts.timeout_s,
        max_inflight_messages=opts.window,
        tls_params=shared.tls,
        logger=_LOG,
    )
    client.pending_calls_threshold = opts.window + 1
    n = len(at)
    i = 0
    loop = asyncio.get_running_loop()
    while i < n:
        delay = shared.due(at[i]) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        shared.waiting += 1
        try:
            await shared.slots.acquire()
        finally:
            shared.waiting -= 1
        try:
            i = await _session(shared, client, client_id, at, topics, payloads, reconnect, i)
        finally:
            shared.slots.release()


async def _connect(shared: _Shared, client: aiomqtt.Client, client_id: str) -> None:
    opts = shared.opts
    for attempt in range(opts.connect_attempts):
        try:
            await client.__aenter__()
            shared.result.connects += 1
            return
        except aiomqtt.MqttError as exc:
            shared.result.retries += 1
            if attempt + 1 == opts.connect_attempts:
                raise PublishError(
                    f"gateway {client_id}: cannot connect to {opts.mqtt_url}: {exc}"
                ) from exc
            await asyncio.sleep(min(5.0, 0.1 * 2**attempt))


async def _session(
    shared: _Shared,
    client: aiomqtt.Client,
    client_id: str,
    at: list[int],
    topics: list[str],
    payloads: list[bytes],
    reconnect: list[bool],
    i: int,
) -> int:
    """One connected stretch of a gateway: publish from message `i`; return where it stopped."""
    opts = shared.opts
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()
    n = len(at)
    await _connect(shared, client, client_id)
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
                await _drain(pending, client_id, opts.timeout_s)
                await client.__aexit__(None, None, None)
                shared.result.reconnects += 1
                await _connect(shared, client, client_id)
            await shared.limiter.take()
            task = asyncio.create_task(
                # math.inf: no timer task per message; stalls are caught by the window wait
                client.publish(topics[i], payloads[i], qos=1, timeout=math.inf)
            )
            task.add_done_callback(lambda _t: _count(shared))
            pending.add(task)
            i += 1
            if len(pending) >= opts.window:
                done, pending = await asyncio.wait(
                    pending, timeout=opts.timeout_s, return_when=asyncio.FIRST_COMPLETED
                )
                _raise_first(done, client_id, stalled=not done, timeout=opts.timeout_s)
        await _drain(pending, client_id, opts.timeout_s)
    finally:
        for task in pending:
            task.cancel()
        with contextlib.suppress(aiomqtt.MqttError):
            await client.__aexit__(None, None, None)
    return i


def _count(shared: _Shared) -> None:
    shared.result.published += 1
    if shared.progress is not None:
        shared.progress(1)


def _raise_first(
    done: set[asyncio.Task[None]], client_id: str, *, stalled: bool = False, timeout: float = 0
) -> None:
    if stalled:
        raise PublishError(f"gateway {client_id}: no PUBACK from the broker for {timeout:g}s")
    for task in done:
        exc = task.exception()
        if exc is not None:
            raise PublishError(f"gateway {client_id}: publish failed: {exc}") from exc


async def _drain(pending: set[asyncio.Task[None]], client_id: str, timeout: float) -> None:
    if pending:
        done, left = await asyncio.wait(pending, timeout=timeout)
        _raise_first(done, client_id, stalled=bool(left), timeout=timeout)
        pending.clear()


async def publish_async(
    messages: pl.DataFrame,
    opts: PublishOptions,
    progress: Callable[[int], None] | None = None,
    *,
    t0: float | None = None,
) -> PublishResult:
    """Publish `messages` (columns ``at_ms, client, topic, payload, reconnect``, in order).
    `t0`: the ``time.monotonic()`` instant that maps to ``opts.origin_ms`` when paced (default:
    now), shared by the processes of a multi-process run."""
    host, port, tls = _endpoint(opts)
    raise_nofile_limit()
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
    frame = messages.select(
        "at_ms",
        "client",
        "topic",
        "payload",
        "reconnect",
        pl.col("topic").str.split("/").list.get(-3).alias("enterprise"),
    )
    groups = frame.partition_by("client", maintain_order=True, as_dict=False)
    started = time.perf_counter()
    tasks = [
        asyncio.create_task(
            _gateway(
                shared,
                str(g["client"][0]),
                str(g["enterprise"].mode().sort()[0]),
                g["at_ms"].to_list(),
                g["topic"].to_list(),
                [p.encode("utf-8") for p in g["payload"].to_list()],
                g["reconnect"].to_list(),
            )
        )
        for g in groups
    ]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
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
        messages = pl.read_ipc(path)
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

        result = asyncio.run(publish_async(messages, opts, advance, t0=start.value))
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
