"""Tests for sip/auth.py: digest vectors, parser, nonces, replay, verifier, client."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip.auth import (
    MAX_HEADER_CHARS,
    MAX_PARAMS,
    AuthResult,
    DigestCredentials,
    DigestError,
    DigestParseError,
    DigestVerifier,
    NonceCounter,
    NonceManager,
    NonceState,
    UnsupportedDigestError,
    build_authorization,
    compute_response,
    parse_digest_params,
)

SECRET = b"0123456789abcdef0123456789abcdef"
REALM = "3402000000"
DEVICE = "34020000001320000001"
PASSWORD = "12345678"
REQUEST_URI = "sip:34020000002000000001@3402000000"

# PROTOCOL.md §2.1 / §2.2
GB_AUTHORIZATION = (
    'Digest username="34020000001320000001",realm="3402000000",nonce="9bd055",'
    'uri="sip:34020000002000000001@3402000000",response="5c08f6b8a902f9b9ed0206359b0deb9f",'
    'algorithm=MD5,qop=auth,nc=00000001,cnonce="0a4f113b"'
)
GB_HA1 = "8258341d7dd730ce4d3b8fd2db050320"
GB_HA2 = "95fced343cf76247d3e2102931f17507"
GB = dict(username=DEVICE, realm=REALM, password=PASSWORD, method="REGISTER", uri=REQUEST_URI)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def make_verifier(secret: bytes = SECRET) -> DigestVerifier:
    return DigestVerifier(REALM, NonceManager(secret), NonceCounter())


def device_auth(
    nonce: str,
    *,
    password: str = PASSWORD,
    nc: str | None = "00000001",
    extra: str = ",algorithm=MD5",
    uri: str = REQUEST_URI,
) -> str:
    """An Authorization value as a GB device writes it (qop only when nc is given)."""
    qop = None if nc is None else "auth"
    resp = compute_response(
        **{**GB, "password": password, "uri": uri},
        nonce=nonce,
        qop=qop,
        nc=nc,
        cnonce="0a4f113b",
    )
    value = f'Digest username="{DEVICE}",realm="{REALM}",nonce="{nonce}",uri="{uri}"'
    value += f',response="{resp}"{extra}'
    if nc is not None:
        value += f',qop=auth,nc={nc},cnonce="0a4f113b"'
    return value


# --- vectors -------------------------------------------------------------------------------


def test_rfc2617_section_3_5_vector() -> None:
    # RFC 2617 §3.5 prints cnonce="0a4b113b", but its response 6629fae4... is the digest of
    # cnonce "0a4f113b" (a known inconsistency in the RFC); with 0a4b113b it is 191ca744...
    kw = dict(
        username="Mufasa",
        realm="testrealm@host.com",
        password="Circle Of Life",
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        qop="auth",
        nc="00000001",
    )
    assert compute_response(**kw, cnonce="0a4f113b") == "6629fae49393a05397450978507c4ef1"
    assert compute_response(**kw, cnonce="0a4b113b") == "191ca744034e5aee09af554ac338fe4d"


def test_rfc7616_section_3_9_1_vectors() -> None:
    kw = dict(
        username="Mufasa",
        realm="http-auth@example.org",
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        qop="auth",
        nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert compute_response(**kw) == "8ca523f5e9506fed4657c9700eebdbec"
    assert (
        compute_response(**kw, algorithm="SHA-256")
        == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )


def test_gb_vectors() -> None:
    assert md5(f"{DEVICE}:{REALM}:{PASSWORD}") == GB_HA1
    assert md5(f"REGISTER:{REQUEST_URI}") == GB_HA2
    with_qop = compute_response(**GB, nonce="9bd055", qop="auth", nc="00000001", cnonce="0a4f113b")
    assert with_qop == "5c08f6b8a902f9b9ed0206359b0deb9f"
    without_qop = compute_response(**GB, nonce="9bd055")
    assert without_qop == "44ac5fd979560c6da6cec866a439bd48" == md5(f"{GB_HA1}:9bd055:{GB_HA2}")


def test_gb_authorization_header_parses_and_verifies_its_own_response() -> None:
    creds = DigestCredentials.from_header(GB_AUTHORIZATION)
    assert (creds.username, creds.realm, creds.nonce, creds.uri) == (
        DEVICE,
        REALM,
        "9bd055",
        REQUEST_URI,
    )
    assert (creds.algorithm, creds.qop, creds.nc, creds.nc_value) == ("MD5", "auth", "00000001", 1)
    expected = compute_response(
        **GB, nonce=creds.nonce, qop=creds.qop, nc=creds.nc, cnonce=creds.cnonce
    )
    assert expected == creds.response
    assert "5c08f6b8" not in repr(creds)  # the digest never reaches a log line


def test_md5_sess_and_unsupported() -> None:
    kw = dict(**GB, nonce="9bd055", qop="auth", nc="00000001", cnonce="0a4f113b")
    ha1 = md5(f"{GB_HA1}:9bd055:0a4f113b")
    want = md5(f"{ha1}:9bd055:00000001:0a4f113b:auth:{GB_HA2}")
    assert compute_response(**kw, algorithm="MD5-sess") == want
    with pytest.raises(UnsupportedDigestError):
        compute_response(**kw, algorithm="SHA-512-256")
    with pytest.raises(UnsupportedDigestError):
        compute_response(**{**kw, "qop": "auth-int"})
    with pytest.raises(DigestError):
        compute_response(**GB, nonce="9bd055", qop="auth", cnonce="0a4f113b")


# --- parser --------------------------------------------------------------------------------


def test_parse_quoted_tokens_escapes_case_and_spaces() -> None:
    value = (
        'dIgEsT  Realm = "a, b" ,NONCE=x,,  uri=sip:1@10.0.0.1:5060 , '
        'q="say \\"hi\\" \\\\ \\x",empty="", tab="a\tb",'
    )
    assert parse_digest_params(value) == {
        "realm": "a, b",
        "nonce": "x",
        "uri": "sip:1@10.0.0.1:5060",
        "q": 'say "hi" \\ x',
        "empty": "",
        "tab": "a\tb",
    }


def test_parse_sipp_style_authorization() -> None:
    value = (
        'Digest username="34020000001320000001",realm="3402000000",cnonce="6b8b4567",'
        'nc=00000001,qop=auth,uri="sip:127.0.0.1:5060",nonce="abc",response="0f",'
        'algorithm="MD5"'
    )
    creds = DigestCredentials.from_header(value)
    assert creds.uri == "sip:127.0.0.1:5060" and creds.algorithm == "MD5"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Digest",
        "Digest ",
        "Digest ,, ",
        "Basic realm=x",
        "Digestrealm=x",
        "Digest realm",
        "Digest =x",
        "Digest realm=",
        'Digest realm="unterminated',
        'Digest realm="a\\',
        "Digest a=b c=d",
        'Digest a="b"c',
        "Digest a=b, A=c",
        'Digest a="line\r\nInjected: 1"',
        "Digest a=b\x00",
        "Digest a=\ud800",
        "Digest a=" + "x" * MAX_HEADER_CHARS,
        "Digest " + ",".join(f"k{i}=v" for i in range(MAX_PARAMS + 1)),
    ],
)
def test_parse_rejects_garbage(value: str) -> None:
    with pytest.raises(DigestParseError):
        parse_digest_params(value)


def test_parse_accepts_exactly_the_limits() -> None:
    params = parse_digest_params("Digest " + ",".join(f"k{i}=v" for i in range(MAX_PARAMS)))
    assert len(params) == MAX_PARAMS
    long = "Digest a=" + "x" * (MAX_HEADER_CHARS - len("Digest a="))
    assert len(parse_digest_params(long)["a"]) == MAX_HEADER_CHARS - 9


@pytest.mark.parametrize(
    "value",
    [
        'Digest realm="r",nonce="n",uri="u",response="r"',  # no username
        'Digest username="u",realm="r",nonce="n",uri="u",response="r",qop=auth,cnonce="c"',
        'Digest username="u",realm="r",nonce="n",uri="u",response="r",qop=auth,nc=1,',
        'Digest username="u",realm="r",nonce="n",uri="u",response="r",qop=auth,nc=x,cnonce=c',
        'Digest username="u",realm="r",nonce="n",uri="u",response="r",qop=auth,nc=123456789,'
        "cnonce=c",
    ],
)
def test_credentials_reject_incomplete(value: str) -> None:
    with pytest.raises(DigestParseError):
        DigestCredentials.from_header(value)


@given(st.text(max_size=300))
def test_parse_random_text_raises_only_parse_error(text: str) -> None:
    for value in (text, "Digest " + text):
        try:
            params = parse_digest_params(value)
        except DigestParseError:
            continue
        assert params and all(k == k.lower() for k in params)


_KEY = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=10)
_VALUE = st.text(st.characters(codec="utf-8", exclude_characters="\x7f"), max_size=30).filter(
    lambda v: all(c == "\t" or ord(c) >= 0x20 for c in v)
)


@given(st.dictionaries(_KEY, _VALUE, min_size=1, max_size=MAX_PARAMS))
def test_parse_inverts_quoting(params: dict[str, str]) -> None:
    quoted = ", ".join(
        '{}="{}"'.format(k, v.replace("\\", "\\\\").replace('"', '\\"')) for k, v in params.items()
    )
    assert parse_digest_params("Digest " + quoted) == params


# --- nonces --------------------------------------------------------------------------------


def test_nonce_valid_stale_forged() -> None:
    nonces = NonceManager(SECRET, lifetime=300.0)
    nonce = nonces.issue(0.0)
    assert len(nonce) == 48 and nonce == nonce.lower()
    assert nonces.check(nonce, 0.0) is NonceState.VALID
    assert nonces.check(nonce, 299.0) is NonceState.VALID
    assert nonces.check(nonce, 301.0) is NonceState.STALE
    flipped = nonce[:-1] + ("0" if nonce[-1] != "0" else "1")
    assert nonces.check(flipped, 0.0) is NonceState.INVALID
    forged_time = "4059000000000000" + nonce[16:]  # issued_at rewritten to 100.0
    assert nonces.check(forged_time, 101.0) is NonceState.INVALID
    for garbage in ("", "9bd055", nonce.upper(), nonce + "00", " " + nonce[1:], "é" * 48):
        assert nonces.check(garbage, 0.0) is NonceState.INVALID


def test_nonce_restart_and_clock_epochs() -> None:
    old = NonceManager(SECRET).issue(1000.0)
    # After a restart the secret is new: the device's next REGISTER just gets a fresh 401.
    assert NonceManager(b"another secret, 32 bytes long..").check(old, 1001.0) is NonceState.INVALID
    # Same configured secret but the monotonic clock restarted (reboot): nonce from the future.
    assert NonceManager(SECRET).check(old, 5.0) is NonceState.INVALID
    assert NonceManager(SECRET).issue(0.0) != NonceManager(SECRET).issue(0.0)


def test_nonce_manager_arguments() -> None:
    with pytest.raises(ValueError):
        NonceManager(b"short")
    with pytest.raises(ValueError):
        NonceManager(SECRET, lifetime=0.0)
    with pytest.raises(ValueError):
        NonceManager(SECRET).issue(float("nan"))


# --- nonce counter -------------------------------------------------------------------------


def test_counter_requires_increasing_nc() -> None:
    counter = NonceCounter(lifetime=300.0)
    assert counter.accept("n", 1, 0.0)
    assert not counter.accept("n", 1, 1.0)  # replay
    assert counter.accept("n", 3, 2.0)  # gaps are fine
    assert not counter.accept("n", 2, 3.0)  # going back is not
    assert counter.accept("other", 1, 3.0)  # per nonce


def test_counter_expiry_and_bound() -> None:
    counter = NonceCounter(lifetime=300.0, max_entries=2)
    assert counter.accept("a", 5, 0.0)
    assert counter.accept("b", 5, 10.0)
    assert counter.accept("c", 5, 20.0)  # evicts "a", the oldest
    assert len(counter) == 2
    assert counter.accept("a", 1, 21.0)  # forgotten (documented limitation); evicts "b"
    assert not counter.accept("c", 5, 299.0)
    assert counter.accept("x", 1, 320.5)  # purges "c" (expired at 320), keeps "a" (321)
    assert len(counter) == 2
    assert not counter.accept("a", 1, 320.9)
    assert counter.accept("c", 1, 320.9)  # fresh entry after expiry


# --- verifier ------------------------------------------------------------------------------


def test_challenge_format() -> None:
    verifier = make_verifier()
    value = verifier.challenge(0.0)
    params = parse_digest_params(value)
    assert value == f'Digest realm="{REALM}",nonce="{params["nonce"]}",qop="auth",algorithm=MD5'
    assert parse_digest_params(verifier.challenge(0.0, stale=True))["stale"] == "true"


def test_verify_ok_replay_and_higher_nc() -> None:
    verifier = make_verifier()
    nonce = parse_digest_params(verifier.challenge(0.0))["nonce"]
    auth = device_auth(nonce)
    assert verifier.verify(auth, method="REGISTER", password=PASSWORD, now=1.0) is AuthResult.OK
    replay = verifier.verify(auth, method="REGISTER", password=PASSWORD, now=2.0)
    assert replay is AuthResult.REPLAY and replay.status == 401 and replay.stale
    auth2 = device_auth(nonce, nc="00000002")
    assert verifier.verify(auth2, method="REGISTER", password=PASSWORD, now=3.0) is AuthResult.OK


def test_verify_qopless_reuse_within_lifetime() -> None:
    verifier = make_verifier()
    nonce = parse_digest_params(verifier.challenge(0.0))["nonce"]
    auth = device_auth(nonce, nc=None)
    for now in (1.0, 60.0, 120.0):
        assert verifier.verify(auth, method="REGISTER", password=PASSWORD, now=now) is AuthResult.OK
    stale = verifier.verify(auth, method="REGISTER", password=PASSWORD, now=301.0)
    assert stale is AuthResult.STALE and stale.status == 401 and stale.stale


def test_verify_wrong_password_is_403() -> None:
    verifier = make_verifier()
    nonce = parse_digest_params(verifier.challenge(0.0))["nonce"]
    result = verifier.verify(device_auth(nonce), method="REGISTER", password="nope", now=1.0)
    assert result is AuthResult.BAD_RESPONSE and result.status == 403 and not result.stale
    # wrong digest on a stale nonce is still a wrong password, not a stale nonce
    late = verifier.verify(device_auth(nonce), method="REGISTER", password="nope", now=400.0)
    assert late is AuthResult.BAD_RESPONSE
    # a failed attempt does not consume the nc
    assert (
        verifier.verify(device_auth(nonce), method="REGISTER", password=PASSWORD, now=2.0)
        is AuthResult.OK
    )


@pytest.mark.parametrize("extra", ["", ",algorithm=MD5", ',algorithm="MD5"', ",algorithm=md5"])
def test_verify_md5_spellings(extra: str) -> None:
    verifier = make_verifier()
    nonce = parse_digest_params(verifier.challenge(0.0))["nonce"]
    auth = device_auth(nonce, extra=extra)
    assert verifier.verify(auth, method="REGISTER", password=PASSWORD, now=1.0) is AuthResult.OK


@pytest.mark.parametrize(
    "extra", [",algorithm=SHA-256", ",algorithm=MD5-sess", ",algorithm=AKAv1-MD5"]
)
def test_verify_unsupported_algorithm(extra: str) -> None:
    verifier = make_verifier()
    nonce = parse_digest_params(verifier.challenge(0.0))["nonce"]
    result = verifier.verify(
        device_auth(nonce, extra=extra), method="REGISTER", password=PASSWORD, now=1.0
    )
    assert result is AuthResult.UNSUPPORTED_ALGORITHM and result.status == 403


def test_verify_unsupported_qop() -> None:
    verifier = make_verifier()
    nonce = parse_digest_params(verifier.challenge(0.0))["nonce"]
    auth = device_auth(nonce).replace("qop=auth", "qop=auth-int")
    result = verifier.verify(auth, method="REGISTER", password=PASSWORD, now=1.0)
    assert result is AuthResult.UNSUPPORTED_ALGORITHM


def test_verify_bad_nonce_and_malformed() -> None:
    verifier = make_verifier()
    result = verifier.verify(GB_AUTHORIZATION, method="REGISTER", password=PASSWORD, now=1.0)
    assert result is AuthResult.BAD_NONCE and result.status == 401 and not result.stale
    old = parse_digest_params(make_verifier(b"previous process secret.").challenge(0.0))["nonce"]
    after_restart = verifier.verify(device_auth(old), method="REGISTER", password=PASSWORD, now=1.0)
    assert after_restart is AuthResult.BAD_NONCE
    for value in ("Digest garbage", "Basic dXNlcjpwYXNz", 'Digest username="u"'):
        result = verifier.verify(value, method="REGISTER", password=PASSWORD, now=1.0)
        assert result is AuthResult.MALFORMED and result.status == 400


def test_verify_interop_quirks() -> None:
    verifier = make_verifier()
    nonce = parse_digest_params(verifier.challenge(0.0))["nonce"]
    # sipp: uri is the server's ip:port, not the Request-URI; nc "1" is hashed as written;
    # the response hex arrives in upper case
    auth = device_auth(nonce, uri="sip:127.0.0.1:5060", nc="1")
    auth = re.sub(r'response="(\w+)"', lambda m: f'response="{m.group(1).upper()}"', auth)
    assert verifier.verify(auth, method="REGISTER", password=PASSWORD, now=1.0) is AuthResult.OK
    # nc "00000002" is numerically above "1": accepted on the same nonce
    auth = device_auth(nonce, nc="00000002")
    assert verifier.verify(auth, method="REGISTER", password=PASSWORD, now=2.0) is AuthResult.OK
    # an echoed realm different from ours is accepted when it verifies
    other = compute_response(**{**GB, "realm": "6209000000"}, nonce=nonce)
    value = (
        f'Digest username="{DEVICE}",realm="6209000000",nonce="{nonce}",'
        f'uri="{REQUEST_URI}",response="{other}"'
    )
    assert verifier.verify(value, method="REGISTER", password=PASSWORD, now=3.0) is AuthResult.OK


def test_verify_accepts_preparsed_credentials_for_password_lookup() -> None:
    verifier = make_verifier()
    nonce = parse_digest_params(verifier.challenge(0.0))["nonce"]
    creds = DigestCredentials.from_header(device_auth(nonce))
    assert creds.username == DEVICE  # registrar: From-user first, then this
    assert verifier.verify(creds, method="REGISTER", password=PASSWORD, now=1.0) is AuthResult.OK


def test_verifier_requires_counter_to_outlive_nonces() -> None:
    with pytest.raises(ValueError):
        DigestVerifier(REALM, NonceManager(SECRET, 600.0), NonceCounter(lifetime=300.0))


# --- client --------------------------------------------------------------------------------


def test_build_authorization_round_trip_with_qop() -> None:
    verifier = make_verifier()
    challenge = parse_digest_params(verifier.challenge(0.0))
    value = build_authorization(
        challenge,
        username=DEVICE,
        password=PASSWORD,
        method="REGISTER",
        uri=REQUEST_URI,
        cnonce="0a4f113b",
        nc=1,
    )
    creds = DigestCredentials.from_header(value)
    assert (creds.qop, creds.nc, creds.cnonce, creds.algorithm) == (
        "auth",
        "00000001",
        "0a4f113b",
        "MD5",
    )
    assert verifier.verify(value, method="REGISTER", password=PASSWORD, now=1.0) is AuthResult.OK


def test_build_authorization_round_trip_without_qop() -> None:
    verifier = make_verifier()
    nonce = parse_digest_params(verifier.challenge(0.0))["nonce"]
    challenge = parse_digest_params(f'Digest realm="{REALM}", nonce="{nonce}", opaque="o\\"p"')
    value = build_authorization(
        challenge,
        username=DEVICE,
        password=PASSWORD,
        method="REGISTER",
        uri=REQUEST_URI,
        cnonce="ignored",
        nc=1,
    )
    creds = DigestCredentials.from_header(value)
    assert (creds.qop, creds.nc, creds.cnonce, creds.algorithm, creds.opaque) == (
        None,
        None,
        None,
        None,
        'o"p',
    )
    assert creds.response == compute_response(**GB, nonce=nonce)
    assert verifier.verify(value, method="REGISTER", password=PASSWORD, now=1.0) is AuthResult.OK


def test_build_authorization_qop_choice_and_errors() -> None:
    kw: dict[str, Any] = dict(
        username="u", password="p", method="REGISTER", uri="sip:x", cnonce="c", nc=1
    )
    both = build_authorization({"realm": "r", "nonce": "n", "qop": "auth-int, auth"}, **kw)
    assert "qop=auth," in both
    with pytest.raises(UnsupportedDigestError):
        build_authorization({"realm": "r", "nonce": "n", "qop": "auth-int"}, **kw)
    with pytest.raises(UnsupportedDigestError):
        build_authorization({"realm": "r", "nonce": "n", "algorithm": "SHA-512"}, **kw)
    with pytest.raises(DigestParseError):
        build_authorization({"realm": "r"}, **kw)
    with pytest.raises(DigestError):
        build_authorization({"realm": "r", "nonce": "n"}, **{**kw, "username": "u\r\nVia: x"})
    with pytest.raises(DigestError):
        build_authorization({"realm": "r", "nonce": "n"}, **{**kw, "nc": 0})
    sha = build_authorization(
        {"realm": "r", "nonce": "n", "algorithm": "SHA-256", "qop": "auth"}, **kw
    )
    assert "algorithm=SHA-256" in sha and len(DigestCredentials.from_header(sha).response) == 64


_NAME = st.text(st.characters(codec="utf-8"), max_size=40).filter(
    lambda v: all(c == "\t" or (ord(c) >= 0x20 and c != "\x7f") for c in v)
)


@given(
    username=_NAME, password=st.text(st.characters(codec="utf-8"), max_size=40), qop=st.booleans()
)
def test_random_credentials_round_trip(username: str, password: str, qop: bool) -> None:
    verifier = make_verifier()
    challenge = parse_digest_params(verifier.challenge(0.0))
    if not qop:
        del challenge["qop"]
    value = build_authorization(
        challenge,
        username=username,
        password=password,
        method="REGISTER",
        uri=REQUEST_URI,
        cnonce="c0ffee",
        nc=7,
    )
    assert DigestCredentials.from_header(value).username == username
    assert verifier.verify(value, method="REGISTER", password=password, now=1.0) is AuthResult.OK
    wrong = verifier.verify(value, method="REGISTER", password=password + "x", now=1.0)
    assert wrong is AuthResult.BAD_RESPONSE
