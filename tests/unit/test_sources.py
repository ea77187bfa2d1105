"""External source rules without the network: addresses, URLs, redaction, the policy."""

from __future__ import annotations

import ipaddress

import pytest

from osimage.server import sources
from osimage.server.sources import (
    SourceInvalid,
    SourceNotAllowed,
    SourcePolicy,
    address_allowed,
    check_url,
    probe_size,
    redact,
)

OPEN = SourcePolicy()
LOOPBACK_ALLOWED = SourcePolicy.from_cidrs(["127.0.0.0/8"])
PRIVATE_ALLOWED = SourcePolicy.from_cidrs(["10.0.0.0/8", "fd00::/8"])

FORBIDDEN = [
    "127.0.0.1",
    "127.255.255.254",
    "::1",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.0.1",
    "169.254.169.254",  # cloud metadata service
    "fe80::1",
    "fe80::1%2",
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    "ff0e::1",
    "0.0.0.0",
    "0.1.2.3",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:0.0.0.0",
    "::127.0.0.1",  # IPv4-compatible
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::1",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2001::1",  # Teredo
    "2001:db8::1",
    "100::1",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "192.0.0.8",
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.9",
    "240.0.0.1",
    "255.255.255.255",
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "100.128.0.1",  # just past CGNAT
    "172.32.0.1",  # just past 172.16/12
    "2001:4860::8888",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize("text", FORBIDDEN)
def test_non_global_addresses_are_refused(text):
    assert address_allowed(ipaddress.ip_address(text), OPEN) is False


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_are_allowed(text):
    assert address_allowed(ipaddress.ip_address(text), OPEN) is True


@pytest.mark.parametrize(
    ("text", "loopback_allowed", "private_allowed"),
    [
        ("127.0.0.1", True, False),
        ("127.0.0.2", True, False),
        ("::ffff:127.0.0.1", True, False),
        ("::1", False, False),
        ("10.1.2.3", False, True),
        ("::ffff:10.1.2.3", False, True),
        ("fd00::5", False, True),
        ("fc00::1", False, False),
        ("172.16.0.1", False, False),
        ("169.254.169.254", False, False),
        ("8.8.8.8", True, True),
        ("2001:4860::8888", True, True),
    ],
)
def test_allowed_networks_open_only_themselves(text, loopback_allowed, private_allowed):
    address = ipaddress.ip_address(text)
    assert address_allowed(address, LOOPBACK_ALLOWED) is loopback_allowed
    assert address_allowed(address, PRIVATE_ALLOWED) is private_allowed


def test_from_cidrs_parses_and_skips_blanks():
    policy = SourcePolicy.from_cidrs([" 127.0.0.0/8", "", "::1", "fd00::/8 "])
    assert policy.allowed_networks == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("fd00::/8"),
    )


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "nonsense", "10.0.0.1/8", "fd00::/129"])
def test_from_cidrs_names_a_bad_cidr(cidr):
    with pytest.raises(ValueError, match="allow_networks") as raised:
        SourcePolicy.from_cidrs(["127.0.0.0/8", cidr])
    assert repr(cidr) in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "filesystem:///var/lib/glance/images/x",
        "swift+config://ref1/container/obj",
        "swift+https://user:key@swift.example.com/v1/c/o",
        "ftp://ftp.example.com/image.qcow2",
        "rbd://fsid/pool/image/snap",
        "s3://key:secret@s3.example.com/bucket/obj",
        "gopher://example.com/",
        "data:text/plain,hello",
        "example.com/image.qcow2",
    ],
)
def test_only_http_and_https_schemes(url):
    with pytest.raises(SourceNotAllowed) as raised:
        check_url(url, LOOPBACK_ALLOWED)
    assert raised.value.message.startswith("External sources are not supported: '")


def test_not_supported_message_has_the_spec_form():
    with pytest.raises(SourceNotAllowed) as raised:
        check_url("file:///srv/images/x.raw", OPEN)
    assert raised.value.message == "External sources are not supported: 'file:///srv/images/x.raw'"
    assert str(raised.value) == raised.value.message


@pytest.mark.parametrize("url", ["", "   "])
def test_empty_source(url):
    with pytest.raises(SourceInvalid) as raised:
        check_url(url, OPEN)
    assert raised.value.message == "External source should not be empty"


@pytest.mark.parametrize(
    "url",
    [
        "http://",
        "http:///image.raw",
        "https://:443/image.raw",
        "http://user:pw@/image.raw",
        "http://example.com:99999/image.raw",
        "http://example.com:0/image.raw",
        "http://example.com:port/image.raw",
        "http://[::1/image.raw",
        "http://exa mple.com/image.raw",
        "http://example.com/image\n.raw",
        "http://a..b/image.raw",
    ],
)
def test_malformed_urls_are_invalid(url):
    with pytest.raises(SourceInvalid) as raised:
        check_url(url, OPEN)
    assert raised.value.message.startswith("Invalid location ")


def test_invalid_message_has_the_spec_form():
    with pytest.raises(SourceInvalid) as raised:
        check_url("http:///image.raw", OPEN)
    assert raised.value.message == "Invalid location http:///image.raw"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/image",
        "http://127.0.0.1:9292/v1/images/x",
        "http://[::1]:8080/image",
        "http://[::ffff:127.0.0.1]/image",
        "http://[fe80::1%25eth0]/image",
        "http://10.0.0.1/image",
        "https://192.168.0.10/image",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00::1]/image",
        "http://0.0.0.0:8080/",
        "http://[::]/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
        # Spellings the resolver reads as IPv4 addresses.
        "http://127.1/image",
        "http://2130706433/image",
        "http://0x7f000001/image",
        "http://0177.0.0.1/image",
        "http://0x7f.1/image",
        # RFC 6761: localhost names are loopback without asking anyone.
        "http://localhost/image",
        "http://LOCALHOST./image",
        "http://images.localhost:8080/image",
    ],
)
def test_forbidden_hosts_are_refused_without_io(url):
    with pytest.raises(SourceNotAllowed) as raised:
        check_url(url, OPEN)
    assert "is not allowed" in raised.value.reason


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/image",
        "http://127.1/image",
        "http://localhost:8080/image",
        "http://[::ffff:127.0.0.1]/image",
        "http://127.0.0.2:1234/image",
    ],
)
def test_loopback_passes_when_allowed(url):
    check_url(url, LOOPBACK_ALLOWED)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/image.qcow2",
        "https://images.example.org:8443/a/b.raw?sig=abc&x=1",
        "HTTP://EXAMPLE.COM/image",
        "http://8.8.8.8/image",
        "http://[2001:4860::8888]:8080/image",
        "http://user:pass@example.com/image",
        "http://bücher.example/image",
    ],
)
def test_public_urls_pass(url):
    check_url(url, OPEN)


SECRET = "hunter2-secret"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        (f"http://admin:{SECRET}@10.0.0.1/image", SourceNotAllowed),
        (f"http://admin:{SECRET}@localhost/image", SourceNotAllowed),
        (f"ftp://admin:{SECRET}@example.com/image", SourceNotAllowed),
        (f"swift+config://admin:{SECRET}@ref/c/o", SourceNotAllowed),
        (f"http://admin:{SECRET}@/image", SourceInvalid),
        (f"http://admin:{SECRET}@example.com:99999/image", SourceInvalid),
        (f"http://admin:{SECRET}@[::1/image", SourceInvalid),
    ],
)
def test_credentials_never_appear_in_errors(url, error):
    with pytest.raises(error) as raised:
        check_url(url, OPEN)
    exc = raised.value
    for text in (exc.message, exc.reason, str(exc), repr(exc)):
        assert SECRET not in text
        assert "admin:" not in text
    assert "***@" in exc.message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:p@host:81/p?q=1", "http://***@host:81/p?q=1"),
        ("http://token@host/p", "http://***@host/p"),
        ("http://host/a@b", "http://host/a@b"),
        ("http://host/p", "http://host/p"),
        ("http://u:p@[::1/x", "http://***@[::1/x"),
        ("ftp://u:p@h/x", "ftp://***@h/x"),
    ],
)
def test_redact(url, shown):
    assert redact(url) == shown


@pytest.mark.anyio
async def test_localhost_is_refused_before_connecting():
    with pytest.raises(SourceNotAllowed) as raised:
        await probe_size("http://localhost:9/image", OPEN)
    assert "127.0.0.1" in raised.value.reason


@pytest.mark.anyio
async def test_resolved_addresses_are_checked():
    # The connect hook resolves the name itself and refuses a forbidden answer;
    # check_url's RFC 6761 shortcut is not involved here.
    backend = sources._CheckedBackend(OPEN)
    with pytest.raises(sources._AddressRefused) as raised:
        await backend.connect_tcp("localhost", 9, timeout=5)
    assert ipaddress.ip_address(raised.value.address).is_loopback


@pytest.mark.anyio
async def test_resolved_numeric_forms_are_checked():
    backend = sources._CheckedBackend(LOOPBACK_ALLOWED)
    with pytest.raises(sources._AddressRefused) as raised:
        await backend.connect_tcp("0x0a000001", 9, timeout=5)
    assert raised.value.address == "10.0.0.1"
