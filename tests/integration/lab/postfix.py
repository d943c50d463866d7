"""Postfix instances: main.cf and master.cf of the lab's own, and postgrey for greylisting."""

from __future__ import annotations

import shutil
from pathlib import Path

from .paths import POSTFIX, POSTFIX_MASTER, POSTGREY
from .processes import ManagedProcess, Readiness, make_self_signed_cert, run_in, spawn
from .specs import DEBIAN_RELAY_RESTRICTIONS, Server
from .topology import GREYLIST_DELAY_S, POSTGREY_PORT, SINK_IP, SMTP_PORT

# chroot off everywhere (the per-instance queue has no chroot jail set up); "local" delivers to
# discard so nothing is ever written to a host mailbox; postlog feeds maillog_file.
POSTFIX_MASTER_CF = """\
smtp      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postfix_main_cf(server: Server, lab_root: Path) -> dict[str, str]:
    work = server.workdir
    params = {
        "compatibility_level": "3.6",
        "queue_directory": str(work / "spool"),
        "data_directory": str(work / "data"),
        "maillog_file": str(server.log_path),
        "maillog_file_prefixes": str(lab_root),
        "inet_interfaces": server.ip,
        "inet_protocols": "ipv4",
        "myhostname": server.hostname,
        "mydomain": server.domain,
        "myorigin": "$mydomain",
        "mydestination": "$myhostname, $mydomain, localhost",
        "mynetworks": "127.0.0.0/8",
        "smtpd_relay_restrictions": DEBIAN_RELAY_RESTRICTIONS,
        "smtpd_banner": "$myhostname ESMTP $mail_name (Debian/GNU)",
        # Local users: the accounts in passwd plus the RFC 5321 role addresses; every other
        # local part gets "550 5.1.1 User unknown in local recipient table".
        "alias_maps": "",
        "alias_database": "",
        "local_recipient_maps": ("proxy:unix:passwd.byname texthash:$config_directory/local_recipients"),
        # The sink is the only next hop: an open relay can deliver nowhere else.
        "relayhost": f"[{SINK_IP}]:{SMTP_PORT}",
        "smtp_tls_security_level": "none",
        "biff": "no",
        "append_dot_mydomain": "no",
        "readme_directory": "no",
    }
    if server.spec.offers_tls:
        params["smtpd_tls_cert_file"] = str(work / "tls/cert.pem")
        params["smtpd_tls_key_file"] = str(work / "tls/key.pem")
    params.update(server.spec.postfix)
    return params


def prepare_postfix(server: Server, lab_root: Path) -> None:
    work = server.workdir
    for sub in ("etc", "spool", "data", "tls"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    shutil.chown(work / "data", "postfix")
    main_cf = "".join(f"{k} = {v}\n" for k, v in postfix_main_cf(server, lab_root).items())
    (work / "etc/main.cf").write_text(main_cf)
    (work / "etc/master.cf").write_text(POSTFIX_MASTER_CF + server.spec.postfix_services)
    (work / "etc/local_recipients").write_text("postmaster root\nabuse root\n")
    for name, content in server.spec.postfix_files.items():
        (work / "etc" / name).write_text(content)
    if server.spec.offers_tls:
        make_self_signed_cert(server.hostname, work / "tls")
    # `postfix check` creates the queue directories with the right owners and validates the
    # configuration; inside the namespace, so inet_interfaces resolves to a local address.
    run_in(server.namespace, [POSTFIX, "-c", str(work / "etc"), "check"])


def start_postfix(server: Server) -> ManagedProcess:
    # master -d stays in the foreground (postfix start-fg only does that as PID 1).
    argv = [str(POSTFIX_MASTER), "-d", "-c", str(server.workdir / "etc")]
    # master logs "daemon started" after master_config(), which has bound and listen()ed every
    # inet service of master.cf; smtpd itself is started per connection, so the lab's one
    # connection after this line sees it greet.
    ready = Readiness.starting_now(server.log_path, r"postfix/master\[\d+\]: daemon started")
    return spawn(f"postfix:{server.name}", server.namespace, argv, server.workdir / "master.out", ready)


def start_postgrey(server: Server) -> ManagedProcess:
    dbdir = server.workdir / "postgrey"
    shutil.rmtree(dbdir, ignore_errors=True)
    dbdir.mkdir(parents=True)
    shutil.chown(dbdir, "postgrey")
    argv = [
        POSTGREY,
        f"--inet=127.0.0.1:{POSTGREY_PORT}",
        f"--delay={GREYLIST_DELAY_S}",
        f"--dbdir={dbdir}",
        # Never whitelist the client after a few passes: every run must meet the greylist.
        "--auto-whitelist-clients=0",
    ]
    # Net::Server logs "Binding to TCP port ..." before bind(), and "Setting uid to ..." after
    # bind() and listen() (post_bind gives up root, which the lab runs it as).
    ready = Readiness.starting_now(server.postgrey_log, r"^Setting uid to ")
    return spawn(f"postgrey:{server.name}", server.namespace, argv, server.postgrey_log, ready)
