"""A recording -> a TraceFile: the recorder's rows as calls, ids made stable, then normalized (pure but for reading the recorder)."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from ..model import (
    DispelError,
    TraceFile,
)
from ..pins.installed import (
    PYTHON_VERSION,
    machine_paths,
    resolve_funcs,
)
from ..record.recorder import RAISED, Tracer, line_at
from . import normalize
from .normalize import RawCall
from .values import Normalizer, learn_secrets


def recorded_calls(recorder: Tracer, roots: list) -> tuple[list[RawCall], dict]:
    """A recorder's rows -> RawCalls (code resolved to functions) and the functions by key."""
    if recorder.errors:
        raise DispelError(f"the recorder disabled itself: {recorder.errors[0]}")
    raw = recorder.rows()
    funcs_by_code = resolve_funcs(set(raw.codes), raw.probe_codes, roots)
    calls = normalize.raw_calls(raw.call_rows(), raw.codes, raw.return_map(), funcs_by_code.__getitem__, line_at, RAISED)
    return calls, {f.key: f for f in funcs_by_code.values()}


def random_ids(calls: list[RawCall], suffix: str = "") -> dict[str, str]:
    """Random ids the program made -> placeholders, in the order they were made: session ids
    (normalize.session_ids) and redis-py's connection pool ids (<redis-pool-N>). ``suffix``
    (``@server-b``) names the process, where the ids of several show in one trace."""
    ids = {k: f"{v[:-1]}{suffix}>" for k, v in normalize.session_ids(calls).items()}
    pools = 0
    for c in calls:
        if c.func.endswith(":get_pool_name") and c.ret and isinstance(c.ret.value, str) and "_" in c.ret.value:
            # redis-py names each connection pool "host:port_" + a random hex id
            pool = c.ret.value.rpartition("_")[2]
            if pool not in ids:
                pools += 1
                ids[pool] = f"<redis-pool-{pools}{suffix}>"
    return ids


def trace_from_recording(
    recorder: Tracer, name: str, port: int | None, roots: list, versions: dict[str, str], settings: Iterable | None = None, deny: tuple[str, ...] = (),
    process: str = "", ports: dict[int, str] | None = None, ids: dict[str, str] | None = None,
    recorded: tuple[list[RawCall], dict] | None = None, patterns: tuple[tuple[str, str], ...] = (),
    paths: Mapping[str, str] | None = None, running: list | None = None,
) -> TraceFile:
    """A recorder's rows -> normalized TraceFile: code resolved to functions, values made stable.
    ``settings``: (name, value) of the run's Flask settings (installed.app_settings), whose
    secrets are hidden; ``ids``: the random ids to replace (default: this recording's, by random_ids);
    ``running``: extended with the threads still running when the recording ended (normalize.Running)."""
    calls, funcs = recorded or recorded_calls(recorder, roots)
    secrets = dict(random_ids(calls) if ids is None else ids)
    for text, label in learn_secrets(normalize.values_seen(calls), settings or ()).items():
        secrets.setdefault(text, label)
    raw = recorder.rows()
    trace = normalize.normalize(
        name,
        PYTHON_VERSION,
        versions,
        raw.steps,
        calls,
        funcs,
        {s: start for s, (start, _) in raw.threads.items()},
        Normalizer(port, secrets, {**machine_paths(), **(paths or {})}, deny, ports, patterns),
        running,
        raw.greenlets,
        {(p, line_at(raw.codes[p], offset)): n for (p, offset), n in raw.folded.items() if 0 <= p < len(raw.codes)},
    )
    return dataclasses.replace(trace, process=process) if process else trace
