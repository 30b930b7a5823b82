"""Webhook bodies (generic, DingTalk, WeCom), DingTalk signing, URL masking, answers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import parse_qs, unquote_plus, urlsplit

import pytest

from greenmon.rules.alerts.webhook import (
    bodies,
    dingtalk_signed_url,
    mask_url,
    response_error,
)


def event(i: int = 0, message: str = "projected 5,200 tce = 104.0% of the quota 5,000 tce"):
    return {
        "id": f"enterprise/E{i:04d}/double_control_total/firing/1", "at": "2025-06-03T00:00+08:00",
        "scope": "enterprise", "subject": f"E{i:04d}", "name": "南通示例纺织有限公司",
        "rule": "double_control_total", "state": "firing", "previous": "pending",
        "level": "red", "value": 5200.0, "threshold": 5000.0, "message": message,
    }  # fmt: skip


def test_generic_carries_the_events_as_they_are() -> None:
    (body,) = bodies("generic", [event(1), event(2)], "t")
    assert body["source"] == "greenmon" and [e["subject"] for e in body["events"]] == [
        "E0001",
        "E0002",
    ]
    assert len(bodies("generic", [event(i) for i in range(250)], "t")) == 3


def test_dingtalk_and_wecom_markdown() -> None:
    (ding,) = bodies("dingtalk", [event(1)], "greenmon 能耗告警")
    assert ding["msgtype"] == "markdown" and ding["markdown"]["title"] == "greenmon 能耗告警"
    text = ding["markdown"]["text"]
    assert "🔴 **red firing** 能耗总量 double-control total · enterprise E0001" in text
    assert "> projected 5,200 tce" in text
    (wecom,) = bodies("wecom", [event(1)], "greenmon 能耗告警")
    assert set(wecom) == {"msgtype", "markdown"} and "content" in wecom["markdown"]
    resolved = dict(event(1), state="resolved", level="green")
    assert "resolved 已恢复" in bodies("wecom", [resolved], "t")[0]["markdown"]["content"]


def test_wecom_messages_stay_within_4096_bytes() -> None:
    many = [event(i, "很长的说明 " * 40) for i in range(30)]
    out = bodies("wecom", many, "greenmon 能耗告警")
    assert len(out) > 1
    assert all(len(b["markdown"]["content"].encode()) <= 4096 for b in out)
    joined = "".join(b["markdown"]["content"] for b in out)
    assert all(f"E{i:04d}" in joined for i in range(30))  # nothing lost
    huge = bodies("wecom", [event(0, "字" * 5000)], "t")
    assert len(huge) == 1 and len(huge[0]["markdown"]["content"].encode()) <= 4096


def test_dingtalk_signature() -> None:
    url = dingtalk_signed_url("https://oapi.dingtalk.com/robot/send?access_token=abc", "SECxyz", 1)
    q = parse_qs(urlsplit(url).query)
    assert q["access_token"] == ["abc"] and q["timestamp"] == ["1"]
    expected = base64.b64encode(hmac.new(b"SECxyz", b"1\nSECxyz", hashlib.sha256).digest()).decode()
    assert unquote_plus(urlsplit(url).query.split("sign=")[1]) == expected


def test_urls_are_masked() -> None:
    assert (
        mask_url("https://oapi.dingtalk.com/robot/send?access_token=0123456789abcdef")
        == "https://oapi.dingtalk.com/robot/send?access_token=***"
    )
    assert (
        mask_url("https://user:pw@hooks.example.com:8443/services/T000/B000/XXXXXXXXXXXXXXXXXXXX")
        == "https://hooks.example.com:8443/services/T000/B000/***"
    )


@pytest.mark.parametrize(
    ("fmt", "status", "body", "failed", "wait"),
    [
        ("generic", 204, b"", False, None),
        ("generic", 500, b"boom", True, None),
        ("generic", 429, b"", True, 60.0),
        ("dingtalk", 200, json.dumps({"errcode": 0, "errmsg": "ok"}).encode(), False, None),
        ("dingtalk", 200, json.dumps({"errcode": 310000, "errmsg": "sign"}).encode(), True, None),
        ("dingtalk", 200, json.dumps({"errcode": 130101, "errmsg": "fast"}).encode(), True, 60.0),
        ("wecom", 200, json.dumps({"errcode": 45009, "errmsg": "freq"}).encode(), True, 60.0),
        ("wecom", 200, b"not json", True, None),
    ],
)
def test_answers(fmt: str, status: int, body: bytes, failed: bool, wait: float | None) -> None:
    problem = response_error(fmt, status, body)
    assert (problem is not None) == failed
    if problem is not None:
        assert problem[1] == wait
