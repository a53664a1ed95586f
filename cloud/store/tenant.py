"""One tenant's data: epoch rows, Nightscout documents, nights, alerts and settings."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Sequence

from nightlink.cloud.store import changes
from nightlink.cloud.store import rows as row_codec
from nightlink.cloud.store.base import NotFoundError, from_json, to_json
from nightlink.nights import parse_schedule
from nightlink.nightscout import documents as ns_documents
from nightlink.nightscout import store as ns_store
from nightlink.nightscout.query import Cond, Instant
from nightlink.nightscout.store import DocumentStore, Subjects
from nightlink.shared import codec, features
from nightlink.shared.epoch import EPOCH_S
from nightlink.sql import Database

_ENTRY_COLUMNS = {"date", "sgv"}
DAY_MS = 86_400_000
# An edge node's change of one of its documents: (the node's sequence number, the document,
# whether it is a deletion).
NodeChange = tuple[int, ns_documents.Normalized, bool]
_OPS = {">=": "$gte", ">": "$gt", "<=": "$lte", "<": "$lt", "=": "$eq", "!=": "$ne"}


class TenantStore:
    """One tenant's data. Every statement carries `tenant_id = ?` with this tenant."""

    def __init__(self, db: Database, tenant_id: str, notify=None):
        self.db = db
        self.tenant_id = tenant_id
        self.notify = notify  # the live hub's hook for Nightscout document changes

    # -- epoch rows -------------------------------------------------------------------------

    def put_rows(self, records: Iterable[codec.Record]) -> int:
        """Store every row of these records (one per epoch) but those of an import their
        device undid (retract_boot); return how many were new."""
        now = time.time()
        records = list(records)
        if not records:
            return 0
        with self.db.transaction():
            rows = []
            for dev, group in _by_device(records).items():
                self._lock_rows(dev, shared=True)
                gone = self._retracted_at(dev, [(r.boot, r.epoch + i) for r in group
                                                for i in range(len(r.rows))])
                for rec in group:
                    for i, row in enumerate(rec.rows):
                        if (rec.boot, rec.epoch + i) not in gone:
                            rows.append((self.tenant_id, dev, rec.stream, rec.boot,
                                         rec.seq + i, rec.epoch + i, rec.flags, rec.nfeat,
                                         row_codec.pack_row(rec.stream, row), now))
            if not rows:
                return 0
            return self.db.executemany(
                "INSERT INTO epoch_rows (tenant_id, device, stream, boot, seq, epoch, flags, "
                "nfeat, row_data, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (device, stream, boot, seq) DO NOTHING", rows)

    def add_readings(self, device: str, readings: Sequence[tuple[int, list[int], dict]]
                     ) -> tuple[list[dict], int]:
        """add_entries for the glucose readings of `device`'s CGM rows ((boot, the epochs
        carrying it, entry)), but those only rows of an import it undid carry: checked under
        the lock retract_boot takes, so a retraction either sees them stored or they see
        it."""
        with self.db.transaction():
            self._lock_rows(device, shared=True)
            gone = self._retracted_at(device, [(b, e) for b, es, _ in readings for e in es])
            entries = [doc for b, es, doc in readings if any((b, e) not in gone for e in es)]
            return self.add_entries(entries) if entries else ([], 0)

    def reused_seqs(self, records: Iterable[codec.Record]) -> list[int]:
        """Seqs of these records that the store holds for other epochs: a device that
        numbered new rows again (its store put back from an older copy). A resend of the same
        rows is not one."""
        seqs = []
        for rec in records:
            held = {r["seq"]: r["epoch"] for r in self.db.query(
                "SELECT seq, epoch FROM epoch_rows WHERE device = ? AND stream = ? AND boot = ? "
                "AND seq >= ? AND seq < ?", (codec.device_name(rec.device), rec.stream,
                                             rec.boot, rec.seq, rec.seq + len(rec.rows)))}
            seqs += [rec.seq + i for i in range(len(rec.rows))
                     if held.get(rec.seq + i, rec.epoch + i) != rec.epoch + i]
        return seqs

    def count_rows(self, stream: int | None = None) -> int:
        if stream is None:
            return int(self.db.scalar("SELECT count(*) AS n FROM epoch_rows WHERE tenant_id = ?",
                                      (self.tenant_id,)) or 0)
        return int(self.db.scalar(
            "SELECT count(*) AS n FROM epoch_rows WHERE tenant_id = ? AND stream = ?",
            (self.tenant_id, stream)) or 0)

    def distinct_seqs(self) -> int:
        """How many distinct (device, stream, seq) the tenant's rows hold: equal to
        count_rows() unless a device restarted its sequence numbers (a new boot)."""
        return int(self.db.scalar(
            "SELECT count(*) AS n FROM (SELECT DISTINCT device, stream, seq FROM epoch_rows "
            "WHERE tenant_id = ?) x", (self.tenant_id,)) or 0)

    def epoch_span(self) -> tuple[int, int] | None:
        """The first and last epoch index holding any row, None without rows."""
        r = self.db.one("SELECT min(epoch) AS a, max(epoch) AS b FROM epoch_rows "
                        "WHERE tenant_id = ?", (self.tenant_id,))
        return None if r is None or r["a"] is None else (int(r["a"]), int(r["b"]))

    def rows(self, stream: int, start_epoch: int, end_epoch: int, *, after: tuple | None = None,
             limit: int = 1000) -> list[row_codec.Row]:
        """Rows of one stream in [start, end), ordered by (epoch, device, boot, seq); `after`
        is the last (epoch, device, boot, seq) of the previous page (cursor pagination)."""
        sql = ("SELECT device, stream, boot, seq, epoch, flags, nfeat, row_data FROM epoch_rows "
               "WHERE tenant_id = ? AND stream = ? AND epoch >= ? AND epoch < ?")
        args: list = [self.tenant_id, stream, start_epoch, end_epoch]
        if after is not None:
            e, d, b, s = after
            sql += (" AND (epoch > ? OR (epoch = ? AND (device > ? OR (device = ? AND "
                    "(boot > ? OR (boot = ? AND seq > ?))))))")
            args += [e, e, d, d, b, b, s]
        sql += " ORDER BY epoch, device, boot, seq LIMIT ?"
        args.append(limit)
        return [row_codec.Row(r["device"], r["stream"], r["boot"], r["seq"], r["epoch"], r["flags"],
                    r["nfeat"], bytes(r["row_data"])) for r in self.db.query(sql, args)]

    def streams(self) -> list[int]:
        """The streams this tenant has rows of."""
        return [r["stream"] for r in self.db.query(
            "SELECT DISTINCT stream FROM epoch_rows WHERE tenant_id = ? ORDER BY stream",
            (self.tenant_id,))]

    def stream_values(self, stream: int, start_epoch: int, end_epoch: int,
                      prefer: Sequence[str] = ()) -> dict[int, dict]:
        """Epoch index -> {feature: value} for one stream in [start, end); features a device
        did not measure are absent. Where several devices sent the same epoch, the first wins
        per feature and the others only add what it lacked: the first in `prefer` (the
        devices that recorded the person that night, `night_devices`), then by device id. A
        device's own later row of an epoch replaces its earlier one (an edge gives a CGM
        reading that arrived after its epoch closed a row of its own), whole: a field the
        later row lacks is not taken from the earlier one."""
        rank = {d: i for i, d in enumerate(prefer)}
        rows = self.db.query(
            "SELECT epoch, device, nfeat, row_data FROM epoch_rows WHERE tenant_id = ? AND "
            "stream = ? AND epoch >= ? AND epoch < ? ORDER BY epoch, device, boot, seq",
            (self.tenant_id, stream, start_epoch, end_epoch))
        if rank:  # stable: within a device, boot and seq order stays
            rows.sort(key=lambda r: (r["epoch"], rank.get(r["device"], len(rank)), r["device"]))
        out: dict[int, dict] = {}
        first: dict[int, str] = {}  # the device whose values an epoch holds first
        for r in rows:
            vals = row_codec.measured(stream, r["nfeat"], bytes(r["row_data"]))
            have = out.get(r["epoch"])
            if have is None:
                out[r["epoch"]] = vals
                first[r["epoch"]] = r["device"]
            elif r["device"] == first[r["epoch"]]:
                out[r["epoch"]] = vals  # the device's later row replaces its earlier one
            else:
                for k, v in vals.items():
                    have.setdefault(k, v)
        return out

    def night_devices(self, start_epoch: int, end_epoch: int) -> list[str]:
        """The devices with rows in [start, end), those that recorded the person first: by
        the epochs in which their glucose or wearable rows measured anything (a phone
        uploads at the home the person sleeps in, a wearable is worn there), then by device
        id. With two homes, the edge of the home nobody slept in records its room every
        night; its sleep and breathing figures must not be taken for the person's."""
        window = (self.tenant_id, start_epoch, end_epoch)
        person: dict[str, set[int]] = {r["device"]: set() for r in self.db.query(
            "SELECT DISTINCT device FROM epoch_rows WHERE tenant_id = ? AND epoch >= ? AND "
            "epoch < ?", window)}
        if len(person) < 2:
            return list(person)
        for r in self.db.query(
                "SELECT epoch, device, stream, nfeat, row_data FROM epoch_rows WHERE "
                "tenant_id = ? AND epoch >= ? AND epoch < ? AND stream IN (?, ?)",
                (*window, features.CGM, features.WEARABLE)):
            if row_codec.measured(r["stream"], r["nfeat"], bytes(r["row_data"])):
                person[r["device"]].add(r["epoch"])
        return sorted(person, key=lambda d: (-len(person[d]), d))

    def row_activity(self, stream: int, start_epoch: int, end_epoch: int) -> tuple[int, float]:
        """How many rows a stream has in [start, end) and when the last arrived (unix s)."""
        r = self.db.one("SELECT count(*) AS n, max(received_at) AS t FROM epoch_rows "
                        "WHERE tenant_id = ? AND stream = ? AND epoch >= ? AND epoch < ?",
                        (self.tenant_id, stream, start_epoch, end_epoch))
        return int(r["n"]), float(r["t"] or 0)

    # -- Nightscout documents (the Nightscout core's store) ----------------------------------

    @property
    def subjects(self) -> Subjects:
        """This tenant's Nightscout access tokens (subjects with roles)."""
        return Subjects(self.db, self.tenant_id)

    @property
    def docs(self) -> DocumentStore:
        """This tenant's Nightscout collections; every write follows the core's rules."""
        return DocumentStore(self.db, self.tenant_id, notify=self.notify)

    def add_documents(self, coll: str, items: Iterable[dict], *, mode: str = "keep"
                      ) -> tuple[list[dict], int]:
        """Normalise and store documents of a collection; (new documents, the others).

        mode "keep" leaves a matching stored document as it is (what the MQTT ingest and
        importers want: an app's upload is richer than a reading re-derived from features).
        Raises nightscout DocumentError for an invalid document.
        """
        now = int(time.time() * 1000)
        normalized = [ns_documents.normalize(coll, d, now) for d in items]
        outcomes = self.docs.put(normalized, mode=mode)
        stored = [o.row.v1() for o in outcomes if o.action == "created"]
        return stored, len(outcomes) - len(stored)

    def apply_changes(self, coll: str, batch: Sequence[NodeChange], *,
                      device: str) -> tuple[int, int, int]:
        """An edge node's changes of its documents (treatments), each `(seq, document,
        deleted)` with the node's sequence number, in one transaction: an upsert replaces the
        document it matches by the core's rules (identifier, `_id`, else created_at and
        eventType) or is stored new; a deletion soft-deletes the document it matches.

        A document keeps the node and the number of the last change of that node applied to
        it (`src_device`, `src_seq`), and a change is applied only if its number is greater
        (`_claim`). The whole batch runs under the site's write lock, which every writer of
        the site takes, so two ingest workers handling a batch and its resend cannot both
        find the document unclaimed: the older change is ignored whichever comes last. A
        deletion of a document the cloud does not hold leaves a deleted row with its number
        (`_tombstone`), so an older creation arriving after it stays deleted.

        Returns (documents stored or changed, documents deleted, changes ignored as older
        than the stored state); a change already applied changes nothing."""
        docs = self.docs
        changed = deleted = stale = 0
        # The core's write transaction: the site's lock is taken before anything is read.
        with docs.writing():
            for seq, n, gone in sorted(batch, key=lambda change: change[0]):
                found = self._target(docs, coll, n, gone)
                if found is not None and not self._claim(found.id, device, seq):
                    stale += 1
                elif gone and found is None:
                    self._tombstone(docs, n, device, seq)
                elif gone:
                    deleted += docs.delete([found]) if found.valid else 0
                else:
                    outcomes = docs.put([n], mode="replace")
                    if found is None:
                        self._claim(outcomes[0].row.id, device, seq)
                    changed += sum(o.action in ("created", "updated") for o in outcomes)
        return changed, deleted, stale

    def _target(self, docs: DocumentStore, coll: str, n: ns_documents.Normalized,
                gone: bool) -> ns_store.Row | None:
        """The stored document (deleted ones too) a node's change would write: the one the
        core's put would replace; for a deletion, else the valid one `_matching` finds."""
        found, _how = docs.match(n)
        if found is None and gone:
            found = self._matching(coll, n)
        return found

    def _claim(self, row_id: int, device: str, seq: int) -> bool:
        """Mark the document as holding this node's change `seq`, if that is newer than the
        change of the same node it holds: one conditional UPDATE, False when the change is
        older (or the same). A change of another node, or of a document no node has
        changed (stored in the cloud, or before the column existed), always goes through:
        between two nodes the last writer wins, as with the cloud's own edits, which keep
        the number so that an older resend still loses to them."""
        return self.db.execute(
            f"UPDATE {ns_store.TABLE} SET src_device = ?, src_seq = ? WHERE id = ? "
            "AND tenant_id = ? AND (src_seq IS NULL OR src_device <> ? OR src_seq < ?)",
            (device, seq, row_id, self.tenant_id, device, seq)) == 1

    def _tombstone(self, docs: DocumentStore, n: ns_documents.Normalized, device: str,
                   seq: int) -> None:
        """A node's deletion of a document the cloud does not hold (its creation may still
        be on the way, on another ingest worker): stored as a soft-deleted document with the
        deletion's number. Nightscout clients see what they see of any deleted document
        (nothing in API v1, `isValid: false` in API v3 history), and the retention of
        deleted documents removes it."""
        with docs.writing() as stamp:
            row = docs.insert(n, None, stamp())
            self.db.execute(f"UPDATE {ns_store.TABLE} SET valid = 0, src_device = ?, "
                            "src_seq = ? WHERE id = ? AND tenant_id = ?",
                            (device, seq, row.id, self.tenant_id))

    def _matching(self, coll: str, n: ns_documents.Normalized) -> ns_store.Row | None:
        """The valid stored document a change names: by identifier, by `_id`, else (for a
        document without a client identity) by its time, kind and Trio id."""
        for key in (n.identifier, n.oid):
            row = self.docs.get(coll, key) if key else None
            if row is not None:
                return row if row.valid else None
        if n.client_identity or n.pair is None:
            return None
        for row in self.docs.latest(coll, kind=n.kind or None, lo=n.date_ms, hi=n.date_ms,
                                    count=20):
            trio = row.doc.get("id") if isinstance(row.doc.get("id"), str) else ""
            if f"{row.date_ms}|{row.kind}|{trio}" == n.pair:
                return row
        return None

    def add_entries(self, docs: Iterable[dict]) -> tuple[list[dict], int]:
        """Store entries (an sgv equal to one stored less than a minute away is the same
        reading); return (new entries, duplicates)."""
        return self.add_documents("entries", docs)

    def entries(self, *, count: int = 10, type_: str | None = None,
                where: Sequence[tuple[str, str, object]] = ()) -> list[dict]:
        """Entries newest first; `where` holds (date or sgv, operator, value) conditions."""
        query = ns_store.between("entries", kind=type_)
        for column, op, value in where:
            if column not in _ENTRY_COLUMNS or op not in _OPS:
                raise ValueError(f"{column} {op} is not a supported filter.")
            operand = Instant(int(value)) if column == "date" else float(value)
            query.add(Cond(column, _OPS[op], operand))
        return [r.v1() for r in self.docs.find("entries", query, count=count)]

    def treatments(self, lo_ms: int, hi_ms: int, *, count: int = 10_000) -> list[dict]:
        """Treatments (carbs, insulin, exercise, notes) in [lo_ms, hi_ms], oldest first, each
        with `mills` the row's own time as the store keeps it (whatever the client sent in
        that field: "Infinity", a date, a list)."""
        return [r.v1() | {"mills": r.date_ms} for r in self.docs.find(
            "treatments", ns_store.between("treatments", lo_ms, hi_ms), count=count,
            ascending=True)]

    def carbs_times(self, lo_ms: int, hi_ms: int) -> list[int]:
        """When treatments with carbs > 0 were entered in [lo_ms, hi_ms] (Unix ms, each row's
        own time as the store keeps it, whatever its `mills` field says)."""
        out = []
        query = ns_store.between("treatments", lo_ms, hi_ms)
        query.add(Cond("carbs", "$gt", 0.0))  # not the pumps' temp basals, every 5 minutes
        for row in self.docs.find("treatments", query, count=1000):
            try:
                grams = float(row.doc.get("carbs") or 0)
            except (TypeError, ValueError, OverflowError):
                continue
            if grams > 0 and row.valid:
                out.append(int(row.date_ms))
        return out

    def documents(self, coll: str, *, count: int = 10) -> list[dict]:
        """The newest documents of a Nightscout collection (exports, tests)."""
        return [r.v1() for r in self.docs.find(coll, None, count=count)]

    # -- devices, nights, alerts ------------------------------------------------------------

    def devices(self) -> list[dict]:
        return self.db.query(
            "SELECT id, kind, label, mqtt_username, created_at, revoked_at FROM devices "
            "WHERE tenant_id = ? ORDER BY id", (self.tenant_id,))

    def alarm_policy(self) -> dict | None:
        """The clocks' predicted-low policy as the tenant's bedside node (not revoked) last
        reported it (its status report's `alarm_policy`): {"text", "device", "updated_ms",
        "params"}, or None; "params" is the policy as the clocks take it (`alarm_policy_params`, a JSON
        object, unchecked: nightlink.shared.lowrisk.policy_values checks it), None from a node
        that does not send it."""
        for row, doc in self._node_statuses():
            text = doc.get("alarm_policy")
            if isinstance(text, str) and text:
                params = doc.get("alarm_policy_params")
                return {"text": text[:400], "device": row["device"],
                        "updated_ms": int(float(row["updated_at"]) * 1000),
                        "params": params if isinstance(params, dict) else None}
        return None

    def _node_statuses(self):
        """(row, status report) of the tenant's bedside nodes not revoked, newest first (a
        clock's report is not read for the zone, schedule or alarm policy an edge reports);
        a report that is not a JSON object reads as an empty one."""
        for row in self.db.query(
                "SELECT s.device, s.doc, s.updated_at FROM device_status s LEFT JOIN devices d "
                "ON d.id = s.device AND d.tenant_id = s.tenant_id WHERE s.tenant_id = ? "
                "AND COALESCE(d.kind, 'edge') = 'edge' AND d.revoked_at IS NULL "
                "ORDER BY s.updated_at DESC",
                (self.tenant_id,)):
            doc = from_json(row["doc"])
            yield row, doc if isinstance(doc, dict) else {}

    def reported_timezones(self) -> list[str]:
        """The time zones the tenant's bedside nodes reported (their status reports'
        `timezone`, IANA names as their configuration or machine gives them), newest first;
        revoked devices left out."""
        out = []
        for _row, doc in self._node_statuses():
            name = doc.get("timezone")
            if isinstance(name, str) and 0 < len(name) <= 64 and name not in out:
                out.append(name)
        return out

    def reported_changes(self, name: str) -> list[tuple[int, str]]:
        """(since Unix ms, value) of a status report field (`timezone`, `night_schedule`) as
        the tenant's bedside nodes changed it, each from when it was first reported, oldest
        first; empty while no node has changed it (the newest status report's value then
        holds for all time). A node revoked since (a phone replaced) keeps its part: the
        nights it recorded were where and as it said."""
        return [(int(r["since_ms"]), r["value"]) for r in self.db.query(
            "SELECT c.since_ms, c.value FROM status_changes c LEFT JOIN devices d "
            "ON d.id = c.device AND d.tenant_id = c.tenant_id WHERE c.tenant_id = ? "
            "AND c.field = ? AND COALESCE(d.kind, 'edge') = 'edge' "
            "ORDER BY c.since_ms, c.device", (self.tenant_id, name))]

    def reported_schedule(self) -> str | None:
        """The sleep schedule ("08:00-16:00", bedtime to wake) in the newest status report of
        the tenant's bedside nodes that carries one (`night_schedule`), revoked devices left
        out; None without one, or when it is not two HH:MM times."""
        for _row, doc in self._node_statuses():
            text = doc.get("night_schedule")
            if text is None:
                continue
            return text if parse_schedule(text) is not None else None
        return None

    def revoke_device(self, device_id: str) -> bool:
        """Revoke a device's broker account, and the read token a clock was given for its
        cloud fallback (`nightlink device provision --cloud-fallback`, named clock-<id>)."""
        with self.db.transaction():
            done = bool(self.db.execute(
                "UPDATE devices SET revoked_at = ? WHERE tenant_id = ? AND id = ? "
                "AND revoked_at IS NULL", (time.time(), self.tenant_id, device_id)))
            if done:
                self.subjects.revoke_named(f"clock-{device_id}")
        return done

    # -- an edge's undone imports -------------------------------------------------------------

    RETRACT_REACH_EPOCHS = 240  # a CGM row carries a reading up to 2 h old (the edge's rule)

    def _lock_rows(self, device: str, *, shared: bool) -> None:
        """Inside a transaction: a device's rows, shared by writers of rows and taken alone by
        a retraction (PostgreSQL advisory lock; SQLite's single writer already serialises)."""
        self._advisory(f"nightlink-rows:{device}", shared=shared)

    def _retracted_at(self, device: str, keys: Sequence[tuple[int, int]]
                      ) -> set[tuple[int, int]]:
        """Which (boot, epoch) of `device` lie in an import it undid."""
        boots = sorted({b for b, _ in keys})
        if not boots:
            return set()
        marks = ", ".join("?" for _ in boots)
        spans = {int(r["boot"]): (r["first_epoch"], r["last_epoch"]) for r in self.db.query(
            f"SELECT boot, first_epoch, last_epoch FROM retracted_boots WHERE device = ? AND "
            f"boot IN ({marks})", (device, *boots))}
        return {(b, e) for b, e in keys if b in spans and (
            spans[b][0] is None or spans[b][0] <= e <= spans[b][1])}

    def retracted(self, device: str, boots: Iterable[int]) -> set[int]:
        """Which of these boots of `device` were retracted (an import the edge undid)."""
        boots = sorted(set(boots))
        if not boots:
            return set()
        marks = ", ".join("?" for _ in boots)
        return {int(r["boot"]) for r in self.db.query(
            f"SELECT boot FROM retracted_boots WHERE device = ? AND boot IN ({marks})",
            (device, *boots))}

    def retract_boot(self, device: str, boot: int, nights: Sequence[str],
                     epochs: tuple[int, int] | None = None) -> dict | None:
        """Remove what the edge `device` wrote under `boot` in `epochs` (first, last; None:
        all), an import it undid (edge/store/imports.py): its epoch rows, the Nightscout
        entries served from them that no other row carries, its apnea screens of `nights`;
        and keep such rows out from now on. Once per (device, boot): None when done before,
        else what was removed."""
        cgm = features.CGM
        span, args = ("", ()) if epochs is None else (" AND epoch >= ? AND epoch <= ?", epochs)
        if self.retracted(device, [boot]):  # every later report names it again
            return None
        with self.db.transaction():
            self._lock_rows(device, shared=False)
            if not self.db.query(
                    "INSERT INTO retracted_boots (tenant_id, device, boot, first_epoch, "
                    "last_epoch, retracted_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device, "
                    "boot) DO NOTHING RETURNING boot", (self.tenant_id, device, boot,
                                                       *(epochs or (None, None)), time.time())):
                return None
            where = "tenant_id = ? AND device = ? AND boot = ?" + span
            dates = _reading_dates(self.db.query(
                f"SELECT epoch, nfeat, row_data FROM epoch_rows WHERE {where} AND stream = ?",
                (self.tenant_id, device, boot, *args, cgm)))
            rows = self.db.execute(f"DELETE FROM epoch_rows WHERE {where}",
                                   (self.tenant_id, device, boot, *args))
            entries = 0
            if dates:
                reach = self.RETRACT_REACH_EPOCHS
                lo, hi = (min(dates) // 1000 // EPOCH_S - reach,
                          max(dates) // 1000 // EPOCH_S + reach)
                # a reading other rows also carry (this node's, or a second home's edge's)
                # stays served
                dates -= _reading_dates(self.db.query(
                    "SELECT epoch, nfeat, row_data FROM epoch_rows WHERE tenant_id = ? AND "
                    "stream = ? AND epoch >= ? AND epoch <= ?", (self.tenant_id, cgm, lo, hi)))
                name = f"nightlink-{device}"
                docs = self.docs
                gone = [r for r in docs.latest("entries", kind="sgv", count=10_000_000,
                                               lo=min(dates, default=0),
                                               hi=max(dates, default=0), ascending=True)
                        if r.date_ms in dates and r.doc.get("device") == name]
                entries = docs.delete(gone)
            screens = sum(self._drop_screen(night, device) for night in nights)
        return {"rows": rows, "entries": entries, "nights": screens}

    def _drop_screen(self, night: str, device: str) -> bool:
        """Take `device`'s apnea screen off the night (another edge's becomes the night's);
        whether it had one."""
        try:
            had = self.night(night)
        except NotFoundError:
            return False
        by_device = dict(had.get("by_device") or {})
        if had.get("device") != device and device not in by_device:
            return False
        by_device.pop(device, None)
        if not by_device:
            self.db.execute("DELETE FROM nights WHERE tenant_id = ? AND night = ?",
                            (self.tenant_id, night))
            return True
        first = had.get("device")
        if first == device:  # the next edge's screen becomes the night's
            first = next(iter(by_device))
        self.put_night(night, {"breathing": by_device[first], "device": first,
                               "by_device": by_device})
        return True

    def put_night(self, night: str, doc: dict) -> None:
        self.db.execute(
            "INSERT INTO nights (tenant_id, night, doc, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (tenant_id, night) DO UPDATE SET doc = excluded.doc, "
            "updated_at = excluded.updated_at", (self.tenant_id, night, to_json(doc), time.time()))

    def night_updated(self, night: str) -> float | None:
        """When the night's edge summary was last stored (None: never)."""
        return self.db.scalar("SELECT updated_at FROM nights WHERE tenant_id = ? AND night = ?",
                              (self.tenant_id, night))

    def nights(self, *, limit: int = 60) -> list[dict]:
        rows = self.db.query("SELECT night, doc, updated_at FROM nights WHERE tenant_id = ? "
                             "ORDER BY night DESC LIMIT ?", (self.tenant_id, limit))
        return [{"night": r["night"], "updated_at": r["updated_at"], **from_json(r["doc"])}
                for r in rows]

    def night(self, night: str) -> dict:
        row = self.db.one("SELECT doc FROM nights WHERE tenant_id = ? AND night = ?",
                          (self.tenant_id, night))
        if row is None:
            raise NotFoundError(f"No night {night}.")
        return from_json(row["doc"])

    def add_alert(self, rule: str, level: str, at_ms: int, message: str, **detail) -> int:
        rows = self.db.query(
            "INSERT INTO alerts (tenant_id, rule, level, at_ms, message, detail) "
            "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (self.tenant_id, rule, level, at_ms, message, to_json(detail)))
        changes.announce(self.db, self.tenant_id)  # the live feeds of other processes
        return int(rows[0]["id"])

    def alerts(self, *, limit: int = 100, unacked: bool = False) -> list[dict]:
        sql = "SELECT * FROM alerts WHERE tenant_id = ?"
        if unacked:
            sql += " AND acked_at IS NULL"
        rows = self.db.query(sql + " ORDER BY at_ms DESC, id DESC LIMIT ?",
                             (self.tenant_id, limit))
        for r in rows:
            r["detail"] = from_json(r["detail"])
        return rows

    def alert(self, alert_id: int) -> dict | None:
        row = self.db.one("SELECT * FROM alerts WHERE tenant_id = ? AND id = ?",
                          (self.tenant_id, alert_id))
        if row is not None:
            row["detail"] = from_json(row["detail"])
        return row

    def ack_alert(self, alert_id: int, user_id: int, endpoint: str | None = None) -> bool:
        """Close an open alert as acknowledged by `user_id` (None: a Nightscout client),
        on the browser whose push `endpoint` is given, if it said."""
        acked = bool(self.db.execute(
            "UPDATE alerts SET acked_by = ?, acked_at = ?, acked_endpoint = ? WHERE "
            "tenant_id = ? AND id = ? AND acked_at IS NULL",
            (user_id, time.time(), endpoint, self.tenant_id, alert_id)))
        if acked:
            changes.announce(self.db, self.tenant_id)
        return acked

    def claim_push(self, alert_id: int, now_ms: int, every_ms: int | None = None) -> bool:
        """Whether this caller pushes the open alert now: never pushed (every_ms None), or
        last pushed `every_ms` or more ago; then marked, so that another process does not."""
        if every_ms is None:
            return bool(self.db.execute(
                "UPDATE alerts SET pushed_ms = ? WHERE tenant_id = ? AND id = ? AND acked_at "
                "IS NULL AND pushed_ms IS NULL", (int(now_ms), self.tenant_id, alert_id)))
        return bool(self.db.execute(
            "UPDATE alerts SET pushed_ms = ? WHERE tenant_id = ? AND id = ? AND acked_at IS "
            "NULL AND pushed_ms <= ?", (int(now_ms), self.tenant_id, alert_id,
                                        int(now_ms) - every_ms)))

    def closed_since_pushed(self, opened_after_ms: int, pushed_after_ms: int,
                            closed_after_s: float) -> list[dict]:
        """Alerts opened after `opened_after_ms` and pushed after `pushed_after_ms` (Unix ms)
        that have closed (acknowledged, or ended on their own) after `closed_after_s` (Unix s)
        and whose close no one has pushed yet."""
        rows = self.db.query(
            "SELECT * FROM alerts WHERE tenant_id = ? AND at_ms > ? AND pushed_ms > ? "
            "AND acked_at > ? AND closed_pushed_ms IS NULL ORDER BY id LIMIT 20",
            (self.tenant_id, int(opened_after_ms), int(pushed_after_ms),
             float(closed_after_s)))
        for r in rows:
            r["detail"] = from_json(r["detail"])
        return rows

    def claim_closed_push(self, alert_id: int, now_ms: int) -> bool:
        """Whether this caller pushes the news that the alert closed; then marked, so that
        another process does not."""
        return bool(self.db.execute(
            "UPDATE alerts SET closed_pushed_ms = ? WHERE tenant_id = ? AND id = ? AND "
            "acked_at IS NOT NULL AND closed_pushed_ms IS NULL",
            (int(now_ms), self.tenant_id, alert_id)))

    def end_alert(self, alert_id: int, at_ms: int) -> bool:
        """Close an open alert whose condition ended at at_ms (no one acknowledged it)."""
        ended = bool(self.db.execute(
            "UPDATE alerts SET acked_at = ?, ended_ms = ? WHERE tenant_id = ? AND id = ? "
            "AND acked_at IS NULL", (time.time(), int(at_ms), self.tenant_id, alert_id)))
        if ended:
            changes.announce(self.db, self.tenant_id)
        return ended

    def alert_settings(self, user_id: int) -> dict[str, dict]:
        rows = self.db.query("SELECT rule, enabled, threshold FROM alert_settings "
                             "WHERE tenant_id = ? AND user_id = ?", (self.tenant_id, user_id))
        return {r["rule"]: {"enabled": bool(r["enabled"]), "threshold": r["threshold"]}
                for r in rows}

    def set_alert_setting(self, user_id: int, rule: str, enabled: bool,
                          threshold: float | None) -> None:
        self.db.execute(
            "INSERT INTO alert_settings (tenant_id, user_id, rule, enabled, threshold) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, user_id, rule) DO UPDATE SET "
            "enabled = excluded.enabled, threshold = excluded.threshold",
            (self.tenant_id, user_id, rule, int(enabled), threshold))

    def exclusive(self, purpose: str) -> None:
        """Inside a transaction: wait until no other process holds `purpose` for this tenant
        (PostgreSQL advisory lock; SQLite's single writer already serialises)."""
        self._advisory(f"nightlink-{purpose}:{self.tenant_id}", shared=False)

    def _advisory(self, key: str, *, shared: bool) -> None:
        """Inside a transaction: PostgreSQL's advisory lock on `key` until it ends (shared
        ones do not wait for each other); SQLite's single writer already serialises."""
        if self.db.kind == "postgres":
            fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
            self.db.query(f"SELECT {fn}(hashtext(?)) IS NULL AS locked", (key,))

    def transaction(self):
        return self.db.transaction()

    # -- report settings and the fused-night cache --------------------------------------------

    def report_settings(self) -> dict | None:
        """The patient's stored settings (tz, targets, report_days, alarm_budget: false
        predicted-low alarms a week accepted, None for the model's default), None if unset."""
        return self.db.one("SELECT tz, targets, report_days, alarm_budget FROM patient_settings "
                           "WHERE tenant_id = ?", (self.tenant_id,))

    def set_report_settings(self, tz: str, targets: str, report_days: int,
                            alarm_budget: float | None = None) -> None:
        self.db.execute(
            "INSERT INTO patient_settings (tenant_id, tz, targets, report_days, alarm_budget, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id) DO UPDATE SET "
            "tz = excluded.tz, targets = excluded.targets, report_days = excluded.report_days, "
            "alarm_budget = excluded.alarm_budget, updated_at = excluded.updated_at",
            (self.tenant_id, tz, targets, report_days, alarm_budget, time.time()))

    def alarm_calibration(self) -> dict | None:
        """The predicted-low calibration the cloud last made for this tenant
        (cloud/alert_calibration.py), None if never."""
        row = self.db.one("SELECT doc FROM alarm_calibrations WHERE tenant_id = ?",
                          (self.tenant_id,))
        doc = from_json(row["doc"]) if row else None
        return doc if isinstance(doc, dict) else None

    def set_alarm_calibration(self, doc: dict) -> None:
        self.db.execute(
            "INSERT INTO alarm_calibrations (tenant_id, doc, computed_at) VALUES (?, ?, ?) "
            "ON CONFLICT (tenant_id) DO UPDATE SET doc = excluded.doc, "
            "computed_at = excluded.computed_at",
            (self.tenant_id, to_json(doc, sort_keys=False), time.time()))

    def reading_spread(self, lo_ms: int, hi_ms: int) -> tuple[int, int]:
        """(sgv entries, distinct UTC dates holding one) in [lo, hi)."""
        row = self.db.one(
            f"SELECT count(*) AS n, count(DISTINCT date_ms / {DAY_MS}) AS d FROM "
            f"{ns_store.TABLE} WHERE tenant_id = ? AND coll = 'entries' AND kind = 'sgv' "
            "AND valid = 1 AND date_ms >= ? AND date_ms < ?", (self.tenant_id, lo_ms, hi_ms))
        return (int(row["n"]), int(row["d"])) if row else (0, 0)

    def claim_calibration(self, stamp: float, lease_s: float) -> bool:
        """Take the tenant's predicted-low calibration for the caller (one API process of
        several): True unless another holds it, claimed less than `lease_s` before `stamp`
        (Unix s, the claim's own mark for release_calibration)."""
        return self.db.execute(
            "INSERT INTO calibration_claims (tenant_id, claimed_at) VALUES (?, ?) "
            "ON CONFLICT (tenant_id) DO UPDATE SET claimed_at = excluded.claimed_at "
            "WHERE calibration_claims.claimed_at < ?",
            (self.tenant_id, stamp, stamp - lease_s)) == 1

    def release_calibration(self, stamp: float) -> None:
        """Give up the claim made with `stamp` (not another's, taken over since)."""
        self.db.execute("DELETE FROM calibration_claims WHERE tenant_id = ? AND claimed_at = ?",
                        (self.tenant_id, stamp))

    def cached_fusion(self, night: str, stamp: str) -> dict | None:
        """The cached fusion of a night if it was computed from what `stamp` describes."""
        row = self.db.one("SELECT stamp, doc FROM fused_nights WHERE tenant_id = ? AND "
                          "night = ?", (self.tenant_id, night))
        return from_json(row["doc"]) if row is not None and row["stamp"] == stamp else None

    def cache_fusion(self, night: str, stamp: str, doc: dict) -> None:
        self.db.execute(
            "INSERT INTO fused_nights (tenant_id, night, stamp, doc, computed_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, night) DO UPDATE SET "
            "stamp = excluded.stamp, doc = excluded.doc, computed_at = excluded.computed_at",
            (self.tenant_id, night, stamp, to_json(doc, sort_keys=False), time.time()))

    def forget_fusions(self) -> int:
        """Empty the fused-night cache (every night is fused again when next asked)."""
        return self.db.execute("DELETE FROM fused_nights WHERE tenant_id = ?", (self.tenant_id,))

    def fusion_cache_info(self, night: str) -> dict | None:
        """When the cached fusion of a night was computed, and from what."""
        return self.db.one("SELECT stamp, computed_at FROM fused_nights WHERE tenant_id = ? "
                           "AND night = ?", (self.tenant_id, night))

    # -- data rights --------------------------------------------------------------------------

    def purge(self) -> int:
        """Delete every row this tenant owns (after the 30-day soft-delete period)."""
        n = 0
        with self.db.transaction():
            for table in ("epoch_rows", ns_store.TABLE, "ns_subjects", "nights", "alerts",
                          "alert_settings", "memberships", "api_secrets", "devices",
                          "fused_nights", "patient_settings", "alarm_calibrations",
                          "calibration_claims", "push_subscriptions", "retracted_boots",
                          "device_status", "status_changes"):
                n += self.db.execute(f"DELETE FROM {table} WHERE tenant_id = ?",
                                     (self.tenant_id,))
        return n


def _reading_dates(rows: Iterable[dict]) -> set[int]:
    """The times (Unix ms) of the readings these stored CGM rows carry."""
    out = set()
    for r in rows:
        try:
            v = row_codec.values(features.CGM, r["nfeat"], bytes(r["row_data"]))
        except struct.error:  # a row that no longer decodes
            continue
        if v.get("glucose_mgdl") is not None and v.get("minutes_since") is not None:
            out.add(row_codec.reading_ms(int(r["epoch"]), v["minutes_since"]))
    return out


def _by_device(records: Sequence[codec.Record]) -> dict[str, list[codec.Record]]:
    out: dict[str, list[codec.Record]] = {}
    for rec in records:
        out.setdefault(codec.device_name(rec.device), []).append(rec)
    return out
