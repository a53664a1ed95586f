"""Who may reach what: tenants, accounts and their roles, upload secrets and tokens, sessions,
the audit log and per-user settings."""

from __future__ import annotations

import time

from nightlink.cloud.config import NOT_TENANT_LABELS
from nightlink.cloud.store.base import ConflictError, NotFoundError, from_json, secret_hash, to_json
from nightlink.sql import Database, IntegrityError

ROLES = ("patient", "caregiver", "doctor", "admin")
INVITE_ROLES = ("caregiver", "doctor")
# A member's own account actions, shown in the audit log of each tenant they belong to.
MEMBER_ACTIONS = ("login", "password.change", "account.delete")
PUSH_PER_PERSON = 10  # browsers a person may have subscribed to one tenant's alerts


class Accounts:
    """The part of `Store` about tenants and people (mixed into `Store`)."""

    db: Database

    def access_changed(self) -> None:
        raise NotImplementedError

    # -- tenants ------------------------------------------------------------------------

    def create_tenant(self, tenant_id: str, name: str, *, public_read: bool = False) -> dict:
        from nightlink.shared import topics

        topics.check_name("tenant", tenant_id)
        if tenant_id in NOT_TENANT_LABELS:
            raise ConflictError(f"The tenant name {tenant_id!r} is kept for the site's own address "
                                f"({tenant_id}.DOMAIN); choose another.")
        try:
            self.db.execute(
                "INSERT INTO tenants (id, name, public_read, created_at) VALUES (?, ?, ?, ?)",
                (tenant_id, name, int(public_read), time.time()),
            )
        except IntegrityError:
            raise ConflictError(f"The tenant {tenant_id!r} already exists.") from None
        return self.get_tenant(tenant_id)

    def get_tenant(self, tenant_id: str, *, include_deleted: bool = False) -> dict:
        row = self.db.one("SELECT * FROM tenants WHERE id = ?", (tenant_id,))
        if row is None or (row["deleted_at"] and not include_deleted):
            raise NotFoundError(f"No tenant {tenant_id!r}.")
        row["public_read"] = bool(row["public_read"])
        return row

    def set_tenant(self, tenant_id: str, **fields) -> None:
        allowed = {"name", "public_read", "units", "deleted_at"}
        for key, value in fields.items():
            if key not in allowed:
                raise ValueError(f"{key} is not a tenant setting.")
            self.db.execute(f"UPDATE tenants SET {key} = ? WHERE id = ?",
                            (int(value) if key == "public_read" else value, tenant_id))
        self.access_changed()

    def has_tenants(self) -> bool:
        """Whether the database holds any tenant, deleted ones included (an empty database,
        a mistyped URL or one being restored holds none)."""
        return self.db.one("SELECT id FROM tenants LIMIT 1") is not None

    def tenant_ids(self) -> list[str]:
        """Every tenant not deleted, by id."""
        return [r["id"] for r in self.db.query(
            "SELECT id FROM tenants WHERE deleted_at IS NULL ORDER BY id")]

    def tenants_deleted_before(self, cutoff: float) -> list[str]:
        """Tenants soft-deleted before `cutoff` (unix seconds): due for purging."""
        return [r["id"] for r in self.db.query(
            "SELECT id FROM tenants WHERE deleted_at IS NOT NULL AND deleted_at < ? ORDER BY id",
            (cutoff,))]

    # -- users and roles ----------------------------------------------------------------

    def create_user(self, email: str, password_hash: str, *, name: str = "",
                    is_admin: bool = False, verified: bool = True) -> dict:
        """A new account; `verified=False` for one made at sign-up, until its owner shows
        the address is theirs (accounts an administrator makes are vouched for)."""
        now = time.time()
        try:
            self.db.execute(
                "INSERT INTO users (email, name, password_hash, is_admin, created_at, "
                "verified_at) VALUES (?, ?, ?, ?, ?, ?)",
                (email.lower(), name, password_hash, int(is_admin), now,
                 now if verified else None),
            )
        except IntegrityError:
            raise ConflictError(f"An account for {email} already exists.") from None
        return self.user_by_email(email)

    def user_by_email(self, email: str) -> dict:
        row = self.db.one("SELECT * FROM users WHERE email = ? AND deleted_at IS NULL",
                          (email.lower(),))
        if row is None:
            raise NotFoundError(f"No account for {email}.")
        return row

    def user(self, user_id: int) -> dict:
        row = self.db.one("SELECT * FROM users WHERE id = ? AND deleted_at IS NULL", (user_id,))
        if row is None:
            raise NotFoundError(f"No user {user_id}.")
        return row

    def set_user(self, user_id: int, **fields) -> None:
        for key, value in fields.items():
            if key not in {"name", "password_hash", "deleted_at", "email", "verified_at"}:
                raise ValueError(f"{key} is not a user field.")
            self.db.execute(f"UPDATE users SET {key} = ? WHERE id = ?", (value, user_id))
        self.access_changed()

    def has_users(self) -> bool:
        return bool(self.db.scalar("SELECT count(*) AS n FROM users"))

    def users(self) -> list[dict]:
        """Every account not deleted, by email (the operator's list)."""
        return self.db.query("SELECT id, email, name, is_admin, created_at FROM users "
                             "WHERE deleted_at IS NULL ORDER BY email")

    def other_admins(self, user_id: int) -> int:
        """How many administrators other than this user remain."""
        return int(self.db.scalar(
            "SELECT count(*) AS n FROM users WHERE is_admin = 1 AND deleted_at IS NULL "
            "AND id != ?", (user_id,)) or 0)

    def units(self, user_id: int) -> str | None:
        """The glucose units a user chose, None if they never chose."""
        row = self.db.one("SELECT units FROM user_settings WHERE user_id = ?", (user_id,))
        return row["units"] if row else None

    def set_units(self, user_id: int, unit: str) -> None:
        self.db.execute(
            "INSERT INTO user_settings (user_id, units, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET units = excluded.units, "
            "updated_at = excluded.updated_at", (user_id, unit, time.time()))

    def grant(self, tenant_id: str, user_id: int, role: str, *, by: int | None,
              alerts: bool = True) -> None:
        """Give the user a role here; `alerts=False` lets them read but neither acknowledge
        alerts nor count as someone who was told of them."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}.")
        self.get_tenant(tenant_id)
        self.db.execute(
            "INSERT INTO memberships (tenant_id, user_id, role, granted_by, granted_at, alerts) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, user_id) DO UPDATE SET "
            "role = excluded.role, granted_by = excluded.granted_by, "
            "granted_at = excluded.granted_at, alerts = excluded.alerts, revoked_at = NULL",
            (tenant_id, user_id, role, by, time.time(), int(alerts)),
        )
        self.access_changed()

    # -- Web Push subscriptions (cloud/push.py) -----------------------------------------------

    def add_push(self, tenant_id: str, user_id: int, endpoint: str, p256dh: str,
                 auth: str) -> None:
        """Keep a browser's push subscription for the tenant's alerts. The app posts it each
        time it opens with sound on: the same keys keep the last outcome, new ones (the
        browser subscribed again) start afresh. A browser is one signed-in person's: another
        person's subscriptions of it end. A person keeps their PUSH_PER_PERSON newest."""
        with self.db.transaction():
            self.db.execute("DELETE FROM push_subscriptions WHERE endpoint = ? AND user_id != ?",
                            (endpoint, user_id))
            same = ("push_subscriptions.p256dh = excluded.p256dh AND "
                    "push_subscriptions.auth = excluded.auth")  # the last outcome still holds
            self.db.execute(
                "INSERT INTO push_subscriptions (tenant_id, user_id, endpoint, p256dh, auth, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, endpoint) DO "
                f"UPDATE SET created_at = excluded.created_at, "
                f"ok_at = CASE WHEN {same} THEN push_subscriptions.ok_at END, "
                f"error = CASE WHEN {same} THEN push_subscriptions.error ELSE '' END, "
                f"error_at = CASE WHEN {same} THEN push_subscriptions.error_at END, "
                "p256dh = excluded.p256dh, auth = excluded.auth",
                (tenant_id, user_id, endpoint, p256dh, auth, time.time()))
            old = self.db.query(
                "SELECT id FROM push_subscriptions WHERE tenant_id = ? AND user_id = ? "
                "ORDER BY created_at DESC, id DESC", (tenant_id, user_id))[PUSH_PER_PERSON:]
            for row in old:
                self.db.execute("DELETE FROM push_subscriptions WHERE id = ?", (row["id"],))

    def push_subscriptions(self, tenant_id: str, user_id: int | None = None) -> list[dict]:
        """The tenant's push subscriptions (one person's), oldest first."""
        sql, args = "SELECT * FROM push_subscriptions WHERE tenant_id = ?", [tenant_id]
        if user_id is not None:
            sql, args = sql + " AND user_id = ?", [*args, user_id]
        return self.db.query(sql + " ORDER BY id", args)

    def remove_push(self, tenant_id: str, endpoint: str, user_id: int | None = None) -> bool:
        """Forget a subscription (its browser unsubscribed, or the push service says it is
        gone); with user_id, only that person's."""
        sql, args = ("DELETE FROM push_subscriptions WHERE tenant_id = ? AND endpoint = ?",
                     [tenant_id, endpoint])
        if user_id is not None:
            sql, args = sql + " AND user_id = ?", [*args, user_id]
        return bool(self.db.execute(sql, args))

    def renew_push(self, user_id: int, old_endpoint: str, endpoint: str, p256dh: str,
                   auth: str) -> int:
        """A browser's push service replaced its subscription (`pushsubscriptionchange`):
        the person's subscriptions of the old one move to the new; how many."""
        with self.db.transaction():
            tenants = [r["tenant_id"] for r in self.db.query(
                "SELECT tenant_id FROM push_subscriptions WHERE user_id = ? AND endpoint = ?",
                (user_id, old_endpoint))]
            for tenant_id in tenants:
                self.remove_push(tenant_id, old_endpoint, user_id)
                self.add_push(tenant_id, user_id, endpoint, p256dh, auth)
        return len(tenants)

    def push_outcome(self, sub_id: int, error: str = "") -> None:
        """The outcome of a delivery: "" delivered, else why not (shown to its owner)."""
        if error:
            self.db.execute("UPDATE push_subscriptions SET error = ?, error_at = ? WHERE id = ?",
                            (error[:300], time.time(), sub_id))
        else:
            self.db.execute("UPDATE push_subscriptions SET ok_at = ?, error = '', error_at = NULL "
                            "WHERE id = ?", (time.time(), sub_id))

    def member_alerts(self, tenant_id: str, user_id: int) -> bool:
        """Whether a member takes part in the tenant's alerts (False: read only)."""
        row = self.db.one("SELECT alerts FROM memberships WHERE tenant_id = ? AND user_id = ? "
                          "AND revoked_at IS NULL", (tenant_id, user_id))
        return bool(row and row["alerts"])

    def revoke(self, tenant_id: str, user_id: int) -> bool:
        done = bool(self.db.execute(
            "UPDATE memberships SET revoked_at = ? WHERE tenant_id = ? AND user_id = ? "
            "AND revoked_at IS NULL", (time.time(), tenant_id, user_id)))
        self.db.execute("DELETE FROM push_subscriptions WHERE tenant_id = ? AND user_id = ?",
                        (tenant_id, user_id))  # their phones hear this tenant's alerts no more
        self.access_changed()
        return done

    def role(self, tenant_id: str, user_id: int) -> str | None:
        """The user's current role in the tenant, None if none (or revoked, or deleted)."""
        row = self.db.one(
            "SELECT m.role FROM memberships m JOIN tenants t ON t.id = m.tenant_id "
            "WHERE m.tenant_id = ? AND m.user_id = ? AND m.revoked_at IS NULL "
            "AND t.deleted_at IS NULL", (tenant_id, user_id))
        return row["role"] if row else None

    def memberships(self, user_id: int) -> list[dict]:
        return self.db.query(
            "SELECT m.tenant_id, m.role, t.name FROM memberships m JOIN tenants t "
            "ON t.id = m.tenant_id WHERE m.user_id = ? AND m.revoked_at IS NULL "
            "AND t.deleted_at IS NULL ORDER BY m.tenant_id", (user_id,))

    def visible_tenants(self, user: dict) -> list[dict]:
        """The tenants a user may open, with the role they hold there (admins: every tenant)."""
        if user["is_admin"]:
            return [{"tenant_id": r["id"], "name": r["name"], "role": "admin"} for r in
                    self.db.query("SELECT id, name FROM tenants WHERE deleted_at IS NULL "
                                  "ORDER BY id")]
        return self.memberships(user["id"])

    def members(self, tenant_id: str) -> list[dict]:
        return self.db.query(
            "SELECT u.id AS user_id, u.email, u.name, m.role, m.granted_at, m.alerts "
            "FROM memberships m "
            "JOIN users u ON u.id = m.user_id WHERE m.tenant_id = ? AND m.revoked_at IS NULL "
            "AND u.deleted_at IS NULL ORDER BY u.email", (tenant_id,))


    # -- secrets and tokens ---------------------------------------------------------------

    def add_api_secret(self, tenant_id: str, presented: str, *, kind: str = "api-secret",
                       label: str = "") -> None:
        """Keep a credential (the SHA1 hex an uploader sends, or a token) for a tenant."""
        try:
            self.db.execute(
                "INSERT INTO api_secrets (tenant_id, secret_hash, kind, label, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (tenant_id, secret_hash(presented), kind, label, time.time()),
            )
        except IntegrityError:
            raise ConflictError("That secret is already in use.") from None

    def set_api_secret(self, tenant_id: str, secret: str) -> None:
        """Make `secret` the tenant's upload secret (the previous one stops working): kept as
        the hashes of the two forms uploaders send, its SHA-1 and its SHA-512."""
        from nightlink.nightscout.auth import secret_forms

        with self.db.transaction():
            self.revoke_api_secrets(tenant_id, "api-secret")
            for form in secret_forms(secret):
                self.add_api_secret(tenant_id, form, kind="api-secret")

    def api_secret(self, presented: str) -> dict | None:
        """The tenant and kind a presented secret or token belongs to, or None."""
        return self.db.one(
            "SELECT tenant_id, kind, label FROM api_secrets WHERE secret_hash = ? "
            "AND revoked_at IS NULL", (secret_hash(presented),))

    def revoke_api_secrets(self, tenant_id: str, kind: str) -> int:
        n = self.db.execute(
            "UPDATE api_secrets SET revoked_at = ? WHERE tenant_id = ? AND kind = ? "
            "AND revoked_at IS NULL", (time.time(), tenant_id, kind))
        self.access_changed()
        return n

    def add_refresh_token(self, jti: str, user_id: int, expires_at: float,
                          family: str | None = None) -> None:
        """Keep a refresh token; `family`: the sign-in it descends from (None: a new one)."""
        self.db.execute("INSERT INTO refresh_tokens (jti, user_id, expires_at, family) "
                        "VALUES (?, ?, ?, ?)", (jti, user_id, expires_at, family or jti))

    def revoke_refresh_tokens(self, user_id: int) -> int:
        """End every session of a user (password changed, account deleted)."""
        return self.db.execute("UPDATE refresh_tokens SET revoked_at = ? WHERE user_id = ? "
                               "AND revoked_at IS NULL", (time.time(), user_id))

    def live_refresh_token(self, jti: str) -> int | None:
        """A refresh token's user id while it is neither revoked nor expired (not spent: a
        browser's session renews its access token from it, see cloud/session.py)."""
        row = self.db.one("SELECT user_id FROM refresh_tokens WHERE jti = ? AND revoked_at IS "
                          "NULL AND expires_at >= ?", (jti, time.time()))
        return None if row is None else row["user_id"]

    def revoke_refresh_token(self, jti: str) -> None:
        """End one session (signing out)."""
        self.db.execute("UPDATE refresh_tokens SET revoked_at = ? WHERE jti = ? AND "
                        "revoked_at IS NULL", (time.time(), jti))

    def use_refresh_token(self, jti: str, successor: tuple[str, float] | None = None
                          ) -> tuple[int, str] | None:
        """Spend a refresh token once: (its user id, its sign-in's family), or None if
        unknown, used or expired; `successor` (jti, expires_at), the token that replaces it,
        is kept in the same transaction. One spent or revoked already, presented again, ends
        every token of its sign-in, its successors too: the token was copied, and whoever
        refreshed first (the thief, perhaps) would otherwise keep a valid chain (OAuth 2.0
        refresh-token rotation)."""
        now = time.time()
        with self.db.transaction():
            row = self.db.one("SELECT user_id, expires_at, revoked_at, family FROM "
                              "refresh_tokens WHERE jti = ?", (jti,))
            if row is None:
                return None
            # Spent only if no one spent it first: two refreshes at the same moment (on
            # PostgreSQL both read it unspent) are one use and one reuse, never two chains.
            spent = not row["revoked_at"] and row["expires_at"] >= now and self.db.execute(
                "UPDATE refresh_tokens SET revoked_at = ? WHERE jti = ? AND revoked_at IS NULL",
                (now, jti)) == 1
            if spent:
                if successor is not None:
                    self.add_refresh_token(successor[0], row["user_id"], successor[1],
                                           row["family"])
                return row["user_id"], row["family"]
            if row["expires_at"] >= now or row["revoked_at"]:
                self.db.execute("UPDATE refresh_tokens SET revoked_at = ? WHERE family = ? "
                                "AND revoked_at IS NULL", (now, row["family"]))
            return None


    # -- e-mail tokens and invitations -----------------------------------------------------

    def add_email_token(self, token: str, user_id: int, purpose: str, ttl_s: float) -> None:
        now = time.time()
        self.db.execute(
            "INSERT INTO email_tokens (token_hash, user_id, purpose, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?)", (secret_hash(token), user_id, purpose, now, now + ttl_s))

    def use_email_token(self, token: str, purpose: str) -> int | None:
        """The user a live token of this purpose was sent to, spending it; None if unknown,
        used or expired."""
        key, now = secret_hash(token), time.time()
        with self.db.transaction():
            row = self.db.one("SELECT user_id FROM email_tokens WHERE token_hash = ? AND "
                              "purpose = ? AND used_at IS NULL AND expires_at > ?",
                              (key, purpose, now))
            if row is None:
                return None
            self.db.execute("UPDATE email_tokens SET used_at = ? WHERE token_hash = ?",
                            (now, key))
        return int(row["user_id"])

    def create_invite(self, tenant_id: str, code: str, role: str, *, alerts: bool, email: str,
                      by: int | None, ttl_s: float) -> dict:
        if role not in INVITE_ROLES:
            raise ValueError(f"An invitation is for {' or '.join(INVITE_ROLES)}, not {role!r}.")
        now = time.time()
        self.db.execute(
            "INSERT INTO invites (tenant_id, code_hash, role, alerts, email, created_by, "
            "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (tenant_id, secret_hash(code), role, int(alerts), email.lower(), by, now,
             now + ttl_s))
        return self.db.one("SELECT * FROM invites WHERE code_hash = ?", (secret_hash(code),))

    def invites(self, tenant_id: str) -> list[dict]:
        """The tenant's invitations not yet accepted, revoked or expired, newest first."""
        return self.db.query(
            "SELECT * FROM invites WHERE tenant_id = ? AND accepted_at IS NULL AND "
            "revoked_at IS NULL AND expires_at > ? ORDER BY id DESC", (tenant_id, time.time()))

    def revoke_invite(self, tenant_id: str, invite_id: int) -> bool:
        return bool(self.db.execute(
            "UPDATE invites SET revoked_at = ? WHERE tenant_id = ? AND id = ? AND "
            "accepted_at IS NULL AND revoked_at IS NULL", (time.time(), tenant_id, invite_id)))

    def take_invite(self, code: str, user_id: int) -> dict | None:
        """Spend a live invitation for this user: the invitation, or None if the code is
        unknown, used, revoked or expired (or its tenant is deleted)."""
        key, now = secret_hash(code), time.time()
        with self.db.transaction():
            row = self.db.one(
                "SELECT i.* FROM invites i JOIN tenants t ON t.id = i.tenant_id "
                "WHERE i.code_hash = ? AND i.accepted_at IS NULL AND i.revoked_at IS NULL "
                "AND i.expires_at > ? AND t.deleted_at IS NULL", (key, now))
            if row is None:
                return None
            self.db.execute("UPDATE invites SET accepted_by = ?, accepted_at = ? WHERE id = ?",
                            (user_id, now, row["id"]))
        return row

    # -- audit ------------------------------------------------------------------------------

    def audit(self, action: str, *, actor: int | None = None, tenant_id: str | None = None,
              **detail) -> None:
        self.db.execute(
            "INSERT INTO audit (at, actor_user_id, tenant_id, action, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, tenant_id, action, to_json(detail)),
        )

    def audit_log(self, tenant_id: str | None = None, limit: int = 200, *,
                  with_members: bool = False) -> list[dict]:
        """The audit log newest first: everything, or one tenant's (with_members: and its
        members' own account actions: sign-ins, password changes, account deletions)."""
        if tenant_id is None:
            rows = self.db.query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        else:
            ids = [m["user_id"] for m in self.members(tenant_id)] if with_members else []
            sql, args = "SELECT * FROM audit WHERE tenant_id = ?", [tenant_id]
            if ids:
                sql += (f" OR (tenant_id IS NULL AND action IN "
                        f"({', '.join('?' * len(MEMBER_ACTIONS))}) "
                        f"AND actor_user_id IN ({', '.join('?' * len(ids))}))")
                args += [*MEMBER_ACTIONS, *ids]
            rows = self.db.query(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])
        for r in rows:
            r["detail"] = from_json(r["detail"])
        return rows

