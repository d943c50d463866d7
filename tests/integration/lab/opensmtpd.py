"""OpenSMTPD instances, run from the unpacked Debian package in a private mount namespace."""

from __future__ import annotations

from .paths import OPENSMTPD_BIN, UNSHARE
from .processes import ManagedProcess, Readiness, run_in, spawn
from .specs import Server
from .topology import SINK_IP, SMTP_PORT

# Debian's stock smtpd.conf rules (local delivery for the server's own domain, relaying only for
# local clients), listening on the lab address; relayed mail would go to the lab sink. The local
# action is never reached: the lab only ever probes OpenSMTPD up to RCPT.
OPENSMTPD_CONF = """\
table aliases file:{work}/aliases
listen on {ip} port {port} hostname {hostname}
action "local" maildir "{work}/maildir/%{{user.username}}" alias <aliases> user nobody
action "relay" relay host smtp://{sink_ip}:{sink_port}
match from any for domain "{domain}" action "local"
match from local for any action "relay"
"""

# The places Debian's smtpd writes to are compiled in (/var/spool/smtpd, its chroot
# /var/lib/opensmtpd/empty, /run/smtpd.sock): a private mount namespace puts lab directories
# there, so nothing is written on the host.
OPENSMTPD_PRIVATE_DIRS = ("/var/spool", "/var/lib", "/run")


def prepare_opensmtpd(server: Server) -> None:
    work = server.workdir
    for private in OPENSMTPD_PRIVATE_DIRS:
        (work / "root" / private.lstrip("/")).mkdir(parents=True, exist_ok=True)
    chroot = work / "root/var/lib/opensmtpd/empty"
    chroot.mkdir(parents=True, exist_ok=True)
    (work / "aliases").write_text("postmaster: root\nabuse: root\n")
    conf = OPENSMTPD_CONF.format(
        work=work,
        ip=server.ip,
        port=server.port,
        hostname=server.hostname,
        domain=server.domain,
        sink_ip=SINK_IP,
        sink_port=SMTP_PORT,
    )
    (work / "smtpd.conf").write_text(conf)
    run_in(server.namespace, [str(OPENSMTPD_BIN), "-n", "-f", str(work / "smtpd.conf")])


def start_opensmtpd(server: Server) -> ManagedProcess:
    root = server.workdir / "root"
    binds = " && ".join(f'mount --bind "$1{d}" {d}' for d in OPENSMTPD_PRIVATE_DIRS)
    argv = [
        UNSHARE,
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'{binds} && exec "$2" -d -v -f "$3"',
        "sh",
        str(root),
        str(OPENSMTPD_BIN),
        str(server.workdir / "smtpd.conf"),
    ]
    # Nothing at the default log level follows listen(): the pony process logs "smtp: listen on"
    # just before listen() and "will accept at most N clients" just after, both at debug level,
    # hence -v above (and its pid file is written earlier still, by the parent).
    ready = Readiness.starting_now(server.log_path, r"^debug: smtp: will accept at most \d+ clients")
    return spawn(f"opensmtpd:{server.name}", server.namespace, argv, server.log_path, ready)
