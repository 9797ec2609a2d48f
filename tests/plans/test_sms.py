"""The SMS gateways' request shapes and answers (pure): Aliyun- and Tencent-style SendSms and the
generic JSON; both clouds' signatures against their published examples; refusals are read as
refusals; numbers are masked for display."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import parse_qsl

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


def test_aliyun_signature_matches_the_clouds_published_example() -> None:
    """The RPC signature of Aliyun's documented SendSms example (testId / testSecret, GET) is the
    documented zJDF+Lrzhj/ThnlvIToysFRq6t4=."""
    params = {
        "AccessKeyId": "testId",
        "Action": "SendSms",
        "Format": "XML",
        "OutId": "123",
        "PhoneNumbers": "15300000001",
        "RegionId": "cn-hangzhou",
        "SignName": "阿里云短信测试专用",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
        "SignatureVersion": "1.0",
        "TemplateCode": "SMS_71390007",
        "TemplateParam": '{"customer":"test"}',
        "Timestamp": "2017-07-12T02:42:19Z",
        "Version": "2017-05-25",
    }
    assert sms.aliyun_signature("GET", params, "testSecret") == "zJDF+Lrzhj/ThnlvIToysFRq6t4="
    assert sms.percent("a b*~") == "a%20b%2A~"


def test_tc3_signature_matches_the_clouds_published_example() -> None:
    """TC3-HMAC-SHA256 of Tencent Cloud's documented DescribeInstances example (timestamp 1551113065,
    headers content-type and host) gives the documented signature 72e494ea…"""
    key = sms.AccessKey("AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE")
    payload = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
    headers = {"Content-Type": "application/json; charset=utf-8", "Host": "cvm.tencentcloudapi.com"}
    auth = sms.tc3_authorization(key, "cvm", headers, payload, 1551113065)
    assert auth == (
        "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, "
        "SignedHeaders=content-type;host, "
        "Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    )


def test_signed_requests_carry_what_each_cloud_checks() -> None:
    """With an access key: Aliyun gets a form whose Signature is over exactly its other fields (POST);
    Tencent gets the timestamp, the default region, the Host of the gateway and no bearer token."""
    now = datetime(2026, 12, 2, 1, 2, 3, tzinfo=UTC)
    key = sms.AccessKey("LTAI-id", "s3cret")
    req = sms.build_request(
        "aliyun", mobile="13800138000", text="请叫应", sign="瑞安指挥", template="SMS_1", app_id="", secret="x",
        key=key, now=now, nonce="n-1",
    )
    form = dict(parse_qsl(req.data.decode(), keep_blank_values=True))
    signature = form.pop("Signature")
    assert signature == sms.aliyun_signature("POST", form, "s3cret")
    assert form["Timestamp"] == "2026-12-02T01:02:03Z" and form["RegionId"] == "cn-hangzhou"
    assert form["SignName"] == "瑞安指挥" and json.loads(form["TemplateParam"]) == {"text": "请叫应"}
    assert req.headers == {"Content-Type": "application/x-www-form-urlencoded"}
    req = sms.build_request(
        "tencent", mobile="13800138000", text="t", sign="s", template="1", app_id="14", secret="x",
        url="https://sms.tencentcloudapi.com/", key=sms.AccessKey("AKID", "k", "ap-nanjing"), now=now,
    )
    assert req.headers["X-TC-Timestamp"] == str(int(now.timestamp())) and req.headers["X-TC-Region"] == "ap-nanjing"
    assert req.headers["Host"] == "sms.tencentcloudapi.com"
    assert req.headers["Authorization"].startswith("TC3-HMAC-SHA256 Credential=AKID/2026-12-02/sms/tc3_request, ")
    assert json.loads(req.data) == req.body
