-- SLA clocks: when the current status began, the time-driven status rules' due times, and which
-- breach notices went out. Every scheduled action is a due time on an index: the sweep asks for
-- rows due now, so nothing is kept in memory and a restart catches up.

ALTER TABLE tickets ADD COLUMN status_since TIMESTAMPTZ;            -- when the current status began
ALTER TABLE tickets ADD COLUMN reminder_due_at TIMESTAMPTZ;         -- customer_pending: reminder to the customer
ALTER TABLE tickets ADD COLUMN close_pending_due_at TIMESTAMPTZ;    -- customer_pending: close pending after silence
ALTER TABLE tickets ADD COLUMN auto_close_due_at TIMESTAMPTZ;       -- close_pending: closes by itself
ALTER TABLE tickets ADD COLUMN escalated_at TIMESTAMPTZ;
ALTER TABLE tickets ADD COLUMN response_breach_at TIMESTAMPTZ;      -- when triage was told the response deadline passed
ALTER TABLE tickets ADD COLUMN resolution_breach_at TIMESTAMPTZ;

CREATE INDEX tickets_update_due ON tickets(update_due_at) WHERE update_due_at IS NOT NULL;
CREATE INDEX tickets_reminder_due ON tickets(reminder_due_at) WHERE reminder_due_at IS NOT NULL;
CREATE INDEX tickets_close_pending_due ON tickets(close_pending_due_at) WHERE close_pending_due_at IS NOT NULL;
CREATE INDEX tickets_auto_close_due ON tickets(auto_close_due_at) WHERE auto_close_due_at IS NOT NULL;
CREATE INDEX tickets_escalation_due ON tickets(escalation_due_at) WHERE escalation_due_at IS NOT NULL AND escalated_at IS NULL;
CREATE INDEX tickets_response_due ON tickets(response_due_at) WHERE response_due_at IS NOT NULL AND first_response_at IS NULL AND response_breach_at IS NULL;
CREATE INDEX tickets_resolution_due ON tickets(resolution_due_at) WHERE resolution_due_at IS NOT NULL AND resolved_at IS NULL AND resolution_breach_at IS NULL;
