#!/usr/bin/python3
"""Print the observed dates of the seven SPEC holidays for 2000-2100, from python-holidays.

This is the independent source that `sla::calendar`'s test `us_holidays_match_python_holidays`
compares `us_holidays()` against. The output is committed as fixtures/holidays/us-2000-2100.txt.

Regenerate (Debian's package; PyPI is not needed):

    apt-get install -y python3-holidays
    /usr/bin/python3 scripts/check-holidays.py > fixtures/holidays/us-2000-2100.txt

Output: one line per day off, `YYYY-MM-DD Name`, sorted, for every date from 2000-01-01 to
2100-12-31 inclusive (so 1999-12-31, New Year's Day 2000 observed, is left out, and 2100-12-31,
New Year's Day 2101 observed, is in).

How python-holidays' rules are turned into days off:
- A holiday on a weekend appears twice: the actual date (Saturday/Sunday) and "... (Observed)"
  on the weekday off. Only the weekday off is printed: the weekend date is no day off.
- New Year's Day on a Saturday: python-holidays (0.10) files the observed Friday, Dec 31, both
  under the new year (adding it to the previous year without expanding it) and under the old year
  ("Dec 31 is a Friday"). Either way it is one date; the date-range filter above decides whether
  it is printed, so the year it was filed under does not matter.
- The day after Thanksgiving is no federal holiday, so it comes from a state that keeps it
  (North Carolina: "Day After Thanksgiving", since 1975). Only the seven names below are read
  from that state's list; its other holidays are ignored.
- Names are mapped to the names `us_holidays()` uses, so the two lists compare line by line.
"""

import datetime
import sys

import holidays

FIRST = datetime.date(2000, 1, 1)
LAST = datetime.date(2100, 12, 31)

# python-holidays name -> our name
NAMES = {
    "New Year's Day": "New Year's Day",
    "Memorial Day": "Memorial Day",
    "Independence Day": "Independence Day",
    "Labor Day": "Labor Day",
    "Thanksgiving": "Thanksgiving Day",
    "Day After Thanksgiving": "Day after Thanksgiving",
    "Christmas Day": "Christmas Day",
}
OBSERVED = " (Observed)"


def main():
    # One year either side, so observed days that cross a year end are generated.
    table = holidays.US(state="NC", years=range(FIRST.year - 1, LAST.year + 2), observed=True)
    days_off = set()
    for day in sorted(table.keys()):
        if not FIRST <= day <= LAST:
            continue
        for name in table.get_list(day):
            observed = name.endswith(OBSERVED)
            base = name[: -len(OBSERVED)] if observed else name
            if base not in NAMES:
                continue
            if not observed and day.weekday() >= 5:
                continue  # the weekend date itself; its "(Observed)" weekday is the day off
            days_off.add((day, NAMES[base]))
    for day, name in sorted(days_off):
        print(f"{day.isoformat()} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
