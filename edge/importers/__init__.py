"""File importers of the edge node (`nightlink edge import`).

`cgm_csv.py` Dexcom Clarity and LibreView CSV exports, `carelink.py` Medtronic CareLink CSV,
`nightscout_json.py` Nightscout entries, `wearables.py` Apple Health `export.xml` and
Garmin/Fitbit FIT files; `common.py` what the CGM readers share, `localtime.py` device
timestamps and daylight saving, `sniff.py` which export a file is, `importer.py` any of them
into the edge store. Formats, rules and sources: docs/importers.md.
"""
