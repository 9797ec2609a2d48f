"""The request shapes of HTTP SMS gateways, their signatures, and how their answers say "accepted".
Pure: the time and the nonce of a signed request are given.

Three shapes (``[plans] sms_style``):

- ``generic``: ``POST {"mobile", "text", "sign"}``; any 2xx is accepted.
- ``aliyun`` (阿里云短信 SendSms, API version 2017-05-25): ``PhoneNumbers, SignName, TemplateCode,
  TemplateParam`` (``{"text": …}`` as a JSON string); accepted when the answer's ``Code`` is ``OK``
  (its ``BizId`` is kept).
- ``tencent`` (腾讯云短信 SendSms, API version 2021-01-11): ``PhoneNumberSet ["+86…"], SmsSdkAppId,
  SignName, TemplateId, TemplateParamSet [text]``; accepted when ``Response.SendStatusSet[0].Code``
  is ``Ok`` (its ``SerialNo`` is kept).

With the cloud's access key (``sms_access_key_id`` and ``sms_access_key_secret``) the request is
signed as the cloud itself checks it, so ``sms_gateway`` may be the cloud's endpoint
(``https://dysmsapi.aliyuncs.com/``, ``https://sms.tencentcloudapi.com/``):

- Aliyun: the RPC signature (version 1.0, HMAC-SHA1) over the form's parameters, sorted and
  percent-encoded (RFC 3986): ``Signature = Base64(HMAC-SHA1(secret + "&", "POST&%2F&" +
  encode(query)))``, sent as an ``application/x-www-form-urlencoded`` body.
- Tencent: TC3-HMAC-SHA256 (API 3.0 signature v3): a canonical request of the method, ``/``, the
  signed headers ``content-type`` and ``host`` and the body's SHA-256, signed with a key derived
  from the secret, the UTC date and the service; sent in ``Authorization`` with ``X-TC-Timestamp``
  and ``X-TC-Region``.

Without the access key the JSON shapes go to a signing proxy or SMS platform, with
``Authorization: Bearer <sms_api_key>`` when that is set.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

ALIYUN_VERSION = "2017-05-25"
TENCENT_VERSION = "2021-01-11"
TC3 = "TC3-HMAC-SHA256"
# The regions a request names when [plans] sms_region is empty.
DEFAULT_REGION: dict[str, str] = {"aliyun": "cn-hangzhou", "tencent": "ap-guangzhou"}
_JSON = "application/json; charset=utf-8"
_FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class SmsRequest:
    headers: dict[str, str]
    body: dict[str, Any]  # what the request says, for reading
    data: bytes  # what is sent: exactly the bytes that were signed


@dataclass(frozen=True, slots=True)
class AccessKey:
    """A cloud account's key pair (Aliyun AccessKeyId/AccessKeySecret, Tencent SecretId/SecretKey)."""

    id: str
    secret: str
    region: str = ""


def percent(text: str) -> str:
    """RFC 3986 percent-encoding of UTF-8 (unreserved characters kept; space is %20, * is %2A)."""
    return quote(text, safe="-_.~")


def aliyun_signature(method: str, params: Mapping[str, str], secret: str) -> str:
    """Aliyun's RPC signature (SignatureVersion 1.0, HMAC-SHA1) of the parameters, Base64."""
    query = "&".join(f"{percent(k)}={percent(v)}" for k, v in sorted(params.items()))
    to_sign = f"{method}&{percent('/')}&{percent(query)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def tc3_authorization(
    key: AccessKey, service: str, headers: Mapping[str, str], payload: bytes, timestamp: int
) -> str:
    """Tencent Cloud's ``Authorization`` (TC3-HMAC-SHA256) of a POST to ``/`` with ``headers`` signed
    (names and values lower-cased and trimmed, sorted by name) and ``payload`` as the body."""
    signed = sorted((name.lower().strip(), value.lower().strip()) for name, value in headers.items())
    canonical_headers = "".join(f"{name}:{value}\n" for name, value in signed)
    signed_names = ";".join(name for name, _ in signed)
    canonical = "\n".join(
        ["POST", "/", "", canonical_headers, signed_names, hashlib.sha256(payload).hexdigest()]
    )
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join([TC3, str(timestamp), scope, hashlib.sha256(canonical.encode()).hexdigest()])

    def mac(k: bytes, msg: str) -> bytes:
        return hmac.new(k, msg.encode(), hashlib.sha256).digest()

    signing = mac(mac(mac(f"TC3{key.secret}".encode(), date), service), "tc3_request")
    signature = hmac.new(signing, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{TC3} Credential={key.id}/{scope}, SignedHeaders={signed_names}, Signature={signature}"


def build_request(
    style: str,
    *,
    mobile: str,
    text: str,
    sign: str,
    template: str,
    app_id: str,
    secret: str,
    url: str = "",
    key: AccessKey | None = None,
    now: datetime | None = None,
    nonce: str = "",
) -> SmsRequest:
    """The request of one SMS. ``key`` (with ``now`` and ``nonce``, and the gateway's ``url`` for the
    Host Tencent signs) signs an ``aliyun`` or ``tencent`` request; ``secret`` is a bearer token."""
    headers = {"Content-Type": _JSON}
    if secret and key is None:
        headers["Authorization"] = f"Bearer {secret}"
    if style == "aliyun":
        params = {
            "Action": "SendSms",
            "PhoneNumbers": mobile,
            "SignName": sign,
            "TemplateCode": template,
            "TemplateParam": json.dumps({"text": text}, ensure_ascii=False),
        }
        if key is None:
            body: dict[str, Any] = {**params, "AccessKeyId": app_id}
            return SmsRequest(headers, body, json.dumps(body, ensure_ascii=False).encode())
        if now is None or not nonce:
            raise ValueError("a signed request needs the time and a nonce")
        form = {
            **params,
            "AccessKeyId": key.id,
            "Format": "JSON",
            "RegionId": key.region or DEFAULT_REGION["aliyun"],
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": nonce,
            "SignatureVersion": "1.0",
            "Timestamp": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": ALIYUN_VERSION,
        }
        form["Signature"] = aliyun_signature("POST", form, key.secret)
        data = "&".join(f"{percent(k)}={percent(v)}" for k, v in form.items()).encode()
        return SmsRequest({"Content-Type": _FORM}, form, data)
    if style == "tencent":
        number = mobile if mobile.startswith("+") else f"+86{mobile}"
        body = {
            "PhoneNumberSet": [number],
            "SmsSdkAppId": app_id,
            "SignName": sign,
            "TemplateId": template,
            "TemplateParamSet": [text],
        }
        data = json.dumps(body, ensure_ascii=False).encode()
        headers = {**headers, "X-TC-Action": "SendSms", "X-TC-Version": TENCENT_VERSION}
        if key is None:
            return SmsRequest(headers, body, data)
        if now is None:
            raise ValueError("a signed request needs the time")
        host = urlsplit(url).netloc or "sms.tencentcloudapi.com"
        timestamp = int(now.timestamp())
        signed = {"Content-Type": _JSON, "Host": host}
        headers.update(
            {
                "Host": host,
                "X-TC-Timestamp": str(timestamp),
                "X-TC-Region": key.region or DEFAULT_REGION["tencent"],
                "Authorization": tc3_authorization(key, "sms", signed, data, timestamp),
            }
        )
        return SmsRequest(headers, body, data)
    body = {"mobile": mobile, "text": text, "sign": sign}
    return SmsRequest(headers, body, json.dumps(body, ensure_ascii=False).encode())


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
