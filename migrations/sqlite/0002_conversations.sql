-- Conversations: replies, reports and attachments on tickets.

ALTER TABLE tickets ADD COLUMN requester_bounced INTEGER NOT NULL DEFAULT 0;  -- a bounce named the requester
ALTER TABLE events ADD COLUMN related_ticket INTEGER REFERENCES tickets(id);  -- the other ticket an event concerns

CREATE TABLE attachments (
    id                 INTEGER PRIMARY KEY,
    message_id         INTEGER NOT NULL REFERENCES messages(id),   -- messages.id (the row)
    position           INTEGER NOT NULL,                           -- order in the MIME tree
    filename           TEXT,
    content_type       TEXT    NOT NULL,
    size               INTEGER NOT NULL,                           -- decoded bytes
    content_id         TEXT,
    inline             INTEGER NOT NULL,
    offset_body        INTEGER NOT NULL,                           -- the encoded body is raw[offset_body..offset_end]
    offset_end         INTEGER NOT NULL,
    transfer_encoding  TEXT    NOT NULL
);
CREATE INDEX attachments_message ON attachments(message_id);
