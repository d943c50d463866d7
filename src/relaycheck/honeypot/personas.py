"""The MTAs the honeypot can pretend to be, as data: what each one says, word for word.

The wordings are the stock ones of each MTA (Postfix smtpd, Exim's default configuration,
Sendmail's srvrsmtp.c, Exchange's receive connector), so that a spammer's tool, a honeypot
detector and relaycheck's own fingerprinting all take the honeypot for the real thing. Slots:
``{hostname}`` (the honeypot's name), ``{client}`` (the client's EHLO name), ``{ip}`` (its
address), ``{date}`` (RFC 5322 date), ``{queue_id}`` (a fresh queue id), ``{address}``
(the argument of RCPT/VRFY), ``{size}`` (the message size limit).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Persona:
    name: str
    banner: str  # the 220 greeting, without the code
    ehlo_greeting: str  # first line of the EHLO reply
    ehlo_keywords: tuple[str, ...]  # in the MTA's own order; STARTTLS/AUTH kept only where offered
    helo: str
    mail_ok: str
    rcpt_ok: str
    data_start: str
    queued: str
    rset: str
    noop: str
    quit: str
    vrfy: str
    expn: str
    help: str
    auth_failed: str
    auth_ok: str
    too_many_recipients: str
    too_big: str
    no_space: str  # DATA refused while the in-memory budget is spent
    need_mail: str
    need_rcpt: str
    nested_mail: str
    bad_command: str
    line_too_long: str
    timeout: str
    too_many_connections: str
    starttls: str
    need_helo: str
    queue_id_length: int = 10


POSTFIX = Persona(
    name="postfix",
    banner="{hostname} ESMTP Postfix (Debian/GNU)",
    ehlo_greeting="{hostname}",
    ehlo_keywords=(  # no VRFY: disable_vrfy_command = yes, as the VRFY reply says
        "PIPELINING",
        "SIZE {size}",
        "ETRN",
        "STARTTLS",
        "AUTH PLAIN LOGIN",
        "AUTH=PLAIN LOGIN",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "DSN",
        "SMTPUTF8",
    ),
    helo="250 {hostname}",
    mail_ok="250 2.1.0 Ok",
    rcpt_ok="250 2.1.5 Ok",
    data_start="354 End data with <CR><LF>.<CR><LF>",
    queued="250 2.0.0 Ok: queued as {queue_id}",
    rset="250 2.0.0 Ok",
    noop="250 2.0.0 Ok",
    quit="221 2.0.0 Bye",
    vrfy="502 5.5.1 VRFY command is disabled",
    expn="502 5.5.2 Error: command not recognized",
    help="502 5.5.2 Error: command not recognized",
    auth_failed="535 5.7.8 Error: authentication failed: authentication failure",
    auth_ok="235 2.7.0 Authentication successful",
    too_many_recipients="452 4.5.3 Error: too many recipients",
    too_big="552 5.3.4 Error: message file too big",
    no_space="452 4.3.1 Insufficient system storage",
    need_mail="503 5.5.1 Error: need MAIL command",
    need_rcpt="503 5.5.1 Error: need RCPT command",
    nested_mail="503 5.5.1 Error: nested MAIL command",
    bad_command="502 5.5.2 Error: command not recognized",
    line_too_long="500 5.5.2 Error: line too long",
    timeout="421 4.4.2 {hostname} Error: timeout exceeded",
    too_many_connections="421 4.7.0 {hostname} Error: too many connections from {ip}",
    starttls="220 2.0.0 Ready to start TLS",
    need_helo="503 5.5.1 Error: send HELO/EHLO first",
    queue_id_length=10,
)

EXIM = Persona(
    name="exim",
    banner="{hostname} ESMTP Exim 4.96 {date}",
    ehlo_greeting="{hostname} Hello {client} [{ip}]",
    ehlo_keywords=(
        "SIZE {size}",
        "8BITMIME",
        "PIPELINING",
        "PIPECONNECT",
        "AUTH PLAIN LOGIN",
        "STARTTLS",
        "PRDR",
        "HELP",
    ),
    helo="250 {hostname} Hello {client} [{ip}]",
    mail_ok="250 OK",
    rcpt_ok="250 Accepted",
    data_start='354 Enter message, ending with "." on a line by itself',
    queued="250 OK id={queue_id}",
    rset="250 Reset OK",
    noop="250 OK",
    quit="221 {hostname} closing connection",
    vrfy="252 Administrative prohibition",
    expn="550 Administrative prohibition",
    help="214-Commands supported:\r\n214 AUTH STARTTLS HELO EHLO MAIL RCPT DATA BDAT NOOP QUIT RSET HELP",
    auth_failed="535 Incorrect authentication data",
    auth_ok="235 Authentication succeeded",
    too_many_recipients="452 too many recipients",
    too_big="552 Message size exceeds maximum permitted",
    no_space="452 space shortage, please try later",
    need_mail="503 sender not yet given",
    need_rcpt="503 valid RCPT command must precede DATA",
    nested_mail="503 sender already given",
    bad_command="500 unrecognized command",
    line_too_long="500 line too long",
    timeout="421 {hostname} SMTP command timeout - closing connection",
    too_many_connections=(
        "421 {hostname} Too many concurrent SMTP connections from this IP address; please try again later"
    ),
    starttls="220 TLS go ahead",
    need_helo="503 HELO or EHLO required",
    queue_id_length=16,
)

SENDMAIL = Persona(
    name="sendmail",
    banner="{hostname} ESMTP Sendmail 8.17.1.9/8.17.1.9/Debian-2; {date}",
    ehlo_greeting="{hostname} Hello {client} [{ip}], pleased to meet you",
    ehlo_keywords=(
        "ENHANCEDSTATUSCODES",
        "PIPELINING",
        "8BITMIME",
        "SIZE {size}",
        "DSN",
        "ETRN",
        "AUTH LOGIN PLAIN",
        "STARTTLS",
        "DELIVERBY",
        "HELP",
    ),
    helo="250 {hostname} Hello {client} [{ip}], pleased to meet you",
    mail_ok="250 2.1.0 {address}... Sender ok",
    rcpt_ok="250 2.1.5 {address}... Recipient ok",
    data_start='354 Enter mail, end with "." on a line by itself',
    queued="250 2.0.0 {queue_id} Message accepted for delivery",
    rset="250 2.0.0 Reset state",
    noop="250 2.0.0 OK",
    quit="221 2.0.0 {hostname} closing connection",
    vrfy="252 2.5.2 Cannot VRFY user; try RCPT to attempt delivery (or try finger)",
    expn="502 5.7.0 Sorry, we do not allow this operation",
    help="214-2.0.0 This is sendmail\r\n214 2.0.0 End of HELP info",
    auth_failed="535 5.7.0 authentication failed",
    auth_ok="235 2.0.0 OK Authenticated",
    too_many_recipients="452 4.5.3 Too many recipients",
    too_big="552 5.2.3 Message size exceeds fixed maximum message size ({size})",
    no_space="452 4.4.5 Insufficient disk space; try again later",
    need_mail="503 5.0.0 Need MAIL before RCPT",
    need_rcpt="503 5.0.0 Need RCPT (recipient)",
    nested_mail="503 5.5.0 Sender already specified",
    bad_command="500 5.5.1 Command unrecognized",
    line_too_long="500 5.5.0 Command line too long",
    timeout="421 4.4.1 {hostname} Lost input channel from {client} [{ip}] to MTA after rcpt",
    too_many_connections="421 4.3.2 Too many open connections.",
    starttls="220 2.0.0 Ready to start TLS",
    need_helo="503 5.0.0 Polite people say HELO first",
    queue_id_length=14,
)

EXCHANGE = Persona(
    name="exchange",
    banner="{hostname} Microsoft ESMTP MAIL Service ready at {date}",
    ehlo_greeting="{hostname} Hello [{ip}]",
    ehlo_keywords=(
        "SIZE {size}",
        "PIPELINING",
        "DSN",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
        "X-ANONYMOUSTLS",
        "AUTH LOGIN",
        "X-EXPS GSSAPI NTLM",
        "8BITMIME",
        "XRDST",
    ),
    helo="250 {hostname} Hello [{ip}]",
    mail_ok="250 2.1.0 Sender OK",
    rcpt_ok="250 2.1.5 Recipient OK",
    data_start="354 Start mail input; end with <CRLF>.<CRLF>",
    queued="250 2.6.0 <{queue_id}@{hostname}> [InternalId=1] Queued mail for delivery",
    rset="250 2.0.0 Resetting",
    noop="250 2.0.0 OK",
    quit="221 2.0.0 Service closing transmission channel",
    vrfy="252 2.1.5 Cannot VRFY user, but will take message for {address}",
    expn="502 5.3.3 Command not implemented",
    help=(
        "214-This server supports the following commands:\r\n214 HELO EHLO STARTTLS RCPT DATA RSET MAIL QUIT HELP AUTH"
    ),
    auth_failed="535 5.7.3 Authentication unsuccessful",
    auth_ok="235 2.7.0 Authentication successful",
    too_many_recipients="452 4.5.3 Too many recipients",
    too_big="552 5.3.4 Message size exceeds fixed maximum message size",
    no_space="452 4.3.1 Insufficient system resources",
    need_mail="503 5.5.2 Need mail command",
    need_rcpt="503 5.5.2 Need rcpt command",
    nested_mail="503 5.5.2 Sender already specified",
    bad_command="500 5.3.3 Unrecognized command",
    line_too_long="500 5.5.6 Line too long",
    timeout="451 4.7.0 Timeout waiting for client input",
    too_many_connections=(
        "421 4.3.2 The maximum number of concurrent connections has exceeded a limit, closing transmission channel"
    ),
    starttls="220 2.0.0 SMTP server ready",
    need_helo="503 5.5.2 Send hello first",
    queue_id_length=36,
)

PERSONAS: dict[str, Persona] = {p.name: p for p in (POSTFIX, EXIM, SENDMAIL, EXCHANGE)}
