"""What runs the edge node: `config.py` its TOML configuration, `live_node.py` the live
bedside node (`nightlink edge run`), `nightscout_site.py` its local Nightscout, `replay.py` a
recorded or simulated night through the same pipeline (`nightlink edge replay`).
"""
