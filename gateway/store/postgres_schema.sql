-- The gateway's store (PostgreSQL): the same tables as schema.sql (SQLite), in PostgreSQL's types.
-- Applied by gateway/store/postgres_schema.py as schema version 1; every statement is idempotent.
-- Times are UNIX seconds (double precision, UTC).

CREATE TABLE IF NOT EXISTS messages (
    id               text PRIMARY KEY,
    direction        text NOT NULL,
    kind             text,
    msg_type         text,
    msg_id           text,
    sender_her       text,
    receiver_her     text,
    conversation_ref text,
    gen_date         text,
    state            text NOT NULL,
    client           text NOT NULL,
    dedupe_key       text UNIQUE,
    payload          bytea,
    payload_sha256   text NOT NULL,
    size             integer NOT NULL,
    error_code       text,
    error_event      text,
    error_text       text,
    apprec_of        text,
    duplicates       integer NOT NULL DEFAULT 0,
    created_at       double precision NOT NULL,
    updated_at       double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_state ON messages(state, created_at);
CREATE INDEX IF NOT EXISTS messages_created ON messages(created_at, id);
CREATE INDEX IF NOT EXISTS messages_msg_id ON messages(msg_id);
CREATE INDEX IF NOT EXISTS messages_apprec_of ON messages(apprec_of) WHERE apprec_of IS NOT NULL;

CREATE TABLE IF NOT EXISTS deliveries (
    id                bigserial PRIMARY KEY,   -- acceptance order: the lane order
    message_id        text NOT NULL REFERENCES messages(id),
    receiver_her      text NOT NULL,
    role              text NOT NULL,
    channel           text NOT NULL,
    lane              text NOT NULL,
    ordered           smallint NOT NULL DEFAULT 1,
    state             text NOT NULL,
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   double precision,
    lease_owner       text,
    lease_expires_at  double precision,
    sent_at           double precision,
    last_error_code   text,
    last_error        text,
    deadline_at       double precision,
    warn_at           double precision,
    warned            smallint NOT NULL DEFAULT 0,
    expires_at        double precision,
    apprec_status     text,
    apprec_errors     text,
    apprec_message_id text,
    apprec_at         double precision,
    created_at        double precision NOT NULL,
    updated_at        double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_message ON deliveries(message_id);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(next_attempt_at, id)
    WHERE state IN ('queued', 'retrying') AND ordered = 0;
CREATE INDEX IF NOT EXISTS deliveries_lanes ON deliveries(lane, id) WHERE state IN ('queued', 'retrying') AND ordered = 1;
CREATE INDEX IF NOT EXISTS deliveries_leased ON deliveries(lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_receipt ON deliveries(deadline_at) WHERE state = 'sent';
CREATE INDEX IF NOT EXISTS deliveries_inbox ON deliveries(receiver_her, id) WHERE state = 'inbox';
CREATE INDEX IF NOT EXISTS deliveries_route ON deliveries(receiver_her, state);

CREATE TABLE IF NOT EXISTS trace (
    id           bigserial PRIMARY KEY,
    message_id   text NOT NULL,
    delivery_id  bigint,
    at           double precision NOT NULL,
    state        text NOT NULL,
    event        text NOT NULL,
    reason       text NOT NULL,
    attempt      integer,
    actor        text,
    detail       text
);
CREATE INDEX IF NOT EXISTS trace_message ON trace(message_id, id);

CREATE TABLE IF NOT EXISTS routes (
    route      text PRIMARY KEY,
    paused     smallint NOT NULL DEFAULT 0,
    paused_by  text,
    paused_at  double precision
);

CREATE TABLE IF NOT EXISTS meta (
    key   text COLLATE "C" PRIMARY KEY,       -- byte order, as SQLite's: the adapters delete key ranges
    value text NOT NULL
);

CREATE TABLE IF NOT EXISTS refusals (
    id                   bigserial PRIMARY KEY,
    at                   double precision NOT NULL,
    via                  text NOT NULL,
    event                text NOT NULL,
    cause                text,
    condition            text,
    code                 text,
    claimed_sender       text,
    claimed_receiver     text,
    transport_message_id text,
    size                 integer NOT NULL,
    sha256               text NOT NULL,
    reason               text NOT NULL
);
CREATE INDEX IF NOT EXISTS refusals_at ON refusals(at);
