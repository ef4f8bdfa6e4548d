"""Caller numbers → E.164: every form a PBX or a CRM writes, and what must stay unnormalised."""

from __future__ import annotations

import pytest

from poller.callers.numbers import normalise
from poller.config.checks import supported_region

RUSSIAN_MOBILE = [
    "89161234567",  # national, trunk prefix 8
    "+79161234567",
    "79161234567",  # country code without "+"
    "9161234567",  # national without trunk prefix
    "810 7 916 123 45 67",  # the Russian international prefix
    "8 (916) 123-45-67",
    "+7 916 123-45-67",
    "007 916 123 45 67",  # ITU "00" through a Russian trunk
    "tel:+79161234567",
    "<+79161234567>",
    "sip:+79161234567@trunk.example",
    "  89161234567  ",
]


@pytest.mark.parametrize("raw", RUSSIAN_MOBILE)
def test_every_written_form_of_a_russian_mobile_is_one_number(raw):
    assert normalise(raw, "RU") == "+79161234567"


@pytest.mark.parametrize(("raw", "region", "expected"), [
    ("84951234567", "RU", "+74951234567"),  # Moscow landline
    ("88005553535", "RU", "+78005553535"),  # toll free
    ("0049301234567", "RU", "+49301234567"),  # a German caller through a Russian trunk
    ("+4930123456", "RU", "+4930123456"),
    ("12125551234", "RU", "+12125551234"),  # E.164 without "+", not Russian
    ("0301234567", "DE", "+49301234567"),  # German trunk prefix 0
    ("0049 30 1234567", "DE", "+49301234567"),
    ("00 7 916 1234567", "DE", "+79161234567"),
    ("+79161234567", "DE", "+79161234567"),
    ("2125551234", "US", "+12125551234"),
    ("1 (212) 555-1234", "US", "+12125551234"),
    ("011 49 30 123456", "US", "+4930123456"),
    ("+79161234567", "", "+79161234567"),  # no region: only numbers with a country code
    ("+79161234567", "ru", "+79161234567"),
])
def test_other_regions_and_prefixes(raw, region, expected):
    assert normalise(raw, region) == expected


@pytest.mark.parametrize("raw", [
    None, "", "   ", "anonymous", "Anonymous", "unknown", "restricted", "Private1",
    "anonymous@anonymous.invalid", "+", "0", "abc", "s",
    "201", "1001", "20123",  # internal extensions: never a bogus country number
    "112",  # emergency short number
    "89161234567, 84951234567",  # two numbers in one cell
    "1-800-FLOWERS",  # letters: a vanity number is dialled, never sent as a caller ID
])
@pytest.mark.parametrize("region", ["RU", "DE", "US"])
def test_what_is_not_a_caller_number_stays_unnormalised(raw, region):
    assert normalise(raw, region) is None


@pytest.mark.parametrize("raw", ["9161234", "79161234567890"])
def test_a_russian_number_of_the_wrong_length_stays_unnormalised(raw):
    # in Germany's variable-length numbering both are valid numbers: validity is per region
    assert normalise(raw, "RU") is None


def test_national_numbers_without_a_region_stay_unnormalised():
    assert normalise("89161234567", "") is None


def test_supported_regions():
    assert supported_region("RU") and supported_region("de")
    assert not supported_region("XX") and not supported_region("")
