"""Dovecot: the IMAP mailbox (and LMTP next hop) of the delivery-confirmation tests."""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from .paths import DOVECOT
from .processes import ManagedProcess, Readiness, make_self_signed_cert, spawn
from .topology import DOVECOT_HOSTNAME, DOVECOT_IP, IMAP_DOMAIN, IMAP_PORT, IMAP_USERS, IMAPS_PORT, LMTP_PORT

# IMAP_USERS (passwd-file for both passdb and userdb, all mail as nobody), Maildir, TLS required
# for logins (STARTTLS on 143, implicit TLS on 993) with a self-signed certificate, and LMTP on
# port 24 for the lab's Postfix. auth_username_format %Ln: "rcuser@imap.lab.test" (LMTP) and
# "rcuser" (IMAP login) are the same mailbox.
DOVECOT_CONF = """\
instance_name = {instance}
hostname = {hostname}
base_dir = {work}/run
state_dir = {work}/state
listen = {ip}
protocols = imap lmtp
log_path = {work}/dovecot.log
ssl = required
ssl_cert = <{work}/tls/cert.pem
ssl_key = <{work}/tls/key.pem
auth_mechanisms = plain login
auth_username_format = %Ln
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {work}/users
}}
userdb {{
  driver = passwd-file
  args = {work}/users
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = {imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    port = {lmtp_port}
  }}
}}
"""
MAIL_USER = "nobody"  # owns the Maildir: no account of its own needed for one lab mailbox


@dataclass(frozen=True)
class Dovecot:
    namespace: str
    workdir: Path
    password: str
    ip: str = DOVECOT_IP
    hostname: str = DOVECOT_HOSTNAME
    users: tuple[str, ...] = IMAP_USERS
    domain: str = IMAP_DOMAIN

    def address(self, user: str) -> str:
        return f"{user}@{self.domain}"

    @property
    def cafile(self) -> Path:
        """The self-signed certificate: the one trust anchor an IMAP client needs."""
        return self.workdir / "tls/cert.pem"

    @property
    def config(self) -> Path:
        return self.workdir / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "dovecot.log"  # log_path in DOVECOT_CONF

    def home(self, user: str) -> Path:
        return self.workdir / "home" / user


def prepare_dovecot(dovecot: Dovecot) -> None:
    work = dovecot.workdir
    for sub in ("run", "state", "tls", "home"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    mail_user = pwd.getpwnam(MAIL_USER)
    entries = []
    for user in dovecot.users:
        home = dovecot.home(user)
        home.mkdir(exist_ok=True)
        os.chown(home, mail_user.pw_uid, mail_user.pw_gid)
        entries.append(f"{user}:{{PLAIN}}{dovecot.password}:{mail_user.pw_uid}:{mail_user.pw_gid}::{home}::\n")
    users = work / "users"
    users.write_text("".join(entries))
    users.chmod(0o640)
    shutil.chown(users, "root", "dovecot")  # read by the auth process, which runs as dovecot
    make_self_signed_cert(dovecot.hostname, work / "tls", ip=dovecot.ip)
    dovecot.config.write_text(
        DOVECOT_CONF.format(
            instance=dovecot.namespace,
            hostname=dovecot.hostname,
            work=work,
            ip=dovecot.ip,
            imap_port=IMAP_PORT,
            imaps_port=IMAPS_PORT,
            lmtp_port=LMTP_PORT,
        )
    )


def start_dovecot(dovecot: Dovecot) -> ManagedProcess:
    argv = [DOVECOT, "-c", str(dovecot.config), "-F"]
    # The master binds and listen()s on every service's sockets (services_listen) before
    # main_init() logs "starting up"; imap-login and lmtp are started per connection.
    ready = Readiness.starting_now(dovecot.log_path, r"master: Info: Dovecot v\S+ .*starting up")
    return spawn("dovecot", dovecot.namespace, argv, dovecot.workdir / "dovecot.out", ready)
