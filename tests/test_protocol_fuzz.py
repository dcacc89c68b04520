"""Protocol fuzzing: thousands of generated command lines and stdin payloads against
one live daemon (issue: measured speed and proven robustness).

Every request must get a reply or a clean close (EOF, no reset, no hang), the
daemon's memory must stay bounded, and it must still answer `version` at the
end. Commands that would create containers or images, or reach a registry,
are kept out, so the fuzzing measures the protocol and the command parsers.
"""
from __future__ import annotations

import json
import shlex

from hypothesis import HealthCheck, given, settings, strategies as st

from docker0_2013.commands import handler_name
from docker0_2013.server import parse_command_line
from helpers import daemon_rss_kb, exchange, inside

BATCH = 25                  # requests per generated example, sent concurrently
EXAMPLES = 420              # 420 * 25 = 10,500 requests
UNSAFE = {"run", "pull", "push", "login", "import", "commit", "start", "restart"}
SAFE = ["attach", "diff", "export", "history", "images", "info", "inspect", "kill", "logs",
        "port", "ps", "rm", "rmi", "stop", "tag", "version", "wait", "help", "insert", "nosuch"]


def is_safe(line: bytes) -> bool:
    """Would the server run a command that creates something, or reaches out?"""
    try:
        words = parse_command_line(line.split(b"\n")[0])
    except ValueError:
        return True
    return not words or handler_name(words[0])[3:].lower() not in UNSAFE


flag = st.sampled_from(["-a", "-q", "-notrunc", "-h", "--help", "-d", "-t", "-x", "-m", "-", "--", "-a=true"])
word = st.one_of(flag, st.text(max_size=30), st.sampled_from(["base", "nosuch", "0" * 64, "a:b", "/"]))
command = st.one_of(st.sampled_from(SAFE), st.from_regex(r"\A[a-zA-Z]{1,10}\Z"))
words = st.builds(lambda c, rest: [c, *rest], command, st.lists(word, max_size=6))
json_line = words.map(lambda w: json.dumps(w).encode() + b"\n")
plain_line = words.map(lambda w: shlex.join(w).encode() + b"\n")
odd_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                                    max_size=3),
                        max_leaves=8).map(lambda v: json.dumps(v).encode() + b"\n")
junk = st.binary(max_size=300)
unterminated = words.map(lambda w: json.dumps(w).encode())      # EOF instead of a newline
line = st.one_of(json_line, plain_line, odd_json, junk, unterminated).filter(is_safe)
request = st.tuples(line, st.binary(max_size=2000))


def test_fuzzed_requests(daemon):
    sent = []
    with inside(daemon.netns.name):
        exchange([(b"version\n", b"")] * BATCH)                 # warm up before measuring
        rss_start = daemon_rss_kb(daemon)

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(request, min_size=BATCH, max_size=BATCH))
        def fuzz(requests):
            replies = exchange(requests)
            sent.append(len(replies))
            for (line, _), reply in zip(requests, replies):
                # Whatever came back is text the protocol allows: output, or one `Error:` line.
                assert b"Traceback" not in reply, (line, reply)

        fuzz()
        rss_end = daemon_rss_kb(daemon)
        version = exchange([(b'["version"]\n', b"")])[0].decode()
    assert sum(sent) >= 10_000
    assert rss_end < 2 * rss_start + 50_000, (rss_start, rss_end)
    assert version.startswith("Version:"), version
    assert daemon.proc.poll() is None
