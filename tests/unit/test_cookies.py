"""IKE_SA_INIT cookies (RFC 7296 2.6)."""

from __future__ import annotations

from hostsec.ike.cookies import COOKIE_LEN, CookieJar

NI, IP, SPI = b"n" * 32, bytes([198, 51, 100, 1]), b"s" * 8


def test_cookie_round_trip_and_binding() -> None:
    jar = CookieJar()
    cookie = jar.make(NI, IP, SPI)
    assert len(cookie) == COOKIE_LEN
    assert jar.verify(cookie, NI, IP, SPI)
    assert not jar.verify(cookie, b"m" * 32, IP, SPI)  # other nonce
    assert not jar.verify(cookie, NI, bytes([198, 51, 100, 2]), SPI)  # other address
    assert not jar.verify(cookie, NI, IP, b"t" * 8)  # other SPI
    assert not jar.verify(cookie[:-1], NI, IP, SPI)
    assert not jar.verify(b"\x00" * COOKIE_LEN, NI, IP, SPI)


def test_secret_rotation_keeps_previous_valid_once() -> None:
    jar = CookieJar(lifetime=10.0, now=0.0)
    cookie = jar.make(NI, IP, SPI)
    jar.handle_timer(5.0)
    assert jar.verify(cookie, NI, IP, SPI)
    jar.handle_timer(10.0)  # rotated: previous secret still accepted
    assert jar.verify(cookie, NI, IP, SPI)
    jar.handle_timer(20.0)  # rotated twice: too old
    assert not jar.verify(cookie, NI, IP, SPI)
    assert jar.verify(jar.make(NI, IP, SPI), NI, IP, SPI)
    assert jar.next_timer() == 30.0


def test_threshold() -> None:
    jar = CookieJar(threshold=3)
    assert not jar.required(2)
    assert jar.required(3)
