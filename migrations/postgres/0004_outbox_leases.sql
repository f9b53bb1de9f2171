-- Outbox leases (several workers on one database): a worker claims due rows until lease_until;
-- only the claimer (lease_owner) marks them sent or failed, and the rows of a worker that died
-- are claimed again once their lease has run out.

ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
ALTER TABLE outbox ADD COLUMN lease_until TIMESTAMPTZ;

CREATE INDEX outbox_pending ON outbox(next_attempt_at) WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX outbox_leased ON outbox(lease_owner) WHERE lease_owner IS NOT NULL;

-- Who reads a mailbox (several workers, one IMAP consumer): the worker holding an unexpired
-- lease here; it renews the lease while it runs, and another takes over when it runs out.
CREATE TABLE source_leases (
    source       TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    lease_until  TIMESTAMPTZ NOT NULL
);

-- Open minutes the ticket has waited on the customer so far (sla.pause_when_customer_pending):
-- a severity change recomputes the deadlines from creation and adds these back.
ALTER TABLE tickets ADD COLUMN paused_minutes BIGINT NOT NULL DEFAULT 0;
