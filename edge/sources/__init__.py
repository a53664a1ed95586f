"""Live sources of the edge node: each yields timestamped samples (`samples.py`).

`ble.py` wearables over Bluetooth LE, `room_i2c.py` room sensors over I2C, `microphone.py`
bedroom audio aligned on the epoch grid, `cgm.py` glucose from Nightscout (a followed site,
or entries uploaded to the local one).
"""
