#!/usr/bin/env python3
"""Write config/orgs/10-ruian-demo.toml: a synthetic county modelled on 瑞安市 (Ruian).

Deterministic: the same script always writes the same bytes (every random draw is seeded
from a unit code).  Run from the repository root:

    python tools/make_demo_county.py           # rewrite the file
    python tools/make_demo_county.py --check   # exit 1 when the file is not what we would write

How the map is drawn, so that grids tile their community exactly (无交叉、无重复、无缝对接):
each township is a rectangle near its real centre, cut into columns and each column into
community rectangles with straight borders.  Each community is a lattice of rows × columns
grid cells whose inner vertices are jittered in both directions, whose border vertices slide
only along the border, and whose inner edges get a jittered middle point shared by both
neighbours.  Neighbouring cells therefore share every vertex of the edge between them, and
the cells of a community cover its rectangle without gap or overlap.  Coordinates are rounded
to 1e-7° (about 1 cm) before any polygon is built, so what is written is what was checked.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent.parent / "config" / "orgs" / "10-ruian-demo.toml"
DIGITS = 7

Pt = tuple[float, float]

COUNTY_CODE = "330381"
CITY_CODE = "330300"
COUNTY_CENTRE: Pt = (120.6552, 27.7803)


@dataclass(frozen=True)
class Community:
    suffix: str  # last three digits of the 12-digit code: 0xx 社区 (residents), 2xx 村 (village)
    name: str
    name_en: str
    rows: int
    cols: int


@dataclass(frozen=True)
class Township:
    code: str
    name: str
    name_en: str
    short: str  # as used in station names: 马屿派出所
    short_en: str
    box: tuple[float, float, float, float]  # min lon, min lat, max lon, max lat
    communities: tuple[Community, ...]


def C(suffix: str, name: str, name_en: str, rows: int, cols: int) -> Community:
    return Community(suffix, name, name_en, rows, cols)


# Township and street names and 9-digit codes are those of 瑞安市 in the national statistical
# division codes (2022); the rectangles sit near their real centres without overlapping.
TOWNSHIPS: tuple[Township, ...] = (
    Township(
        "330381001",
        "安阳街道",
        "Anyang Subdistrict",
        "安阳",
        "Anyang",
        (120.620, 27.772, 120.652, 27.800),
        (
            C("001", "万松社区", "Wansong Community", 3, 3),
            C("002", "虹桥社区", "Hongqiao Community", 3, 3),
            C("003", "隆山社区", "Longshan Community", 3, 3),
            C("004", "安阳新城社区", "Anyang Xincheng Community", 3, 4),
            C("005", "瑞祥社区", "Ruixiang Community", 2, 4),
        ),
    ),
    Township(
        "330381002",
        "玉海街道",
        "Yuhai Subdistrict",
        "玉海",
        "Yuhai",
        (120.652, 27.768, 120.676, 27.790),
        (
            C("001", "忠义街社区", "Zhongyijie Community", 2, 3),
            C("002", "解放路社区", "Jiefanglu Community", 3, 3),
            C("003", "西山社区", "Xishan Community", 2, 3),
            C("004", "广场社区", "Guangchang Community", 2, 3),
        ),
    ),
    Township(
        "330381007",
        "莘塍街道",
        "Shencheng Subdistrict",
        "莘塍",
        "Shencheng",
        (120.680, 27.800, 120.725, 27.835),
        (
            C("001", "莘塍社区", "Shencheng Community", 2, 3),
            C("201", "董田村", "Dongtian Village", 2, 3),
            C("202", "上岙村", "Shang'ao Village", 2, 3),
        ),
    ),
    Township(
        "330381009",
        "飞云街道",
        "Feiyun Subdistrict",
        "飞云",
        "Feiyun",
        (120.615, 27.735, 120.680, 27.760),
        (
            C("001", "飞云社区", "Feiyun Community", 2, 3),
            C("201", "孙桥村", "Sunqiao Village", 2, 3),
            C("202", "云江村", "Yunjiang Village", 2, 3),
            C("203", "新民村", "Xinmin Village", 2, 2),
        ),
    ),
    Township(
        "330381010",
        "仙降街道",
        "Xianjiang Subdistrict",
        "仙降",
        "Xianjiang",
        (120.565, 27.725, 120.610, 27.760),
        (
            C("001", "仙降社区", "Xianjiang Community", 2, 3),
            C("201", "江川村", "Jiangchuan Village", 2, 3),
            C("202", "翔川村", "Xiangchuan Village", 2, 3),
            C("203", "樟岙村", "Zhang'ao Village", 2, 2),
        ),
    ),
    Township(
        "330381101",
        "塘下镇",
        "Tangxia Town",
        "塘下",
        "Tangxia",
        (120.660, 27.840, 120.735, 27.890),
        (
            C("001", "塘下社区", "Tangxia Community", 3, 3),
            C("201", "韩田村", "Hantian Village", 2, 4),
            C("202", "罗凤村", "Luofeng Village", 2, 4),
            C("203", "鲍田村", "Baotian Village", 3, 3),
            C("204", "场桥村", "Changqiao Village", 2, 3),
        ),
    ),
    Township(
        "330381116",
        "马屿镇",
        "Mayu Town",
        "马屿",
        "Mayu",
        (120.430, 27.715, 120.530, 27.770),
        (
            C("001", "马屿社区", "Mayu Community", 4, 4),
            C("201", "篁社村", "Huangshe Village", 4, 4),
            C("202", "江溪村", "Jiangxi Village", 4, 4),
            C("203", "儒阳村", "Ruyang Village", 3, 4),
            C("204", "大南村", "Danan Village", 4, 4),
            C("205", "石龙村", "Shilong Village", 3, 4),
        ),
    ),
    Township(
        "330381120",
        "陶山镇",
        "Taoshan Town",
        "陶山",
        "Taoshan",
        (120.455, 27.780, 120.545, 27.835),
        (
            C("001", "陶山社区", "Taoshan Community", 3, 3),
            C("201", "沙洲村", "Shazhou Village", 3, 3),
            C("202", "荆谷村", "Jinggu Village", 3, 3),
            C("203", "福泉村", "Fuquan Village", 3, 4),
        ),
    ),
)

# (code suffix, name, name_en, kind); the command centre first, so that it is the county's
# department of kind "other".
COUNTY_DEPARTMENTS: tuple[tuple[str, str, str, str], ...] = (
    ("ZHZX", "瑞安市社会治理综合指挥中心", "Ruian Social Governance Command Centre", "other"),
    ("GAJ", "瑞安市公安局", "Ruian Public Security Bureau", "police"),
    ("SFJ", "瑞安市司法局", "Ruian Justice Bureau", "justice"),
    ("YJJ", "瑞安市应急管理局（安监）", "Ruian Emergency Management Bureau (work safety)", "work_safety"),
    ("XFDD", "瑞安市消防救援大队", "Ruian Fire and Rescue Brigade", "fire"),
    (
        "STHJ",
        "温州市生态环境局瑞安分局",
        "Ruian Branch, Wenzhou Ecology and Environment Bureau",
        "environment",
    ),
    ("SCJG", "瑞安市市场监督管理局", "Ruian Market Supervision Bureau", "market"),
    ("ZHZF", "瑞安市综合行政执法局", "Ruian Comprehensive Administrative Enforcement Bureau", "enforcement"),
    (
        "RSJ",
        "瑞安市人力资源和社会保障局",
        "Ruian Human Resources and Social Security Bureau",
        "social_security",
    ),
    ("XFJ", "瑞安市信访局", "Ruian Petitions Bureau", "petition"),
    ("MZJ", "瑞安市民政局", "Ruian Civil Affairs Bureau", "civil_affairs"),
    ("WJJ", "瑞安市卫生健康局", "Ruian Health Bureau", "health"),
    ("JTJ", "瑞安市交通运输局", "Ruian Transport Bureau", "transport"),
    ("SLJ", "瑞安市水利局", "Ruian Water Resources Bureau", "water"),
    ("ZJJ", "瑞安市住房和城乡建设局", "Ruian Housing and Urban-Rural Development Bureau", "housing"),
    ("JYJ", "瑞安市教育局", "Ruian Education Bureau", "education"),
)

# Every township command room links at least these stations ("{short}" and "{en}" filled in).
TOWNSHIP_DEPARTMENTS: tuple[tuple[str, str, str, str], ...] = (
    ("ZHS", "{full}社会治理综合信息指挥室", "{en} Command Room", "other"),
    ("PCS", "{short}派出所", "{en} Police Station", "police"),
    ("SFS", "{short}司法所", "{en} Justice Office", "justice"),
    ("AJZ", "{full}安监站", "{en} Work Safety Station", "work_safety"),
    ("SBS", "{full}社保所", "{en} Social Security Office", "social_security"),
    ("ZFZD", "{short}综合执法中队", "{en} Enforcement Squadron", "enforcement"),
    ("SCJGS", "{short}市场监管所", "{en} Market Supervision Office", "market"),
    ("YJZD", "{full}应急中队", "{en} Emergency Squad", "emergency_squad"),
)

# Mayu links 25 departments (平安瑞安, issue 183): the eight above and these seventeen.
MAYU_EXTRA: tuple[tuple[str, str, str, str], ...] = (
    ("JJZD", "马屿交警中队", "Mayu Traffic Police Squadron", "police"),
    ("MTZX", "马屿镇矛盾纠纷调处化解中心", "Mayu Dispute Mediation Centre", "justice"),
    ("XFZ", "马屿专职消防队", "Mayu Full-time Fire Brigade", "fire"),
    ("HBZ", "马屿镇环保站", "Mayu Environmental Protection Station", "environment"),
    ("MZB", "马屿镇民政办", "Mayu Civil Affairs Office", "civil_affairs"),
    ("WSY", "马屿镇卫生院", "Mayu Health Centre", "health"),
    ("JGZ", "马屿镇交管站", "Mayu Traffic Management Station", "transport"),
    ("SLZ", "马屿镇水利站", "Mayu Water Station", "water"),
    ("CJB", "马屿镇村镇建设办", "Mayu Town Construction Office", "housing"),
    ("ZXXX", "马屿镇中心学校", "Mayu Central School", "education"),
    ("XFB", "马屿镇信访办", "Mayu Petitions Office", "petition"),
    ("GTS", "马屿国土资源所", "Mayu Land Resources Office", "other"),
    ("LYZ", "马屿镇林业站", "Mayu Forestry Station", "other"),
    ("NYZ", "马屿镇农业站", "Mayu Agriculture Station", "other"),
    ("CZS", "马屿镇财政所", "Mayu Finance Office", "other"),
    ("ZZB", "马屿镇综治办", "Mayu Comprehensive Governance Office", "other"),
    ("GDS", "马屿供电所", "Mayu Power Supply Office", "other"),
)


def r(value: float) -> float:
    return round(value, DIGITS)


def rect_ring(x0: float, y0: float, x1: float, y1: float) -> list[Pt]:
    """Counter-clockwise closed ring of a rectangle."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]


def split(lo: float, hi: float, weights: list[float], rng: random.Random) -> list[float]:
    """Cut points from lo to hi, proportional to jittered weights (both ends included)."""
    jittered = [w * rng.uniform(0.88, 1.12) for w in weights]
    total = sum(jittered)
    cuts = [lo]
    acc = 0.0
    for w in jittered[:-1]:
        acc += w
        cuts.append(r(lo + (hi - lo) * acc / total))
    cuts.append(hi)
    return cuts


def lay_out_communities(town: Township) -> list[tuple[Community, tuple[float, float, float, float]]]:
    """Community rectangles tiling the township: columns of at most two communities each."""
    rng = random.Random(int(town.code))
    n = len(town.communities)
    ncols = math.ceil(n / 2)
    sizes = [2] * (n - ncols) + [1] * (2 * ncols - n)  # the first columns hold two
    columns: list[list[Community]] = []
    it = iter(town.communities)
    for size in sizes:
        columns.append([next(it) for _ in range(size)])
    x0, y0, x1, y1 = town.box
    xs = split(x0, x1, [max(c.cols for c in column) for column in columns], rng)
    placed = []
    for column, cx0, cx1 in zip(columns, xs, xs[1:], strict=False):
        # north first: the first community of a column lies at its top
        ys = split(y0, y1, [c.rows for c in reversed(column)], rng)
        for community, cy0, cy1 in zip(reversed(column), ys, ys[1:], strict=False):
            placed.append((community, (cx0, cy0, cx1, cy1)))
    placed.sort(key=lambda item: item[0].suffix)
    return placed


def grid_cells(code: str, box: tuple[float, float, float, float], rows: int, cols: int) -> list[list[Pt]]:
    """Jittered lattice cells of one community, north-west first, row by row."""
    rng = random.Random(int(code))
    x0, y0, x1, y1 = box
    w, h = (x1 - x0) / cols, (y1 - y0) / rows
    vertex: dict[tuple[int, int], Pt] = {}
    for i in range(rows + 1):  # i counts rows from the south edge
        for j in range(cols + 1):
            x = x0 + (x1 - x0) * j / cols
            y = y0 + (y1 - y0) * i / rows
            if 0 < j < cols:
                x += rng.uniform(-0.22, 0.22) * w
            if 0 < i < rows:
                y += rng.uniform(-0.22, 0.22) * h
            if j == 0:
                x = x0
            if j == cols:
                x = x1
            if i == 0:
                y = y0
            if i == rows:
                y = y1
            vertex[(i, j)] = (r(x), r(y))

    middle: dict[tuple[tuple[int, int], tuple[int, int]], Pt] = {}

    def mid(a: tuple[int, int], b: tuple[int, int]) -> Pt | None:
        """The shared, jittered middle point of an inner edge; None on the community border."""
        key = (min(a, b), max(a, b))
        (ia, ja), (ib, jb) = key
        on_border = (ia == ib and ia in (0, rows)) or (ja == jb and ja in (0, cols))
        if on_border:
            return None
        if key not in middle:
            (ax, ay), (bx, by) = vertex[key[0]], vertex[key[1]]
            dx, dy = bx - ax, by - ay
            off = rng.uniform(-0.12, 0.12)
            middle[key] = (r((ax + bx) / 2 - dy * off), r((ay + by) / 2 + dx * off))
        return middle[key]

    cells = []
    for i in reversed(range(rows)):  # north row first
        for j in range(cols):
            corners = [(i, j), (i, j + 1), (i + 1, j + 1), (i + 1, j)]  # SW, SE, NE, NW: CCW
            ring: list[Pt] = []
            for k in range(4):
                a, b = corners[k], corners[(k + 1) % 4]
                ring.append(vertex[a])
                m = mid(a, b)
                if m is not None:
                    ring.append(m)
            ring.append(ring[0])
            cells.append(ring)
    return cells


def centre_of(box: tuple[float, float, float, float]) -> Pt:
    return (r((box[0] + box[2]) / 2), r((box[1] + box[3]) / 2))


# --- writing -----------------------------------------------------------------------------


def fmt(value: float) -> str:
    return f"{value:.{DIGITS}f}"


def toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_block(
    code: str, name: str, name_en: str, level: str, parent: str, centre: Pt | None, ring: list[Pt] | None
) -> list[str]:
    lines = [
        "[[unit]]",
        f"code = {toml_str(code)}",
        f"name = {toml_str(name)}",
        f"name_en = {toml_str(name_en)}",
        f"level = {toml_str(level)}",
        f"parent = {toml_str(parent)}",
    ]
    if centre is not None:
        lines.append(f"centre = [{fmt(centre[0])}, {fmt(centre[1])}]")
    if ring is not None:
        lines.append("boundary = [")
        lines.extend(f"  [{fmt(x)}, {fmt(y)}]," for x, y in ring)
        lines.append("]")
    lines.append("")
    return lines


def department_block(code: str, name: str, name_en: str, kind: str, org: str) -> list[str]:
    return [
        "[[department]]",
        f"code = {toml_str(code)}",
        f"name = {toml_str(name)}",
        f"name_en = {toml_str(name_en)}",
        f"kind = {toml_str(kind)}",
        f"org = {toml_str(org)}",
        "",
    ]


HEADER = """\
# SYNTHETIC DEMO COUNTY — generated by tools/make_demo_county.py; do not edit by hand.
#
# A county-level city modelled on 瑞安市 (Ruian, Wenzhou) for development and tests.
# Real: the county and its township/street names and 9-digit codes (national statistical
# division codes, 2022).  Synthetic: every boundary and centre (each township is a rectangle
# near its real place), the community and village names and their 12-digit codes, every grid,
# and every department code.  Mayu's 25 linked departments follow the 平安瑞安 report; its
# real 229 grids are not reproduced.  The townships do not cover the county: a point between
# them lies in no grid.  Do not use this file for any real place.
#
# Grids tile their community exactly (无交叉、无重复、无缝对接): neighbours share every vertex
# of their common edge.  Rings are WGS-84 [lon, lat], closed and counter-clockwise.
# Grid codes: community code + "G" + 3 digits, numbered from the north-west row by row.
"""


def build() -> str:
    out: list[str] = [HEADER, "synthetic = true", ""]
    out.append("# --- county " + "-" * 80)
    out.append("")
    out += unit_block(COUNTY_CODE, "瑞安市", "Ruian City", "county", CITY_CODE, COUNTY_CENTRE, None)
    for suffix, name, name_en, kind in COUNTY_DEPARTMENTS:
        out += department_block(f"{COUNTY_CODE}-{suffix}", name, name_en, kind, COUNTY_CODE)

    for town in TOWNSHIPS:
        grids = sum(c.rows * c.cols for c in town.communities)
        out.append(
            f"# --- {town.name} {town.name_en}: {len(town.communities)} communities, {grids} grids "
            + "-" * 30
        )
        out.append("")
        out += unit_block(
            town.code,
            town.name,
            town.name_en,
            "township",
            COUNTY_CODE,
            centre_of(town.box),
            rect_ring(*town.box),
        )
        departments = TOWNSHIP_DEPARTMENTS + (MAYU_EXTRA if town.code == "330381116" else ())
        for suffix, name, name_en, kind in departments:
            out += department_block(
                f"{town.code}-{suffix}",
                name.format(short=town.short, full=town.name),
                name_en.format(en=town.short_en),
                kind,
                town.code,
            )
        for community, box in lay_out_communities(town):
            ccode = town.code + community.suffix
            out += unit_block(
                ccode,
                community.name,
                community.name_en,
                "community",
                town.code,
                centre_of(box),
                rect_ring(*box),
            )
            for n, ring in enumerate(grid_cells(ccode, box, community.rows, community.cols), start=1):
                out += unit_block(
                    f"{ccode}G{n:03d}",
                    f"{community.name}第{n}网格",
                    f"{community.name_en} Grid {n}",
                    "grid",
                    ccode,
                    None,
                    ring,
                )
    return "\n".join(out).rstrip("\n") + "\n"


def self_check(text: str) -> None:
    """Refuse to write a map whose grids do not tile their communities (needs shapely)."""
    import tomllib

    import shapely

    data = tomllib.loads(text)
    units = {u["code"]: u for u in data["unit"]}
    for unit in units.values():
        if "boundary" not in unit:
            continue
        poly = shapely.Polygon(unit["boundary"])
        assert shapely.is_valid(poly), (unit["code"], shapely.is_valid_reason(poly))
        assert poly.exterior.is_ccw, unit["code"]
    for level, child_level in (("community", "grid"), ("township", "community")):
        for unit in units.values():
            if unit["level"] != level:
                continue
            kids = [
                shapely.Polygon(k["boundary"])
                for k in units.values()
                if k.get("parent") == unit["code"] and k["level"] == child_level
            ]
            outer = shapely.Polygon(unit["boundary"])
            total = sum(k.area for k in kids)
            assert abs(total - outer.area) <= 1e-12 * outer.area * 1000, (unit["code"], total, outer.area)
            assert shapely.union_all(kids).symmetric_difference(outer).area <= 1e-12, unit["code"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed file instead of writing"
    )
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    text = build()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date; run tools/make_demo_county.py", file=sys.stderr)
            return 1
        return 0
    self_check(text)
    args.output.write_text(text, encoding="utf-8")
    grids = text.count('level = "grid"')
    print(f"wrote {args.output} ({grids} grids)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
