"""Webhook messages: the generic JSON body and the DingTalk and WeCom group-robot formats (pure).

- ``generic``: ``{"source": "greenmon", "events": [event, ...]}`` — each event as the outbox
  holds it (`event`), with its transition ``id`` so that a receiver can drop a repeat;
- ``dingtalk`` (钉钉自定义机器人): ``{"msgtype": "markdown", "markdown": {"title", "text"}}``;
  with a signing secret (加签) the URL gets ``timestamp`` (ms) and ``sign`` =
  base64(HMAC-SHA256(secret, "{timestamp}\\n{secret}")), URL-encoded. The robot answers HTTP 200
  with ``{"errcode": 0}`` on success; any other errcode is a failure;
- ``wecom`` (企业微信群机器人): ``{"msgtype": "markdown", "markdown": {"content"}}``, content at
  most 4,096 bytes; same ``errcode`` convention.

Several events share one message while it stays under the format's size (each robot accepts
20 messages a minute); a longer list becomes several messages. `mask_url` hides the key a
robot URL carries wherever a URL is shown.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

__all__ = [
    "FORMATS",
    "RULE_TITLES",
    "bodies",
    "dingtalk_signed_url",
    "mask_url",
    "response_error",
]

FORMATS: Final = ("generic", "dingtalk", "wecom")
#: How a rule is named to people (Chinese first: the readers are Chinese bureaus and plants).
RULE_TITLES: Final = {
    "double_control_total": "能耗总量 double-control total",
    "double_control_intensity": "能耗强度 double-control intensity",
    "sudden_change": "用能突变 sudden change",
    "data_completeness": "数据完整率 data completeness",
    "gateway_silent": "网关离线 gateway silent",
}
_SIZE: Final = {"dingtalk": 18_000, "wecom": 4_000}  # bytes of markdown per message
_GENERIC_EVENTS: Final = 100
_MARK: Final = {"red": "🔴", "yellow": "🟡", "green": "🟢"}
_SECRETISH: Final = re.compile(r"^[A-Za-z0-9_\-]{16,}$")


def mask_url(url: str) -> str:
    """The URL with every query value and every long token-like path segment as ``***``."""
    parts = urlsplit(url)
    query = "&".join(f"{k}=***" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    path = "/".join("***" if _SECRETISH.match(seg) else seg for seg in parts.path.split("/"))
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def dingtalk_signed_url(url: str, secret: str, now_ms: int) -> str:
    """`url` with DingTalk's ``timestamp`` and ``sign`` query parameters (加签)."""
    to_sign = f"{now_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), to_sign, hashlib.sha256).digest()
    sign = quote_plus(base64.b64encode(digest).decode())
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("timestamp", "sign")]
    extra = f"timestamp={now_ms}&sign={sign}"
    q = f"{urlencode(query)}&{extra}" if query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, q, parts.fragment))


def _line(event: dict[str, Any]) -> str:
    level = str(event.get("level") or "green")
    title = RULE_TITLES.get(str(event.get("rule")), str(event.get("rule")))
    who = f"{event.get('scope')} {event.get('subject')}"
    if event.get("name"):
        who += f" {event['name']}"
    state = event.get("state")
    if state == "resolved":
        head = f"{_MARK['green']} **resolved 已恢复** {title} · {who}"
    else:
        head = f"{_MARK.get(level, '')} **{level} {state}** {title} · {who}"
    return f"{head}\n> {event.get('message', '')}\n> {event.get('at', '')}\n"


def _chunks(lines: Sequence[str], limit: int, header: str) -> list[str]:
    out: list[str] = []
    cur = header
    for line in lines:
        piece = line + "\n"
        if len((cur + piece).encode()) > limit and cur != header:
            out.append(cur.rstrip())
            cur = header
        if len((header + piece).encode()) > limit:  # one event alone is too long: cut it
            budget = limit - len(header.encode()) - 4
            piece = piece.encode()[:budget].decode(errors="ignore") + "…\n"
        cur += piece
    if cur != header:
        out.append(cur.rstrip())
    return out


def bodies(fmt: str, events: Sequence[dict[str, Any]], title: str) -> list[dict[str, Any]]:
    """The request bodies that carry `events` in format `fmt` (one or more messages)."""
    if fmt == "generic":
        return [
            {"source": "greenmon", "events": list(events[i : i + _GENERIC_EVENTS])}
            for i in range(0, len(events), _GENERIC_EVENTS)
        ]
    lines = [_line(e) for e in events]
    if fmt == "dingtalk":
        texts = _chunks(lines, _SIZE["dingtalk"], f"### {title}\n\n")
        return [{"msgtype": "markdown", "markdown": {"title": title, "text": t}} for t in texts]
    if fmt == "wecom":
        texts = _chunks(lines, _SIZE["wecom"], f"## {title}\n")
        return [{"msgtype": "markdown", "markdown": {"content": t}} for t in texts]
    raise ValueError(f"unknown webhook format {fmt!r} (known: {', '.join(FORMATS)})")


def response_error(fmt: str, status: int, body: bytes) -> tuple[str, float | None] | None:
    """None when the answer means delivered; else (reason, seconds to wait or None)."""
    if status == 429:
        return f"HTTP 429 (too many requests): {body[:200]!r}", 60.0
    if not 200 <= status < 300:
        return f"HTTP {status}: {body[:200]!r}", None
    if fmt == "generic":
        return None
    try:
        answer = json.loads(body or b"{}")
    except ValueError:
        return f"unreadable answer: {body[:200]!r}", None
    code = answer.get("errcode", 0) if isinstance(answer, dict) else 0
    if code == 0:
        return None
    message = answer.get("errmsg", "") if isinstance(answer, dict) else ""
    # 130101 (DingTalk) and 45009 (WeCom): more than the robot's messages a minute
    wait = 60.0 if code in (130101, 45009) else None
    return f"errcode {code}: {message}", wait
