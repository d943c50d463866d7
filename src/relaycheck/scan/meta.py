"""The scan's metadata JSON (zgrab2's ``-m``): start, end, parameters, counts by status and
verdict, and one entry per run (a resumed scan has several). Written at the start (``end``:
null, so a killed scan still says what it was doing) and rewritten at the end, atomically."""

from __future__ import annotations

import json
import os
from typing import Any

from relaycheck.boundedio import InputError, read_capped
from relaycheck.scan.output import JsonlOutput
from relaycheck.scan.records import RECORD_VERSION

MAX_BYTES = 16 * 1024 * 1024


def load(path: str) -> dict[str, Any]:
    """The metadata of an earlier run; {} when there is none (a resumed scan starts a new one)."""
    try:
        data = json.loads(read_capped(path, MAX_BYTES, what="scan metadata"))
    except (InputError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write(path: str, data: dict[str, Any]) -> None:
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def document(previous: dict[str, Any], *, output: str, parameters: dict[str, Any], run: dict[str, Any],
             writer: JsonlOutput, complete: bool) -> dict[str, Any]:
    from relaycheck import __version__

    runs = [r for r in previous.get("runs", []) if isinstance(r, dict) and r.get("id") != run.get("id")]
    runs.append(run)
    start = runs[0].get("start") if runs else run.get("start")
    return {
        "tool": {"name": "relaycheck", "version": __version__},
        "record_version": RECORD_VERSION,
        "output": output,
        "start": start,
        "end": run.get("end"),
        "complete": complete,
        "parameters": parameters,
        "counts": {
            "records": writer.total,
            "by_status": dict(sorted(writer.by_status.items())),
            "by_verdict": dict(sorted(writer.by_verdict.items())),
        },
        "runs": runs,
    }
