"""Store-and-forward from the edge outbox to the cloud over MQTT: nothing lost, nothing doubled.

- Rows leave the outbox only when the cloud's high-water mark for their device and stream
  reaches them (`…/{stream}/ack`, retained, QoS 1); gaps the cloud reports are sent again.
- Live rows (glucose and anything of priority 1 from the last minutes) go first, one small
  message each; backfill is packed into multi-epoch records, compressed, and paced by a
  token bucket so it never starves live data.
- A persistent session (fixed client id, clean_session off), keepalive with dead-link
  detection; on every reconnect the rows still waiting for an ack are sent again (the cloud
  ignores what it already has).
- One connection attempt at a time: it waits for the broker's CONNACK (connect_timeout_s;
  a slow link needs several round trips) and only then is it judged. A refused login, a TLS
  error, an unreachable broker, a broker that does not answer, or a session that ended soon
  after it began: each waits a jittered back-off (half to all of a delay that doubles up to
  reconnect_max_s), and the reason is logged at WARNING (rate-limited), so the user sees why.
- A store that cannot be written (a full disk) pauses the store work with the same back-off;
  the rows stay in the outbox, nothing is lost, and the sync carries on once space returns.
- The outbox has a quota; over it, the oldest lowest-priority rows are dropped (never
  glucose), counted per stream, and reported on `…/status`.
- Treatments (carbs, insulin, notes, their edits and deletions) go from their own outbox
  (`edge/store/doc_outbox.py`) as JSON batches on `…/treatments`, after live rows and before
  backfill; the cloud's ack names the sequence numbers it stored, and only those leave.
  The other way, the node asks for the cloud's treatments changed since its cursor
  (`{"since": ms}` on `…/treatments`, on connecting and every PULL_EVERY_S) and applies the
  answer from `…/cmd` without queueing it back, so carbs entered anywhere reach the node.
Everything runs on one thread so the store has one writer.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import ssl
import time
from collections import defaultdict
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from nightlink.backoff import Backoff
from nightlink.edge.store import EdgeStore, OutboxItem
from nightlink.nightscout import documents as ns_documents
from nightlink.nightscout import jsonsafe
from nightlink.pacing import TokenBucket
from nightlink.shared import codec, features, topics
from nightlink.shared.epoch import epoch_index
from nightlink.sql import DatabaseError

_LOGGER = logging.getLogger(__name__)
LIVE_PRIORITY = 1  # glucose (and alarms): sent first, one small message at a time
MAX_RECORDS_PER_BATCH = 64
MAX_DOCS_PER_BATCH = 50  # treatments in one message
MAX_DOC_BATCH_BYTES = 256 * 1024  # a batch is cut before this (one larger document goes alone)
PULL_EVERY_S = 30.0  # how often the node asks the cloud for its treatments
PULL_BACK_MS = 7 * 86_400_000  # a node new to the cloud starts with a week of changes
MAX_CURSOR = 2**63 - 1  # a srvModified the cloud accepts back in a pull
WARN_EVERY_S = 10.0  # the same failure is logged at WARNING at most this often (else INFO)
SILENT_CLOUD_S = 180.0  # rows sent this long with no ack at all: the cloud is not storing them
MAX_RESEND_S = 1800.0  # resends slow down while the cloud stays silent, to this at most
_SILENT = "the cloud has acknowledged nothing"
_DOCS_SILENT = "the cloud has acknowledged no treatment"
# What a store that cannot be written raises (a full disk, an I/O error): nightlink.sql turns
# every failure, a transaction's BEGIN and COMMIT included, into DatabaseError.
STORE_ERRORS = (DatabaseError,)


@dataclass
class SyncStats:
    attempts: int = 0  # connection attempts (each one TCP connect and CONNECT packet)
    connects: int = 0
    disconnects: int = 0
    messages: int = 0
    rows_sent: int = 0
    bytes_sent: int = 0
    acked_rows: int = 0
    resend_requests: int = 0
    docs_sent: int = 0  # treatment changes published (resends included)
    docs_acked: int = 0
    docs_refused: int = 0  # changes the cloud dead-lettered (kept here as dead letters)
    docs_pulled: int = 0  # the cloud's changes applied here
    dropped: dict = field(default_factory=dict)


class SyncClient:
    def __init__(self, store: EdgeStore, cfg, tenant: str, *, client_id: str | None = None,
                 rng: random.Random | None = None):
        self.store = store
        self.cfg = cfg
        self.tenant = topics.check_name("tenant", tenant)
        self.device = store.device
        self.rng = rng or random.Random()
        self.stats = SyncStats()
        self.connected = False
        self.last_error = ""  # why the last connection attempt failed ("" once connected)
        self.store_error = ""  # why the store could not be written ("" once it could)
        self._acks: list[tuple[str, bytes, bool]] = []  # (topic, payload, retained)
        self._session_wall = 0.0  # when this session connected (wall clock, as sent_at)
        self._sent_ranges: set[tuple[int, int, int]] = set()  # (stream, first, last) sent
        self._backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s, self.rng)
        self._next_attempt = 0.0
        self._deadline: float | None = None  # an attempt is open until its CONNACK or this
        self._refusal = ""
        self._up_since = 0.0
        self._store_backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s, self.rng)
        self._store_resume = 0.0
        self._warned: dict[str, tuple[str, float]] = {}
        self._last_status = 0.0
        self.pull_every_s = PULL_EVERY_S
        self._next_pull = 0.0  # monotonic; 0: on the next pass
        # Treatment changes go one batch at a time: the next waits for this one's ack (or its
        # resend time), so two ingest workers sharing the subscription can never apply an
        # older edit of a document after a newer one.
        self._docs_waiting: set[int] = set()
        self._docs_wait_until = 0.0  # wall-clock, as the outbox's sent_at
        self._closing = False
        self._unacked_since: float | None = None  # rows sent, no ack since (monotonic)
        self._docs_unacked_since: float | None = None  # the same for treatment changes
        self._rows_acked = False  # an ack for readings has come in this session
        self._silence_warned = 0.0
        now = time.monotonic()
        self.bucket = TokenBucket(cfg.backfill_rows_per_s, cfg.backfill_rows_per_s, now)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"nl-edge-{self.device}",
                                  clean_session=False)
        self.client.max_inflight_messages_set(cfg.max_inflight)
        self.client.max_queued_messages_set(0)
        self.client.connect_timeout = cfg.connect_timeout_s
        if cfg.username:
            self.client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            self.client.tls_set(ca_certs=cfg.ca_file or None)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _c, _u, m: self._acks.append(
            (m.topic, bytes(m.payload), bool(m.retain)))

    @property
    def where(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

    def _warn(self, kind: str, now: float, message: str) -> None:
        """WARNING for a new reason, or the same one after WARN_EVERY_S; INFO in between."""
        last = self._warned.get(kind)
        if last is None or last[0] != message.split(";")[0] or now - last[1] >= WARN_EVERY_S:
            self._warned[kind] = (message.split(";")[0], now)
            _LOGGER.warning("%s", message)
        else:
            _LOGGER.info("%s", message)

    # -- connection -----------------------------------------------------------------------

    def _on_connect(self, client, _u, _flags, reason_code, _p):
        if reason_code.is_failure:
            self._refusal = f"cloud broker {self.where} refused the login ({reason_code})"
            return
        self.connected = True
        self._deadline = None
        self.last_error = ""
        self._unacked_since = None  # a new session: the silence is timed from its first send
        self._docs_unacked_since = None
        self._rows_acked = False
        self._up_since = time.monotonic()
        self._session_wall = time.time()
        self._sent_ranges = set()
        self.stats.connects += 1
        client.subscribe([(f"{topics.PREFIX}/{self.tenant}/{self.device}/+/{topics.ACK}", 1),
                          (topics.cmd_topic(self.tenant, self.device), 1)])
        self._next_pull = 0.0
        # Whatever was in flight may be lost: send every unacknowledged row again now.
        try:
            self.store.mark_all_unsent()
            self.store.mark_docs_unsent()
            self._docs_waiting = set()
        except STORE_ERRORS as exc:  # the resend timer sends them instead
            self._store_failed(time.monotonic(), exc)
        _LOGGER.info("connected to %s", self.where)

    def _on_disconnect(self, _c, _u, _flags, reason_code, _p):
        if not self.connected:
            return
        self.connected = False
        if self._closing:
            return
        now = time.monotonic()
        self.stats.disconnects += 1
        if now - self._up_since >= self.cfg.reconnect_max_s:
            self._backoff.reset()  # a session that lasted: start afresh
        # Never straight back: a broker that drops every new session (another client with
        # this id, a restart loop) would otherwise be reconnected to as fast as it drops.
        self._back_off(now, f"cloud broker link lost ({reason_code})")

    def _back_off(self, now: float, reason: str) -> None:
        """Wait half to all of the current delay (jitter), then double it, up to the ceiling."""
        self._deadline = None
        self._refusal = ""
        self.last_error = reason
        delay = self._backoff.next()
        self._next_attempt = now + delay
        self._warn("link", now, f"{reason}; next try in {delay:.1f} s")

    def _connect(self, now: float) -> None:
        """Open one attempt: TCP (and TLS), then the CONNECT packet; the CONNACK is awaited
        by step() until connect_timeout_s."""
        if now < self._next_attempt:
            return
        self.stats.attempts += 1
        try:
            self.client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        except (ssl.SSLError, ConnectionResetError) as exc:
            if isinstance(exc, ssl.SSLError) or self.cfg.tls:  # a reset in the handshake
                why = (getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
                       or exc.strerror or exc)
                self._back_off(now, f"TLS with the cloud broker {self.where} failed ({why})")
            else:
                self._back_off(now, f"cannot reach {self.where} ({exc.strerror or exc})")
            return
        except (OSError, ValueError) as exc:
            why = getattr(exc, "strerror", None) or exc
            self._back_off(now, f"cannot reach {self.where} ({why})")
            return
        self._deadline = now + self.cfg.connect_timeout_s

    def _judge_attempt(self, now: float, rc) -> None:
        """The open attempt after a loop pass: refused, closed, timed out, or still waiting."""
        if self._refusal:
            self._back_off(now, self._refusal)
        elif self.client.socket() is None or rc != mqtt.MQTT_ERR_SUCCESS:
            self._back_off(now, f"cloud broker {self.where} closed the connection before "
                                f"answering the login ({mqtt.error_string(rc)})")
        elif now >= self._deadline:
            try:
                self.client.socket().shutdown(socket.SHUT_RDWR)  # paho then closes it
            except OSError:
                pass
            self._back_off(now, f"cloud broker {self.where} did not answer the login within "
                                f"{self.cfg.connect_timeout_s:g} s")

    # -- acknowledgements ---------------------------------------------------------------

    def _handle_acks(self) -> None:
        """Apply the acks and commands received; one that cannot be stored stays for the next
        pass. Anything else a message raises drops that message alone, with a rate-limited
        WARNING: nothing the broker delivers may end this thread (glucose goes on it too)."""
        while self._acks:
            topic, payload, retained = self._acks[0]
            try:
                self._handle_one(topic, payload, retained=retained)
            except STORE_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - any bad message is dropped, not fatal
                self._warn("message", time.monotonic(),
                           f"ignoring a malformed message on {topic[:200]}; "
                           f"{type(exc).__name__}: {str(exc)[:200]}")
            self._acks.pop(0)

    def _handle_one(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        kind, _tenant, device, stream = topics.parse(topic)
        if device != self.device:
            return
        body = json.loads(payload)
        if kind == "ack":
            self._unacked_since = None  # the cloud answers: it stores what it is sent
            if self.last_error.startswith(_SILENT):
                self.last_error = ""
        if kind == "ack" and stream == topics.TREATMENTS:
            self._docs_unacked_since = None
            if self.last_error.startswith(_DOCS_SILENT):
                self.last_error = ""
            self._doc_ack(body)
        elif kind == "cmd":
            if isinstance(body, dict) and body.get("cmd") == topics.TREATMENTS:
                self._apply_cloud_docs(body)
        elif kind == "ack" and features.stream_by_name(stream):
            hwm = int(body["hwm"])
            self._rows_acked = True
            gaps = [(int(a), int(b)) for a, b in body.get("gaps", [])]
            sid = features.stream_by_name(stream)[features.S_ID]
            reused = [(int(a), int(b)) for a, b in body.get("reused", [])]
            self.store.catch_up(device, sid, hwm, reused)  # first: the ack may cover them
            # A mark from before this session (retained by the broker, or queued in this
            # client's session while it was away) was computed before anything sent in it:
            # it releases only rows sent before (a store put back from an older copy sends
            # rows under seqs such a mark covers; the cloud's answer says so). The cloud
            # names in `of` the seqs of the message it answers; one without (an older cloud)
            # is taken as an answer.
            of = body.get("of")
            stale = retained or (of is not None and (
                not isinstance(of, list) or len(of) != 2
                or (sid, int(of[0]), int(of[1])) not in self._sent_ranges))
            self.stats.acked_rows += self.store.ack(
                device, sid, hwm, sent_before=self._session_wall if stale else None)
            for first, last in gaps:
                self.stats.resend_requests += self.store.resend_range(device, sid, first, last)

    def _doc_ack(self, body: dict) -> None:
        """The cloud stored (or refused for good) the treatment changes it names; a malformed
        ack raises ValueError, TypeError or AttributeError."""
        ranges = [(int(a), int(b)) for a, b in body.get("seqs", [])]
        refused = [(int(seq), str(why)) for seq, why in body.get("refused", [])]
        self._docs_waiting = {seq for seq in self._docs_waiting
                              if not any(a <= seq <= b for a, b in ranges)}
        for seq, why in refused:
            self.stats.docs_refused += 1
            self.store.dead_letter("cloud", f"the cloud refused treatment change {seq}: {why}")
        self.stats.docs_acked += self.store.ack_docs(ranges)

    def _apply_cloud_docs(self, body: dict) -> None:
        """The cloud's answer to a pull: apply it (each document checked by the Nightscout
        core's rules; a bad one kept as a dead letter) and ask again at once if it had more."""
        until, docs = body.get("until"), body.get("docs")
        if not _whole(until) or not 0 <= until <= MAX_CURSOR:
            raise ValueError(f"the cloud's treatments answer has until {until!r}, not a "
                             "srvModified in ms")
        if not isinstance(docs, list):
            raise ValueError("the cloud's treatments answer has no list of docs")
        changes = []
        now_ms = int(time.time() * 1000)
        for doc in docs:
            try:
                if not isinstance(doc, dict):
                    raise ns_documents.DocumentError("A document must be a JSON object.")
                doc = dict(doc)
                deleted = doc.pop("isValid", True) is False
                changes.append((ns_documents.normalize(topics.TREATMENTS, doc, now_ms),
                                deleted))
            except STORE_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad document must not stop the pull
                why = exc if isinstance(exc, ns_documents.DocumentError) else \
                    f"{type(exc).__name__}: {str(exc)[:200]}"
                self.store.dead_letter("cloud", f"a treatment from the cloud: {why}",
                                       _as_bytes(doc))
        applied, _skipped = self.store.apply_cloud_changes(topics.TREATMENTS, changes, until)
        self.stats.docs_pulled += applied
        if body.get("more") is True:
            self._next_pull = 0.0

    def _pull(self) -> None:
        """Ask the cloud for its treatments changed since the cursor (its answer comes on
        …/cmd); again after pull_every_s, or at once when an answer says there is more."""
        now = time.monotonic()
        if now < self._next_pull:
            return
        self._next_pull = now + self.pull_every_s
        since = self.store.cloud_cursor(topics.TREATMENTS)
        if since is None:
            since = max(0, int(time.time() * 1000) - PULL_BACK_MS)
        self.client.publish(topics.treatments_topic(self.tenant, self.device),
                            json.dumps({"since": since}, separators=(",", ":")), qos=1)

    # -- sending --------------------------------------------------------------------------

    def _send_docs(self, now: float) -> int:
        """Publish the next batch of treatment changes that are due and mark it sent, unless
        the batch before is still waiting for its ack (and its resend time has not come)."""
        if self._docs_waiting and now < self._docs_wait_until:
            return 0
        self._docs_waiting = set()
        changes = self.store.doc_changes_due(resend_after_s=self.cfg.resend_after_s, now=now,
                                             limit=MAX_DOCS_PER_BATCH)
        batch = next(iter(_doc_batches(changes)), None)
        if not batch:
            return 0
        payload = json.dumps({"docs": [{"seq": c.seq, "doc": c.doc} for c in batch]},
                             separators=(",", ":"), default=str).encode()
        info = self.client.publish(topics.treatments_topic(self.tenant, self.device), payload,
                                   qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return 0  # link gone: it stays unsent
        self.store.mark_docs_sent([c.seq for c in batch], time.time())
        if self._docs_unacked_since is None:
            self._docs_unacked_since = time.monotonic()
        self._docs_waiting = {c.seq for c in batch}
        self._docs_wait_until = now + self.cfg.resend_after_s
        self.stats.messages += 1
        self.stats.bytes_sent += len(payload)
        self.stats.docs_sent += len(batch)
        return len(batch)

    def _send(self, items: list[OutboxItem], *, compress: bool) -> int:
        """Publish rows grouped by device and stream; mark them sent. Returns rows sent."""
        groups: dict[tuple[str, int], list[codec.Record]] = defaultdict(list)
        ids: dict[tuple[str, int], list[int]] = defaultdict(list)
        for it in items:
            groups[(it.device, it.stream)].append(codec.decode(it.blob))
            ids[(it.device, it.stream)].append(it.record_id)
        sent = 0
        for (device, stream), recs in groups.items():
            recs.sort(key=lambda r: (r.boot, r.seq))
            packed = codec.pack_runs(recs, self.cfg.rows_per_record)
            topic = topics.data_topic(self.tenant, device, features.stream(stream)[features.S_NAME])
            for part in _messages(packed):
                payload = (codec.encode_batch(part, compress=compress)
                           if compress or len(part) > 1 else codec.encode(part[0]))
                info = self.client.publish(topic, payload, qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    return sent  # link gone: the rest stay unsent
                self._sent_ranges.add((stream, min(r.seq for r in part),
                                       max(r.seq + r.count - 1 for r in part)))
                self.stats.messages += 1
                self.stats.bytes_sent += len(payload)
            self.store.mark_sent(ids[(device, stream)], time.time())
            if self._unacked_since is None:
                self._unacked_since = time.monotonic()
            n = sum(r.count for r in packed)
            sent += n
            self.stats.rows_sent += n
        return sent

    def _resend_after(self) -> float:
        """How long a sent row waits for its ack before it goes again: the configured time,
        stretched to half the cloud's silence (at most MAX_RESEND_S) while no ack comes at
        all, so a cloud that takes nothing is not sent the whole outbox every half minute."""
        if self._unacked_since is None:
            return self.cfg.resend_after_s
        silence = time.monotonic() - self._unacked_since
        return max(self.cfg.resend_after_s, min(silence / 2, MAX_RESEND_S))

    def _check_silence(self, now: float) -> None:
        """Say it when the broker takes the rows but the cloud acknowledges none: the edge is
        not provisioned in the cloud for this tenant, or edge.toml names another tenant."""
        if self._unacked_since is None or now - self._unacked_since < SILENT_CLOUD_S:
            self._check_docs_silence(now)
            return
        minutes = (now - self._unacked_since) / 60
        self._say_silence(
            now, f"{_SILENT} for {minutes:.0f} min though {self.where} takes the rows",
            "is this edge (device %s) provisioned in the cloud for tenant %r (`nightlink "
            "device register-edge --edge-id %s`; GET /api/nl/v1/tenants/%s/devices lists "
            "them), and is `tenant` in edge.toml right? The cloud's log says why it refuses; "
            "rows are kept and sent again every %.0f s",
            self.device, self.tenant, self.device, self.tenant, self._resend_after())

    def _say_silence(self, now: float, why: str, question: str, *args) -> None:
        """Keep `why` as the link's state, and say it with `question` (what to check) at
        WARNING, at most every 10 minutes."""
        self.last_error = why
        if now - self._silence_warned >= 10 * 60:
            self._silence_warned = now
            _LOGGER.warning("%s: " + question, why, *args)

    def _check_docs_silence(self, now: float) -> None:
        """Say it when the cloud acknowledges the readings but none of the treatment changes:
        a cloud older than this edge drops them as an unknown kind of message (its dead
        letters say so), and the edge would otherwise only show them waiting."""
        since = self._docs_unacked_since
        if since is None or now - since < SILENT_CLOUD_S or self.last_error.startswith(_SILENT):
            return
        self._say_silence(
            now, f"{_DOCS_SILENT} change for {(now - since) / 60:.0f} min"
            + (", though it acknowledges the readings" if self._rows_acked else ""),
            "does the cloud run an older Nightlink, from before treatments were synced "
            "(update it), or is this edge (device %s) provisioned there as a clock rather "
            "than with `nightlink device register-edge`? The cloud's dead letters say which; "
            "the changes are kept and sent again", self.device)

    def pump(self) -> int:
        """One pass: live rows first, then as much backfill as the bucket allows."""
        now = time.time()
        resend = self._resend_after()
        live_from = epoch_index(now) - self.cfg.live_window_epochs
        due = self.store.due(resend_after_s=resend, now=now, limit=200,
                             max_priority=LIVE_PRIORITY)
        live = [it for it in due if codec.peek_header(it.blob)[codec.H_EPOCH] >= live_from]
        sent = self._send(live, compress=False) if live else 0
        self._send_docs(now)
        budget = self.bucket.take(time.monotonic(), self.cfg.backfill_batch_rows)
        if budget:
            back = [it for it in self.store.due(resend_after_s=resend, now=now,
                                                limit=budget + len(live))
                    if it.record_id not in {x.record_id for x in live}][:budget]
            if back:
                sent += self._send(back, compress=True)
            self.bucket.give_back(budget - len(back))  # what was not used
        return sent

    def _status(self, now: float) -> None:
        dropped = self.store.enforce_quota(self.cfg.max_outbox_rows)
        for s, n in dropped.items():
            self.stats.dropped[s] = self.stats.dropped.get(s, 0) + n
        if now - self._last_status < self.cfg.status_interval_s and not dropped:
            return
        self._last_status = now
        drops = {features.stream(s)[features.S_NAME]: n for s, n in self.store.drops().items()}
        ranges = {features.stream(s)[features.S_NAME]: r
                  for s, r in self.store.dropped_ranges(self.device).items()}
        body = {"outbox": self.store.outbox_size(), "drops": drops, "dropped": ranges,
                "boot": self.store.boot}
        policy = self.store.meta("alarm_policy")  # the clocks' predicted-low policy, if any
        if policy:
            body["alarm_policy"] = policy
            params = _json_object(self.store.meta("alarm_policy_params"))
            if params:  # the same as the clocks take it: the cloud's predicted_low applies it
                body["alarm_policy_params"] = params
        zone = self.store.meta("timezone")  # the node's zone (edge/node/zone.py ZONE_META)
        if zone:
            body["timezone"] = zone
        # "bedtime-wake" as the person set it (edge/node/nights.py REPORTED_SCHEDULE_META):
        # the cloud's nights begin and end where the node's do (a day sleeper's)
        schedule = self.store.meta("night_schedule_set")
        if schedule:
            body["night_schedule"] = schedule
        nights = _night_screens(self.store)
        if nights:
            body["nights"] = nights
        # imports undone (edge/store/imports.py): the cloud drops the rows of their boots
        retracted = self.store.retractions()
        if retracted:
            body["retracted"] = retracted
        self.client.publish(topics.status_topic(self.tenant, self.device),
                            json.dumps(body, separators=(",", ":")), qos=1, retain=True)

    # -- the loop -------------------------------------------------------------------------

    def _store_failed(self, now: float, exc: Exception) -> None:
        """The store could not be written (or read): keep every row, retry after a back-off."""
        self.store_error = f"the edge store {self.store.path} cannot be written ({exc})"
        delay = self._store_backoff.next()
        self._store_resume = now + delay
        self._warn("store", now, f"{self.store_error}; the rows stay in the outbox, next try "
                                 f"in {delay:.1f} s")

    def _store_work(self, now: float) -> None:
        if now < self._store_resume:
            return
        try:
            self._handle_acks()
            if self.connected:
                self._status(now)  # the quota first: what is over it is dropped, not sent
                self.pump()
                self._pull()
                self._check_silence(now)
        except STORE_ERRORS as exc:
            self._store_failed(now, exc)
            return
        if self.store_error:
            _LOGGER.warning("the edge store %s answers again", self.store.path)
            self.store_error = ""
            self._store_backoff.reset()

    def step(self, timeout: float = 0.05) -> None:
        now = time.monotonic()
        if not self.connected and self._deadline is None:
            self._connect(now)
        if self.client.socket() is None:
            time.sleep(timeout)  # nothing to wait on: do not spin
            self._store_work(now)
            return
        rc = self.client.loop(timeout=timeout)
        now = time.monotonic()
        if self._deadline is not None and not self.connected:
            self._judge_attempt(now, rc)
        elif rc != mqtt.MQTT_ERR_SUCCESS and self.connected:
            self._on_disconnect(None, None, None, rc, None)
        self._store_work(now)

    def outbox_rows(self) -> int | None:
        """Rows waiting for the cloud (records and treatment changes); None when the store
        cannot be read."""
        try:
            return self.store.outbox_size() + self.store.doc_outbox_size()
        except STORE_ERRORS as exc:
            if not self.store_error:
                self.store_error = f"the edge store {self.store.path} cannot be read ({exc})"
            return None

    def run(self, stop, *, until_empty: bool = False) -> None:
        """Loop until stop is set (a threading.Event), or until the outbox is empty (at
        once when there is nothing to send, connected or not)."""
        while not stop.is_set():
            if until_empty and not self._acks and self.outbox_rows() == 0:
                break
            self.step()
        self._closing = True
        try:
            self.client.disconnect()
        except OSError:
            pass


def _as_bytes(doc) -> bytes:
    """A document as a dead letter's payload (a note of its type when it is not JSON)."""
    try:
        return json.dumps(doc, default=str).encode()
    except (TypeError, ValueError, RecursionError):
        return f"<a {type(doc).__name__} that is not JSON>".encode()


def _whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _messages(records: list[codec.Record]) -> list[list[codec.Record]]:
    """Records cut into messages of at most MAX_RECORDS_PER_BATCH records and
    codec.MAX_MESSAGE_ROWS epoch rows (a record is never split: pack_runs keeps records far
    smaller)."""
    out: list[list[codec.Record]] = []
    rows = 0
    for rec in records:
        if (not out or len(out[-1]) >= MAX_RECORDS_PER_BATCH
                or rows + len(rec.rows) > codec.MAX_MESSAGE_ROWS):
            out.append([])
            rows = 0
        out[-1].append(rec)
        rows += len(rec.rows)
    return out


def _doc_batches(changes: list) -> list[list]:
    """Changes cut into batches of at most MAX_DOCS_PER_BATCH and about MAX_DOC_BATCH_BYTES."""
    batches: list[list] = []
    size = 0
    for change in changes:
        n = len(json.dumps(change.doc, separators=(",", ":"), default=str))
        if not batches or len(batches[-1]) >= MAX_DOCS_PER_BATCH \
                or size + n > MAX_DOC_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(change)
        size += n
    return batches


STATUS_NIGHTS = 7  # nights whose breathing screen rides in the status report
_SCREEN_BYTES = 6000  # at most this much JSON a night (the cloud reads 8 KiB)


def _night_screens(store) -> dict:
    """{night: its summary's breathing block} of the newest nights: the apnea screen the edge
    fused from heart rhythm (from the beats, which the wire does not carry), oximetry and
    audio, which the cloud cannot rebuild from the epoch rows (cloud/fusion.py reads it)."""
    out = {}
    for night, summary in store.recent_nights(STATUS_NIGHTS):
        block = summary.get("breathing") if isinstance(summary, dict) else None
        # as the cloud reads it: finite numbers only (one bad night must not cost the report
        # its drops and policy), and small
        size = jsonsafe.finite_size(block) if isinstance(block, dict) else None
        if size is not None and size <= _SCREEN_BYTES:
            out[night] = block
    return out


def _json_object(text: str | None) -> dict | None:
    """A JSON object kept in the store's meta, or None (absent, or not an object)."""
    try:
        doc = json.loads(text) if text else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
