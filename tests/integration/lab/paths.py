"""Where the lab's programs are: Debian packages, and the MTAs scripts/lab-deps unpacks.

Exim, OpenSMTPD and Sendmail conflict with Postfix as Debian packages (each provides
mail-transport-agent), so their packages are unpacked with ``dpkg -x`` into the lab cache and run
from there with configuration files of the lab's own.
"""

from __future__ import annotations

import os
from pathlib import Path

LAB_CACHE = Path(os.environ.get("RELAYCHECK_LAB_CACHE", "/var/cache/relaycheck-lab"))
EXIM_BIN = LAB_CACHE / "exim/usr/sbin/exim4"
OPENSMTPD_BIN = LAB_CACHE / "opensmtpd/usr/sbin/smtpd"
SENDMAIL_ROOT = LAB_CACHE / "sendmail"
SENDMAIL_BIN = SENDMAIL_ROOT / "usr/libexec/sendmail/sendmail"
# The m4 macro tree (sendmail-cf) that turns a .mc file into sendmail.cf.
SENDMAIL_CF_DIR = SENDMAIL_ROOT / "usr/share/sendmail/cf"
DOVECOT = "/usr/sbin/dovecot"
UNSHARE = "/usr/bin/unshare"
POSTFIX_MASTER = Path("/usr/lib/postfix/sbin/master")
POSTFIX = "/usr/sbin/postfix"
POSTGREY = "/usr/sbin/postgrey"
DNSMASQ = "/usr/sbin/dnsmasq"
OPENSSL = "/usr/bin/openssl"
M4 = "/usr/bin/m4"
STRACE = "/usr/bin/strace"
