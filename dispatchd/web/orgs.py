"""``GET /api/v1/orgs``: the caller's part of the organisation tree."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dispatchd.domain.orgs import OrgTree, OrgUnit
from dispatchd.errors import not_found
from dispatchd.validate import Field
from dispatchd.web.appkeys import CTX
from dispatchd.web.auth import current_user, may_see
from dispatchd.web.routing import ApiRoute
from dispatchd.web.validate import query_params


def unit_json(tree: OrgTree, u: OrgUnit, geometry: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "code": u.code,
        "name": u.name,
        "name_en": u.name_en,
        "level": u.level,
        "parent": u.parent,
        "synthetic": u.synthetic,
        "departments": [
            {"code": d.code, "name": d.name, "name_en": d.name_en, "kind": d.kind}
            for d in tree.departments_of(u.code)
        ],
    }
    if u.centre:
        out["centre"] = {"lon": u.centre[0], "lat": u.centre[1]}
    if geometry and u.boundary:
        out["boundary"] = {"type": "Polygon", "coordinates": [[list(p) for p in u.boundary]]}
    return out


ORG_QUERY = (
    Field("geometry", "boolean", description="include grid boundaries (GeoJSON Polygon)"),
    Field("depth", "integer", minimum=0, maximum=6, description="levels below the root to include"),
)


async def list_orgs(request: web.Request) -> web.Response:
    q = query_params(request, ORG_QUERY)
    tree = request.app[CTX].orgs
    root = tree.get(current_user(request).org)
    depth = q.get("depth")
    base = tree.ancestors(root.code)
    units = [
        unit_json(tree, u, q.get("geometry", False))
        for u in tree.subtree(root.code)
        if depth is None or len(tree.ancestors(u.code)) - len(base) <= depth
    ]
    return web.json_response({"root": root.code, "units": units})


async def get_org(request: web.Request) -> web.Response:
    code = request.match_info["code"]
    tree = request.app[CTX].orgs
    if code not in tree.units or not may_see(request, code):
        raise not_found("组织单位", "organisation unit")
    u = tree.get(code)
    out = unit_json(tree, u, True)
    out["children"] = [c.code for c in tree.children(code)]
    return web.json_response(out)


async def orgs_geojson(request: web.Request) -> web.Response:
    """Grid boundaries of the caller's jurisdiction as one FeatureCollection (the offline basemap)."""
    tree = request.app[CTX].orgs
    root = current_user(request).org
    features = []
    for u in tree.subtree(root):
        if u.boundary:
            features.append(
                {
                    "type": "Feature",
                    "id": u.code,
                    "properties": {
                        "code": u.code,
                        "name": u.name,
                        "name_en": u.name_en,
                        "level": u.level,
                        "township": tree.ancestor_at(u.code, "township"),
                    },
                    "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in u.boundary]]},
                }
            )
    return web.json_response({"type": "FeatureCollection", "features": features})


ROUTES = [
    ApiRoute(
        "GET", "/api/v1/orgs", list_orgs, "The caller's subtree of the organisation", "orgs", query=ORG_QUERY
    ),
    ApiRoute("GET", "/api/v1/orgs/geojson", orgs_geojson, "Boundaries in the caller's jurisdiction", "orgs"),
    ApiRoute(
        "GET",
        "/api/v1/orgs/{code}",
        get_org,
        "One unit with its boundary and children",
        "orgs",
        responses={200: "unit", 404: "unknown or outside jurisdiction"},
    ),
]
