"""``relaycheck scan`` and ``relaycheck report`` (imported lazily by ``relaycheck.cli``)."""

from __future__ import annotations

import contextlib
import resource
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import click

from relaycheck import validate
from relaycheck.boundedio import sniff
from relaycheck.errors import UsageError
from relaycheck.names import is_hostname
from relaycheck.options import CheckOptions, EngineOptions, HygieneOptions, default_helo
from relaycheck.options.table import apply, build_check, command_options, sections_of
from relaycheck.render import ReportKind, chosen_format, render
from relaycheck.report import EXIT_OK, EXIT_OPEN
from relaycheck.scan import meta
from relaycheck.scan.excludes import build_excludes
from relaycheck.scan.output import JsonlOutput
from relaycheck.scan.progress import make_progress
from relaycheck.scan.runner import ScanConfig, run_scan
from relaycheck.scan.targets import Item, estimate, expand, in_shard, parse_inputs, validate_args
from relaycheck.scan.workers import WorkerPool, default_workers, peak_rss_mb

EXIT_INTERRUPTED = 130


def helo_for(helo: str | None, contact: str | None) -> str:
    """The EHLO name: ``--helo``; else the host of an http(s) ``--contact`` URL (so the name an
    operator sees in the logs is a web page about the scan); else this machine's FQDN.

    The contact itself cannot travel in EHLO: RFC 5321 allows only a domain or an address
    literal there, and strict servers refuse anything else (which would change verdicts).
    """
    if helo:
        return helo.rstrip(".").lower()
    if contact:
        host = urlsplit(contact).hostname
        if host and "." in host and is_hostname(host) and not host.replace(".", "").isdigit():
            return host.lower()
    return default_helo()


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))




def _cpu_seconds() -> dict[str, float]:
    """CPU time of this process and of its reaped children (the --workers processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"front": round(own.ru_utime + own.ru_stime, 3), "workers": round(children.ru_utime + children.ru_stime, 3)}


def _json_safe(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_json_safe(v) for v in value]
    return value




def scan_base() -> ScanConfig:
    """What a scan does unless told otherwise: a shorter whole-target budget than ``check`` and no
    DNSBL lookups (public DNSBLs refuse bulk use)."""
    engine = EngineOptions(deadline=120.0, hygiene=HygieneOptions(dnsbl=False))
    return ScanConfig(check=CheckOptions(engine=engine))


@click.command("scan")
@click.argument("targets", nargs=-1)
@command_options("scan", sections_of(scan_base().check, scan=scan_base()))
@click.pass_context
def scan_command(ctx: click.Context, /, targets: tuple[str, ...], **values: Any) -> None:
    """Test many mail servers: addresses, CIDR blocks, a-b ranges, host names, domains (every MX).

    One JSON Lines record per target and port; see docs/scan.md.
    """
    lists: tuple[str, ...] = values["lists"]
    shard, shards, dask_spec, output = values["shard"], values["shards"], values["dask"], values["output"]
    if not targets and not lists:
        raise UsageError("no targets: give addresses, blocks, names, or -iL FILE ('-iL -' for stdin)")
    if shard >= shards:
        raise UsageError(f"--shard {shard} is not below --shards {shards} (shards are numbered from 0)")
    if lists.count("-") > 1:
        raise UsageError("stdin ('-iL -') can be read once")
    base = scan_base()
    check = build_check(values, base.check)
    ports = check.ports or (check.port,)
    validate_args(targets, ports)
    for path in lists:  # before the output is created: a typo must not leave an empty scan behind
        sniff(path, what="a target list")
    address = workers = None
    local_workers = values["workers"] or default_workers()
    if dask_spec is not None and values["workers"] != 1:
        raise UsageError("--workers and --dask do not go together: Dask runs its own workers")
    if dask_spec is not None:
        from relaycheck.scan.distributed import parse_dask

        address, workers = parse_dask(dask_spec)
    exclude_list = build_excludes(include_reserved=values["include_reserved"], excludes=values["excludes"],
                                  exclude_files=values["exclude_files"])
    ehlo = helo_for(values["helo"], values["contact"])
    if ehlo == "relaycheck.invalid":
        click.echo("relaycheck scan: note: this machine has no FQDN; give --helo (your scanner's name) so that "
                   "operators can tell who tests them.", err=True)
    check = replace(check, engine=replace(check.engine, helo=validate.helo_name(ehlo)))
    config = apply("scan", replace(base, check=check, excludes=exclude_list), values)
    concurrency, max_connections = config.concurrency, check.engine.max_connections
    _raise_fd_limit(concurrency * max_connections * 2 + 256)

    writer = JsonlOutput(output, resume=values["resume"])
    metadata_path = values["metadata"] or (f"{output}.meta.json" if output != "-" else None)
    previous = meta.load(metadata_path) if (metadata_path and values["resume"]) else {}
    parameters = {k: _json_safe(v) for k, v in ctx.params.items()}
    parameters["helo_sent"] = check.engine.helo
    run: dict[str, Any] = {
        "id": uuid.uuid4().hex[:12],
        "start": datetime.now(UTC).isoformat(timespec="seconds"),
        "end": None,
        "mode": "dask" if dask_spec else ("workers" if local_workers > 1 else "local"),
        "resumed_records": writer.resumed,
        "torn_bytes_dropped": writer.torn_bytes,
    }
    if writer.torn_bytes:
        click.echo(f"relaycheck scan: dropped a torn last line ({writer.torn_bytes} bytes) from {output}; "
                   "its target is scanned again", err=True)

    def save(complete: bool) -> None:
        if metadata_path:
            meta.write(metadata_path, meta.document(previous, output=output, parameters=parameters, run=run,
                                                    writer=writer, complete=complete))

    total = None if shards > 1 else estimate(targets, lists, ports, exclude_list)
    progress = make_progress(total, writer.resumed, mode=values["progress"], interval=values["status_interval"])
    seed = values["seed"]
    items: Iterator[Item] = in_shard(expand(parse_inputs(targets, lists, ports), exclude_list, seed), seed, shards,
                                     shard)
    save(False)
    pool = WorkerPool(config, local_workers) if local_workers > 1 and dask_spec is None else None
    started = time.monotonic()
    interrupted = False
    progress.start()
    try:
        if dask_spec is not None:
            from relaycheck.scan.distributed import run_distributed

            stats = run_distributed(items, config, writer, address=address, workers=workers,
                                    chunk_size=values["chunk_size"],
                                    on_record=progress.record)
            run["dask"] = {"workers": stats.workers, "threads": stats.threads, "chunks": stats.chunks,
                           "failed_chunks": stats.failed_chunks}
            run["duplicates_dropped"] = stats.duplicates
        elif pool is not None:
            local = pool.run(items, writer, on_record=progress.record)
            run["workers"] = {"processes": local.workers, "restarts": local.restarts,
                              "peak_rss_mb": local.peak_rss_mb}
            run["duplicates_dropped"] = local.duplicates
            run["peak_in_flight"] = local.peak_in_flight
        else:
            scanner = run_scan(items, config, writer, on_record=progress.record)
            run["duplicates_dropped"] = scanner.duplicates
            run["peak_in_flight"] = scanner.peak_in_flight
    except KeyboardInterrupt:  # SIGINT or SIGTERM (relaycheck.stopping): stop, keep what was done
        interrupted = True
    finally:
        progress.stop()
        run["end"] = datetime.now(UTC).isoformat(timespec="seconds")
        run["duration_s"] = round(time.monotonic() - started, 3)
        run["cpu_s"] = _cpu_seconds()
        run["peak_rss_mb"] = peak_rss_mb()
        run["records_written"] = writer.written
        run["interrupted"] = interrupted
        writer.close()
        save(not interrupted)
    opened = writer.by_verdict.get("open", 0)
    click.echo(
        f"relaycheck scan: {writer.written:,} records written ({writer.total:,} in {output}); "
        + ", ".join(f"{v} {n:,}" for v, n in sorted(writer.by_verdict.items()))
        + ("; interrupted: rerun with --resume to continue" if interrupted else ""),
        err=True,
    )
    if interrupted:
        raise SystemExit(EXIT_INTERRUPTED)
    raise SystemExit(EXIT_OPEN if opened else EXIT_OK)


@click.command("report")
@click.argument("results", type=click.Path(dir_okay=False, allow_dash=True))
@command_options("report", {}, report=ReportKind.SCAN)
def report_command(results: str, output_format: str | None, metadata: str | None, limit: int) -> None:
    """Summarise a scan's JSON Lines results (text, json, markdown, or self-contained html)."""
    from relaycheck.scan.summary import load_summary

    summary = load_summary(results, metadata, limit=limit)
    click.echo(render(ReportKind.SCAN, summary, chosen_format(output_format, False)), nl=False)
