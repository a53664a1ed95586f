"""Stored text in a spreadsheet file (CSV, TSV): shown as text, never run as a formula."""

# What a spreadsheet reads as the start of a formula (OWASP, "CSV injection"): a tab or a
# carriage return before one is skipped by some, so they count too.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value: str) -> str:
    """value, with an apostrophe before it when it starts like a formula: a note stored as
    `=HYPERLINK("http://…?"&A2, "Open")` by anyone with an upload secret would otherwise run
    when the patient or their doctor opens the export. Spreadsheets show the apostrophe's
    cell as the text after it. Numbers are never passed here: `-17.6` stays a number."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value
