"""Norwegian person identifiers (kith-messaging.md §9): fødselsnummer, D-number, H-number, synthetic.

An 11-digit number DDMMYY + three individual digits + two mod-11 control digits. D-numbers add 40 to the
day, H-numbers (hjelpenummer) 40 to the month, and Skatteetaten's synthetic test persons (Tenor) 80 to the
month; the control digits are computed the same way for all of them.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["NationalIdKind", "classify", "control_digits", "is_valid"]

_W1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_W2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


class NationalIdKind(Enum):
    FNR = "FNR"
    DNR = "DNR"
    HNR = "HNR"
    SYNTHETIC = "SYNTHETIC"


def _control(digits: list[int], weights: tuple[int, ...]) -> int | None:
    remainder = 11 - sum(d * w for d, w in zip(digits, weights, strict=True)) % 11
    if remainder == 11:
        return 0
    return None if remainder == 10 else remainder


def control_digits(first_nine: str) -> str | None:
    """The two control digits for nine leading digits, or None when no valid number has them."""
    digits = [int(c) for c in first_nine]
    k1 = _control(digits, _W1)
    if k1 is None:
        return None
    k2 = _control([*digits, k1], _W2)
    return None if k2 is None else f"{k1}{k2}"


def is_valid(number: str) -> bool:
    """Eleven digits whose control digits check out."""
    return len(number) == 11 and number.isdigit() and control_digits(number[:9]) == number[9:]


def classify(number: str) -> NationalIdKind | None:
    """What kind of identifier an 11-digit number is, judged by its day and month fields."""
    if not is_valid(number):
        return None
    day, month = int(number[0:2]), int(number[2:4])
    if month > 80:
        return NationalIdKind.SYNTHETIC
    if month > 40:
        return NationalIdKind.HNR
    if day > 40:
        return NationalIdKind.DNR
    return NationalIdKind.FNR
