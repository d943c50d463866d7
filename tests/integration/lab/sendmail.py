"""Sendmail instances, run from the unpacked Debian package with a sendmail.cf built by the lab.

The .mc file is Sendmail's stock ``generic-linux.mc`` (OSTYPE linux, DOMAIN generic, the local
and smtp mailers) with the lab's places and names, plus the server's own FEATUREs
(``ServerSpec.sendmail_mc``); sendmail-cf's m4 macros turn it into sendmail.cf, as
``sendmailconfig`` would. Differences from stock, none about relaying:

- every path (queue, aliases, local-host-names, pid file, hosts file, service switch) lies in the server's work
  directory, and ``DontBlameSendmail=TrustStickyBit`` lets Sendmail accept that directory under
  the sticky, world-writable /tmp;
- the load-average thresholds are raised so that a busy test machine never makes Sendmail queue
  instead of deliver, or refuse connections;
- relayed mail goes to the lab sink (SMART_HOST); local aliases go to /dev/null;
- without ``ServerSpec.sendmail_dns``, host names are looked up in the server's hosts file only
  (its own names), the way a split-horizon or broken resolver leaves a real server: Sendmail's
  stock check_mail then refuses every sender whose domain it cannot resolve with
  ``553 5.1.8 ... Domain of sender address ... does not exist``.

Sendmail logs to syslog only, and the lab has none; its readiness event is its listen() system
call, which ``strace -e trace=listen`` writes to a file (it writes its pid file just before, on
a socket that is bound but not yet listening). Its host name comes from a private UTS namespace:
an unqualified name makes Sendmail sleep 60 s at start-up while it tries to qualify it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from .paths import M4, SENDMAIL_BIN, SENDMAIL_CF_DIR, STRACE, UNSHARE
from .processes import ManagedProcess, Readiness, run_in, spawn
from .specs import Server
from .topology import SINK_IP

SENDMAIL_MC = """\
divert(0)dnl
OSTYPE(`linux')dnl
DOMAIN(`generic')dnl
FEATURE(`no_default_msa')dnl
define(`confDOMAIN_NAME', `{hostname}')dnl
define(`confDONT_BLAME_SENDMAIL', `TrustStickyBit')dnl
define(`QUEUE_DIR', `{work}/mqueue')dnl
define(`ALIAS_FILE', `{work}/aliases')dnl
define(`confPID_FILE', `{work}/sendmail.pid')dnl
define(`confHOSTS_FILE', `{work}/hosts')dnl
define(`confSERVICE_SWITCH_FILE', `{work}/service.switch')dnl
define(`confCW_FILE', `{work}/local-host-names')dnl
define(`confQUEUE_LA', `100')dnl
define(`confREFUSE_LA', `100')dnl
define(`confDELAY_LA', `0')dnl
define(`SMART_HOST', `[{sink_ip}]')dnl
DAEMON_OPTIONS(`Family=inet, Name=MTA, Port={port}, Addr={ip}')dnl
LOCAL_DOMAIN(`{domain}')dnl
{features}MAILER(`local')dnl
MAILER(`smtp')dnl
"""

SENDMAIL_ALIASES = """\
postmaster: /dev/null
abuse: /dev/null
root: /dev/null
MAILER-DAEMON: postmaster
"""


def sendmail_mc(server: Server) -> str:
    """The server's sendmail.mc: what an admin would keep (and hand to ``relaycheck audit``)."""
    features = "".join(f"{line}dnl\n" for line in server.spec.sendmail_mc)
    return SENDMAIL_MC.format(
        hostname=server.hostname,
        work=server.workdir,
        sink_ip=SINK_IP,
        port=server.port,
        ip=server.ip,
        domain=server.domain,
        features=features,
    )


def _with_hostname(server: Server, argv: Sequence[str]) -> list[str]:
    """``argv`` in a private UTS namespace whose host name is the server's (fully qualified)."""
    return [UNSHARE, "--uts", "sh", "-c", 'hostname "$1" && shift && exec "$@"', "sh", server.hostname, *argv]


def prepare_sendmail(server: Server) -> None:
    work = server.workdir
    queue = work / "mqueue"
    queue.mkdir(parents=True, exist_ok=True)
    queue.chmod(0o700)  # Sendmail refuses a queue others can read
    (work / "sendmail.mc").write_text(sendmail_mc(server))
    (work / "aliases").write_text(SENDMAIL_ALIASES)
    (work / "local-host-names").write_text("")  # the stock use_cw_file; LOCAL_DOMAIN names the domain
    (work / "hosts").write_text(f"127.0.0.1 localhost\n{server.ip} {server.hostname} {server.domain}\n")
    lookups = "dns files" if server.spec.sendmail_dns else "files"
    (work / "service.switch").write_text(f"hosts {lookups}\naliases files\n")
    cf = run_in(
        server.namespace,
        [M4, f"-D_CF_DIR_={SENDMAIL_CF_DIR}/", f"{SENDMAIL_CF_DIR}/m4/cf.m4", str(work / "sendmail.mc")],
    )
    (work / "sendmail.cf").write_text(cf)
    # -bi (newaliases) reads the whole configuration: a bad one fails here, with Sendmail's words.
    run_in(server.namespace, _with_hostname(server, [str(SENDMAIL_BIN), "-C", str(work / "sendmail.cf"), "-bi"]))
    shutil.chown(work / "aliases.db", "root", "root")


def start_sendmail(server: Server) -> ManagedProcess:
    work = server.workdir
    trace = work / "listen.trace"
    # -bD: the daemon in the foreground. strace reports the one system call the lab waits for.
    daemon = [str(SENDMAIL_BIN), "-bD", "-C", str(work / "sendmail.cf")]
    argv = _with_hostname(server, [STRACE, "-qq", "-e", "trace=listen", "-e", "signal=none", "-o", str(trace), *daemon])
    ready = Readiness.starting_now(trace, r"^listen\(\d+, \d+\)\s+= 0$")
    return spawn(f"sendmail:{server.name}", server.namespace, argv, server.log_path, ready)
