"""Caller numbers as the PBX wrote them → E.164, with the `phonenumbers` library.

What arrives in cdr `src`/`cnum`: `+79161234567`, `79161234567`, `89161234567` (the national
trunk prefix), `9161234567`, `810 7 916 123 45 67` (an international prefix), punctuation such
as `8 (916) 123-45-67`, `anonymous`/`Unknown`/`restricted`, an empty string, or a short internal
extension (`201`) when an internal call slips through. The directory side holds the same zoo.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

# A caller ID number is digits and punctuation. Letters are refused before phonenumbers sees
# them: it reads letters as a keypad vanity number ("1-800-FLOWERS"), which no PBX sends as a
# caller's number, so "Private1" or "Unknown 7" must not turn into digits.
_DIALLABLE = re.compile(r"^\+?[\d\s().\-/]+$")
# "tel:" URIs and "<+7916...>" as some trunks put them into the caller ID number
_WRAPPING = re.compile(r"^(?:tel:|sip:)?<?\s*([^@>;]*)[@>;]?.*$", re.IGNORECASE)


def normalise(raw: str | None, region: str) -> str | None:
    """The E.164 form of a caller number (`+79161234567`), or None when it is not one.

    `region` ("RU") reads numbers written without a country code; "" reads only numbers that
    carry one (`+…`). None for anonymous, empty and unparsable numbers and for short internal
    extensions.
    """
    if raw is None:
        return None
    return _normalise(raw.strip(), region.upper())


@lru_cache(maxsize=4096)  # one run sees the same few callers many times (legs, folding)
def _normalise(raw: str, region: str) -> str | None:
    text = _unwrap(raw)
    if not text or not _DIALLABLE.match(text):
        return None
    digits = re.sub(r"\D", "", text)
    for candidate, default in _readings(text, digits, region):
        number = _valid(candidate, default)
        if number is not None:
            return number
    return None


def _unwrap(raw: str) -> str:
    match = _WRAPPING.match(raw)
    return match.group(1).strip() if match else raw


def _readings(text: str, digits: str, region: str) -> list[tuple[str, str | None]]:
    """The ways to read a number, most likely first; the first valid one wins.

    1. As written, in the configured region: phonenumbers strips the region's own trunk prefix
       (8 in Russia, 0 in Germany) and international prefix (810 in Russia, 00 in Germany, 011
       in the US) and adds the country code where none is written.
    2. "00" + country code: the ITU prefix used by most of the world and by many trunks even
       where the national one differs (a Russian trunk handing over `0049301234567`).
    3. The digits as a full international number without "+": trunks that send E.164 without
       the plus (`4930123456` to a US PBX). Tried last, so a national reading always wins
       where both are valid numbers.
    """
    readings: list[tuple[str, str | None]] = [(text, region or None)]
    if text.startswith("+"):
        return readings
    if digits.startswith("00"):
        readings.append(("+" + digits[2:], None))
    readings.append(("+" + digits, None))
    return readings


def _valid(text: str, region: str | None) -> str | None:
    # is_valid_number, not is_possible_number: "possible" only checks the length, and in
    # regions with variable-length numbering it accepts an internal extension — "201" read in
    # Germany is a possible +49201, in Russia a 7-digit local number is "possible" too. A bogus
    # E.164 would match the wrong caller and fold unrelated calls, whereas a number that
    # stays unnormalised only stays unmatched. "Valid" checks the number against the region's
    # allocated ranges (the metadata ships with phonenumbers; upgrading it learns new ranges).
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)
