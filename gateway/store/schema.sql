-- The gateway's store (SQLite). Applied at open; every statement is idempotent.
-- Times are UNIX seconds (REAL, UTC).

CREATE TABLE IF NOT EXISTS messages (
    id               TEXT PRIMARY KEY,
    direction        TEXT NOT NULL,            -- out | in
    kind             TEXT,                     -- catalog kind name (NULL when unreadable)
    msg_type         TEXT,                     -- MsgInfo/Type or Message/Type (8279)
    msg_id           TEXT,                     -- the KITH MsgId
    sender_her       TEXT,
    receiver_her     TEXT,                     -- primary receiver (out) / the local receiver (in)
    conversation_ref TEXT,
    gen_date         TEXT,
    state            TEXT NOT NULL,
    client           TEXT NOT NULL,            -- API client, folder or transport it came through
    dedupe_key       TEXT UNIQUE,              -- out|sender|MsgId, in|sender|MsgId|receiver
    payload          BLOB,                     -- the business XML as received; NULL once pruned
    payload_sha256   TEXT NOT NULL,
    size             INTEGER NOT NULL,
    error_code       TEXT,                     -- KITH code when rejected
    error_event      TEXT,
    error_text       TEXT,
    apprec_of        TEXT,                     -- for an AppRec we emit: the message it answers
    duplicates       INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_state ON messages(state, created_at);
CREATE INDEX IF NOT EXISTS messages_created ON messages(created_at);
CREATE INDEX IF NOT EXISTS messages_msg_id ON messages(msg_id);

CREATE TABLE IF NOT EXISTS deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,   -- acceptance order: the lane order
    message_id       TEXT NOT NULL REFERENCES messages(id),
    receiver_her     TEXT NOT NULL,            -- also the route
    role             TEXT NOT NULL,            -- PRIM | COP | EHR
    channel          TEXT NOT NULL,            -- local | <adapter> | ehr:inbox | ehr:folder | ehr:callback
    lane             TEXT NOT NULL,            -- sender>receiver
    ordered          INTEGER NOT NULL DEFAULT 1,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL,
    lease_owner      TEXT,
    lease_expires_at REAL,
    sent_at          REAL,
    last_error_code  TEXT,
    last_error       TEXT,
    deadline_at      REAL,                     -- AppRec due (outbound)
    warn_at          REAL,
    warned           INTEGER NOT NULL DEFAULT 0,
    expires_at       REAL,                     -- time to live of the retry queue
    apprec_status    TEXT,
    apprec_errors    TEXT,                     -- JSON [[code, text], ...]
    apprec_message_id TEXT,
    apprec_at        REAL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_message ON deliveries(message_id);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(next_attempt_at, id)
    WHERE state IN ('queued', 'retrying') AND ordered = 0;
CREATE INDEX IF NOT EXISTS deliveries_lanes ON deliveries(lane, id) WHERE state IN ('queued', 'retrying') AND ordered = 1;
CREATE INDEX IF NOT EXISTS deliveries_leased ON deliveries(lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_receipt ON deliveries(deadline_at) WHERE state = 'sent';
CREATE INDEX IF NOT EXISTS deliveries_inbox ON deliveries(receiver_her, id) WHERE state = 'inbox';

CREATE TABLE IF NOT EXISTS trace (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   TEXT NOT NULL,
    delivery_id  INTEGER,
    at           REAL NOT NULL,
    state        TEXT NOT NULL,
    event        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    attempt      INTEGER,
    actor        TEXT,
    detail       TEXT                          -- JSON
);
CREATE INDEX IF NOT EXISTS trace_message ON trace(message_id, id);

CREATE TABLE IF NOT EXISTS routes (
    route                TEXT PRIMARY KEY,     -- receiver HER-id
    paused               INTEGER NOT NULL DEFAULT 0,
    paused_by            TEXT,
    paused_at            REAL
);   -- the circuit breaker's state lives in the worker: a restart starts every route closed

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Packets refused at the transport (not decryptable and verifiable, not readable, not from whom they
-- claim): what an operator needs to see them, never their bytes. Bounded: the oldest go past
-- [housekeeping] refusals_kept.
CREATE TABLE IF NOT EXISTS refusals (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    at                   REAL NOT NULL,
    via                  TEXT NOT NULL,        -- the transport it came through
    event                TEXT NOT NULL,        -- the refusal's event code (security.unverified_packet, ...)
    cause                TEXT,                 -- the underlying cause's event code, for operators only
    condition            TEXT,                 -- the NHN transport error condition the peer was told
    code                 TEXT,                 -- KITH code, when there is one
    claimed_sender       TEXT,                 -- as the transport metadata said: not verified
    claimed_receiver     TEXT,
    transport_message_id TEXT,
    size                 INTEGER NOT NULL,
    sha256               TEXT NOT NULL,        -- of the packet as received
    reason               TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refusals_at ON refusals(at);
