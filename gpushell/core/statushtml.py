"""The status page as HTML (pure): statusmodel's document drawn, each plot an inline SVG.

One self-contained file: no script, no font, nothing fetched; its own
Content-Security-Policy forbids all of that even where the web server
sends none.  Every text from the document (the host name, GPU names,
student names) is escaped, as if hostile.  A meta refresh reloads it once
a minute, as often as the tick writes it.
"""

from __future__ import annotations

import time
from html import escape

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PLOT_HEIGHT = 40
REFRESH = 60  # seconds
GIB = 2**30
POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STATES = {
    "lent": "lent",
    "assigned": "assigned",
    "free": "free to borrow",
    "unassigned": "not assigned",
}

STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2733; background: #f6f7f9; }
h1 { font-size: 1.5em; margin: 0; } h2 { font-size: 1.15em; margin: 1.4em 0 .6em; }
header p, footer { color: #5b6675; margin: .2em 0; }
.cards { display: flex; flex-wrap: wrap; gap: .8em; }
.card { background: #fff; border: 1px solid #d8dde3; border-radius: 6px; padding: .7em .9em; width: 300px; }
.card h3 { font-size: 1em; margin: 0 0 .3em; } .card h3 small { color: #5b6675; font-weight: normal; }
.state { margin: 0 0 .4em; font-weight: 600; }
.lent { color: #a3500b; } .assigned { color: #1f5fa8; }
.free { color: #2a7a3b; } .unassigned { color: #5b6675; }
.figure { margin: .35em 0 0; } .figure span { display: block; font-size: .9em; }
.unknown { color: #8a94a1; font-style: italic; }
svg.plot { display: block; width: 288px; height: 40px; background: #eef1f4; }
svg.plot path { fill: none; stroke: #1f5fa8; stroke-width: 1.5; stroke-linecap: round;
                vector-effect: non-scaling-stroke; }
svg.plot text { font-size: 11px; fill: #8a94a1; }
"""


def render(doc: dict[str, Any]) -> str:
    """The whole page for statusmodel's document."""
    host = escape(str(doc["host"]))
    gpus = doc["gpus"]
    cards = "".join(_gpu_card(gpu, doc["names_shown"]) for gpu in gpus) or (
        '<p class="unknown">No GPU found on this host.</p>'
    )
    waiting = doc["lending"]["waiting"]
    line = f" · {_count(waiting, 'student')} waiting for a GPU" if doc["lending"]["on"] else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">\n'
        f'<meta http-equiv="refresh" content="{REFRESH}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>GPUs on {host}</title>\n<style>{STYLE}</style></head>\n<body>\n"
        f"<header><h1>{host}</h1><p>Updated {escape(str(doc['updated']))}{line}."
        " Plots show the last 24 hours.</p></header>\n"
        f'<h2>GPUs ({len(gpus)})</h2>\n<section class="cards" id="gpus">{cards}</section>\n'
        f'<h2>Host</h2>\n<section class="cards" id="host">{_host_card(doc["host_figures"])}</section>\n'
        '<footer><p>gpushell status page · <a href="status.json">status.json</a></p></footer>\n'
        "</body></html>\n"
    )


def _gpu_card(gpu: dict[str, Any], names_shown: bool) -> str:
    number, member = int(gpu["gpu"]), gpu.get("member")  # a cluster's GPUs are numbered on their member
    label = f"GPU {number} on {member}" if member else f"GPU {number}"
    anchor = f"gpu-{escape(str(member))}-{number}" if member else f"gpu-{number}"
    name = f" <small>{escape(str(gpu['name']))}</small>" if gpu["name"] else ""
    if gpu["reading"]:
        util = _percent_text(gpu["util"])
        memory = _bytes_pair(gpu["memory_used"], gpu["memory_total"])
    else:
        util = memory = '<em class="unknown">no reading</em>'
    return (
        f'<article class="card gpu" id="{anchor}"><h3>{escape(label)}{name}</h3>'
        f"{_state_line(gpu, names_shown)}"
        f'<div class="figure"><span>Utilization: {util}</span>'
        f"{plot(gpu['util_plot'], f'{label} utilization, last 24 hours')}</div>"
        f'<div class="figure"><span>Memory: {memory}</span>'
        f"{plot(gpu['memory_plot'], f'{label} memory used, last 24 hours')}</div>"
        "</article>"
    )


def _state_line(gpu: dict[str, Any], names_shown: bool) -> str:
    state = str(gpu["state"])
    text = STATES.get(state, state)
    count = int(gpu["students"])
    if count:
        who = _count(count, "student")
        names = gpu.get("names") or []
        if names_shown and names:
            more = count - len(names)
            who = ", ".join(names) + (f" and {more} more" if more > 0 else "")
        text += f" to {who}"
    if gpu["until"] is not None:
        text += f" until {time.strftime('%H:%M', time.localtime(gpu['until']))}"
    return f'<p class="state {escape(state)}">{escape(text)}</p>'


def _host_card(host: dict[str, Any]) -> str:
    cpu = _percent_text(host["cpu_percent"])
    if host["load"] is not None and host["cpus"]:
        cpu += f" (load {float(host['load']):g} on {int(host['cpus'])} CPUs)"
    running = host["containers_running"]
    logged_in = host["logged_in"]
    online = (
        f"{_number(logged_in)} logged in, {_number(running)} of {int(host['students'])} containers running"
    )
    front_door = bool(host.get("front_door"))  # a cluster's containers and their disks are on the members
    disk = (
        ""
        if front_door
        else f'<div class="figure" id="host-disk"><span>Containers\' disk: '
        f"{_bytes_pair(host['disk_used'], host['disk_total'])}</span></div>"
    )
    return (
        f'<article class="card" id="host-figures"><h3>{"The front door" if front_door else "This host"}</h3>'
        f'<div class="figure" id="host-cpu"><span>CPU: {cpu}</span>'
        f"{plot(host['cpu_plot'], 'CPU use, last 24 hours')}</div>"
        f'<div class="figure" id="host-memory"><span>Memory: '
        f"{_bytes_pair(host['memory_used'], host['memory_total'])}</span>"
        f"{plot(host['memory_plot'], 'memory used, last 24 hours')}</div>"
        f"{disk}"
        f'<div class="figure" id="host-students"><span>Students: {online}</span></div>'
        "</article>"
    )


def plot(points: list[int | None], label: str) -> str:
    """A sparkline of percentages (None: a gap), one unit of width per point, 0..100 bottom to top."""
    width, usable = len(points), PLOT_HEIGHT - 4
    path = []
    gap = True
    for x, value in enumerate(points):
        if value is None:
            gap = True
            continue
        y = PLOT_HEIGHT - 2 - value * usable / 100
        # A run's first point is a dot of its own (round caps), so a lone minute shows too.
        path.append(f"M{x + 0.5:g},{y:.1f}h0.01" if gap else f"L{x + 0.5:g},{y:.1f}")
        gap = False
    body = (
        f'<path d="{"".join(path)}"/>'
        if path
        else f'<text x="{width / 2:g}" y="24" text-anchor="middle">no readings yet</text>'
    )
    return (
        f'<svg class="plot" viewBox="0 0 {width} {PLOT_HEIGHT}" preserveAspectRatio="none" '
        f'role="img" aria-label="{escape(label)}"><title>{escape(label)}</title>{body}</svg>'
    )


def _percent_text(value: int | None) -> str:
    return '<em class="unknown">unknown</em>' if value is None else f"{int(value)}%"


def _bytes_pair(used: int | None, total: int | None) -> str:
    if used is None or not total:
        return '<em class="unknown">unknown</em>'
    return f"{used / GIB:.1f} of {total / GIB:.1f} GiB ({round(100 * used / total)}%)"


def _number(value: int | None) -> str:
    return "?" if value is None else str(int(value))


def _count(count: int, what: str) -> str:
    return f"{count} {what}" if count == 1 else f"{count} {what}s"
