"""What stops a downloaded source from hurting the worker: address checks before any request, and archive
unpacking that cannot write outside the job's folder nor fill the disk.

Unpacking writes into a hidden temporary folder beside the target and publishes it by one rename, so a rejected
archive leaves nothing behind: no partial folder in the job, nothing anywhere else.
"""

from __future__ import annotations

import ipaddress
import lzma
import os
import shutil
import socket
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from app.core.config import Settings

CHUNK = 1024 * 1024
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# ranges Python's `is_global` calls global but that lead to addresses workers may not reach: 6to4 relays
# forward to the IPv4 address embedded in bits 16-48 (2002:7f00:1:: is 127.0.0.1), and deprecated site-local
# addresses (RFC 3879) are routed inside a site only; both are refused whatever they embed
_REFUSED_V6 = (ipaddress.IPv6Network("2002::/16"), ipaddress.IPv6Network("fec0::/10"))


class UnsafeSourceError(Exception):
    """A URL whose host resolves to an address workers may not reach."""


class UnsafeArchiveError(Exception):
    """An archive refused (unsafe, over a limit, or damaged) before or while unpacking; nothing of it was kept."""


# --- addresses -------------------------------------------------------------------------------------------


def is_public_address(address: str) -> bool:
    """True for globally routable unicast addresses; False for private, loopback, link-local (cloud metadata
    at 169.254.169.254), shared, reserved, multicast and unspecified ones, IPv4-mapped and NAT64 forms of
    those, and every 6to4 (2002::/16) and site-local (fec0::/10) address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in network for network in _REFUSED_V6):
            return False
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:  # a NAT64 gateway forwards to the IPv4 address in the last 32 bits
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback)


def resolve_checked(url: str, settings: Settings) -> list[str]:
    """Resolve the URL's host and return its addresses, refusing the URL when any of them is not public
    (unless `allow_private_sources`). The caller connects to one of these addresses, not to the name again,
    so a DNS answer that changes between check and connect cannot slip a private address in."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeSourceError(f"refused {url!r}: only http and https URLs are fetched")
    host = parts.hostname
    if not host:
        raise UnsafeSourceError(f"refused {url!r}: the URL has no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeSourceError(f"refused {url!r}: cannot resolve {host!r} ({exc})") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise UnsafeSourceError(f"refused {url!r}: {host!r} resolves to no address")
    if not settings.allow_private_sources:
        blocked = [address for address in addresses if not is_public_address(address)]
        if blocked:
            raise UnsafeSourceError(
                f"refused {url!r}: {host!r} resolves to non-public address {', '.join(blocked)} "
                "(set IMAGINGX_ALLOW_PRIVATE_SOURCES=true to allow private sources)"
            )
    return addresses


# --- archives --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnpackLimits:
    max_bytes: int
    max_members: int
    max_ratio: float

    @classmethod
    def from_settings(cls, settings: Settings) -> UnpackLimits:
        return cls(settings.unpack_max_bytes, settings.unpack_max_members, settings.unpack_max_ratio)


def is_archive(path: Path) -> bool:
    return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)


def unpack_archive(archive: Path, target: Path, job_dir: Path, limits: UnpackLimits) -> Path:
    """Unpack a zip or tar (plain, gz, bz2, xz) archive to `target`, which must lie inside `job_dir`.

    Idempotent: an existing `target` is a finished earlier unpack (targets appear only by rename) and is
    returned as it is. Raises UnsafeArchiveError, leaving nothing written, when a member would land outside
    the target (absolute or `..` paths, links pointing out), is a zip symlink, or when the archive exceeds the
    size, member-count or compression-ratio limits.
    """
    job_dir = job_dir.resolve()
    target = target.absolute()
    if not target.parent.resolve().is_relative_to(job_dir) or target.name in ("", ".", ".."):
        raise UnsafeArchiveError(f"refused to unpack into {target}: not inside the job folder {job_dir}")
    target = target.parent.resolve() / target.name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    archive_size = max(archive.stat().st_size, 1)
    staging = Path(tempfile.mkdtemp(prefix=f".unpack-{target.name}-", dir=target.parent))
    try:
        try:
            if zipfile.is_zipfile(archive):
                _unpack_zip(archive, staging, archive_size, limits)
            elif tarfile.is_tarfile(archive):
                _unpack_tar(archive, staging, archive_size, limits)
            else:
                raise UnsafeArchiveError(f"{archive.name} is neither a zip nor a tar archive")
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise UnsafeArchiveError(f"{archive.name} is damaged: {exc}") from exc
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _check_totals(name: str, members: int, total: int, archive_size: int, limits: UnpackLimits) -> None:
    if members > limits.max_members:
        raise UnsafeArchiveError(f"{name}: more than {limits.max_members} members")
    if total > limits.max_bytes:
        raise UnsafeArchiveError(f"{name}: unpacks to more than {limits.max_bytes} bytes")
    if total / archive_size > limits.max_ratio:
        raise UnsafeArchiveError(
            f"{name}: compression ratio {total / archive_size:.0f} exceeds {limits.max_ratio:g} (zip bomb?)"
        )


def _safe_member_path(name: str, archive_name: str) -> PurePosixPath:
    normalised = name.replace("\\", "/")
    path = PurePosixPath(normalised)
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        raise UnsafeArchiveError(f"{archive_name}: member {name!r} has an absolute path")
    if ".." in path.parts:
        raise UnsafeArchiveError(f"{archive_name}: member {name!r} points outside the archive (`..`)")
    return path


def _unpack_zip(archive: Path, staging: Path, archive_size: int, limits: UnpackLimits) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        # every member is checked before the first byte is written
        for info in infos:
            _safe_member_path(info.filename, archive.name)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(f"{archive.name}: member {info.filename!r} is a symlink")
            if info.flag_bits & 0x1:
                raise UnsafeArchiveError(f"{archive.name}: member {info.filename!r} is encrypted")
        _check_totals(archive.name, len(infos), sum(i.file_size for i in infos), archive_size, limits)
        written = 0
        root = staging.resolve()
        for info in infos:
            destination = staging.joinpath(*_safe_member_path(info.filename, archive.name).parts)
            if not destination.resolve().is_relative_to(root):
                raise UnsafeArchiveError(
                    f"{archive.name}: member {info.filename!r} resolves outside the target"
                )
            if info.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            member_written = 0
            # O_EXCL: a duplicate name cannot overwrite an earlier member or follow a planted link
            fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with zf.open(info) as source, os.fdopen(fd, "wb") as sink:
                while chunk := source.read(CHUNK):
                    member_written += len(chunk)
                    written += len(chunk)
                    # the header's sizes are what was checked: a member that inflates past them is lying
                    if member_written > info.file_size or written > limits.max_bytes:
                        raise UnsafeArchiveError(
                            f"{archive.name}: member {info.filename!r} unpacks past its declared size"
                        )
                    sink.write(chunk)


def _list_tar(archive: Path, archive_size: int, limits: UnpackLimits) -> None:
    """Read every header of a tar (decompressing as a stream, data skipped) and check member paths, count,
    total size and ratio before extraction writes anything: 250,000 empty members are refused at the
    limit's first excess, not after the limit's worth of files were created."""
    members = 0
    total = 0
    with tarfile.open(archive, "r|*") as tf:
        # next() rather than iteration, and the member list emptied each time: the listing holds one header in
        # memory however many the archive has (TarFile keeps every header it reads otherwise)
        while (member := tf.next()) is not None:
            # TarFile.members: the list of headers read so far, which typeshed does not declare (getmembers()
            # returns the same list only after reading the whole archive, which is what this avoids)
            tf.members.clear()  # type: ignore[attr-defined]
            _safe_member_path(member.name, archive.name)
            members += 1
            total += member.size if member.isfile() else 0
            _check_totals(archive.name, members, total, archive_size, limits)


def _unpack_tar(archive: Path, staging: Path, archive_size: int, limits: UnpackLimits) -> None:
    _list_tar(archive, archive_size, limits)
    members = 0
    total = 0

    def check_then_data_filter(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo | None:
        # the listing checked these already; checked again with each header before its data is read, since
        # the file could have changed between the two passes
        nonlocal members, total
        _safe_member_path(member.name, archive.name)
        members += 1
        total += member.size if member.isfile() else 0
        _check_totals(archive.name, members, total, archive_size, limits)
        # "data" refuses absolute and `..` members, links pointing outside, devices, and drops set-uid bits
        # (without a filter Python 3.11 writes such members outside the target silently)
        return tarfile.data_filter(member, destination)

    with tarfile.open(archive, "r:*") as tf:
        try:
            tf.extractall(staging, filter=check_then_data_filter)
        except tarfile.FilterError as exc:
            raise UnsafeArchiveError(f"{archive.name}: {exc}") from exc
