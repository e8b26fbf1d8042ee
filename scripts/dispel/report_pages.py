"""A report's chains and pages, from its trace: journeys derived and built, their texts filled and
proven, the home page, the versions it traced and its mkdocs configuration (dispel.report runs them)."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import yaml

from . import catalog
from .chains import build as chains_core
from .chains import derive, fold
from .chains.graph import JourneyError
from .check import integrity, prose
from .model import Chain, DispelError, Lock, TraceFile
from .pins.forges import repo_url
from .pins.installed import (
    distributions,
)
from .project import (
    Project,
    load_lock,
)
from .render import aids, annotation_files, markup
from .render import pages as render
from .run import scenario_file, scenario_values

COMMAND = "dispel report"


def build_chains(trace: TraceFile, lines: Mapping) -> tuple[list[derive.Derived], dict[str, Chain], list[str]]:
    """The derived journeys and their chains; a journey that cannot be followed is left out, with why."""
    found, notes = derive.derive_all(trace)
    built: dict[str, Chain] = {}
    skipped = []
    for d in found:
        at = f" ({d.site})" if d.site else ""
        try:
            chain = chains_core.build(trace, d.journey, lines, d.find)
        except JourneyError as exc:
            skipped.append(f"{d.journey.name}{at}: {exc}")
            continue
        broken = integrity.verdicts(chain, trace)  # a chain that is not one story is not shown
        if broken:
            skipped.append(f"{d.journey.name}{at}: its chain is not one story: {broken[0]}")
            continue
        built[d.journey.name] = chain
    skipped += notes + derive.unshown(trace, built)
    return [d for d in found if d.journey.name in built], built, skipped


def fillable(chain: Chain, texts: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The texts that fill on ``chain``: a general text whose placeholder names what this app's
    journey does not have (a hop that is not there) is left out for it, with why."""
    mine = dict(texts)
    dropped = []
    for i, hop in enumerate(chain.hops):
        while True:
            try:
                render.hop_annotation(chain, i, mine)
                break
            except DispelError as exc:
                chosen = annotation_files.select(mine, hop.func.key, chain.journey, hop.line)
                assert chosen is not None  # only a text that was chosen can fail to fill
                key = chosen[0]
                dropped.append(f"{key} on {chain.journey}: {exc}")
                del mine[key]
    return mine, dropped


def checked_page(chain: Chain, texts: dict[str, str], render_page, lines: Mapping) -> tuple[str, list[str]]:
    """The page of ``chain`` with only texts whose sentences hold on it (dispel.check.prose): a general
    text written for the sample's journeys that names what this journey does not have is left
    out for it, with why. ``render_page(texts)`` renders the page."""
    texts = dict(texts)
    left_out: list[str] = []
    returns = {e.number: e.numbers for e in fold.entries(chain)}  # a page's hop number -> the chain positions it shows
    for _ in range(len(chain.hops) + 1):
        page = render_page(texts)
        problems = prose.check_page(f"docs/chains/{chain.journey}.md", page, chain, lines)
        if not problems:
            return page, left_out
        for p in problems:
            for n in returns.get(p.hop, ()) if p.hop else ():
                hop = chain.hops[n - 1]
                found = annotation_files.select(texts, hop.func.key, chain.journey, hop.line)
                if found:
                    left_out.append(f"{found[0]} on {chain.journey}: {p.why}")
                    del texts[found[0]]
                    break
            else:
                raise DispelError(f"the page of {chain.journey} says what its chain does not: {p.line}")
    raise DispelError(f"the page of {chain.journey} could not be made true to its chain")


def unannotated(chains: Iterable[Chain], texts: Mapping[str, Mapping[str, str]]) -> list[str]:
    """``module:qualname (journey#hop, ...)`` for every function no text covers (``texts`` per journey)."""
    where: dict[str, list[str]] = {}
    for c in chains:
        for i, hop in enumerate(c.hops, 1):
            if annotation_files.select(texts[c.journey], hop.func.key, c.journey, hop.line) is None:
                where.setdefault(hop.func.key, []).append(f"{c.journey}#{i}")
    return [f"{k} ({', '.join(v[:3])}{', …' if len(v) > 3 else ''})" for k, v in sorted(where.items())]


def report_dists(trace: TraceFile) -> list[str]:
    """The distributions a report pins: the traced libraries, and a queue's (redis) only when the
    app's trace ran its code, so that a report needs no extra it does not trace."""
    ran = {f.source.dist for f in trace.funcs.values()}
    return sorted({*catalog.DIST_NAMES, *(d.name for d in catalog.QUEUE_DISTS if d.name in ran)})


def committed_lock(project: Project, names: Iterable[str]) -> Lock | None:
    """The lock a report starts pinning from: per distribution, the first entry of the committed
    locks (dispel.project.Project.locks: the project's, then the oldest supported set's) at the
    installed version. `dispel pin` keeps an entry whose installed blobs match without git or the
    network; only a version no committed lock pins needs ``--git-dir`` or the network."""
    locks = [load_lock(p) for p in project.locks]
    if not locks:
        return None
    installed = {name: d.version for name, d in distributions(names).items()}
    chosen = []
    for name in sorted(installed):
        found = next((p for lock in locks for p in lock.dists if p.dist == name and p.version == installed[name]), None)
        if found is not None:
            chosen.append(found)
    return Lock(locks[0].python, tuple(chosen))


def versions_section(lock: Lock) -> str:
    """The versions the report traced, each with the commit its links are pinned to (from its lock)."""
    out = ["## The versions traced { #versions }\n",
           ("The app ran on these versions; every link of the journeys points into the commit of the installed version's tag, "
           "proven by the installed files' git blobs.\n"),
           "| Library | Version | Pinned to |", "|---|---|---|"]
    for p in sorted(lock.dists, key=lambda p: p.dist):
        ref = p.commit or p.tag
        out.append(f"| {p.dist} | {p.version} | [{p.repo} {p.tag} ({ref[:12]})](<{repo_url(p.forge, p.repo, ref)}>) |")
    out.append(f"| Python | {lock.python.version} | {lock.python.repo} {lock.python.tag} |")
    return "\n".join(out) + "\n"


def report_journey_page(chain: Chain, links, excerpts, texts: Mapping[str, str], built: Mapping[str, Chain]) -> str:
    """A journey's page with the reader's aids (dispel.aids): the layer table and the chain to copy."""
    view = render.journey_page(chain, links, excerpts, texts, built)
    return aids.with_journey_aids(render.emit_journey(view), view)


def reading_guide(project_index: str) -> str:
    """The project's "How to read a chain" section, without its paragraph about the sample's scenarios."""
    m = re.search(r"^## How to read a chain.*?(?=^## |\Z)", project_index, re.DOTALL | re.MULTILINE)
    text = m.group(0) if m else "## How to read a chain { #how-to-read-a-chain }\n"
    return re.sub(r"\*\*The summary\*\*.*?\n\n", "", text, count=1, flags=re.DOTALL)


def render_index(sf: scenario_values.ScenarioFile, scenario_text: str, derived: Sequence[derive.Derived], built: Mapping[str, Chain],
                 skipped: Sequence[str], missing: Sequence[str], guide: str, trace: TraceFile | None = None,
                 running: Sequence[tuple[str, str]] = (), live: Sequence[str] | None = None) -> str:
    """The report's home page; ``live``: what the clients of a live recording did (live_session.home_lines)."""
    app = scenario_file.app_spec(sf)
    title = sf.title or f"{app.target}, traced"
    who = ("its own clients (a live recording: `dispel report --live`) talked to it" if live is not None else
           f"the clients of the scenario file {markup.inline_code(sf.source)} talked to it")
    out = [markup.generated_header(COMMAND), f"# {markup.md_text(title)}\n",
           (f"dispel ran {markup.inline_code(app.target)} under its tracer while {who}, and derived one chain of calls per journey from the trace: "
           "from the socket or the app's own line to the library code that did the work. The app's source as it ran "
           "is [on its own page](sample_app.md).\n")]
    if live is not None:
        out.append("## What the clients did\n")
        out.append("Each client, its transport and its events, in the order the app received them (the scenario below replays them):\n")
        out += [f"- {markup.md_text(line)}" for line in live] + [""]
    out += ["## The journeys\n", "| Journey | Hops | Threads | What |", "|---|---|---|---|"]
    for d in derived:
        c = built[d.journey.name]
        out.append(f"| [{d.journey.name}](chains/{d.journey.name}.md) | {len(c.hops)} | {len(render.lifelines(c))} | {markup.md_text(c.title)} |")
    out.append("")
    raised = derive.raised_sites(trace) if trace is not None else []
    if raised:
        out.append("## Where the app raised\n")
        out.append("An exception left the app's code here (its type and message are in the run's output):\n")
        for site in raised:
            shown = derive.shown_by(built, site)
            where = f"[{shown}](chains/{shown}.md) shows where it was caught" if shown else "no journey shows it"
            out.append(f"- {markup.inline_code(f'{site[0]}:{site[1]}')} in {markup.inline_code(site[2])}: {where}")
        out.append("")
    if running:
        threads = ", ".join(f"{markup.inline_code(t)} (in {markup.inline_code(f)})" for t, f in running)
        out.append(f"Still running when the scenario ended, and cut there: {threads}. A journey through a loop "
                   "shows one of its turns, the same on every run; how many turns a loop made varies from run to run, and is not shown.\n")
    if skipped:
        out.append("## Journeys not derived\n")
        out.append("What ran and is on no journey, with why (the console printed the same lines):\n")
        out += [f"- not derived: {markup.md_text(s)}" for s in skipped] + [""]
    out.append("## Not annotated\n")
    if missing:
        out.append("No text covers these functions yet (a general text in an annotations file would):\n")
        out += [f"- {markup.inline_code(m)}" for m in missing] + [""]
    else:
        out.append("Every hop has a text.\n")
    out.append("## The scenario\n")
    out.append(markup.fenced(scenario_text.rstrip("\n"), "toml"))
    out.append("")
    out.append(guide.rstrip("\n") + "\n")
    return "\n".join(out)


def mkdocs_config(project_config: str, title: str, journeys: Sequence[str]) -> str:
    cfg = yaml.safe_load(project_config)
    cfg["site_name"] = title
    cfg["site_description"] = "A Flask-SocketIO app's call chains, traced by dispel."
    cfg["nav"] = [{"Home": "index.md"}, {"Journeys": [{j: f"chains/{j}.md"} for j in journeys]},
                  {"Reader's aids": [{"Glossary": aids.GLOSSARY_PAGE}, {"Threads": aids.THREADS_PAGE}]},
                  {"The app's source": "sample_app.md"}, {"Licensing": "licensing.md"}]
    cfg.get("theme", {}).pop("custom_dir", None)  # the project's footer names the project's traces, not the report's
    return "# Generated by `dispel report`. Do not edit: regenerate instead.\n" + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


