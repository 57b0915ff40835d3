"""The rule PII detectors of the capability registry (``pii_rules``): one test per entity family."""

from __future__ import annotations

import pytest

from apwa_spark.tools import find_pii, iban_ok, luhn_ok


def found(text: str, entities: list[str]) -> list[tuple[str, str]]:
    return [(s.entity, s.text) for s in find_pii(text, entities)]


def test_card_numbers_need_a_valid_luhn_checksum():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert found("Card 4111 1111 1111 1111 and 4111111111111112.", ["card_number"]) == [("card_number", "4111 1111 1111 1111")]
    assert found("Amex 378282246310005 was used.", ["card_number"]) == [("card_number", "378282246310005")]


def test_ibans_need_a_valid_mod_97_check_with_or_without_spaces():
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")
    text = "Pay GB82 WEST 1234 5698 7654 32 or DE89370400440532013000, not GB82WEST12345698765433."
    assert found(text, ["iban"]) == [("iban", "GB82 WEST 1234 5698 7654 32"), ("iban", "DE89370400440532013000")]


@pytest.mark.parametrize("value", ["123-45-6789", "QQ 12 34 56 C", "ZZ123456T", "1 84 12 76 451 089 46", "184127645108946",
                                   "RSSMRA85T10A562S", "12 345 678 901"])
def test_national_id_formats_of_five_countries(value):
    assert found(f"ID on file: {value}.", ["national_id"]) == [("id_number", value)]


@pytest.mark.parametrize("value", ["03/04/1985", "04.03.1985", "1985-03-04", "4 March 1985", "March 4, 1985"])
def test_dates_of_birth_numeric_and_with_month_names(value):
    assert found(f"Born on {value}.", ["date_of_birth"]) == [("date", value)]


@pytest.mark.parametrize("value", [
    "3662 Dunn Squares, Christopherhaven, CT 21957",
    "7104 Cooper Underpass Apt. 414, New Ryan, AK 30041",
    "Studio 01k, Josh Tunnel, Port Maxfort, S6G 2QE",
    "97 Lynda Bridge, Smithbury, W88 6FJ",
    "Vogtallee 22-15, 73464 Ochsenfurt",
    "Sauerplatz 30/64, 39441 Neunburg vorm Wald",
    "86, chemin Pereira, 05239 Carpentier-la-Forêt",
    "boulevard Claire Duval, 90967 Reynaud",
])
def test_postal_addresses_end_at_the_town_not_the_sentence(value):
    assert found(f"They live at {value}. Call them tomorrow.", ["address"]) == [("address", value)]


def test_an_address_after_a_date_in_the_same_text_is_still_found():
    text = "Born 03/04/1985. They live at 3662 Dunn Squares, Christopherhaven, CT 21957."
    assert found(text, ["date", "address"]) == [("date", "03/04/1985"), ("address", "3662 Dunn Squares, Christopherhaven, CT 21957")]


@pytest.mark.parametrize("value", ["+1-622-901-8684x83396", "+44(0)131 4960707", "(05748) 906828", "+33 (0)5 31 82 88 36",
                                   "0750704999", "390.332.8921x840"])
def test_phone_formats_with_country_codes_trunk_prefixes_and_extensions(value):
    assert found(f"Call {value} today.", ["phone"]) == [("phone", value)]


def test_short_numbers_are_not_phones():
    assert found("Room 12, floor 3, postcode 28657, order 4471.", ["phone"]) == []


def test_usernames_need_a_cue_and_mark_only_the_name():
    text = "Username: jsmith_42. They logged in as maria.lopez yesterday. Ping @dev_ops. The last login came from home."
    assert found(text, ["username"]) == [("username", "jsmith_42"), ("username", "maria.lopez"), ("username", "dev_ops")]
    assert found("Write to a.b@example.org.", ["username", "email"]) == [("email", "a.b@example.org")]


def test_urls_ips_and_emails_drop_trailing_punctuation():
    text = "See https://example.com/u/jsmith. From 10.0.0.1 and fe80:0:0:0:202:b3ff:fe1e:8329, mail a@b.co."
    assert found(text, ["url", "ip_address", "email"]) == [
        ("url", "https://example.com/u/jsmith"), ("ip_address", "10.0.0.1"),
        ("ip_address", "fe80:0:0:0:202:b3ff:fe1e:8329"), ("email", "a@b.co")]


def test_person_has_no_rule_and_unknown_entities_find_nothing():
    assert found("Maria Lopez, 123-45-6789", ["person"]) == []
    assert found("Maria Lopez, 123-45-6789", ["shoe_size"]) == []


def test_name_candidates_skip_sentence_case_weekdays_and_taken_spans():
    from apwa_spark.tools import name_candidates

    text = "Megan called on Monday. Later Dr. Hans von Berg met Megan at 12 Oak Street, Springfield, IL 62704."
    taken = find_pii(text, ["address"])
    assert [s.text for s in taken] == ["12 Oak Street, Springfield, IL 62704"]
    # "Later" and "Megan" open sentences; only Megan is also capitalized mid-sentence
    assert name_candidates(text, taken) == ["Megan", "Dr. Hans von Berg"]
    assert "Springfield" in name_candidates(text)  # without the taken spans the town is a candidate


def test_a_run_at_a_sentence_start_is_offered_with_and_without_its_first_word():
    from apwa_spark.tools import name_candidates

    assert name_candidates("Customer Suzanne Woodward called. Frau Anna Weber-Schmidt wrote.") == [
        "Customer Suzanne Woodward", "Suzanne Woodward", "Frau Anna Weber-Schmidt", "Anna Weber-Schmidt"]
    assert name_candidates("please call maria lopez back") == []  # lower-case names are out of reach
