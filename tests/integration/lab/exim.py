"""Exim instances, run from the unpacked Debian package with a configuration of the lab's own."""

from __future__ import annotations

import shutil

from .paths import EXIM_BIN
from .processes import ManagedProcess, Readiness, run_in, spawn
from .specs import Server
from .topology import SINK_IP, SMTP_PORT

# Exim's shipped default acl_check_rcpt (as in Debian's and upstream's "configure").
EXIM_STOCK_ACLS = """\
acl_check_rcpt:
  accept  hosts = :
  deny    domains       = +local_domains
          local_parts   = ^[.] : ^.*[@%!/|]
          message       = Restricted characters in address
  deny    domains       = !+local_domains
          local_parts   = ^[./|] : ^.*[@%!] : ^.*/\\\\.\\\\./
          message       = Restricted characters in address
  accept  local_parts   = postmaster
          domains       = +local_domains
  require verify        = sender
  accept  hosts         = +relay_from_hosts
          control       = submission
  accept  authenticated = *
          control       = submission
  require message       = relay not permitted
          domains       = +local_domains : +relay_to_domains
  require verify        = recipient
  accept
"""

# The relay decision made after RCPT: the stock RCPT ACL without its relay check (so a
# routable outside recipient is accepted), and that check in the predata ACL (run at DATA,
# before the 354), which refuses a message for a recipient outside the local domains unless the
# client may relay. Closed, though a test that stops at RCPT sees "250 Accepted".
_RELAY_CHECK = """\
  require message       = relay not permitted
          domains       = +local_domains : +relay_to_domains
"""
assert _RELAY_CHECK in EXIM_STOCK_ACLS
EXIM_PREDATA_ACLS = (
    EXIM_STOCK_ACLS.replace(_RELAY_CHECK, "")
    + """
acl_check_predata:
  accept  hosts = :
  accept  hosts         = +relay_from_hosts
  accept  authenticated = *
  deny    message       = relay not permitted
          condition     = ${if forany{<, $recipients}\\
                              {!match_domain{${domain:$item}}{+local_domains : +relay_to_domains}}}
  accept
"""
)
# Where each ServerSpec.exim_relay_decision puts it: (the ACL section, the main options naming them).
EXIM_ACLS: dict[str, tuple[str, str]] = {
    "rcpt": (EXIM_STOCK_ACLS, ""),
    "predata": (EXIM_PREDATA_ACLS, "acl_smtp_predata = acl_check_predata\n"),
}

# The server's ACLs (EXIM_ACLS), routers that send every
# non-local domain to the lab sink, and local domains to :blackhole:.
EXIM_CONF = """\
primary_hostname = {hostname}
# The unpacked binary is not at the compiled-in /usr/sbin/exim4: re-execs for delivery need it.
exim_path = {exim_path}
domainlist local_domains = @ : {domain}
domainlist relay_to_domains =
hostlist relay_from_hosts = {relay_from_hosts}
local_interfaces = {ip}
daemon_smtp_ports = {port}
spool_directory = {work}/spool
log_file_path = {work}/log/%slog
pid_file_path = {work}/exim.pid
keep_environment =
host_lookup = *
rfc1413_hosts =
rfc1413_query_timeout = 0s
tls_advertise_hosts =
never_users = root
smtp_banner = $smtp_active_hostname ESMTP Exim $version_number $tod_full
acl_smtp_rcpt = acl_check_rcpt
{acl_options}{extra_options}
begin acl

{acls}
begin routers

to_sink:
  driver = manualroute
  domains = ! +local_domains
  transport = remote_smtp
  route_list = * {sink_ip}
  no_more

local_aliases:
  driver = redirect
  domains = +local_domains
  local_parts = postmaster : abuse : root
  data = :blackhole:

begin transports

remote_smtp:
  driver = smtp
  port = {sink_port}

begin retry

*   *   F,2h,15m

begin rewrite
"""


def exim_conf(server: Server) -> str:
    """The server's exim.conf: what an admin would keep (and hand to ``relaycheck audit``)."""
    acls, acl_options = EXIM_ACLS[server.spec.exim_relay_decision]
    return EXIM_CONF.format(
        hostname=server.hostname,
        exim_path=EXIM_BIN,
        domain=server.domain,
        relay_from_hosts=server.spec.exim_relay_from_hosts,
        ip=server.ip,
        port=server.port,
        work=server.workdir,
        sink_ip=SINK_IP,
        sink_port=SMTP_PORT,
        acl_options=acl_options,
        acls=acls,
        extra_options="".join(f"{name} = {value}\n" for name, value in server.spec.exim_options.items()),
    )


def prepare_exim(server: Server) -> None:
    work = server.workdir
    for sub in ("spool", "log"):
        (work / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(work / sub, "Debian-exim", "Debian-exim")
    config = work / "exim.conf"
    config.write_text(exim_conf(server))
    config.chmod(0o644)  # re-executed Exim processes run as Debian-exim and re-read it
    # -bV parses the whole configuration: fail here with Exim's message, not at first connect.
    run_in(server.namespace, [str(EXIM_BIN), "-C", str(config), "-bV"])


def start_exim(server: Server) -> ManagedProcess:
    # -bdf: daemon in the foreground; root may use -C with any file.
    argv = [str(EXIM_BIN), "-C", str(server.workdir / "exim.conf"), "-bdf"]
    # daemon_go() binds and listen()s on every address first, then writes its pid file and
    # logs "daemon started ... listening for SMTP on [ip]:port" to the mainlog.
    ready = Readiness.starting_now(server.log_path, r"daemon started: pid=\d+, .*listening for SMTP on ")
    return spawn(f"exim:{server.name}", server.namespace, argv, server.workdir / "exim.out", ready)
