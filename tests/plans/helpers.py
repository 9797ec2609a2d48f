"""Places, a plan and a CAP document shared by the plan tests."""

from __future__ import annotations

import copy
from typing import Any

import shapely

from dispatchd.domain.orgs import OrgTree

COUNTY = "330381"
TOWN = "330381001"
COMMUNITY = "330381001001"
GRID = "330381001001G001"
SOCIAL_SECURITY = "330381001-SBS"  # the township's social-security office (社保所)
JUSTICE = "330381001-SFS"

_PLAN: dict[str, Any] = {
    "code": "test-wage",
    "name": "测试讨薪预案",
    "name_en": "test wage plan",
    "org": COUNTY,
    "trigger": {
        "categories": ["incident.stability.wage_claim"],
        "priorities": ["P1", "P2"],
        "min_reports": 1,
        "units": [TOWN],
        "level": "IV",
    },
    "levels": {
        "IV": {
            "groups": [
                {
                    "name": "谈判组",
                    "name_en": "negotiation group",
                    "members": [
                        {"label": "组长", "label_en": "head", "role": "leader", "at": "township"},
                        {"label": "劳动保障", "label_en": "labour", "department": "social_security", "at": "township"},
                    ],
                },
                {
                    "name": "安抚组",
                    "members": [{"label": "司法调解", "department": "justice", "at": "township"}],
                },
                {
                    "name": "现场对接组",
                    "members": [{"label": "网格员", "role": "grid_worker", "at": "grid"}],
                },
            ],
            "forces": [{"kind": "team", "count": 1, "instructions": "维持现场秩序"}],
            "consult": {"title": "讨薪事件会商", "invite": ["township", "community"]},
            "notices": [
                {
                    "role": "leader",
                    "at": "township",
                    "via": ["console", "sms", "call"],
                    "text": "讨薪预案已启动，请到指挥室",
                    "deputy": {"role": "duty_officer", "at": "township"},
                }
            ],
            "steps": [
                {"type": "report", "title": "报告县指挥中心", "within": "10m"},
                {"type": "initial", "title": "工作组到位", "within": "30m"},
            ],
        },
        "III": {
            "groups": [{"name": "县级协调组", "members": [{"label": "组长", "role": "leader", "at": "county"}]}],
            "forces": [{"kind": "vehicle", "count": 1, "instructions": "指挥车到场"}],
            "consult": {"title": "县级会商", "invite": ["county"]},
            "notices": [{"role": "leader", "at": "county", "via": ["console"], "text": "升至Ⅲ级"}],
            "steps": [{"type": "response", "title": "县级部门到位", "within": "1h"}],
        },
    },
}


def plan_body() -> dict[str, Any]:
    """A plan as the API takes it (a fresh copy each time)."""
    return copy.deepcopy(_PLAN)


def cap_document(tree: OrgTree, grid: str = GRID, *, identifier: str = "33038141600000_20260503080000", event: str = "台风") -> bytes:
    """A CAP 1.2 alert shaped as the CAP 1.2 specification (and GB/T 35965.1's profile of it) writes
    one: a typhoon warning whose polygon lies inside ``grid``."""
    boundary = shapely.Polygon(tree.get(grid).boundary).buffer(-0.0005)
    polygon = " ".join(f"{y:.6f},{x:.6f}" for x, y in boundary.exterior.coords)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier>
  <sender>330381000000@12379.cn</sender>
  <sent>2026-05-03T16:00:00+08:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <language>zh-CN</language>
    <category>Met</category>
    <event>{event}</event>
    <urgency>Immediate</urgency>
    <severity>Unknown</severity>
    <certainty>Likely</certainty>
    <eventCode><valueName>GB/T 35965.1</valueName><value>11B01</value></eventCode>
    <expires>2026-05-04T16:00:00+08:00</expires>
    <senderName>瑞安市气象台</senderName>
    <headline>瑞安市气象台发布台风橙色预警信号</headline>
    <description>受台风影响，未来24小时内瑞安市将出现10级以上大风和暴雨，请做好防御。</description>
    <parameter><valueName>预警级别</valueName><value>橙色</value></parameter>
    <area>
      <areaDesc>瑞安市安阳街道</areaDesc>
      <polygon>{polygon}</polygon>
    </area>
  </info>
</alert>
""".encode()
