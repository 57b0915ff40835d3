"""Seeded synthetic PII texts with gold spans, for the PII redaction benchmark (APWA's PII workload).

Each text is a short customer-service style note in English whose personal data come from Faker in
one of four locales (US, UK, German, French): names, e-mails and phones, postal addresses, national
id numbers and IBANs are the locale's own formats. Every entity value is placed by the generator,
so its span is exact (``text[start:end] == value``).

Entity types (11): ``person``, ``email``, ``phone``, ``address``, ``date_of_birth``,
``national_id`` (US SSN, UK National Insurance number, French NIR, German Steuer-ID),
``iban``, ``card_number`` (Luhn-valid, plain or in groups of four), ``ip_address`` (IPv4, some IPv6),
``username``, ``url``.

A text has the person, then 4 to 7 of the other types in a random order, and the person's name
again in about a third of the texts (a sign-off). Military APO/FPO addresses (Faker en_US) are
left out. The same ``seed`` and ``rows`` always give the same texts.

    from pii_texts import generate
    rows = generate(50, seed=0)   # list[PiiText]
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from faker import Faker

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR")
ENTITY_TYPES = ("person", "email", "phone", "address", "date_of_birth", "national_id", "iban", "card_number",
                "ip_address", "username", "url")

#: sentence frames per entity type; ``{v}`` is the value. Usernames come after a cue word, as in real
#: account notes (``username:``, ``logged in as``, an ``@handle``).
FRAMES: dict[str, tuple[str, ...]] = {
    "person": ("Customer {v} contacted us on Monday.", "This note concerns {v}.", "Ticket opened for {v} by the front desk.",
               "The account holder is {v}.", "We spoke with {v} this morning."),
    "email": ("Their e-mail address is {v}.", "Reply to {v} when the refund is approved.", "Contact e-mail: {v}."),
    "phone": ("They can be reached on {v}.", "Phone: {v}.", "Call back on {v} after lunch."),
    "address": ("They live at {v}.", "Postal address: {v}.", "Ship the replacement to {v}."),
    "date_of_birth": ("Date of birth: {v}.", "They were born on {v}.", "DOB {v} (verified)."),
    "national_id": ("National id number: {v}.", "ID on file: {v}.", "They gave their social security number as {v}."),
    "iban": ("Refunds go to IBAN {v}.", "Bank account (IBAN): {v}.", "The direct debit uses {v}."),
    "card_number": ("The card on file is {v}.", "Card number {v} was charged twice.", "Payment card: {v}."),
    "ip_address": ("The last login came from {v}.", "Requests from IP {v} were blocked.", "Device address {v} is trusted."),
    "username": ("Username: {v}.", "They logged in as {v} yesterday.", "Their forum handle is @{v}.", "Login: {v} (locked after three failed attempts)."),
    "url": ("Their profile is at {v} for reference.", "See {v} for the shared document.", "Homepage: {v} (personal)."),
}
SIGN_OFFS = ("Follow-up owner: {v}.", "Please confirm with {v} before closing.", "Signed on behalf of {v}.")

_DATE_FORMATS = {
    "en_US": ("%m/%d/%Y", "%B %d, %Y", "%Y-%m-%d"),
    "en_GB": ("%d/%m/%Y", "%d %B %Y", "%Y-%m-%d"),
    "de_DE": ("%d.%m.%Y", "%Y-%m-%d"),
    "fr_FR": ("%d/%m/%Y", "%Y-%m-%d"),
}


@dataclass(frozen=True)
class GoldSpan:
    """``text[start:end] == value`` is an entity of type ``entity``."""

    start: int
    end: int
    entity: str
    value: str


@dataclass(frozen=True)
class PiiText:
    """One generated text with its gold spans (in text order)."""

    id: int
    locale: str
    text: str
    spans: tuple[GoldSpan, ...] = field(default_factory=tuple)


def _grouped(value: str, size: int = 4) -> str:
    return " ".join(value[i:i + size] for i in range(0, len(value), size))


def _value(entity: str, fake: Faker, locale: str, rnd: random.Random) -> str:
    if entity == "person":
        return f"{fake.first_name()} {fake.last_name()}"
    if entity == "email":
        return fake.email()
    if entity == "phone":
        return fake.phone_number()
    if entity == "address":
        while True:
            address = fake.address().replace("\n", ", ")
            if not address.split()[0] in ("Unit", "PSC", "USNS", "USNV", "USCGC", "USS"):
                return address
    if entity == "date_of_birth":
        return fake.date_of_birth(minimum_age=18, maximum_age=90).strftime(rnd.choice(_DATE_FORMATS[locale]))
    if entity == "national_id":
        if locale == "de_DE":  # Steuer-ID: 11 digits, first not 0, printed 2-3-3-3
            return fake.numerify("%# ### ### ###")
        return fake.ssn()
    if entity == "iban":
        iban = fake.iban()
        return _grouped(iban) if rnd.random() < 0.5 else iban
    if entity == "card_number":
        card = fake.credit_card_number()
        return _grouped(card) if len(card) == 16 and rnd.random() < 0.5 else card
    if entity == "ip_address":
        return fake.ipv6() if rnd.random() < 0.1 else fake.ipv4_public()
    if entity == "username":
        return fake.user_name()
    if entity == "url":
        url = fake.url()
        return url + fake.user_name() if rnd.random() < 0.5 else url
    raise ValueError(f"unknown entity type {entity!r}; expected one of {ENTITY_TYPES}")


def generate(rows: int, seed: int = 0) -> list[PiiText]:
    """``rows`` texts, the same for the same ``seed``; locales in turn (row ``i`` uses ``LOCALES[i % 4]``)."""
    fakers = {}
    for i, locale in enumerate(LOCALES):
        fakers[locale] = Faker(locale)
        fakers[locale].seed_instance(seed * 1000 + i)
    rnd = random.Random(seed)
    out = []
    for row in range(rows):
        locale = LOCALES[row % len(LOCALES)]
        fake = fakers[locale]
        person = _value("person", fake, locale, rnd)
        others = rnd.sample(ENTITY_TYPES[1:], rnd.randint(4, 7))
        parts = [("person", rnd.choice(FRAMES["person"]), person)]
        parts += [(e, rnd.choice(FRAMES[e]), _value(e, fake, locale, rnd)) for e in others]
        if rnd.random() < 0.33:
            parts.append(("person", rnd.choice(SIGN_OFFS), person))
        text, spans = "", []
        for entity, frame, value in parts:
            prefix, suffix = frame.split("{v}")
            start = len(text) + len(prefix)
            text += prefix + value + suffix + " "
            spans.append(GoldSpan(start, start + len(value), entity, value))
        out.append(PiiText(row, locale, text.rstrip(), tuple(spans)))
    return out
