"""Publish the wheelhouse to an index server through the upload API twine uses (``:action=file_upload``).

The write-once policy holds: a file the index already serves with other content is refused before anything
is uploaded, and every uploaded file is downloaded again from the index and its sha256 compared. Credentials
come from the environment (``TWINE_USERNAME``/``TWINE_PASSWORD``, as twine) or from keyring when it is
installed; never from hosts.yml or the repository.
"""

from __future__ import annotations

import base64
import email.parser
import hashlib
import ipaddress
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import parse_wheel_filename

from deploytool.reporting.terminal import redact_credentials
from deploytool.supply.mirror_index import TIMEOUT
from deploytool.supply.simple_api import download_sha256, index_wheels
from deploytool.supply.wheelmeta import MirrorError, read_wheel_metadata, sha256_file


@dataclass
class UploadReport:
    """Files uploaded (and verified as served), and files the index already served identically."""

    uploaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)


def credentials(upload_url: str) -> tuple[str, str] | None:
    """(user, password) from TWINE_USERNAME/TWINE_PASSWORD, else from keyring for ``upload_url``, else None."""
    user, password = os.environ.get("TWINE_USERNAME"), os.environ.get("TWINE_PASSWORD")
    if password:
        return user or "__token__", password
    try:
        import keyring  # optional, as for twine
        import keyring.errors
    except ImportError:
        return None
    try:
        credential = keyring.get_credential(upload_url, user)
    except keyring.errors.KeyringError:  # no usable backend: as if nothing were stored
        return None
    if credential is None or not credential.password:
        return None
    return str(credential.username or user or "__token__"), str(credential.password)


def _form(wheel: Path) -> tuple[bytes, str]:
    """The multipart body of one upload (the fields twine sends that index servers rely on)."""
    name, version, _, _ = parse_wheel_filename(wheel.name)
    data = wheel.read_bytes()
    metadata = email.parser.BytesHeaderParser().parsebytes(read_wheel_metadata(wheel, wheel.name))
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "name": str(metadata.get("Name") or name),
        "version": str(version),
        "filetype": "bdist_wheel",
        "pyversion": wheel.name.split("-")[-3],
        "metadata_version": str(metadata.get("Metadata-Version") or "2.1"),
        "sha256_digest": hashlib.sha256(data).hexdigest(),
        "blake2_256_digest": hashlib.blake2b(data, digest_size=32).hexdigest(),
    }
    boundary = f"deploytool-{secrets.token_hex(16)}"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{wheel.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    body = b"".join([*parts, head.encode(), data, f"\r\n--{boundary}--\r\n".encode()])
    return body, f"multipart/form-data; boundary={boundary}"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default


class _SameOriginCredentials(urllib.request.HTTPRedirectHandler):
    """Follows a redirect as urllib does, but the ``Authorization`` header goes only to the origin (scheme, host,
    port) it was meant for: a redirect elsewhere gets the request without it (urllib would pass it on)."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            for name in [key for key in new.headers if key.lower() == "authorization"]:
                del new.headers[name]
            new.unredirected_hdrs = {k: v for k, v in new.unredirected_hdrs.items() if k.lower() != "authorization"}
        return new


def check_upload_url(upload_url: str) -> None:
    """Refuse an ``upload_url`` that would expose the credentials: plain ``http://`` to anything but loopback,
    or credentials written into the URL (they come from TWINE_USERNAME/TWINE_PASSWORD or keyring)."""
    parts = urllib.parse.urlsplit(upload_url)
    shown = redact_credentials(upload_url)
    if parts.username is not None or parts.password is not None:
        raise MirrorError(
            f"upload_url {shown} carries credentials: remove them from hosts.yml and set TWINE_USERNAME and "
            "TWINE_PASSWORD (or store them in keyring)"
        )
    if parts.scheme.lower() == "https":
        return
    if parts.scheme.lower() == "http" and _loopback(parts.hostname or ""):
        return
    raise MirrorError(
        f"upload_url {shown}: credentials are never sent over plain http except to this machine (loopback); "
        "use https://"
    )


def _loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _post(upload_url: str, wheel: Path, auth: tuple[str, str] | None) -> None:
    body, content_type = _form(wheel)
    headers = {"Content-Type": content_type, "User-Agent": "deploytool"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = urllib.request.Request(upload_url, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(_SameOriginCredentials())
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            response.read()
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            hint = "set TWINE_USERNAME and TWINE_PASSWORD (or store them in keyring)" if not auth else "check them"
            raise MirrorError(f"{upload_url}: upload of {wheel.name} refused (HTTP {error.code}): {hint}") from None
        if error.code != 409:  # 409: someone uploaded it meanwhile; the check after upload decides
            detail = error.read().decode("utf-8", "replace").strip().splitlines()[:1]
            raise MirrorError(
                f"{upload_url}: upload of {wheel.name} failed: HTTP {error.code} {error.reason} {' '.join(detail)}"
            ) from None
    except (urllib.error.URLError, OSError) as error:
        raise MirrorError(f"{upload_url}: upload of {wheel.name} failed: {getattr(error, 'reason', error)}") from None


def _served(index_url: str, wheels: list[Path]) -> dict[str, tuple[str, str | None]]:
    """filename -> (url, sha256 the index states) for the given wheels' projects."""
    names = [parse_wheel_filename(wheel.name)[0] for wheel in wheels]
    return {link.filename: (link.location, link.sha256) for link in index_wheels(index_url, names)}


def _served_sha256(url: str, stated: str | None) -> str | None:
    return stated or download_sha256(url)


def publish_to_index(wheelhouse: Path, upload_url: str, index_url: str) -> UploadReport:
    """Upload every wheel of the wheelhouse the index lacks; refuse all if any it serves differs.

    After uploading, each file is downloaded from the index and its sha256 compared with the local one.
    """
    check_upload_url(upload_url)
    wheels = sorted(wheelhouse.glob("*.whl"))
    served = _served(index_url, wheels)
    report, conflicts, missing = UploadReport(), [], []
    for wheel in wheels:
        local = sha256_file(wheel)
        if wheel.name not in served:
            missing.append(wheel)
        elif (remote := _served_sha256(*served[wheel.name])) != local:
            conflicts.append(f"{wheel.name}: the index serves sha256 {remote}, the wheelhouse has {local}")
        else:
            report.present.append(wheel.name)
    if conflicts:
        raise MirrorError(
            f"{index_url}: refusing to publish, files differ from what the index serves (nothing uploaded):\n  "
            + "\n  ".join(conflicts)
        )
    auth = credentials(upload_url)
    for wheel in missing:
        _post(upload_url, wheel, auth)
    after = _served(index_url, missing)
    problems = []
    for wheel in missing:
        if wheel.name not in after:
            problems.append(f"{wheel.name}: uploaded but not listed by {index_url}")
            continue
        remote = download_sha256(after[wheel.name][0])  # what is really served, not what the page says
        if remote != sha256_file(wheel):
            problems.append(f"{wheel.name}: the index serves sha256 {remote}, the wheelhouse has {sha256_file(wheel)}")
        else:
            report.uploaded.append(wheel.name)
    if problems:
        raise MirrorError(f"{index_url}: verifying the upload failed:\n  " + "\n  ".join(problems))
    return report
