"""The request shapes of HTTP SMS gateways, and how their answers say "accepted". Pure.

Three shapes (``[plans] sms_style``):

- ``generic``: ``POST {"mobile", "text", "sign"}``; any 2xx is accepted.
- ``aliyun`` (阿里云短信 SendSms): ``{"Action": "SendSms", "PhoneNumbers", "SignName", "TemplateCode",
  "TemplateParam": "{\"text\": …}", "AccessKeyId"}``; accepted when the answer's ``Code`` is ``OK``
  (its ``BizId`` is kept).
- ``tencent`` (腾讯云短信 SendSms 2021-01-11): header ``X-TC-Action: SendSms``, body
  ``{"PhoneNumberSet": ["+86…"], "SmsSdkAppId", "SignName", "TemplateId", "TemplateParamSet": [text]}``;
  accepted when ``Response.SendStatusSet[0].Code`` is ``Ok`` (its ``SerialNo`` is kept).

The clouds' own request signatures (Aliyun's HMAC-SHA1 RPC signature, Tencent's TC3-HMAC-SHA256) are
not computed here: point ``sms_gateway`` at the operator's signing proxy or SMS platform, which takes
``Authorization: Bearer <sms_api_key>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SmsRequest:
    headers: dict[str, str]
    body: dict[str, Any]


def build_request(style: str, *, mobile: str, text: str, sign: str, template: str, app_id: str, secret: str) -> SmsRequest:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    if style == "aliyun":
        return SmsRequest(
            headers,
            {
                "Action": "SendSms",
                "PhoneNumbers": mobile,
                "SignName": sign,
                "TemplateCode": template,
                "TemplateParam": json.dumps({"text": text}, ensure_ascii=False),
                "AccessKeyId": app_id,
            },
        )
    if style == "tencent":
        number = mobile if mobile.startswith("+") else f"+86{mobile}"
        return SmsRequest(
            {**headers, "X-TC-Action": "SendSms", "X-TC-Version": "2021-01-11"},
            {
                "PhoneNumberSet": [number],
                "SmsSdkAppId": app_id,
                "SignName": sign,
                "TemplateId": template,
                "TemplateParamSet": [text],
            },
        )
    return SmsRequest(headers, {"mobile": mobile, "text": text, "sign": sign})


def accepted(style: str, status: int, answer: Any) -> tuple[bool, str]:
    """(accepted, what the gateway said: an id or the refusal)."""
    if not 200 <= status < 300:
        return False, f"HTTP {status}"
    if style == "aliyun":
        if isinstance(answer, dict) and answer.get("Code") == "OK":
            return True, str(answer.get("BizId") or "OK")
        message = answer.get("Message") if isinstance(answer, dict) else None
        code = answer.get("Code") if isinstance(answer, dict) else None
        return False, f"{code}: {message}" if code else "unreadable answer"
    if style == "tencent":
        try:
            first = answer["Response"]["SendStatusSet"][0]
        except (KeyError, IndexError, TypeError):
            error = answer.get("Response", {}).get("Error") if isinstance(answer, dict) else None
            return False, str(error.get("Code")) if isinstance(error, dict) else "unreadable answer"
        if first.get("Code") == "Ok":
            return True, str(first.get("SerialNo") or "Ok")
        return False, f"{first.get('Code')}: {first.get('Message')}"
    return True, str(answer.get("id")) if isinstance(answer, dict) and answer.get("id") else "accepted"


def mask(mobile: str) -> str:
    """A mobile number as logs and screens of others may show it: 138****5678."""
    digits = mobile.strip()
    return digits[:3] + "****" + digits[-4:] if len(digits) >= 8 else "****"
