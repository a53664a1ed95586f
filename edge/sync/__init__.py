"""The edge node's links: `cloud_link.py` the outbox to the cloud broker, `clock_link.py` the
desk clocks' records from the LAN broker, `clock_feed.py` glucose and night summaries to the
clocks, `bridge.py` the LAN broker's bridge to the cloud broker.
"""
