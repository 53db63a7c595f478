"""Tests for imaged.failures: the one table of transient and permanent failures."""

from __future__ import annotations

import pytest

from imaged.errors import BuildError, PushError, is_transient
from imaged.failures import classify, classify_output, error_lines, status_is_transient

# Messages as the docker CLI, BuildKit, the engine or a registry print them.
MESSAGES = [
    # transient: the engine or a registry was gone, slow or dropped the connection
    pytest.param("unexpected EOF", True, id="cli-unexpected-eof-engine-killed"),
    pytest.param("error reading from server: EOF", True, id="grpc-eof"),
    pytest.param(
        "failed to dial gRPC: cannot connect to the Docker daemon. Is 'docker daemon' running on "
        "this host?: dial tcp 127.0.0.1:1: connect: connection refused",
        True,
        id="cli-engine-down-at-start",
    ),
    pytest.param(
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker "
        "daemon running?",
        True,
        id="cli-cannot-connect-socket",
    ),
    pytest.param(
        "error during connect: Get http://127.0.0.1:2375/v1.41/version: dial tcp "
        "127.0.0.1:2375: connect: connection refused",
        True,
        id="cli-error-during-connect",
    ),
    pytest.param(
        '#3 ERROR: failed to do request: Head "http://127.0.0.1:1/v2/nothing/manifests/1": '
        "dial tcp 127.0.0.1:1: connect: connection refused",
        True,
        id="buildkit-base-registry-down",
    ),
    pytest.param("read tcp 127.0.0.1:5000: read: connection reset by peer", True, id="reset"),
    pytest.param("write unix @->/run/docker.sock: write: broken pipe", True, id="broken-pipe"),
    pytest.param("dial tcp 10.0.0.5:443: i/o timeout", True, id="io-timeout"),
    pytest.param(
        'Get "https://registry.example/v2/": net/http: TLS handshake timeout', True, id="tls"
    ),
    pytest.param(
        "rpc error: code = Unavailable desc = connection closed", True, id="grpc-unavailable"
    ),
    pytest.param(
        "push of r/x:1 failed: received unexpected HTTP status: 503 Service Unavailable",
        True,
        id="push-503",
    ),
    pytest.param(
        "push of r/x:1 failed: received unexpected HTTP status: 500 Internal Server Error",
        True,
        id="push-500",
    ),
    pytest.param("toomanyrequests: You have reached your pull rate limit.", True, id="rate-limit"),
    pytest.param("registry answered HTTP 429 for r/x:1", True, id="http-429"),
    pytest.param("registry answered HTTP 408 for r/x:1", True, id="http-408"),
    pytest.param(
        "('Connection aborted.', RemoteDisconnected('Remote end closed connection without "
        "response'))",
        True,
        id="sdk-remote-disconnected",
    ),
    pytest.param(
        "('Connection broken: IncompleteRead(0 bytes read)', IncompleteRead(0 bytes read))",
        True,
        id="sdk-chunked-broken",
    ),
    pytest.param(
        "dial tcp: lookup registry.example on 10.0.0.2:53: server misbehaving", True, id="dns"
    ),
    # permanent: what was asked for is wrong
    pytest.param(
        '#5 ERROR: executor failed running [/bin/sh -c echo "unexpected EOF" && exit 3]: '
        "exit code: 3",
        False,
        id="run-step-exit-quoting-eof",
    ),
    pytest.param(
        'ERROR: failed to solve: process "/bin/sh -c false" did not complete successfully: '
        "exit code: 1",
        False,
        id="buildx-run-step-exit",
    ),
    pytest.param(
        "failed to solve with frontend dockerfile.v0: failed to create LLB definition: "
        "dockerfile parse error line 2: unknown instruction: RUNX",
        False,
        id="dockerfile-parse",
    ),
    pytest.param(
        "push of r/x:1 failed: denied: requested access to the resource is denied",
        False,
        id="push-denied",
    ),
    pytest.param(
        "push of r/x:1 failed: unauthorized: authentication required", False, id="unauthorized"
    ),
    pytest.param(
        "Get https://r.example/v2/: no basic auth credentials", False, id="no-credentials"
    ),
    pytest.param(
        "Error response from daemon: Get https://r.example/v2/: unauthorized: incorrect "
        "username or password",
        False,
        id="bad-password",
    ),
    pytest.param("registry answered unexpected HTTP 404 for r/x:1", False, id="http-404"),
    pytest.param(
        "push of r/x:1 failed: received unexpected HTTP status: 413 Request Entity Too Large",
        False,
        id="push-413",
    ),
    pytest.param(
        "400 Client Error for http+docker://localhost/v1.41/images/x/push: Bad Request",
        False,
        id="sdk-400",
    ),
    pytest.param(
        'Head "http://registry:443/v2/x/manifests/1": manifest unknown',
        False,
        id="port-443-is-no-status",
    ),
    pytest.param("something nobody has seen before", False, id="unknown-is-permanent"),
]


@pytest.mark.parametrize(("message", "transient"), MESSAGES)
def test_classify_reads_each_message_as_the_table_says(message: str, transient: bool) -> None:
    assert classify(message).transient is transient


@pytest.mark.parametrize(("message", "transient"), MESSAGES)
def test_push_errors_follow_the_same_table(message: str, transient: bool) -> None:
    assert is_transient(PushError(message, image="x")) is transient


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        pytest.param(500, True, id="500"),
        pytest.param(503, True, id="503"),
        pytest.param(408, True, id="408"),
        pytest.param(429, True, id="429"),
        pytest.param(400, False, id="400"),
        pytest.param(401, False, id="401"),
        pytest.param(404, False, id="404"),
        pytest.param(409, False, id="409"),
    ],
)
def test_status_codes(code: int, transient: bool) -> None:
    assert status_is_transient(code) is transient


# Real `docker build --progress=plain` output (CLI 20.10, built-in BuildKit).
ENGINE_KILLED_MID_RUN = [
    "#4 [1/2] FROM 127.0.0.1:38757/python:3.11-slim-bookworm",
    "#4 DONE 0.0s",
    "",
    "#5 [2/2] RUN echo start && sleep 20 && echo done",
    "#5 sha256:ebe82a1bf3dd80395acde3d628ae2bfd9721d93fbd64660e9496b0ad2cf6199a",
    "#5 0.141 start",
    "unexpected EOF",
]
RUN_FAILED_QUOTING_TRANSIENT_WORDS = [
    '#5 [2/2] RUN echo "unexpected EOF" && echo "connection refused" && exit 3',
    "#5 0.131 unexpected EOF",
    "#5 0.131 connection refused",
    '#5 ERROR: executor failed running [/bin/sh -c echo "unexpected EOF" && echo "connection '
    'refused" && exit 3]: exit code: 3',
    "------",
    ' > [2/2] RUN echo "unexpected EOF" && echo "connection refused" && exit 3:',
    "------",
    'executor failed running [/bin/sh -c echo "unexpected EOF" && echo "connection refused" '
    "&& exit 3]: exit code: 3",
]
BUILDX_RUN_FAILED = [
    "#5 [2/2] RUN curl https://x",
    "#5 0.210 curl: (7) Failed to connect: Connection refused",
    '#5 ERROR: process "/bin/sh -c curl https://x" did not complete successfully: exit code: 7',
    "------",
    " > [2/2] RUN curl https://x:",
    "0.210 curl: (7) Failed to connect: Connection refused",
    "------",
    "Dockerfile:2",
    "--------------------",
    "   2 | >>> RUN curl https://x",
    "--------------------",
    'ERROR: failed to solve: process "/bin/sh -c curl https://x" did not complete '
    "successfully: exit code: 7",
]
STEP_PRINTS_EOF_THEN_ENGINE_DIES = ["#5 [2/2] RUN ./fetch", "#5 0.3 unexpected EOF", "EOF"]
BASE_REGISTRY_DOWN = [
    "#3 [internal] load metadata for 127.0.0.1:1/nothing:1",
    '#3 ERROR: failed to do request: Head "http://127.0.0.1:1/v2/nothing/manifests/1": dial '
    "tcp 127.0.0.1:1: connect: connection refused",
    "------",
    " > [internal] load metadata for 127.0.0.1:1/nothing:1:",
    "------",
    "failed to solve with frontend dockerfile.v0: failed to create LLB definition: failed to do "
    'request: Head "http://127.0.0.1:1/v2/nothing/manifests/1": dial tcp 127.0.0.1:1: connect: '
    "connection refused",
]


@pytest.mark.parametrize(
    ("lines", "transient", "kind"),
    [
        pytest.param(ENGINE_KILLED_MID_RUN, True, "connection", id="engine-killed-mid-run"),
        pytest.param(RUN_FAILED_QUOTING_TRANSIENT_WORDS, False, "step", id="run-exit-3"),
        pytest.param(BUILDX_RUN_FAILED, False, "step", id="buildx-run-exit-7"),
        pytest.param(STEP_PRINTS_EOF_THEN_ENGINE_DIES, True, "connection", id="step-says-eof"),
        pytest.param(BASE_REGISTRY_DOWN, True, "connection", id="base-registry-down"),
        pytest.param(
            ["#5 [2/2] RUN true", "#5 0.1 connection refused"],
            False,
            "unknown",
            id="only-step-output-is-no-evidence",
        ),
        pytest.param([], False, "unknown", id="no-output"),
    ],
)
def test_classify_output_of_real_builds(lines: list[str], transient: bool, kind: str) -> None:
    verdict = classify_output(lines)
    assert (verdict.transient, verdict.kind) == (transient, kind)


def test_error_lines_leave_out_step_output_quotes_and_dockerfile_excerpts() -> None:
    assert error_lines(BUILDX_RUN_FAILED) == [
        "#5 [2/2] RUN curl https://x",
        '#5 ERROR: process "/bin/sh -c curl https://x" did not complete successfully: exit code: 7',
        "Dockerfile:2",
        'ERROR: failed to solve: process "/bin/sh -c curl https://x" did not complete '
        "successfully: exit code: 7",
    ]


def test_build_error_carries_the_verdict_it_was_given() -> None:
    assert is_transient(BuildError("pull failed", transient=True))
    assert not is_transient(BuildError("RUN failed"))
