"""The Nightscout core: one implementation of the Nightscout protocol for the edge and the cloud.

What a document is in each collection and how it is normalised (`documents`), when two are
the same (`documents.Normalized.match` and the store's unique keys), the `find` and v3 query
grammars (`query`), the document store over SQLite or PostgreSQL (`store`), credentials and
permissions (`auth`), and the HTTP APIs v1, v2 and v3 and socket.io served over any number of
sites (`api_v1`, `api_v2`, `api_v3`, `socketio`, mounted by `app.mount`). The edge node serves
one site; the cloud one per tenant. The facts behind it are in docs/nightscout.md.
"""
