"""``relaycheck scan`` against a population of loopback servers: the verdict of every host is
exactly the verdict ``relaycheck check`` gives; names, MX, CSV, excludes, shards, stdin."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import pathlib
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from relaycheck.api import CheckOptions, check
from relaycheck.cli import main
from relaycheck.engine import EngineOptions
from relaycheck.hygiene import HygieneOptions
from relaycheck.render.json import target_report_dict
from relaycheck.testing.dnsserver import DnsServerThread
from tests.support.population import Population, plan

COMMON = [
    "--ext-recipient", "relaytest@outside-a.test",
    "--ext-recipient", "relaytest@outside-b.test",
    "--helo", "scan.relaycheck.test",
    "--timeout", "10",  # generous: the test process runs hundreds of servers and sessions at once
    "--no-ptr",  # no DNS from these tests unless a loopback resolver is given
]  # fmt: skip
NO_DNSBL = ["--no-dnsbl"]  # check's default; scan asks DNSBLs only with --dnsbl
FAST = ["--rate", "0", "--concurrency", "300", "--per-subnet", "0", "--progress", "none"]

MIX = {
    "open": 30, "closed": 40, "percent-only": 4, "null-sender-only": 4, "spoofed-local-sender-only": 3,
    "source-route-only": 3, "relay-denied-4xx": 4, "reject-everything": 3, "catch-all": 3, "relay-domain": 3,
    "refuse-at-data": 2, "no-pipelining": 3, "multiline": 3, "refused": 4, "not-smtp": 2,
}  # fmt: skip
BASE = "127.4.0.1"
COUNT = 300


# what ``relaycheck check`` builds from COMMON + NO_DNSBL
CHECK_OPTIONS = CheckOptions(
    engine=EngineOptions(
        ext_recipients=("relaytest@outside-a.test", "relaytest@outside-b.test"), helo="scan.relaycheck.test",
        command_timeout=10, greeting_timeout=10, connect_timeout=10, hygiene=HygieneOptions(ptr=False, dnsbl=False),
    ),
    concurrency=COUNT,
)


@pytest.fixture(scope="module")
def population() -> Iterator[Population]:
    with Population(plan(COUNT, MIX, BASE)) as running:
        yield running


def verdict_of(target: dict[str, Any]) -> tuple[str, str, list[str]]:
    return target["verdict"]["verdict"], target["verdict"]["confidence"], target["verdict"]["evidence"]


def read(path: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def span(pop: Population) -> str:
    ordered = sorted(pop.members, key=lambda a: int(ipaddress.ip_address(a)))
    return f"{ordered[0]}-{ordered[-1]}"


def test_scan_verdicts_equal_check(population: Population, tmp_path: pathlib.Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scan.jsonl"
    port = str(population.port)
    code = main(["scan", span(population), "-p", port, "-o", str(out), "--include-reserved", *COMMON, *FAST])
    assert code == 1  # open relays found
    records = read(out)
    by_ip = {r["ip"]: r for r in records}
    assert len(by_ip) == len(records)  # one record per target
    first, last = (int(ipaddress.ip_address(a)) for a in span(population).split("-"))
    assert set(by_ip) == {str(ipaddress.ip_address(v)) for v in range(first, last + 1)}

    expected_status = {"refused": "refused", "not-smtp": "not-smtp"}
    for ip, record in by_ip.items():
        behaviour = population.members.get(ip, "refused")  # .0/.255 in the span: nothing listens
        assert record["status"] == expected_status.get(behaviour, "ok"), (ip, behaviour, record["error"])
        assert record["port"] == population.port and record["input"] == span(population)

    # The CLI's check on one host of each behaviour; the same ``check`` through the API (with more
    # targets at once than the CLI's 8) on every host.
    one_each = sorted({b: ip for ip, b in population.members.items()}.values())
    capsys.readouterr()
    assert main(["check", *[f"{ip}:{port}" for ip in one_each], *COMMON, *NO_DNSBL, "--json"]) == 1
    checked = {t["target"]["address"]: verdict_of(t) for t in json.loads(capsys.readouterr().out)["targets"]}
    report = asyncio.run(check([f"{ip}:{port}" for ip in sorted(by_ip)], CHECK_OPTIONS))
    via_api = {t.target.address: verdict_of(target_report_dict(t)) for t in report.targets}
    assert set(via_api) == set(by_ip) and set(checked) == set(one_each)
    assert {ip: via_api[ip] for ip in one_each} == checked
    mismatches = [
        (ip, population.members.get(ip), scanned, via_api[ip])
        for ip, record in by_ip.items()
        if (scanned := (record["verdict"], record["confidence"], [e["probe_id"] for e in record["evidence"]]))
        != via_api[ip]
    ]
    assert mismatches == []
    verdicts = Counter(r["verdict"] for r in records)
    assert verdicts["open"] > 100 and verdicts["closed"] > 100 and verdicts["inconclusive"] > 10

    meta = json.loads((tmp_path / "scan.jsonl.meta.json").read_text())
    assert meta["complete"] is True and meta["counts"]["records"] == len(records)
    assert meta["counts"]["by_verdict"] == dict(sorted(verdicts.items()))
    assert meta["parameters"]["helo_sent"] == "scan.relaycheck.test"

    assert main(["report", str(out), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["by_verdict"]["open"] == verdicts["open"]


def test_status_of_hosts_that_cannot_be_tested(tmp_path: pathlib.Path) -> None:
    members = {"127.4.200.1": "silent", "127.4.200.2": "not-smtp", "127.4.200.3": "refused", "127.4.200.4": "closed"}
    out = tmp_path / "status.jsonl"
    with Population(members) as population:
        main(["scan", *members, "-p", str(population.port), "-o", str(out), "--include-reserved", *COMMON, *FAST,
              "--timeout", "0.5"])
    got = {r["ip"]: (r["status"], r["verdict"]) for r in read(out)}
    assert got == {"127.4.200.1": ("timeout", "inconclusive"), "127.4.200.2": ("not-smtp", "inconclusive"),
                   "127.4.200.3": ("refused", "inconclusive"), "127.4.200.4": ("ok", "closed")}


def test_names_mx_csv_and_excludes_found_through_dns(population: Population, tmp_path: pathlib.Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    members = list(population.members)
    a, b, c, d = [ip for ip in members if population.members[ip] in ("open", "closed")][:4]
    records = {
        ("example.test", "MX"): ["10 mx1.example.test.", "20 mx2.example.test."],
        ("mx1.example.test", "A"): [a],
        ("mx2.example.test", "A"): [b],
        ("internal.test", "MX"): ["10 mx.internal.test."],
        ("mx.internal.test", "A"): [c],
        ("host.example.test", "A"): [d],
        ("nullmx.test", "MX"): ["0 ."],
    }
    port = population.port
    targets = tmp_path / "targets.txt"
    targets.write_text(
        "# domains: every MX; a host name; CSV pinned ip+domain with a tag\n"
        "example.test\ninternal.test\nnxdomain.test nullmx.test\n"
        f"host.example.test:{port}\n"
        f"{a},pinned.test,tagged,{port}\n"
        "not/a/target\n"
    )
    out = tmp_path / "names.jsonl"
    with DnsServerThread(records) as dns:
        code = main(["scan", "-iL", str(targets), "-p", str(port), "-o", str(out), "--include-reserved",
                     "--exclude", c, "--resolver", dns.address, *COMMON, *FAST])
        capsys.readouterr()
        assert main(["check", "example.test", "--port", str(port), "--resolver", dns.address,
                     *COMMON, "--json"]) in (0, 1, 3)
        checked = {t["target"]["address"]: t["verdict"]["verdict"]
                   for t in json.loads(capsys.readouterr().out)["targets"]}
    assert code in (0, 1)
    got = {r["key"]: r for r in read(out)}
    mx1, mx2 = got[f"{a}|{port}|example.test"], got[f"{b}|{port}|example.test"]
    assert (mx1["host"], mx1["domain"], mx2["host"]) == ("mx1.example.test", "example.test", "mx2.example.test")
    assert {a: mx1["verdict"], b: mx2["verdict"]} == checked  # same verdicts as check of the domain
    excluded = got[f"{c}|{port}|internal.test"]
    assert (excluded["status"], excluded["host"], excluded["verdict"]) == ("excluded", "mx.internal.test", None)
    assert got[f"|{port}|nxdomain.test"]["status"] == "error"
    assert "NXDOMAIN" in got[f"|{port}|nxdomain.test"]["error"]
    assert "null MX" in got[f"|{port}|nullmx.test"]["error"]
    host = got[f"{d}|{port}|host.example.test"]
    assert host["host"] == "host.example.test" and host["domain"] is None and host["status"] == "ok"
    pinned = got[f"{a}|{port}|pinned.test"]
    assert (pinned["domain"], pinned["tag"], pinned["result"]["target"]["domain"]) == ("pinned.test", "tagged",
                                                                                        "pinned.test")
    assert got["!not/a/target"]["status"] == "error" and "invalid input" in got["!not/a/target"]["error"]
    assert len(got) == 8


def test_default_excludes_touch_nothing(population: Population, tmp_path: pathlib.Path) -> None:
    before = population.stats.accepted
    out = tmp_path / "x.jsonl"
    assert main(["scan", span(population), "127.0.0.1", "-p", str(population.port), "-o", str(out),
                 *COMMON, *FAST]) == 0
    records = sorted(read(out), key=lambda r: len(r["ip"]))
    assert [(r["ip"], r["status"], r["verdict"], r["error"]) for r in records] == [
        ("127.0.0.1", "excluded", None, "excluded: Loopback (RFC 1122)"),
        (span(population), "excluded", None, "excluded: Loopback (RFC 1122)"),  # the whole range: one record
    ]
    assert population.stats.accepted == before  # not one connection


def test_shards_split_without_overlap(population: Population, tmp_path: pathlib.Path) -> None:
    members = sorted(population.members, key=lambda x: int(ipaddress.ip_address(x)))[:60]
    block = f"{members[0]}-{members[-1]}"
    keys: list[str] = []
    for shard in range(3):
        out = tmp_path / f"shard{shard}.jsonl"
        main(["scan", block, "-p", str(population.port), "-o", str(out), "--include-reserved", "--seed", "7",
              "--shards", "3", "--shard", str(shard), *COMMON, *FAST])
        part = [r["key"] for r in read(out)]
        assert 5 < len(part) < 40
        keys += part
    first, last = (int(ipaddress.ip_address(x)) for x in (members[0], members[-1]))
    assert sorted(keys) == sorted(f"{ipaddress.ip_address(v)}|{population.port}|" for v in range(first, last + 1))


def test_targets_from_stdin(population: Population, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = list(population.members)[:5]
    stdin = io.TextIOWrapper(io.BytesIO("".join(f"{ip}\n" for ip in chosen).encode()))
    monkeypatch.setattr(sys, "stdin", stdin)
    out = tmp_path / "stdin.jsonl"
    main(["scan", "-iL", "-", "-p", str(population.port), "-o", str(out), "--include-reserved", *COMMON, *FAST])
    assert sorted(r["ip"] for r in read(out)) == sorted(chosen)


def test_usage_errors(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan"]) == 2
    assert main(["scan", "192.0.2.0/24", "--shards", "2", "--shard", "2"]) == 2
    assert main(["scan", "not a target!"]) == 2
    out = tmp_path / "o.jsonl"
    out.write_text('{"key": "x"}\n')
    assert main(["scan", "192.0.2.1", "-o", str(out)]) == 2  # would clobber results without --resume
    assert "--resume" in capsys.readouterr().err
    assert main(["scan", "192.0.2.1", "--dask", "nonsense"]) == 2
    missing = tmp_path / "missing.jsonl"
    assert main(["scan", "-iL", str(tmp_path / "no-such-list.txt"), "-o", str(missing)]) == 2
    assert not missing.exists()
