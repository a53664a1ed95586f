"""Edge node (CPython on a Raspberry Pi or phone).

`sources/` live sources and the sample types, `importers/` export files, `features/` samples to
epoch features and a night's figures (audio and MFCC in `features/audio.py`), `store/` the
only door to the edge database, `sync/` the links to the cloud and the desk clocks, `node/`
what runs the node (configuration, live node, local Nightscout, replay), `cli.py` its commands.
"""
