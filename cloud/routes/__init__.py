"""The cloud's own HTTP API (`/api/nl/v1`) and the portal, one module per resource:

sessions (sign-in, refresh), accounts, sharing (sign-up, address confirmation,
invitations), tenants (members, grants, audit), credentials (upload secret, access tokens),
devices, data (epochs, nights, glucose, alerts), export (data rights), patients (the
doctor's list), ops (health, readiness, metrics), portal (pages).
Who may reach a tenant is decided once, in `nightlink.cloud.access`.
"""
