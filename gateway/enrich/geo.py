"""Geography and network from MaxMind-format databases (GeoIP2/GeoLite2 City or Country,
and ASN) the user supplies, read by maxminddb's C extension from a shared mmap.

A City record decodes in about 14 µs (every language's names), so each address's member
is kept, encoded. Every ``check_interval`` seconds a lookup looks at the file's identity
(inode, size, modification time); a replaced file (geoipupdate writes a new one and
renames it over the old) is opened, checked and swapped in, and the kept results are
forgotten. A replacement that cannot be read leaves the old database serving.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.bounded import Bounded
from gateway.config.enrich import open_reader

if TYPE_CHECKING:  # the config imports this module for its checks
    from gateway.config.enrich import Geo

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
FIELDS = ("country", "country_name", "region", "region_name", "city", "postal_code",
          "latitude", "longitude", "accuracy_radius", "time_zone", "asn", "as_org")  # fmt: skip


class Database:
    """One database file, reopened when it is replaced."""

    def __init__(self, path: str, report: Callable[[str, str], None]) -> None:
        self.path = path
        self._report = report  # (database path, "reloaded" | "reload_failed")
        self.reader = open_reader(path)
        self._identity = _identity(path)

    def get(self, ip: str) -> Any:
        return self.reader.get(ip)

    def check(self) -> bool:
        """Swap in the file at ``path`` if it is not the one open; whether it did."""
        identity = _identity(self.path)
        if identity is None or identity == self._identity:
            return False
        try:
            reader = open_reader(self.path)
        except (OSError, ValueError, RuntimeError) as exc:
            log.error("geo database %s was replaced by one that cannot be read (%s); "
                      "still serving the previous one", self.path, exc)  # fmt: skip
            self._identity = identity  # reported once per replacement
            self._report(self.path, "reload_failed")
            return False
        old, self.reader, self._identity = self.reader, reader, identity
        old.close()  # lookups are synchronous calls on this thread: none is in flight
        log.info("geo database %s reloaded", self.path)
        self._report(self.path, "reloaded")
        return True

    def close(self) -> None:
        self.reader.close()


def _identity(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class GeoLookup:
    """``member(ip)``: the envelope's ``geo`` member for an address, encoded."""

    def __init__(
        self,
        config: Geo,
        report: Callable[[str, str], None] = lambda path, outcome: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        self._report = report
        self.city = Database(config.city_db, report) if config.city_db else None
        self.asn = Database(config.asn_db, report) if config.asn_db else None
        self._cache: Bounded[str, msgspec.Raw] = Bounded(config.cache_size)
        self._countries: Bounded[str, str | None] = Bounded(config.cache_size)
        self._next_check = clock() + config.check_interval
        self.unknown = msgspec.Raw(_encode(dict.fromkeys(FIELDS)))

    def member(self, ip: str | None) -> msgspec.Raw:
        if self._clock() >= self._next_check:
            self.check()
        if ip is None:
            return self.unknown
        found = self._cache.get(ip)
        if found is None:
            found = msgspec.Raw(_encode(self.fields(ip)))
            self._cache.put(ip, found)
        return found

    def country(self, ip: str | None) -> str | None:
        """The ISO country of an address (experiments target by it), kept per address."""
        if ip is None:
            return None
        found = self._countries.get(ip, "")
        if found == "":
            found = self.fields(ip)["country"]
            self._countries.put(ip, found)
        return found

    def check(self) -> None:
        """Swap in replaced files; what was kept from the old ones is forgotten."""
        self._next_check = self._clock() + self.config.check_interval
        swapped = [database.check() for database in (self.city, self.asn) if database]
        if any(swapped):
            self._cache.clear()
            self._countries.clear()

    def fields(self, ip: str) -> dict[str, Any]:
        fields: dict[str, Any] = dict.fromkeys(FIELDS)
        address = _unmapped(ip)
        try:
            city = self._get(self.city, address)
            network = self._get(self.asn, address)
        except ValueError:  # not an address
            return fields
        if city:
            _city_fields(fields, city, self.config.coordinate_decimals)
        if network:
            fields["asn"] = network.get("autonomous_system_number")
            fields["as_org"] = network.get("autonomous_system_organization")
        return fields

    def _get(self, database: Database | None, address: str) -> Any:
        if database is None:
            return None
        try:
            return database.get(address)
        except RuntimeError as exc:  # maxminddb's InvalidDatabaseError: a corrupt record
            log.error("geo database %s: %s", database.path, exc)
            self._report(database.path, "bad_record")
            return None

    def close(self) -> None:
        for database in (self.city, self.asn):
            if database is not None:
                database.close()


def _city_fields(fields: dict[str, Any], record: dict[str, Any], decimals: int | None) -> None:
    country = record.get("country") or {}
    fields["country"] = country.get("iso_code")
    fields["country_name"] = (country.get("names") or {}).get("en")
    subdivisions = record.get("subdivisions") or ()
    if subdivisions:
        fields["region"] = subdivisions[0].get("iso_code")
        fields["region_name"] = (subdivisions[0].get("names") or {}).get("en")
    fields["city"] = ((record.get("city") or {}).get("names") or {}).get("en")
    fields["postal_code"] = (record.get("postal") or {}).get("code")
    location = record.get("location") or {}
    latitude, longitude = location.get("latitude"), location.get("longitude")
    if decimals is not None and latitude is not None and longitude is not None:
        latitude, longitude = round(latitude, decimals), round(longitude, decimals)
    fields["latitude"], fields["longitude"] = latitude, longitude
    fields["accuracy_radius"] = location.get("accuracy_radius")
    fields["time_zone"] = location.get("time_zone")
    traits = record.get("traits") or {}  # Enterprise and ISP-style records carry these
    if "autonomous_system_number" in traits:
        fields["asn"] = traits["autonomous_system_number"]
        fields["as_org"] = traits.get("autonomous_system_organization")


def _unmapped(ip: str) -> str:
    """An IPv4-mapped IPv6 address (what dual-stack sockets report) as its IPv4 form:
    databases built without MaxMind's aliases would not find it."""
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip
