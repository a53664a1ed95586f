"""File importers of the edge node (`nightlink edge import`).

`cgm_csv.py` Dexcom Clarity and LibreView CSV exports, `wearables.py` Apple Health
`export.xml` and Garmin/Fitbit FIT files, `importer.py` any of them into the edge store.
"""
