"""The SMS gateways' request shapes and answers (pure): Aliyun- and Tencent-style SendSms and the
generic JSON; refusals are read as refusals; numbers are masked for display."""

from __future__ import annotations

import json

from dispatchd.plans import sms


def test_aliyun_shape_and_answers() -> None:
    """Aliyun: PhoneNumbers, SignName, TemplateCode, TemplateParam as a JSON string; Code OK accepts."""
    req = sms.build_request("aliyun", mobile="13800138000", text="请叫应", sign="瑞安指挥", template="SMS_1", app_id="AK", secret="")
    assert req.body["Action"] == "SendSms" and req.body["PhoneNumbers"] == "13800138000"
    assert json.loads(req.body["TemplateParam"]) == {"text": "请叫应"} and "Authorization" not in req.headers
    assert sms.accepted("aliyun", 200, {"Code": "OK", "BizId": "9"}) == (True, "9")
    assert sms.accepted("aliyun", 200, {"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发流控"}) == (
        False,
        "isv.BUSINESS_LIMIT_CONTROL: 触发流控",
    )


def test_tencent_shape_and_answers() -> None:
    """Tencent: +86 numbers in PhoneNumberSet, the action header; Code Ok accepts, an Error refuses."""
    req = sms.build_request("tencent", mobile="13800138000", text="请叫应", sign="s", template="1", app_id="14", secret="k")
    assert req.headers["X-TC-Action"] == "SendSms" and req.headers["Authorization"] == "Bearer k"
    assert req.body["PhoneNumberSet"] == ["+8613800138000"] and req.body["TemplateParamSet"] == ["请叫应"]
    ok = {"Response": {"SendStatusSet": [{"Code": "Ok", "SerialNo": "2028:1"}]}}
    assert sms.accepted("tencent", 200, ok) == (True, "2028:1")
    bad = {"Response": {"Error": {"Code": "AuthFailure.SignatureFailure", "Message": "x"}}}
    assert sms.accepted("tencent", 200, bad) == (False, "AuthFailure.SignatureFailure")


def test_generic_shape_and_http_refusals() -> None:
    """Generic: {mobile, text, sign}; any non-2xx refuses whatever the style."""
    req = sms.build_request("generic", mobile="13800138000", text="t", sign="s", template="", app_id="", secret="")
    assert req.body == {"mobile": "13800138000", "text": "t", "sign": "s"}
    assert sms.accepted("generic", 202, {}) == (True, "accepted")
    for style in ("generic", "aliyun", "tencent"):
        assert sms.accepted(style, 503, {}) == (False, "HTTP 503")
    assert sms.mask("13800138000") == "138****8000" and sms.mask("123") == "****"
