"""Geography from MaxMind's published test databases, and from databases built with
mmdb-writer to be swapped in while serving."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec
from mmdb_writer import MmdbF64, MmdbU16, MmdbU32, MMDBWriter
from netaddr import IPSet

from gateway.config.enrich import Geo, database_issue
from gateway.enrich.geo import GeoLookup

DATA = Path(__file__).parent / "data"
CITY = str(DATA / "GeoIP2-City-Test.mmdb")
COUNTRY = str(DATA / "GeoIP2-Country-Test.mmdb")
ASN = str(DATA / "GeoLite2-ASN-Test.mmdb")
BROKEN = str(DATA / "GeoIP2-City-Test-Broken-Double-Format.mmdb")


def member(lookup: GeoLookup, ip: str | None) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(bytes(lookup.member(ip)))
    return result


def build_city(path: Path, network: str, city: str, country: str) -> None:
    """A City-shaped database of one network, written and renamed into place the way
    geoipupdate replaces a file."""
    writer = MMDBWriter(
        ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City",
        languages=["en"], description={"en": "test"},
    )  # fmt: skip
    writer.insert_network(IPSet([network]), {
        "city": {"geoname_id": MmdbU32(1), "names": {"en": city}},
        "country": {"iso_code": country, "names": {"en": country}},
        "location": {"accuracy_radius": MmdbU16(5), "latitude": MmdbF64(1.23456),
                     "longitude": MmdbF64(-7.65432), "time_zone": "Etc/UTC"},
    })  # fmt: skip
    partial = path.with_suffix(".tmp")
    writer.to_db_file(str(partial))
    os.replace(partial, path)


def test_city_and_asn_fields_for_ipv4_and_ipv6() -> None:
    lookup = GeoLookup(Geo(city_db=CITY, asn_db=ASN))
    assert member(lookup, "81.2.69.142") == {
        "country": "GB", "country_name": "United Kingdom", "region": "ENG",
        "region_name": "England", "city": "London", "postal_code": None,
        "latitude": 51.5142, "longitude": -0.0931, "accuracy_radius": 10,
        "time_zone": "Europe/London", "asn": None, "as_org": None,
    }  # fmt: skip
    linkoping = member(lookup, "89.160.20.112")
    assert (linkoping["city"], linkoping["country"], linkoping["time_zone"]) == (
        "Linköping", "SE", "Europe/Stockholm",
    )  # fmt: skip
    assert (linkoping["asn"], linkoping["as_org"]) == (29518, "Bredband2 AB")
    san_diego = member(lookup, "2001:480:10::1")
    assert (san_diego["city"], san_diego["region"], san_diego["postal_code"]) == (
        "San Diego", "CA", "92101",
    )  # fmt: skip
    assert member(lookup, "1.128.0.1")["as_org"] == "Telstra Pty Ltd"


def test_ipv4_mapped_addresses_are_looked_up_as_ipv4() -> None:
    lookup = GeoLookup(Geo(city_db=CITY))
    assert member(lookup, "::ffff:81.2.69.142")["city"] == "London"


def test_unknown_private_and_malformed_addresses_have_every_field_null() -> None:
    lookup = GeoLookup(Geo(city_db=CITY, asn_db=ASN))
    nothing = dict.fromkeys(member(lookup, "81.2.69.142"))
    for ip in ("127.0.0.1", "10.1.2.3", "::1", "not-an-ip", "", None):
        assert member(lookup, ip) == nothing, ip


def test_a_country_database_gives_the_country_alone() -> None:
    found = member(GeoLookup(Geo(city_db=COUNTRY)), "81.2.69.142")
    assert (found["country"], found["city"], found["latitude"]) == ("GB", None, None)


def test_coordinates_are_rounded_when_asked() -> None:
    found = member(GeoLookup(Geo(city_db=CITY, coordinate_decimals=1)), "81.2.69.142")
    assert (found["latitude"], found["longitude"]) == (51.5, -0.1)


def test_a_replaced_database_is_read_at_the_next_check_and_the_results_forgotten(
    tmp_path: Path,
) -> None:
    path = tmp_path / "city.mmdb"
    build_city(path, "192.0.2.0/24", "Old Town", "AA")
    now = [0.0]
    reports: list[tuple[str, str]] = []
    lookup = GeoLookup(
        Geo(city_db=str(path), check_interval=60),
        lambda p, outcome: reports.append((p, outcome)),
        clock=lambda: now[0],
    )
    assert member(lookup, "192.0.2.1")["city"] == "Old Town"
    build_city(path, "192.0.2.0/24", "New Town", "BB")
    now[0] = 59.9
    assert member(lookup, "192.0.2.1")["city"] == "Old Town"  # not due: kept
    now[0] = 60.0
    assert member(lookup, "192.0.2.1")["city"] == "New Town"
    assert (member(lookup, "192.0.2.1")["latitude"], reports) == (
        1.23456, [(str(path), "reloaded")],
    )  # fmt: skip


def test_a_replacement_that_cannot_be_read_leaves_the_old_database_serving(
    tmp_path: Path,
) -> None:
    path = tmp_path / "city.mmdb"
    build_city(path, "192.0.2.0/24", "Old Town", "AA")
    now = [0.0]
    reports: list[tuple[str, str]] = []
    lookup = GeoLookup(
        Geo(city_db=str(path), check_interval=1),
        lambda p, outcome: reports.append((p, outcome)),
        clock=lambda: now[0],
    )
    partial = tmp_path / "partial"
    partial.write_bytes(b"\x00" * 4096)  # a download cut short
    os.replace(partial, path)
    now[0] = 5
    assert member(lookup, "192.0.2.1")["city"] == "Old Town"
    now[0] = 10
    assert member(lookup, "192.0.2.7")["city"] == "Old Town"
    assert reports == [(str(path), "reload_failed")]  # once per replacement, not per check
    build_city(path, "192.0.2.0/24", "Mended", "CC")
    now[0] = 15
    assert member(lookup, "192.0.2.1")["city"] == "Mended"


def test_results_are_kept_encoded_per_address() -> None:
    lookup = GeoLookup(Geo(city_db=CITY, cache_size=16))
    first = lookup.member("81.2.69.142")
    assert isinstance(first, msgspec.Raw) and lookup.member("81.2.69.142") is first


def test_database_problems_name_the_file_and_what_is_wrong(tmp_path: Path) -> None:
    assert database_issue(CITY, "city_db") is None
    assert database_issue(ASN, "asn_db") is None
    missing = str(tmp_path / "nope.mmdb")
    assert database_issue(missing, "city_db") == f"{missing}: no such file"
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    assert (database_issue(str(text), "city_db") or "").startswith(
        f"{text}: not a MaxMind DB file ("
    )
    assert database_issue(ASN, "city_db") == (
        f"{ASN}: a GeoLite2-ASN database, not a City or Country one"
    )
    assert database_issue(CITY, "asn_db") == (
        f"{CITY}: a GeoIP2-City database, not an ASN or ISP one"
    )


def test_a_corrupt_record_is_nothing_known_and_reported_not_an_error() -> None:
    """MaxMind's broken test database opens, and its first records read; some lookups
    hit data that cannot be decoded."""
    reports: list[tuple[str, str]] = []
    lookup = GeoLookup(
        Geo(city_db=BROKEN, asn_db=ASN), lambda p, outcome: reports.append((p, outcome))
    )
    found = member(lookup, "89.160.20.112")
    assert (found["city"], found["asn"]) == (None, 29518)  # the ASN database still answers
    assert reports == [(BROKEN, "bad_record")]
