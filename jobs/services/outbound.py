"""
Requests this server makes to addresses a client chose (webhook URLs, image
URLs): only to public addresses, unless the host is on the caller's allow
list. The name is resolved when the URL is checked and again when
connecting, and the socket is made to an address checked then, so a DNS
answer that changes in between cannot point a request inside.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from jobs.models import MAX_URL_LENGTH


class RefusedURL(ValueError):
    """A URL this server will not call; the message says why."""


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


def is_allowed(host: str, allowed_hosts: list[str]) -> bool:
    return host.lower().rstrip(".") in allowed_hosts


def check_public_url(url: str, *, allowed_hosts: list[str], setting: str, resolve: bool = True) -> None:
    """
    Raise RefusedURL unless the URL may be called: https (or http to an
    allowed host), at most MAX_URL_LENGTH characters, no credentials, and a
    host that resolves only to public addresses (or is allowed). `setting`
    names the allow list in the messages.
    """
    if len(url) > MAX_URL_LENGTH:
        raise RefusedURL(f"The URL has at most {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise RefusedURL("Not a valid URL.")
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise RefusedURL("Give an absolute https:// URL.")
    if parts.username is not None or parts.password is not None:
        raise RefusedURL("The URL must not contain credentials.")
    if any(char.isspace() or ord(char) < 32 for char in url):
        raise RefusedURL("The URL must not contain spaces or control characters.")
    if is_allowed(host, allowed_hosts):
        return
    if parts.scheme != "https":
        raise RefusedURL(f"Use https:// (http:// only for hosts in {setting}).")
    if resolve:
        public_addresses(host, port or 443)


def public_addresses(host: str, port: int) -> list[str]:
    """The host's addresses, if every one is public; else RefusedURL."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise RefusedURL(f"The host {host!r} does not resolve.")
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    private = [address for address in addresses if not is_public(address)]
    if private:
        raise RefusedURL(
            f"The host {host!r} resolves to a loopback, private, link-local, multicast or reserved address "
            f"({private[0]}); this server only calls public addresses."
        )
    return addresses


def connect_checked(host: str, port: int, timeout: float, *, allowed_hosts: list[str]) -> socket.socket:
    """A socket connected to the host, at an address checked now (not when the URL was first checked)."""
    allowed = is_allowed(host, allowed_hosts)
    if allowed:
        addresses = list(dict.fromkeys(info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))
    else:
        addresses = public_addresses(host, port)
    error: OSError | None = None
    for address in addresses:
        try:
            sock = socket.create_connection((address, port), timeout=timeout)
        except OSError as exc:
            error = exc
            continue
        # The peer is the pinned address we checked; say so rather than trust it.
        peer = sock.getpeername()[0]
        if not allowed and not is_public(peer):
            sock.close()
            raise RefusedURL(f"Connected to a non-public address {peer}.")
        return sock
    raise error or OSError(f"could not connect to {host}")
