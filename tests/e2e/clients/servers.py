"""The tiny servers behind the git and pip recipes, as routes of the recording test upstream."""

from __future__ import annotations

import hashlib
import io
import zipfile

from tests.support.upstream import RecordedRequest, Reply

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _pkt(line: str) -> bytes:
    data = line.encode()
    return b"%04x" % (len(data) + 4) + data


def git_refs(req: RecordedRequest) -> Reply:
    """The ref advertisement of smart HTTP (protocol v0): enough for `git ls-remote`."""
    body = (_pkt("# service=git-upload-pack\n") + b"0000"
            + _pkt(f"{COMMIT} HEAD\0symref=HEAD:refs/heads/main agent=test\n")
            + _pkt(f"{COMMIT} refs/heads/main\n") + b"0000")
    return Reply(200, body, {"Content-Type": "application/x-git-upload-pack-advertisement", "Cache-Control": "no-cache"})


def make_wheel(name: str, version: str) -> tuple[str, bytes]:
    """A minimal valid wheel: metadata only, no code."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: clearwall-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{p},,\n" for p in files) + f"{dist}/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p, data in files.items():
            z.writestr(p, data)
        z.writestr(f"{dist}/RECORD", record)
    return f"{name}-{version}-py3-none-any.whl", buf.getvalue()


WHEEL_NAME, WHEEL = make_wheel("tinypkg", "1.0")


def simple_index(req: RecordedRequest) -> Reply:
    sha = hashlib.sha256(WHEEL).hexdigest()
    page = f'<!DOCTYPE html><html><body><a href="/files/{WHEEL_NAME}#sha256={sha}">{WHEEL_NAME}</a></body></html>'
    return Reply(200, page.encode(), {"Content-Type": "text/html"})


def wheel_file(req: RecordedRequest) -> Reply:
    return Reply(200, WHEEL, {"Content-Type": "application/octet-stream"})
