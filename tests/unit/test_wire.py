"""The sans-I/O SMTP codec: exact command bytes out, bounded and hostile-proof reply parsing in."""

from __future__ import annotations

import itertools
import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relaycheck.errors import MalformedReply, ProtocolError, ReplyTooLong
from relaycheck.model import Reply
from relaycheck.smtp.wire import (
    MAX_LINE,
    MAX_REPLY,
    ReplyParser,
    banner_host,
    command_line,
    encode_command,
    mail_from,
    parse_ehlo,
    parse_enhanced,
    rcpt_to,
)

# --------------------------------------------------------------------------------------------
# Commands: the exact bytes a relay tester means to send, and nothing smuggled after them
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "wire"),
    [
        ("RCPT TO:<@[1.2.3.4]:u@ext>", b"RCPT TO:<@[1.2.3.4]:u@ext>\r\n"),  # source route, verbatim
        ("RCPT TO:u@ext", b"RCPT TO:u@ext\r\n"),  # no brackets added
        ('RCPT TO:<"u@ext">', b'RCPT TO:<"u@ext">\r\n'),  # quoted local part untouched
        ('RCPT TO:<"u%ext"@[IPv6:2001:db8::1]>', b'RCPT TO:<"u%ext"@[IPv6:2001:db8::1]>\r\n'),
        ("RCPT TO:<ext!u@mx.example.com>", b"RCPT TO:<ext!u@mx.example.com>\r\n"),
        ("RCPT TO:<u@ext@>", b"RCPT TO:<u@ext@>\r\n"),
        ("MAIL FROM:<>", b"MAIL FROM:<>\r\n"),
        ("QUIT", b"QUIT\r\n"),
        ("EHLO probe.example", b"EHLO probe.example\r\n"),
    ],
)
def test_encode_command_puts_the_exact_bytes_on_the_wire(line: str, wire: bytes) -> None:
    assert encode_command(line) == wire
    assert command_line(line) == line


def test_verb_and_argument_are_concatenated_verbatim() -> None:
    assert encode_command("RCPT TO:", "<@[1.2.3.4]:u@ext>") == b"RCPT TO:<@[1.2.3.4]:u@ext>\r\n"
    assert encode_command("MAIL FROM:", "<>") == b"MAIL FROM:<>\r\n"
    assert command_line("RCPT TO:", "u@ext") == "RCPT TO:u@ext"


def test_path_helpers_keep_the_path_verbatim() -> None:
    assert rcpt_to("u@ext") == "RCPT TO:u@ext"
    assert rcpt_to("<@[192.0.2.1]:u@ext>") == "RCPT TO:<@[192.0.2.1]:u@ext>"
    assert mail_from("<>") == "MAIL FROM:<>"
    assert mail_from("<s@ext2>", "SIZE=100 BODY=8BITMIME") == "MAIL FROM:<s@ext2> SIZE=100 BODY=8BITMIME"
    assert encode_command(rcpt_to('<"u@ext"@[192.0.2.1]>')) == b'RCPT TO:<"u@ext"@[192.0.2.1]>\r\n'


def test_non_ascii_is_sent_as_utf8() -> None:
    assert encode_command("RCPT TO:<jörg@ext>") == "RCPT TO:<jörg@ext>\r\n".encode()


@pytest.mark.parametrize(
    ("verb", "argument"),
    [
        ("RCPT TO:<u@ext>\r\nDATA", None),
        ("RCPT TO:<u@ext>\nDATA", None),
        ("RCPT TO:<u@ext>\rDATA", None),
        ("RCPT TO:<u@ext>\0", None),
        ("RCPT TO:", "<u@ext>\r\nRCPT TO:<v@ext>"),
        ("RCPT TO:", "<u@ext>\n"),
        ("MAIL FROM:", "<\0>"),
        ("EHLO x\r\n", None),
    ],
)
def test_cr_lf_nul_are_refused(verb: str, argument: str | None) -> None:
    with pytest.raises(ValueError, match="forbidden"):
        encode_command(verb, argument)
    with pytest.raises(ValueError, match="forbidden"):
        command_line(verb, argument)


_SAFE_TEXT = st.text(st.characters(exclude_characters="\r\n\0", exclude_categories=("Cs",)), max_size=60)


@settings(max_examples=150)
@given(_SAFE_TEXT)
def test_any_safe_line_is_sent_verbatim_with_one_crlf(line: str) -> None:
    wire = encode_command(line)
    assert wire == line.encode("utf-8") + b"\r\n"
    assert wire.count(b"\n") == 1
    assert command_line(line) == line


@settings(max_examples=150)
@given(_SAFE_TEXT, st.sampled_from(["\r", "\n", "\0", "\r\n"]), _SAFE_TEXT)
def test_any_line_with_a_forbidden_character_is_refused(head: str, bad: str, tail: str) -> None:
    with pytest.raises(ValueError):
        encode_command(head + bad + tail)
    with pytest.raises(ValueError):
        encode_command("RCPT TO:", head + bad + tail)


# --------------------------------------------------------------------------------------------
# Replies: well-formed input
# --------------------------------------------------------------------------------------------


def test_single_line_reply() -> None:
    parser = ReplyParser()
    [reply] = parser.feed(b"220 mx.example.com ESMTP Postfix\r\n")
    assert reply == Reply(code=220, lines=("mx.example.com ESMTP Postfix",), enhanced=None)
    assert not parser.pending


def test_multi_line_reply_is_one_reply() -> None:
    parser = ReplyParser()
    data = b"250-mx.example.com Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 STARTTLS\r\n"
    assert parser.feed(data) == [
        Reply(code=250, lines=("mx.example.com Hello", "PIPELINING", "SIZE 10240000", "STARTTLS"))
    ]


def test_continuation_lines_alone_give_no_reply_yet() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-first\r\n250-second\r\n") == []
    assert parser.pending
    assert parser.feed(b"250 last\r\n") == [Reply(code=250, lines=("first", "second", "last"))]
    assert not parser.pending


def test_bare_lf_line_ends_are_accepted() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-a\n250 b\n") == [Reply(code=250, lines=("a", "b"))]
    assert parser.feed(b"221 bye\r\n") == [Reply(code=221, lines=("bye",))]


def test_mixed_line_ends_in_one_reply() -> None:
    assert ReplyParser().feed(b"250-a\r\n250-b\n250 c\r\n") == [Reply(code=250, lines=("a", "b", "c"))]


def test_bare_code_without_text() -> None:
    parser = ReplyParser()
    [reply] = parser.feed(b"250\r\n")
    assert reply.code == 250
    assert reply.lines == ("",)
    assert reply.enhanced is None
    assert str(reply) == "250"


def test_code_and_space_without_text() -> None:
    assert ReplyParser().feed(b"354 \r\n") == [Reply(code=354, lines=("",))]


def test_bare_code_ends_a_multi_line_reply() -> None:
    assert ReplyParser().feed(b"250-a\r\n250\r\n") == [Reply(code=250, lines=("a", ""))]


def test_text_keeps_inner_and_trailing_spaces_and_tabs() -> None:
    [reply] = ReplyParser().feed(b"250 a  b\tc \r\n")
    assert reply.lines == ("a  b\tc ",)


def test_pipelined_replies_in_one_chunk() -> None:
    parser = ReplyParser()
    data = b"250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n554 5.7.1 <u@ext>: Relay access denied\r\n"
    replies = parser.feed(data)
    assert [r.code for r in replies] == [250, 250, 554]
    assert [r.enhanced for r in replies] == ["2.1.0", "2.1.5", "5.7.1"]
    assert replies[2].lines == ("5.7.1 <u@ext>: Relay access denied",)
    assert not parser.pending


def test_pipelined_replies_leave_the_partial_tail_buffered() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250 ok\r\n250-multi\r\n25") == [Reply(code=250, lines=("ok",))]
    assert parser.pending
    assert parser.feed(b"0 done\r\n") == [Reply(code=250, lines=("multi", "done"))]


def test_reply_split_byte_by_byte() -> None:
    parser = ReplyParser()
    data = b"550-5.7.1 first\r\n550 second\r\n"
    replies: list[Reply] = []
    for i in range(len(data)):
        replies += parser.feed(data[i : i + 1])
        assert parser.pending == (i < len(data) - 1)
    assert replies == [Reply(code=550, lines=("5.7.1 first", "second"), enhanced="5.7.1")]


def test_feeding_nothing_returns_nothing() -> None:
    parser = ReplyParser()
    assert parser.feed(b"") == []
    assert not parser.pending


_TEXT_BYTES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.encode)


@st.composite
def _reply_streams(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, tuple[str, ...]]]]:
    """A valid byte stream of several replies and the (code, lines) each must parse to."""
    stream = b""
    expected: list[tuple[int, tuple[str, ...]]] = []
    for _ in range(draw(st.integers(1, 5))):
        code = draw(st.integers(200, 599))
        texts = draw(st.lists(_TEXT_BYTES, min_size=1, max_size=4))
        for i, text in enumerate(texts):
            separator = b" " if i == len(texts) - 1 else b"-"
            if i == len(texts) - 1 and not text and draw(st.booleans()):
                separator = b""  # a bare "250"
            stream += str(code).encode() + separator + text + draw(st.sampled_from([b"\r\n", b"\n"]))
        expected.append((code, tuple(t.decode() for t in texts)))
    return stream, expected


@settings(max_examples=200)
@given(_reply_streams(), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_chunking_gives_the_same_replies(
    case: tuple[bytes, list[tuple[int, tuple[str, ...]]]], cuts: list[int]
) -> None:
    stream, expected = case
    whole = ReplyParser().feed(stream)
    assert [(r.code, r.lines) for r in whole] == expected

    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    parser = ReplyParser()
    chunked: list[Reply] = []
    for start, end in itertools.pairwise(points):
        chunked += parser.feed(stream[start:end])
    assert chunked == whole
    assert not parser.pending


# --------------------------------------------------------------------------------------------
# Enhanced status codes (RFC 3463)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "enhanced"),
    [
        (550, "5.7.1 Relay access denied", "5.7.1"),
        (554, "5.7.1", "5.7.1"),  # nothing after the code
        (250, "2.1.5 Ok", "2.1.5"),
        (451, "4.7.1 Greylisted, try again", "4.7.1"),
        (550, "5.1.10 Recipient address rejected", "5.1.10"),
        (550, "5.123.456\tx", "5.123.456"),
        (550, "4.7.1 class does not match", None),  # class must agree with the reply's first digit
        (450, "5.7.1 class does not match", None),
        (250, "5.7.1 class does not match", None),
        (550, "Relay denied 5.7.1", None),  # must be at the start
        (550, "Relay access denied", None),
        (550, "", None),
        (550, "5.7 two parts only", None),
        (550, "5.7.1Relay", None),  # must be followed by whitespace or the end
        (550, "5.7.1.2 too many parts", None),
        (550, "5.1234.1 subject too long", None),
        (550, "3.7.1 no such class", None),
        (350, "3.0.0 no such class", None),
        (550, " 5.7.1 leading space", None),
    ],
)
def test_parse_enhanced(code: int, text: str, enhanced: str | None) -> None:
    assert parse_enhanced(code, text) == enhanced


def test_enhanced_code_is_taken_from_the_first_line_of_a_reply() -> None:
    [reply] = ReplyParser().feed(b"550-5.7.1 Relay access denied\r\n550 4.0.0 not this one\r\n")
    assert reply.enhanced == "5.7.1"
    [reply] = ReplyParser().feed(b"550-Relay access denied\r\n550 5.7.1 too late\r\n")
    assert reply.enhanced is None


def test_enhanced_code_digits_are_ascii_only() -> None:
    assert parse_enhanced(550, "5.\u0667.1 denied") is None
    [reply] = ReplyParser().feed("550 5.\u0667.1 denied\r\n".encode())
    assert reply.enhanced is None


# --------------------------------------------------------------------------------------------
# Hostile input: byte caps, garbage, control characters
# --------------------------------------------------------------------------------------------


def test_line_without_newline_raises_as_soon_as_it_exceeds_max_line() -> None:
    parser = ReplyParser()
    fed = 0
    chunk = b"250 " + b"x" * 508  # 512 bytes
    while fed + len(chunk) <= MAX_LINE:
        assert parser.feed(chunk) == []
        fed += len(chunk)
    assert fed == MAX_LINE  # the buffer is exactly at the cap: still fine
    with pytest.raises(ReplyTooLong):
        parser.feed(b"x")


def test_line_of_exactly_max_line_bytes_is_accepted() -> None:
    line = b"250 " + b"x" * (MAX_LINE - 4)
    assert ReplyParser().feed(line + b"\n") == [Reply(code=250, lines=("x" * (MAX_LINE - 4),))]


def test_complete_line_longer_than_max_line_raises() -> None:
    with pytest.raises(ReplyTooLong):
        ReplyParser().feed(b"250 " + b"x" * (MAX_LINE - 3) + b"\n")


def test_custom_line_cap() -> None:
    parser = ReplyParser(max_line=16)
    assert parser.feed(b"250 0123456789ab\n") == [Reply(code=250, lines=("0123456789ab",))]
    with pytest.raises(ReplyTooLong):
        parser.feed(b"250 0123456789abc")


def test_endless_continuation_lines_exceed_max_reply() -> None:
    parser = ReplyParser()
    line = b"250-" + b"x" * 100 + b"\r\n"
    allowed = MAX_REPLY // len(line)  # lines that fit within the cap
    for _ in range(allowed):
        assert parser.feed(line) == []
    with pytest.raises(ReplyTooLong):
        parser.feed(line)


def test_reply_cap_is_per_reply_not_per_connection() -> None:
    parser = ReplyParser()
    reply = b"250-" + b"x" * 1000 + b"\r\n" + b"250 end\r\n"
    total = 0
    while total <= 2 * MAX_REPLY:
        assert len(parser.feed(reply)) == 1
        total += len(reply)


@pytest.mark.parametrize(
    "line",
    [
        b"hello\r\n",
        b"HTTP/1.1 400 Bad Request\r\n",
        b"\r\n",  # empty line
        b"\n",
        b"25\r\n",  # too short
        b"2x0 ok\r\n",
        b"250x ok\r\n",  # bad separator
        b"250_ok\r\n",
        b" 250 ok\r\n",
        b"\x00\x01\x02 ok\r\n",
        "２５０ ok\r\n".encode(),  # fullwidth digits are not ASCII digits
    ],
)
def test_garbage_is_malformed(line: bytes) -> None:
    with pytest.raises(MalformedReply):
        ReplyParser().feed(line)


@pytest.mark.parametrize("code", [b"000", b"100", b"199", b"600", b"999"])
def test_code_out_of_range_is_malformed(code: bytes) -> None:
    with pytest.raises(MalformedReply, match="range"):
        ReplyParser().feed(code + b" hello\r\n")


@pytest.mark.parametrize("code", [b"200", b"599"])
def test_codes_at_the_edges_of_the_range_are_accepted(code: bytes) -> None:
    assert ReplyParser().feed(code + b" ok\r\n")[0].code == int(code)


def test_continuation_with_a_different_code_is_malformed() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-first\r\n") == []
    with pytest.raises(MalformedReply, match="changed"):
        parser.feed(b"550 second\r\n")


def test_control_characters_become_visible_escapes() -> None:
    [reply] = ReplyParser().feed(b"550 \x1b[31mred\x1b[0m \x00nul \x7fdel \x08bs\ttab\r\n")
    assert reply.lines == ("\\x1b[31mred\\x1b[0m \\x00nul \\x7fdel \\x08bs\ttab",)
    assert "\x1b" not in reply.text


def test_bare_cr_inside_a_line_is_escaped_not_a_line_end() -> None:
    [reply] = ReplyParser().feed(b"250 a\rb\r\n")
    assert reply.lines == ("a\\x0db",)


def test_c1_control_characters_are_escaped_too() -> None:
    [reply] = ReplyParser().feed("550 \u009b31mred \u0085nel\r\n".encode())
    assert not any(unicodedata.category(ch) == "Cc" for ch in reply.lines[0])


def test_invalid_utf8_does_not_raise() -> None:
    [reply] = ReplyParser().feed(b"550 bad \xff\xfe\xc3 bytes\r\n")
    assert reply.code == 550
    assert reply.lines[0].startswith("bad ")
    assert reply.lines[0].endswith(" bytes")
    assert "\ufffd" in reply.lines[0]


def test_utf8_text_is_decoded() -> None:
    [reply] = ReplyParser().feed("250 Grüße\r\n".encode())
    assert reply.lines == ("Grüße",)


# --------------------------------------------------------------------------------------------
# reset() and pending
# --------------------------------------------------------------------------------------------


def test_pending_tracks_partial_replies() -> None:
    parser = ReplyParser()
    assert not parser.pending
    parser.feed(b"2")
    assert parser.pending
    parser.feed(b"50-a\r\n")
    assert parser.pending  # a complete line, but not the last one
    parser.feed(b"250 b\r\n")
    assert not parser.pending


def test_reset_forgets_a_partial_reply() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-pre-TLS line\r\n250-inj") == []
    parser.reset()
    assert not parser.pending
    # without the reset, a 220 here would be a code change inside a 250 reply
    assert parser.feed(b"220 TLS ready\r\n") == [Reply(code=220, lines=("TLS ready",))]


def test_without_reset_the_partial_reply_would_be_kept() -> None:
    parser = ReplyParser()
    parser.feed(b"250-pre-TLS line\r\n")
    with pytest.raises(MalformedReply):
        parser.feed(b"220 TLS ready\r\n")


def test_reset_forgets_the_reply_byte_count() -> None:
    parser = ReplyParser()
    line = b"250-" + b"x" * 100 + b"\r\n"
    almost = MAX_REPLY // len(line)
    for _ in range(almost):
        parser.feed(line)
    parser.reset()
    for _ in range(almost):
        parser.feed(line)
    assert parser.feed(b"250 end\r\n")[0].lines[-1] == "end"


# --------------------------------------------------------------------------------------------
# Arbitrary bytes: only protocol errors, never anything else, never a hang
# --------------------------------------------------------------------------------------------

_FRAGMENTS = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [b"250", b"550", b"199", b"600", b"-", b" ", b"\r\n", b"\n", b"\r", b"5.7.1 ", b"\x1b[2J", b"\xff"]
    ),
)


def _feed_all(parser: ReplyParser, chunks: list[bytes]) -> list[Reply]:
    replies: list[Reply] = []
    try:
        for chunk in chunks:
            replies += parser.feed(chunk)
    except ProtocolError:
        pass
    return replies


@settings(max_examples=200, deadline=1000)
@given(st.lists(st.lists(_FRAGMENTS, max_size=8).map(b"".join), max_size=10))
def test_arbitrary_bytes_raise_only_protocol_errors(chunks: list[bytes]) -> None:
    for reply in _feed_all(ReplyParser(), chunks):
        assert 200 <= reply.code <= 599
        assert reply.lines
        for line in reply.lines:
            assert all(ch == "\t" or (ord(ch) >= 0x20 and ord(ch) != 0x7F) for ch in line)
        if reply.enhanced is not None:
            assert reply.enhanced[0] == str(reply.code)[0]


@settings(max_examples=50, deadline=1000)
@given(st.binary(min_size=1, max_size=64), st.integers(1, 40))
def test_arbitrary_bytes_with_small_caps_raise_only_protocol_errors(pattern: bytes, repeat: int) -> None:
    _feed_all(ReplyParser(max_line=32, max_reply=128), [pattern] * repeat)


@settings(max_examples=50, deadline=2000)
@given(st.binary(max_size=200))
@example(b"250-" + b"x" * 200)
def test_a_flood_of_bytes_ends_in_an_error_or_replies(pattern: bytes) -> None:
    """Repeating any pattern far past the caps never makes the parser buffer without bound."""
    parser = ReplyParser()
    chunk = (pattern or b"\n") * (1 + 2048 // max(len(pattern), 1))
    try:
        for _ in range(2 * (MAX_REPLY // len(chunk) + 2)):
            parser.feed(chunk)
    except ProtocolError:
        return
    # still going: then it was producing complete replies, with nothing beyond a line buffered
    assert len(parser._buffer) <= MAX_LINE


# --------------------------------------------------------------------------------------------
# EHLO and greeting
# --------------------------------------------------------------------------------------------


def test_parse_ehlo() -> None:
    [reply] = ReplyParser().feed(
        b"250-mx.example.com Hello client [192.0.2.9]\r\n"
        b"250-pipelining\r\n"
        b"250-SIZE 10240000\r\n"
        b"250-Auth PLAIN login\r\n"
        b"250-8BITMIME\r\n"
        b"250 STARTTLS\r\n"
    )
    ehlo = parse_ehlo(reply)
    assert ehlo.host == "mx.example.com"
    assert ehlo.keywords == ("PIPELINING", "SIZE 10240000", "AUTH PLAIN login", "8BITMIME", "STARTTLS")
    assert ehlo.has("PIPELINING")
    assert ehlo.has("pipelining")
    assert ehlo.has("auth")
    assert ehlo.has("StartTLS")
    assert ehlo.has("SIZE")
    assert not ehlo.has("PIPE")  # a keyword, not a prefix
    assert not ehlo.has("LOGIN")  # a parameter, not a keyword
    assert not ehlo.has("SMTPUTF8")


def test_parse_ehlo_single_line_has_no_keywords() -> None:
    ehlo = parse_ehlo(Reply(code=250, lines=("mx.example.com",)))
    assert ehlo.host == "mx.example.com"
    assert ehlo.keywords == ()
    assert not ehlo.has("STARTTLS")


def test_parse_ehlo_skips_empty_lines_and_tolerates_empty_greeting() -> None:
    ehlo = parse_ehlo(Reply(code=250, lines=("", "", "  starttls  ")))
    assert ehlo.host is None
    assert ehlo.keywords == ("STARTTLS",)
    assert parse_ehlo(Reply(code=250, lines=())).host is None


@pytest.mark.parametrize(
    ("line", "host"),
    [
        ("mx.example.com ESMTP Postfix", "mx.example.com"),
        ("MX.Example.COM. ESMTP", "mx.example.com"),
        ("mail-1.example.org Microsoft ESMTP MAIL Service ready", "mail-1.example.org"),
        ("ESMTP ready", None),
        ("***********", None),
        ("*** ESMTP ***", None),
        ("localhost ESMTP", None),  # no dot: not taken as a host name
        ("mx.example.com\\x1b[31m ESMTP", None),  # escaped control characters disqualify it
        ("", None),
        ("   ", None),
        ("<mx.example.com> ready", None),
    ],
)
def test_banner_host(line: str, host: str | None) -> None:
    assert banner_host(Reply(code=220, lines=(line,))) == host


def test_banner_host_uses_the_first_line_only() -> None:
    assert banner_host(Reply(code=220, lines=("ESMTP", "mx.example.com"))) is None
    assert banner_host(Reply(code=220, lines=("mx.example.com", "other.example.net"))) == "mx.example.com"
    assert banner_host(Reply(code=220, lines=())) is None


@pytest.mark.parametrize("line", ["... ESMTP", ". ready", "a..b ESMTP", "-.- ESMTP"])
def test_banner_host_refuses_dot_runs_that_are_not_host_names(line: str) -> None:
    assert banner_host(Reply(code=220, lines=(line,))) is None
