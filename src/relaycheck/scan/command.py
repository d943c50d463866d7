"""``relaycheck scan`` and ``relaycheck report`` (imported lazily by ``relaycheck.cli``)."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import click

from relaycheck.api import CheckOptions
from relaycheck.cli import _addresses, _one_address
from relaycheck.engine import DEFAULT_OUTSIDE, EngineOptions, default_helo
from relaycheck.errors import UsageError
from relaycheck.hygiene import HygieneOptions
from relaycheck.model import Transport
from relaycheck.names import is_hostname
from relaycheck.report import EXIT_OK, EXIT_OPEN
from relaycheck.scan import meta
from relaycheck.scan.excludes import build_excludes
from relaycheck.scan.progress import make_progress
from relaycheck.scan.runner import ScanConfig, run_scan
from relaycheck.scan.sink import JsonlSink
from relaycheck.scan.targets import Item, estimate, expand, in_shard, parse_inputs, validate_args
from relaycheck.scan.workers import WorkerPool, default_workers, peak_rss_mb

EXIT_INTERRUPTED = 130


def _contact(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.hostname:
        return value
    if parts.scheme == "mailto" and "@" in parts.path:
        return value
    raise click.BadParameter(f"expected an http(s):// or mailto: URL, not {value!r}")


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


def parse_ports(text: str) -> tuple[int, ...]:
    """``25`` or ``25,465,587`` (duplicates dropped, order kept)."""
    try:
        ports = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise UsageError(f"-p takes port numbers separated by commas, not {text!r}") from None
    if not ports or not all(0 < p < 65536 for p in ports):
        raise UsageError(f"-p takes port numbers from 1 to 65535, not {text!r}")
    return tuple(dict.fromkeys(ports))


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM does what Ctrl-C does: asyncio's runner cancels the scan cleanly on SIGINT (raising
    KeyboardInterrupt at an arbitrary point of the event loop instead can leave it wedged)."""
    os.kill(os.getpid(), signal.SIGINT)


def _cpu_seconds() -> dict[str, float]:
    """CPU time of this process and of its reaped children (the --workers processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"front": round(own.ru_utime + own.ru_stime, 3), "workers": round(children.ru_utime + children.ru_stime, 3)}


def _json_safe(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_json_safe(v) for v in value]
    return value


@click.command("scan")
@click.argument("targets", nargs=-1)
@click.option("-iL", "--input-list", "lists", multiple=True, metavar="FILE",
              help="Read targets from FILE ('-': stdin): one or more per line, or CSV ip,domain,tag,port.")
@click.option("-o", "--output", default="-", show_default=True, metavar="FILE",
              help="JSON Lines results, one record per target ('-': stdout).")
@click.option("-m", "--metadata", metavar="FILE", help="Metadata JSON. Default: OUTPUT.meta.json.")
@click.option("--resume", is_flag=True, help="Continue a scan: keep OUTPUT, skip targets already in it.")
@click.option("-p", "--port", "port_list", default="25", show_default=True, metavar="PORTS",
              help="Port(s) for targets given without one: 25, or a list like 25,465,587 (465: implicit TLS).")
@click.option("--transport", type=click.Choice([t.value for t in Transport]),
              help="plain, starttls or tls. Default: tls on port 465, plain otherwise.")
@click.option("--no-mx", is_flag=True, help="Treat names as hosts: do not look up MX records.")
@click.option("--resolver", metavar="IP[:PORT]", help="Ask this DNS server instead of the system's.")
@click.option("--exclude", "excludes", multiple=True, metavar="BLOCK",
              help="Never touch these addresses (IP, CIDR, a-b; repeatable, comma-separated).")
@click.option("--exclude-file", "exclude_files", multiple=True, metavar="FILE",
              help="More excludes, one block per line, '#' comments (zmap blocklist format).")
@click.option("--include-reserved", is_flag=True,
              help="Lift the default exclude list (IANA special-purpose ranges): labs and internal audits.")
@click.option("--rate", type=click.FloatRange(0), default=100.0, show_default=True,
              help="New TCP connections per second, all targets together (0: unlimited).")
@click.option("--concurrency", type=click.IntRange(1, 20000), default=100, show_default=True,
              help="Targets tested at once.")
@click.option("--max-connections", type=click.IntRange(1, 10), default=3, show_default=True,
              help="Connections at once per host.")
@click.option("--per-subnet", type=click.IntRange(0), default=4, show_default=True,
              help="Hosts of one /24 (IPv6: /64) tested at once (0: no cap).")
@click.option("--connect-timeout", type=click.FloatRange(0.1, 600), default=10.0, show_default=True,
              metavar="SECONDS")
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=30.0, show_default=True, metavar="SECONDS",
              help="Per-step timeout (greeting, each reply).")
@click.option("--target-timeout", type=click.FloatRange(1, 3600), default=120.0, show_default=True,
              metavar="SECONDS", help="Whole-target budget (plus --retry-budget).")
@click.option("--retry-budget", type=click.FloatRange(0, 3600), default=0.0, show_default=True, metavar="SECONDS",
              help="Keep retrying deferred (4xx) probes this long.")
@click.option("--helo", metavar="FQDN", help="EHLO name (default: the --contact URL's host, else this machine's FQDN).")
@click.option("--contact", callback=_contact, metavar="URL",
              help="Where operators learn about the scan / opt out (http(s) or mailto); see docs/scan.md.")
@click.option("--ext-recipient", "ext_recipients", multiple=True, callback=_addresses, metavar="ADDRESS",
              help=f"Outside recipient for relay probes (repeatable). Default: {', '.join(DEFAULT_OUTSIDE)}.")
@click.option("--sender", callback=_one_address, metavar="ADDRESS", help="Outside sender address.")
@click.option("--local-domain", metavar="DOMAIN", help="Force the local domain for every target.")
@click.option("--data-probe", is_flag=True, help="For accepted recipients, send DATA and hang up on 354.")
@click.option("--no-ptr", is_flag=True, help="Skip the reverse DNS (PTR, FCrDNS) checks.")
@click.option("--dnsbl", "dnsbl", is_flag=True,
              help="Also look every server up in DNS blocklists (off in scans: public DNSBLs refuse bulk use).")
@click.option("--dnsbl-zone", "dnsbl_zones", multiple=True, metavar="ZONE",
              help="Ask this DNSBL zone instead of the default list (e.g. your own mirror); implies --dnsbl.")
@click.option("--no-tls-check", is_flag=True, help="Skip the certificate and TLS protocol checks.")
@click.option("--no-tls-battery", is_flag=True, help="Do not repeat the relay battery over STARTTLS.")
@click.option("--no-vrfy", is_flag=True, help="Skip the VRFY/EXPN user-enumeration check.")
@click.option("--seed", type=int, default=0, show_default=True, help="Order of addresses and the shard split.")
@click.option("--shards", type=click.IntRange(1), default=1, show_default=True, help="Split the scan in N parts.")
@click.option("--shard", type=click.IntRange(0), default=0, show_default=True, help="Which part (0-based).")
@click.option("--dask", "dask_spec", metavar="ADDRESS|local[:N]",
              help="Run on a Dask cluster (tcp://scheduler:8786) or N local worker processes.")
@click.option("--workers", "workers_wanted", type=click.IntRange(0, 256), default=1, show_default=True,
              help="Scan in N local processes, one core each (0: one per CPU). One process tests about "
                   "150 servers a second; use more when --rate allows more.")
@click.option("--chunk-size", type=click.IntRange(1, 100000), default=256, show_default=True,
              help="Targets per Dask task.")
@click.option("--full", is_flag=True, help="Records carry every observation and the SMTP transcripts.")
@click.option("--progress", "progress_mode", type=click.Choice(["auto", "bar", "lines", "none"]), default="auto",
              show_default=True, help="Progress on stderr: a bar on a terminal, status lines otherwise.")
@click.option("--status-interval", type=click.FloatRange(0.1), default=5.0, show_default=True, metavar="SECONDS")
@click.pass_context
def scan_command(ctx: click.Context, targets: tuple[str, ...], lists: tuple[str, ...], output: str,
                 metadata: str | None, resume: bool, port_list: str, transport: str | None, no_mx: bool,
                 resolver: str | None, excludes: tuple[str, ...], exclude_files: tuple[str, ...],
                 include_reserved: bool, rate: float, concurrency: int, max_connections: int, per_subnet: int,
                 connect_timeout: float, timeout: float, target_timeout: float, retry_budget: float,
                 helo: str | None, contact: str | None, ext_recipients: tuple[str, ...], sender: str | None,
                 local_domain: str | None, data_probe: bool, no_ptr: bool, dnsbl: bool, dnsbl_zones: tuple[str, ...],
                 no_tls_check: bool, no_tls_battery: bool, no_vrfy: bool, seed: int, shards: int, shard: int,
                 dask_spec: str | None, workers_wanted: int, chunk_size: int, full: bool, progress_mode: str,
                 status_interval: float) -> None:
    """Test many mail servers: addresses, CIDR blocks, a-b ranges, host names, domains (every MX).

    One JSON Lines record per target and port; see docs/scan.md.
    """
    if not targets and not lists:
        raise UsageError("no targets: give addresses, blocks, names, or -iL FILE ('-iL -' for stdin)")
    if shard >= shards:
        raise UsageError(f"--shard {shard} is not below --shards {shards} (shards are numbered from 0)")
    if lists.count("-") > 1:
        raise UsageError("stdin ('-iL -') can be read once")
    ports = parse_ports(port_list)
    validate_args(targets, ports)
    for path in lists:  # before the output is created: a typo must not leave an empty scan behind
        if path != "-" and not os.access(path, os.R_OK):
            raise UsageError(f"cannot read target list {path}")
    address = workers = None
    local_workers = workers_wanted or default_workers()
    if dask_spec is not None and workers_wanted != 1:
        raise UsageError("--workers and --dask do not go together: Dask runs its own workers")
    if dask_spec is not None:
        from relaycheck.scan.distributed import parse_dask

        address, workers = parse_dask(dask_spec)
    exclude_list = build_excludes(include_reserved=include_reserved, excludes=excludes, exclude_files=exclude_files)
    outside = ext_recipients or DEFAULT_OUTSIDE
    ehlo = helo_for(helo, contact)
    if ehlo == "relaycheck.invalid":
        click.echo("relaycheck scan: note: this machine has no FQDN; give --helo (your scanner's name) so that "
                   "operators can tell who tests them.", err=True)
    engine = EngineOptions(
        ext_recipients=outside, sender=sender, local_domain=local_domain.lower().rstrip(".") if local_domain else None,
        helo=ehlo, retry_budget=retry_budget, data_probe=data_probe, max_connections=max_connections,
        connect_timeout=min(connect_timeout, timeout), command_timeout=timeout, greeting_timeout=timeout,
        deadline=target_timeout, resolver=resolver,
        hygiene=HygieneOptions(
            ptr=not no_ptr, dnsbl=dnsbl or bool(dnsbl_zones),
            dnsbl_zones=tuple(z.lower().strip(".") for z in dnsbl_zones),
            tls=not no_tls_check, tls_battery=not no_tls_battery, vrfy=not no_vrfy,
        ),
    )
    check = CheckOptions(engine=engine, transport=Transport(transport) if transport else None, resolver=resolver,
                         use_mx=not no_mx, port=ports[0], ports=ports if len(ports) > 1 else None)
    config = ScanConfig(check=check, excludes=exclude_list, concurrency=concurrency, rate=rate,
                        per_subnet=per_subnet, full=full)
    _raise_fd_limit(concurrency * max_connections * 2 + 256)

    sink = JsonlSink(output, resume=resume)
    metadata_path = metadata or (f"{output}.meta.json" if output != "-" else None)
    previous = meta.load(metadata_path) if (metadata_path and resume) else {}
    parameters = {k: _json_safe(v) for k, v in ctx.params.items()}
    parameters["helo_sent"] = ehlo
    run: dict[str, Any] = {
        "id": uuid.uuid4().hex[:12],
        "start": datetime.now(UTC).isoformat(timespec="seconds"),
        "end": None,
        "mode": "dask" if dask_spec else ("workers" if local_workers > 1 else "local"),
        "resumed_records": sink.resumed,
        "torn_bytes_dropped": sink.torn_bytes,
    }
    if sink.torn_bytes:
        click.echo(f"relaycheck scan: dropped a torn last line ({sink.torn_bytes} bytes) from {output}; "
                   "its target is scanned again", err=True)

    def save(complete: bool) -> None:
        if metadata_path:
            meta.write(metadata_path, meta.document(previous, output=output, parameters=parameters, run=run,
                                                    sink=sink, complete=complete))

    total = None if shards > 1 else estimate(targets, lists, ports, exclude_list)
    progress = make_progress(total, sink.resumed, mode=progress_mode, interval=status_interval)
    items: Iterator[Item] = in_shard(expand(parse_inputs(targets, lists, ports), exclude_list, seed), seed, shards,
                                     shard)
    save(False)
    pool = WorkerPool(config, local_workers) if local_workers > 1 and dask_spec is None else None
    started = time.monotonic()
    interrupted = False
    previous_term = signal.signal(signal.SIGTERM, _interrupt)
    progress.start()
    try:
        if dask_spec is not None:
            from relaycheck.scan.distributed import run_distributed

            stats = run_distributed(items, config, sink, address=address, workers=workers, chunk_size=chunk_size,
                                    on_record=progress.record)
            run["dask"] = {"workers": stats.workers, "threads": stats.threads, "chunks": stats.chunks,
                           "failed_chunks": stats.failed_chunks}
            run["duplicates_dropped"] = stats.duplicates
        elif pool is not None:
            local = pool.run(items, sink, on_record=progress.record)
            run["workers"] = {"processes": local.workers, "restarts": local.restarts,
                              "peak_rss_mb": local.peak_rss_mb}
            run["duplicates_dropped"] = local.duplicates
            run["peak_in_flight"] = local.peak_in_flight
        else:
            scanner = run_scan(items, config, sink, on_record=progress.record)
            run["duplicates_dropped"] = scanner.duplicates
            run["peak_in_flight"] = scanner.peak_in_flight
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.stop()
        signal.signal(signal.SIGTERM, previous_term)
        run["end"] = datetime.now(UTC).isoformat(timespec="seconds")
        run["duration_s"] = round(time.monotonic() - started, 3)
        run["cpu_s"] = _cpu_seconds()
        run["peak_rss_mb"] = peak_rss_mb()
        run["records_written"] = sink.written
        run["interrupted"] = interrupted
        sink.close()
        save(not interrupted)
    opened = sink.by_verdict.get("open", 0)
    click.echo(
        f"relaycheck scan: {sink.written:,} records written ({sink.total:,} in {output}); "
        + ", ".join(f"{v} {n:,}" for v, n in sorted(sink.by_verdict.items()))
        + ("; interrupted: rerun with --resume to continue" if interrupted else ""),
        err=True,
    )
    if interrupted:
        raise SystemExit(EXIT_INTERRUPTED)
    raise SystemExit(EXIT_OPEN if opened else EXIT_OK)


@click.command("report")
@click.argument("results", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown", "html"]), default="text",
              show_default=True)
@click.option("-m", "--metadata", metavar="FILE",
              help="The scan's metadata JSON. Default: RESULTS.meta.json if present.")
@click.option("--limit", type=click.IntRange(0), default=200, show_default=True,
              help="At most this many servers listed per section (0: all).")
def report_command(results: str, fmt: str, metadata: str | None, limit: int) -> None:
    """Summarise a scan's JSON Lines results (text, json, markdown, or self-contained html)."""
    from relaycheck.scan.summary import load_summary, render

    summary = load_summary(results, metadata, limit=limit)
    click.echo(render(summary, fmt), nl=False)
