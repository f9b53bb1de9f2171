-- postdesk schema, SQLite. Timestamps are RFC 3339 UTC text; raw mail is kept whole as BLOB.

CREATE TABLE tickets (
    id                  INTEGER PRIMARY KEY,          -- the ticket number people see: [#id]
    subject             TEXT    NOT NULL,
    requester           TEXT    NOT NULL,             -- lower-cased address
    requester_name      TEXT,
    status              TEXT    NOT NULL CHECK (status IN ('in_triage','engineer_pending','customer_pending','close_pending','closed')),
    requested_severity  INTEGER CHECK (requested_severity BETWEEN 1 AND 4),
    assigned_severity   INTEGER NOT NULL CHECK (assigned_severity BETWEEN 1 AND 4),
    severity_given      INTEGER NOT NULL DEFAULT 1,
    downgraded          INTEGER NOT NULL DEFAULT 0,
    escalated           INTEGER NOT NULL DEFAULT 0,
    assignee            TEXT,
    company             TEXT,
    language            TEXT,
    linked_ticket       INTEGER REFERENCES tickets(id),
    created_at          TEXT    NOT NULL,
    updated_at          TEXT    NOT NULL,
    first_response_at   TEXT,
    resolved_at         TEXT,
    closed_at           TEXT,
    response_due_at     TEXT,
    resolution_due_at   TEXT,
    update_due_at       TEXT,
    escalation_due_at   TEXT,
    last_public_out_at  TEXT
);
CREATE INDEX tickets_status ON tickets(status);

CREATE TABLE participants (
    ticket_id  INTEGER NOT NULL REFERENCES tickets(id),
    address    TEXT    NOT NULL,                      -- lower-cased
    name       TEXT,
    role       TEXT    NOT NULL CHECK (role IN ('requester','watcher','staff','account_manager')),
    added_at   TEXT    NOT NULL,
    PRIMARY KEY (ticket_id, address)
);
CREATE INDEX participants_address ON participants(address);

CREATE TABLE messages (
    id           INTEGER PRIMARY KEY,
    ticket_id    INTEGER REFERENCES tickets(id),      -- NULL for a bounce not yet attached
    message_id   TEXT    NOT NULL UNIQUE,
    direction    TEXT    NOT NULL CHECK (direction IN ('inbound','outbound')),
    visibility   TEXT    NOT NULL CHECK (visibility IN ('public','internal')),
    kind         TEXT    NOT NULL,                    -- customer, auto_reply, bounce, ...
    from_addr    TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    in_reply_to  TEXT,
    refs         TEXT,
    body_text    TEXT    NOT NULL,
    source       TEXT    NOT NULL,                    -- maildir:..., stdin, imap
    received_at  TEXT    NOT NULL,
    raw          BLOB    NOT NULL
);
CREATE INDEX messages_ticket ON messages(ticket_id);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    ticket_id   INTEGER REFERENCES tickets(id),
    at          TEXT    NOT NULL,
    actor       TEXT    NOT NULL,                     -- address, or 'postdesk'
    kind        TEXT    NOT NULL,                     -- created, status, severity, outbound, ...
    from_value  TEXT,
    to_value    TEXT,
    reason      TEXT    NOT NULL,
    message_id  TEXT
);
CREATE INDEX events_ticket ON events(ticket_id);

CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    ticket_id        INTEGER REFERENCES tickets(id),
    message_id       TEXT    NOT NULL UNIQUE,         -- the Message-ID that is sent
    template         TEXT    NOT NULL,
    to_addr          TEXT    NOT NULL,                -- lower-cased
    automatic        INTEGER NOT NULL DEFAULT 1,      -- counts toward the RFC 3834 rate limit
    rendered         BLOB    NOT NULL,                -- the complete RFC 5322 message
    created_at       TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT    NOT NULL,
    sent_at          TEXT,
    failed_at        TEXT,
    last_error       TEXT
);
CREATE INDEX outbox_due ON outbox(sent_at, failed_at, next_attempt_at);
CREATE INDEX outbox_rate ON outbox(to_addr, created_at);

CREATE TABLE quarantine (
    id           INTEGER PRIMARY KEY,
    sha256       TEXT    NOT NULL UNIQUE,
    reason       TEXT    NOT NULL,                    -- oversized, unparseable, no_sender
    detail       TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    received_at  TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    raw          BLOB    NOT NULL
);

CREATE TABLE source_state (
    source        TEXT PRIMARY KEY,
    uid_validity  INTEGER,
    last_uid      INTEGER,
    updated_at    TEXT NOT NULL
);
