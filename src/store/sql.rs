//! The SQL both backends share. SQLite and PostgreSQL accept the same statements here (`$N`
//! placeholders, `RETURNING`, `ON CONFLICT DO NOTHING`); the macro stamps out one `Store` and one
//! `StoreTx` implementation per backend so that the statements exist once.

/// Implements `Store` for `$store` (with a `pool` field and a `begin_write` method) and defines
/// the transaction type `$tx` over the sqlx database `$db`. `$lock` is what locks the ticket rows
/// a decision reads (`" FOR UPDATE"` on PostgreSQL; SQLite has one writer at a time anyway).
macro_rules! sql_store {
    ($store:ty, $tx:ident, $db:ty, $lock:expr, $skip_locked:expr) => {
        use chrono::{DateTime, Utc};
        use sqlx::Row;

        use crate::desk::{
            Action, Decision, MailContext, Member, Role, Status, Target, ThreadKeys, TicketState,
        };
        use crate::mail::{InboundMail, QuarantineReason};
        use crate::store::{
            AttachmentSummary, Counts, Event, InboundRecord, MessageSummary, OutboxBacklog,
            OutboxItem, OutboxSummary, Participant, QueuedMail, RenderFn, SourceState, Store,
            StoreError, StoreTx, TicketDetail, TicketSummary, WriterTurn,
        };

        /// A write transaction on this backend, with the in-process writer turn it holds.
        pub struct $tx(sqlx::Transaction<'static, $db>, #[allow(dead_code)] WriterTurn);

        type Conn = <$db as sqlx::Database>::Connection;
        type DbRow = <$db as sqlx::Database>::Row;

        /// `$1, $2, ...` from `start`, `n` of them.
        /// Message-IDs of a ticket's customer conversation kept for threading a relay (the first
        /// one and the latest).
        const CONVERSATION_IDS: i64 = 10;

        fn placeholders(start: usize, n: usize) -> String {
            (start..start + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
        }

        async fn context_on(
            conn: &mut Conn,
            mail: &InboundMail,
            keys: &ThreadKeys,
            since: DateTime<Utc>,
            lock: bool,
        ) -> Result<MailContext, StoreError> {
            // One round trip: known as an inbound message, known as one postdesk sent (it came
            // back), and the automatic replies to this sender in the last hour.
            let row = sqlx::query(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE message_id = $1),
                        (SELECT ticket_id FROM messages WHERE message_id = $1 LIMIT 1),
                        EXISTS (SELECT 1 FROM outbox WHERE message_id = $1),
                        (SELECT ticket_id FROM outbox WHERE message_id = $1 LIMIT 1),
                        (SELECT COUNT(*) FROM outbox WHERE to_addr = $2 AND automatic AND created_at >= $3)",
            )
            .bind(&mail.message_id)
            .bind(mail.from.key())
            .bind(since)
            .fetch_one(&mut *conn)
            .await?;
            let known_message = if row.try_get::<bool, _>(0)? {
                Some(row.try_get::<Option<i64>, _>(1)?)
            } else if row.try_get::<bool, _>(2)? {
                Some(row.try_get::<Option<i64>, _>(3)?)
            } else {
                None
            };
            let replies: i64 = row.try_get(4)?;
            let mut ctx = MailContext {
                known_message,
                auto_replies_to_sender_last_hour: u32::try_from(replies).unwrap_or(u32::MAX),
                ..MailContext::default()
            };
            if ctx.known_message.is_some() {
                return Ok(ctx);
            }

            // Which ticket the headers name: every Message-ID we stored or sent is on a unique
            // index (messages.message_id, outbox.message_id), so this is two index probes per key.
            if !keys.message_ids.is_empty() {
                let n = keys.message_ids.len();
                let list = placeholders(1, n);
                let sql = format!(
                    "SELECT message_id, ticket_id FROM messages WHERE message_id IN ({list}) AND ticket_id IS NOT NULL
                     UNION ALL
                     SELECT message_id, ticket_id FROM outbox WHERE message_id IN ({list}) AND ticket_id IS NOT NULL"
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for id in &keys.message_ids {
                    q = q.bind(id);
                }
                let found: Vec<(String, i64)> = q
                    .fetch_all(&mut *conn)
                    .await?
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<_, StoreError>>()?;
                ctx.header_match = keys.message_ids.iter().find_map(|id| {
                    found
                        .iter()
                        .find(|(m, _)| m == id)
                        .map(|(_, t)| (*t, id.clone()))
                });
            }

            let mut numbers: Vec<i64> = ctx.header_match.iter().map(|(t, _)| *t).collect();
            if let Some(tag) = keys.tag
                && !numbers.contains(&tag)
            {
                numbers.push(tag);
            }
            if numbers.is_empty() {
                return Ok(ctx);
            }
            ctx.tickets = load_tickets(conn, numbers, lock).await?;
            Ok(ctx)
        }

        /// The state of the tickets `numbers` names (those that exist), locked in id order when
        /// `lock` (on PostgreSQL) until the transaction ends.
        async fn load_tickets(
            conn: &mut Conn,
            mut numbers: Vec<i64>,
            lock: bool,
        ) -> Result<Vec<TicketState>, StoreError> {
            let mut tickets: Vec<TicketState> = Vec::new();
            numbers.sort_unstable();
            // Locked in id order, so that two writers never wait on each other crosswise.
            let list = placeholders(1, numbers.len());
            let lock_clause = if lock { $lock } else { "" };
            let sql = format!(
                "SELECT id, status, requested_severity, assigned_severity, severity_given, downgraded, subject, created_at, closed_at, assignee, first_response_at, requester_bounced,
                        status_since, response_due_at, resolution_due_at, escalation_due_at, update_due_at, reminder_due_at,
                        close_pending_due_at, auto_close_due_at, escalated_at, response_breach_at, resolution_breach_at,
                        resolved_at, last_public_out_at, paused_minutes FROM tickets
                 WHERE id IN ({list}) ORDER BY id{lock_clause}"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for n in &numbers {
                q = q.bind(n);
            }
            let rows = q.fetch_all(&mut *conn).await?;
            for r in &rows {
                let status: String = r.try_get("status")?;
                let severity: i64 = r.try_get("assigned_severity")?;
                let requested: Option<i64> = r.try_get("requested_severity")?;
                tickets.push(TicketState {
                    number: r.try_get("id")?,
                    status: status
                        .parse()
                        .map_err(|e: crate::desk::status::UnknownStatus| StoreError::Database(e.to_string()))?,
                    severity: crate::desk::SeverityReading {
                        requested: requested.and_then(|n| crate::desk::Severity::try_from(n).ok()),
                        assigned: crate::desk::Severity::try_from(severity).map_err(|_| {
                            StoreError::Database(format!("severity {severity} out of range"))
                        })?,
                        given: r.try_get("severity_given")?,
                        downgraded: r.try_get("downgraded")?,
                    },
                    subject: r.try_get("subject")?,
                    participants: Vec::new(),
                    created_at: r.try_get("created_at")?,
                    closed_at: r.try_get("closed_at")?,
                    assignee: r.try_get("assignee")?,
                    first_response_at: r.try_get("first_response_at")?,
                    conversation: Vec::new(),
                    requester_bounced: r.try_get("requester_bounced")?,
                    clocks: crate::desk::ticket::Clocks {
                        status_since: r.try_get("status_since")?,
                        response_due: r.try_get("response_due_at")?,
                        resolution_due: r.try_get("resolution_due_at")?,
                        escalation_due: r.try_get("escalation_due_at")?,
                        update_due: r.try_get("update_due_at")?,
                        reminder_due: r.try_get("reminder_due_at")?,
                        close_pending_due: r.try_get("close_pending_due_at")?,
                        auto_close_due: r.try_get("auto_close_due_at")?,
                        escalated_at: r.try_get("escalated_at")?,
                        response_breach_at: r.try_get("response_breach_at")?,
                        resolution_breach_at: r.try_get("resolution_breach_at")?,
                        resolved_at: r.try_get("resolved_at")?,
                        last_public_out: r.try_get("last_public_out_at")?,
                        paused: chrono::Duration::minutes(r.try_get::<i64, _>("paused_minutes")?),
                    },
                });
            }
            if tickets.is_empty() {
                return Ok(tickets);
            }
            let list = placeholders(1, tickets.len());
            let sql = format!(
                "SELECT ticket_id, address, name, role FROM participants WHERE ticket_id IN ({list})"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for t in &tickets {
                q = q.bind(t.number);
            }
            for r in q.fetch_all(&mut *conn).await? {
                let ticket: i64 = r.try_get("ticket_id")?;
                let role: String = r.try_get("role")?;
                let role: Role = role
                    .parse()
                    .map_err(|e: crate::desk::ticket::UnknownRole| StoreError::Database(e.to_string()))?;
                if let Some(t) = tickets.iter_mut().find(|t| t.number == ticket) {
                    t.participants.push(Member {
                        address: r.try_get("address")?,
                        name: r.try_get("name")?,
                        role,
                    });
                }
            }
            // The customer conversation a relayed engineer reply threads into: the first public
            // inbound message and the latest ones (a long ticket does not make a long header).
            for t in tickets.iter_mut() {
                let rows = sqlx::query(
                    "SELECT id, message_id FROM messages WHERE id = (SELECT MIN(id) FROM messages WHERE ticket_id = $1 AND kind = 'customer')
                     UNION
                     SELECT id, message_id FROM (SELECT id, message_id FROM messages WHERE ticket_id = $1 AND kind = 'customer' ORDER BY id DESC LIMIT $2) latest",
                )
                .bind(t.number)
                .bind(CONVERSATION_IDS)
                .fetch_all(&mut *conn)
                .await?;
                let mut ids: Vec<(i64, String)> = Vec::new();
                for r in rows {
                    ids.push((r.try_get(0)?, r.try_get(1)?));
                }
                ids.sort_unstable();
                t.conversation = ids.into_iter().map(|(_, id)| id).collect();
            }
            Ok(tickets)
        }

        #[allow(clippy::too_many_arguments)]
        async fn insert_message(
            conn: &mut Conn,
            ticket: Option<i64>,
            raw: &[u8],
            mail: &InboundMail,
            source: &str,
            stored: &crate::desk::StoredMessage,
            at: DateTime<Utc>,
        ) -> Result<(), StoreError> {
            // The row id is only needed for attachments: most mail has none and is inserted
            // without RETURNING.
            let insert = sqlx::query(if mail.attachments.is_empty() {
                "INSERT INTO messages (ticket_id, message_id, direction, visibility, kind, from_addr, subject, in_reply_to, refs, body_text, source, received_at, raw)
                 VALUES ($1, $2, 'inbound', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            } else {
                "INSERT INTO messages (ticket_id, message_id, direction, visibility, kind, from_addr, subject, in_reply_to, refs, body_text, source, received_at, raw)
                 VALUES ($1, $2, 'inbound', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id"
            })
            .bind(ticket)
            .bind(&mail.message_id)
            .bind(stored.visibility.as_str())
            .bind(&stored.kind)
            .bind(mail.from.key())
            .bind(crate::mail::parse::one_line(&mail.subject))
            .bind(mail.in_reply_to.first())
            .bind(mail.references.join(" "))
            .bind(&stored.text)
            .bind(source)
            .bind(at)
            .bind(raw);
            if mail.attachments.is_empty() {
                insert.execute(&mut *conn).await?;
                return Ok(());
            }
            let id: i64 = insert.fetch_one(&mut *conn).await?.try_get(0)?;
            // Many rows per statement, one round trip for a few dozen attachments.
            for (chunk_no, chunk) in mail.attachments.chunks(50).enumerate() {
                let mut sql = String::from(
                    "INSERT INTO attachments (message_id, position, filename, content_type, size, content_id, inline, offset_body, offset_end, transfer_encoding) VALUES ",
                );
                for i in 0..chunk.len() {
                    let b = i * 9 + 2;
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("($1, {})", placeholders(b, 9)));
                }
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id);
                for (i, a) in chunk.iter().enumerate() {
                    q = q
                        .bind((chunk_no * 50 + i) as i64)
                        .bind(&a.filename)
                        .bind(&a.content_type)
                        .bind(a.size as i64)
                        .bind(&a.content_id)
                        .bind(a.inline)
                        .bind(a.offset_body as i64)
                        .bind(a.offset_end as i64)
                        .bind(&a.transfer_encoding);
                }
                q.execute(&mut *conn).await?;
            }
            Ok(())
        }

        /// One event row: its ticket, the event, the other ticket it concerns, the Message-ID
        /// of the mail it is about.
        type EventRow<'e> = (Option<i64>, &'e Event, Option<i64>, Option<&'e str>);

        /// Several events in one statement (one round trip). Kept as a prepared statement per row
        /// count (a decision has a handful of events), like the lookups above per key count.
        async fn insert_events(conn: &mut Conn, events: &[EventRow<'_>]) -> Result<(), StoreError> {
            if events.is_empty() {
                return Ok(());
            }
            let mut sql = String::from(
                "INSERT INTO events (ticket_id, at, actor, kind, from_value, to_value, reason, related_ticket, message_id) VALUES ",
            );
            for i in 0..events.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("({})", placeholders(i * 9 + 1, 9)));
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (ticket, e, related, message_id) in events {
                q = q
                    .bind(ticket)
                    .bind(e.at)
                    .bind(&e.actor)
                    .bind(&e.kind)
                    .bind(&e.from)
                    .bind(&e.to)
                    .bind(&e.reason)
                    .bind(related)
                    .bind(message_id);
            }
            q.execute(&mut *conn).await?;
            Ok(())
        }

        async fn insert_event(
            conn: &mut Conn,
            ticket: Option<i64>,
            e: &Event,
            message_id: Option<&str>,
        ) -> Result<(), StoreError> {
            insert_events(conn, &[(ticket, e, None, message_id)]).await
        }

        async fn insert_outbox(conn: &mut Conn, m: &QueuedMail, at: DateTime<Utc>) -> Result<bool, StoreError> {
            let done = sqlx::query(
                "INSERT INTO outbox (ticket_id, message_id, template, to_addr, automatic, rendered, created_at, next_attempt_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
                 ON CONFLICT (message_id) DO NOTHING",
            )
            .bind(m.ticket)
            .bind(&m.message_id)
            .bind(&m.template)
            .bind(m.to.to_ascii_lowercase())
            .bind(m.automatic)
            .bind(&m.rendered)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            // The same Message-ID again is the same mail (a replayed or racing scheduled mail).
            Ok(done.rows_affected() == 1)
        }

        fn ticket_from_row(r: &DbRow) -> Result<TicketSummary, StoreError> {
            Ok(TicketSummary {
                number: r.try_get("id")?,
                subject: r.try_get("subject")?,
                requester: r.try_get("requester")?,
                requester_name: r.try_get("requester_name")?,
                status: r.try_get("status")?,
                requested_severity: r.try_get("requested_severity")?,
                assigned_severity: r.try_get("assigned_severity")?,
                linked_ticket: r.try_get("linked_ticket")?,
                requester_bounced: r.try_get("requester_bounced")?,
                closed_at: r.try_get("closed_at")?,
                assignee: r.try_get("assignee")?,
                first_response_at: r.try_get("first_response_at")?,
                resolved_at: r.try_get("resolved_at")?,
                response_due_at: r.try_get("response_due_at")?,
                resolution_due_at: r.try_get("resolution_due_at")?,
                escalation_due_at: r.try_get("escalation_due_at")?,
                update_due_at: r.try_get("update_due_at")?,
                reminder_due_at: r.try_get("reminder_due_at")?,
                close_pending_due_at: r.try_get("close_pending_due_at")?,
                auto_close_due_at: r.try_get("auto_close_due_at")?,
                escalated_at: r.try_get("escalated_at")?,
                response_breach_at: r.try_get("response_breach_at")?,
                resolution_breach_at: r.try_get("resolution_breach_at")?,
                status_since: r.try_get("status_since")?,
                last_public_out_at: r.try_get("last_public_out_at")?,
                severity_given: r.try_get("severity_given")?,
                downgraded: r.try_get("downgraded")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        }

        const TICKET_COLUMNS: &str = "id, subject, requester, requester_name, status, requested_severity, assigned_severity, linked_ticket, requester_bounced, closed_at, assignee, first_response_at, resolved_at, response_due_at, resolution_due_at, escalation_due_at, update_due_at, reminder_due_at, close_pending_due_at, auto_close_due_at, escalated_at, response_breach_at, resolution_breach_at, status_since, last_public_out_at, severity_given, downgraded, created_at, updated_at";

        impl Store for $store {
            type Tx = $tx;

            async fn migrate(&self) -> Result<(), StoreError> {
                self.run_migrations().await
            }

            async fn begin(&self) -> Result<$tx, StoreError> {
                let (tx, turn) = self.begin_write().await?;
                Ok($tx(tx, turn))
            }

            async fn peek_context(
                &self,
                mail: &InboundMail,
                keys: &ThreadKeys,
                since: DateTime<Utc>,
            ) -> Result<MailContext, StoreError> {
                let mut conn = self.pool.acquire().await?;
                context_on(&mut conn, mail, keys, since, false).await
            }

            async fn list_tickets(
                &self,
                status: Option<Status>,
            ) -> Result<Vec<TicketSummary>, StoreError> {
                let rows = match status {
                    Some(s) => {
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "SELECT {TICKET_COLUMNS} FROM tickets WHERE status = $1 ORDER BY id DESC"
                        )))
                        .bind(s.as_str())
                        .fetch_all(&self.pool)
                        .await?
                    }
                    None => {
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "SELECT {TICKET_COLUMNS} FROM tickets ORDER BY id DESC"
                        )))
                        .fetch_all(&self.pool)
                        .await?
                    }
                };
                rows.iter().map(ticket_from_row).collect()
            }

            async fn ticket_detail(&self, number: i64) -> Result<TicketDetail, StoreError> {
                let mut conn = self.pool.acquire().await?;
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {TICKET_COLUMNS} FROM tickets WHERE id = $1"
                )))
                .bind(number)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(StoreError::NotFound)?;
                let ticket = ticket_from_row(&row)?;
                let participants = sqlx::query(
                    "SELECT address, name, role FROM participants WHERE ticket_id = $1
                     ORDER BY CASE role WHEN 'requester' THEN 0 ELSE 1 END, added_at, address",
                )
                .bind(number)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| {
                    Ok(Participant {
                        address: r.try_get("address")?,
                        name: r.try_get("name")?,
                        role: r.try_get("role")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
                let mut attachments: Vec<(i64, AttachmentSummary)> = sqlx::query(
                    "SELECT a.message_id, a.position, a.filename, a.content_type, a.size, a.content_id,
                            a.inline, a.offset_body, a.offset_end, a.transfer_encoding
                     FROM attachments a JOIN messages m ON a.message_id = m.id
                     WHERE m.ticket_id = $1 ORDER BY a.message_id, a.position",
                )
                .bind(number)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get("message_id")?,
                        AttachmentSummary {
                            position: r.try_get("position")?,
                            filename: r.try_get("filename")?,
                            content_type: r.try_get("content_type")?,
                            size: r.try_get("size")?,
                            content_id: r.try_get("content_id")?,
                            inline: r.try_get("inline")?,
                            offset_body: r.try_get("offset_body")?,
                            offset_end: r.try_get("offset_end")?,
                            transfer_encoding: r.try_get("transfer_encoding")?,
                        },
                    ))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
                let messages = sqlx::query(
                    "SELECT id, message_id, direction, visibility, kind, from_addr, subject, received_at,
                            CAST(LENGTH(raw) AS BIGINT) AS size, body_text
                     FROM messages WHERE ticket_id = $1 ORDER BY id",
                )
                .bind(number)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| {
                    let row_id: i64 = r.try_get("id")?;
                    let mine = attachments.iter().take_while(|(m, _)| *m == row_id).count();
                    let files = attachments.drain(..mine).map(|(_, a)| a).collect();
                    Ok(MessageSummary {
                        attachments: files,
                        message_id: r.try_get("message_id")?,
                        direction: r.try_get("direction")?,
                        visibility: r.try_get("visibility")?,
                        kind: r.try_get("kind")?,
                        from: r.try_get("from_addr")?,
                        subject: r.try_get("subject")?,
                        received_at: r.try_get("received_at")?,
                        size: r.try_get("size")?,
                        text: r.try_get("body_text")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
                let history = sqlx::query(
                    "SELECT at, actor, kind, from_value, to_value, reason, related_ticket FROM events
                     WHERE ticket_id = $1 ORDER BY id",
                )
                .bind(number)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| {
                    Ok(Event {
                        at: r.try_get("at")?,
                        actor: r.try_get("actor")?,
                        kind: r.try_get("kind")?,
                        from: r.try_get("from_value")?,
                        to: r.try_get("to_value")?,
                        reason: r.try_get("reason")?,
                        related_ticket: r.try_get("related_ticket")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
                let outbox = sqlx::query(
                    "SELECT id, message_id, template, to_addr, attempts, created_at, sent_at, failed_at, last_error
                     FROM outbox WHERE ticket_id = $1 ORDER BY id",
                )
                .bind(number)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| {
                    Ok(OutboxSummary {
                        id: r.try_get("id")?,
                        message_id: r.try_get("message_id")?,
                        template: r.try_get("template")?,
                        to: r.try_get("to_addr")?,
                        attempts: r.try_get("attempts")?,
                        created_at: r.try_get("created_at")?,
                        sent_at: r.try_get("sent_at")?,
                        failed_at: r.try_get("failed_at")?,
                        last_error: r.try_get("last_error")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
                Ok(TicketDetail {
                    ticket,
                    participants,
                    messages,
                    history,
                    outbox,
                })
            }

            async fn claim_outbox(
                &self,
                owner: &str,
                now: DateTime<Utc>,
                until: DateTime<Utc>,
                limit: i64,
            ) -> Result<Vec<OutboxItem>, StoreError> {
                let (mut tx, _turn) = self.begin_write().await?;
                let sql = format!(
                    "UPDATE outbox SET lease_owner = $1, lease_until = $2
                     WHERE id IN (
                        SELECT id FROM outbox
                        WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $3
                          AND (lease_owner IS NULL OR lease_until <= $3)
                        ORDER BY id LIMIT $4{}
                     )
                     RETURNING id, ticket_id, message_id, to_addr, rendered, attempts, template",
                    $skip_locked
                );
                let mut items = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(owner)
                    .bind(until)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|r| {
                        Ok(OutboxItem {
                            id: r.try_get("id")?,
                            ticket: r.try_get("ticket_id")?,
                            message_id: r.try_get("message_id")?,
                            to: r.try_get("to_addr")?,
                            rendered: r.try_get("rendered")?,
                            attempts: r.try_get("attempts")?,
                            template: r.try_get("template")?,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                tx.commit().await?;
                // RETURNING has no order of its own.
                items.sort_by_key(|i| i.id);
                Ok(items)
            }

            async fn mark_sent(
                &self,
                owner: &str,
                ids: &[i64],
                now: DateTime<Utc>,
            ) -> Result<u64, StoreError> {
                if ids.is_empty() {
                    return Ok(0);
                }
                let (mut tx, _turn) = self.begin_write().await?;
                let mut marked = 0;
                // A few hundred ids per statement (one round trip each). Only the holder marks:
                // a row another worker claimed since (its lease ran out) is theirs.
                for chunk in ids.chunks(500) {
                    let sql = format!(
                        "UPDATE outbox SET sent_at = $1, attempts = attempts + 1, last_error = NULL,
                                lease_owner = NULL, lease_until = NULL
                         WHERE sent_at IS NULL AND failed_at IS NULL AND lease_owner = $2
                           AND id IN ({})",
                        placeholders(3, chunk.len())
                    );
                    // Not kept as a prepared statement: every length would be another one.
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .persistent(false)
                        .bind(now)
                        .bind(owner);
                    for id in chunk {
                        q = q.bind(id);
                    }
                    marked += q.execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
                Ok(marked)
            }

            async fn mark_attempt_failed(
                &self,
                owner: &str,
                id: i64,
                error: &str,
                now: DateTime<Utc>,
                retry_at: Option<DateTime<Utc>>,
            ) -> Result<bool, StoreError> {
                let (mut tx, _turn) = self.begin_write().await?;
                let done = sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $1,
                            next_attempt_at = COALESCE($2, next_attempt_at),
                            failed_at = CASE WHEN $2 IS NULL THEN $3 ELSE NULL END,
                            lease_owner = NULL, lease_until = NULL
                     WHERE id = $4 AND lease_owner = $5 AND sent_at IS NULL",
                )
                .bind(error)
                .bind(retry_at)
                .bind(now)
                .bind(id)
                .bind(owner)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(done > 0)
            }

            async fn release_outbox(&self, owner: &str) -> Result<u64, StoreError> {
                let (mut tx, _turn) = self.begin_write().await?;
                let n = sqlx::query(
                    "UPDATE outbox SET lease_owner = NULL, lease_until = NULL
                     WHERE lease_owner = $1 AND sent_at IS NULL AND failed_at IS NULL",
                )
                .bind(owner)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(n)
            }

            async fn counts(&self) -> Result<Counts, StoreError> {
                let r = sqlx::query(
                    "SELECT (SELECT COUNT(*) FROM tickets),
                            (SELECT COUNT(*) FROM messages),
                            (SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL),
                            (SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL),
                            (SELECT COUNT(*) FROM quarantine)",
                )
                .fetch_one(&self.pool)
                .await?;
                Ok(Counts {
                    tickets: r.try_get(0)?,
                    messages: r.try_get(1)?,
                    outbox_pending: r.try_get(2)?,
                    outbox_sent: r.try_get(3)?,
                    quarantined: r.try_get(4)?,
                })
            }

            async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
                let r = sqlx::query(
                    "SELECT COUNT(*), MIN(created_at) FROM outbox
                     WHERE sent_at IS NULL AND failed_at IS NULL",
                )
                .fetch_one(&self.pool)
                .await?;
                Ok(OutboxBacklog {
                    pending: r.try_get(0)?,
                    oldest: r.try_get(1)?,
                })
            }

            async fn source_state(&self, source: &str) -> Result<Option<SourceState>, StoreError> {
                let row = sqlx::query(
                    "SELECT uid_validity, last_uid FROM source_state WHERE source = $1",
                )
                .bind(source)
                .fetch_optional(&self.pool)
                .await?;
                let Some(r) = row else { return Ok(None) };
                let uid_validity: Option<i64> = r.try_get(0)?;
                let last_uid: Option<i64> = r.try_get(1)?;
                Ok(Some(SourceState {
                    uid_validity: u32::try_from(uid_validity.unwrap_or(0)).unwrap_or(0),
                    first_start_uid: u32::try_from(last_uid.unwrap_or(0)).unwrap_or(0),
                }))
            }

            async fn set_source_state(
                &self,
                source: &str,
                state: SourceState,
                now: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                let (mut tx, _turn) = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO source_state (source, uid_validity, last_uid, updated_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (source) DO UPDATE SET uid_validity = $2, last_uid = $3, updated_at = $4",
                )
                .bind(source)
                .bind(i64::from(state.uid_validity))
                .bind(i64::from(state.first_start_uid))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn lead_source(
                &self,
                source: &str,
                owner: &str,
                now: DateTime<Utc>,
                until: DateTime<Utc>,
            ) -> Result<bool, StoreError> {
                let (mut tx, _turn) = self.begin_write().await?;
                // Taken when free, renewed by its holder, taken over once it has run out.
                let row = sqlx::query(
                    "INSERT INTO source_leases (source, owner, lease_until) VALUES ($1, $2, $3)
                     ON CONFLICT (source) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until
                     WHERE source_leases.owner = excluded.owner OR source_leases.lease_until <= $4
                     RETURNING owner",
                )
                .bind(source)
                .bind(owner)
                .bind(until)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(row.is_some())
            }

            async fn take_over_source(
                &self,
                source: &str,
                from: &str,
                owner: &str,
                until: DateTime<Utc>,
            ) -> Result<bool, StoreError> {
                let (mut tx, _turn) = self.begin_write().await?;
                let done = sqlx::query(
                    "UPDATE source_leases SET owner = $1, lease_until = $2 WHERE source = $3 AND owner = $4",
                )
                .bind(owner)
                .bind(until)
                .bind(source)
                .bind(from)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(done > 0)
            }

            async fn release_source(&self, source: &str, owner: &str) -> Result<(), StoreError> {
                let (mut tx, _turn) = self.begin_write().await?;
                sqlx::query("DELETE FROM source_leases WHERE source = $1 AND owner = $2")
                    .bind(source)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn source_leader(
                &self,
                source: &str,
                now: DateTime<Utc>,
            ) -> Result<Option<String>, StoreError> {
                let row = sqlx::query(
                    "SELECT owner FROM source_leases WHERE source = $1 AND lease_until > $2",
                )
                .bind(source)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                Ok(match row {
                    Some(r) => Some(r.try_get(0)?),
                    None => None,
                })
            }
        }

        impl StoreTx for $tx {
            async fn lock_message_ids(&mut self, ids: &[&str]) -> Result<(), StoreError> {
                // Per backend (the macro's caller defines it).
                lock_message_ids_on(&mut self.0, ids).await
            }

            async fn context(
                &mut self,
                mail: &InboundMail,
                keys: &ThreadKeys,
                since: DateTime<Utc>,
            ) -> Result<MailContext, StoreError> {
                context_on(&mut self.0, mail, keys, since, true).await
            }

            async fn apply(
                &mut self,
                d: &Decision,
                inbound: InboundRecord<'_>,
                render: &mut RenderFn<'_>,
            ) -> Result<Option<i64>, StoreError> {
                let at = d.at;
                let conn: &mut Conn = &mut self.0;
                let due = d.sla.as_ref().and_then(|p| p.deadlines);
                let next_update = d.sla.as_ref().and_then(|p| p.next_update);
                let timers = d.sla.as_ref().and_then(|p| p.timers);
                let number: Option<i64> = match &d.action {
                    Action::Quarantine(reason) => {
                        // An oversized message arrives as its head only: the row keeps the head
                        // and the whole size, and `source` says where the whole message is. Two
                        // such messages may share a head, so its key is the head, size and source
                        // together (the same message read again still makes one row).
                        let (size, key) = match reason {
                            QuarantineReason::Oversized { size, .. } if *size > inbound.raw.len() => {
                                let mut key = inbound.raw.to_vec();
                                key.extend_from_slice(format!("\0{size}\0{}", inbound.source).as_bytes());
                                (*size, crate::mail::parse::content_hash(&key))
                            }
                            _ => (inbound.raw.len(), crate::mail::parse::content_hash(inbound.raw)),
                        };
                        sqlx::query(
                            "INSERT INTO quarantine (sha256, reason, detail, source, received_at, size, raw)
                             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                        )
                        .bind(key)
                        .bind(reason.code())
                        .bind(reason.to_string())
                        .bind(inbound.source)
                        .bind(at)
                        .bind(size as i64)
                        .bind(inbound.raw)
                        .execute(&mut *conn)
                        .await?;
                        return Ok(None);
                    }
                    Action::Duplicate { ticket } => return Ok(*ticket),
                    Action::NewTicket(t) => {
                        let number: i64 = sqlx::query(
                            "INSERT INTO tickets (subject, requester, requester_name, status, requested_severity,
                                 assigned_severity, severity_given, downgraded, linked_ticket, created_at, updated_at,
                                 response_due_at, resolution_due_at, escalation_due_at, update_due_at,
                                 status_since, last_public_out_at)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13, $14, $10,
                                     CASE WHEN $15 THEN $10 ELSE NULL END) RETURNING id",
                        )
                        .bind(&t.subject)
                        .bind(t.requester.key())
                        .bind(&t.requester.name)
                        .bind(t.status.as_str())
                        .bind(t.severity.requested.map(|s| i64::from(s.number())))
                        .bind(i64::from(t.severity.assigned.number()))
                        .bind(t.severity.given)
                        .bind(t.severity.downgraded)
                        .bind(t.linked_ticket)
                        .bind(at)
                        .bind(due.map(|d| d.response))
                        .bind(due.map(|d| d.resolution))
                        .bind(due.map(|d| d.escalation))
                        .bind(next_update)
                        .bind(d.sends_public())
                        .fetch_one(&mut *conn)
                        .await?
                        .try_get(0)?;
                        // The requester is the ticket's first participant: a plain insert. Watchers
                        // were made distinct by the decision; ON CONFLICT only guards the case.
                        sqlx::query(
                            "INSERT INTO participants (ticket_id, address, name, role, added_at)
                             VALUES ($1, $2, $3, 'requester', $4)",
                        )
                        .bind(number)
                        .bind(t.requester.key())
                        .bind(&t.requester.name)
                        .bind(at)
                        .execute(&mut *conn)
                        .await?;
                        for w in &t.watchers {
                            sqlx::query(
                                "INSERT INTO participants (ticket_id, address, name, role, added_at)
                                 VALUES ($1, $2, $3, 'watcher', $4) ON CONFLICT DO NOTHING",
                            )
                            .bind(number)
                            .bind(w.key())
                            .bind(&w.name)
                            .bind(at)
                            .execute(&mut *conn)
                            .await?;
                        }
                        Some(number)
                    }
                    Action::Reply(r) => Some(r.ticket),
                    Action::Report(r) => r.ticket,
                    Action::Scheduled { ticket } => Some(*ticket),
                };
                let resolve = |t: Option<Target>| match t {
                    Some(Target::Opened) => number,
                    Some(Target::Ticket(n)) => Some(n),
                    None => None,
                };

                if let Some(n) = number {
                    for j in &d.joiners {
                        sqlx::query(
                            "INSERT INTO participants (ticket_id, address, name, role, added_at)
                             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                        )
                        .bind(n)
                        .bind(j.mailbox.key())
                        .bind(&j.mailbox.name)
                        .bind(j.role.as_str())
                        .bind(at)
                        .execute(&mut *conn)
                        .await?;
                    }
                    if !matches!(d.action, Action::NewTicket(_)) {
                        let status = d.status_change.as_ref().map(|c| c.to.as_str());
                        // resolved_at: when the ticket first reached close_pending or closed
                        // since it was last open (the resolution clock); a reopen clears it.
                        sqlx::query(
                            "UPDATE tickets SET updated_at = $1,
                                 status = COALESCE($2, status),
                                 closed_at = CASE WHEN $2 IS NULL THEN closed_at
                                                  WHEN $2 = 'closed' THEN $1 ELSE NULL END,
                                 resolved_at = CASE WHEN $2 IS NULL THEN resolved_at
                                                    WHEN $2 IN ('close_pending', 'closed') THEN COALESCE(resolved_at, $1)
                                                    ELSE NULL END,
                                 requester_bounced = requester_bounced OR $3,
                                 assignee = COALESCE($5, assignee),
                                 assigned_severity = COALESCE($6, assigned_severity),
                                 first_response_at = CASE WHEN $7 THEN COALESCE(first_response_at, $1)
                                                          ELSE first_response_at END,
                                 response_due_at = COALESCE($8, response_due_at),
                                 resolution_due_at = COALESCE($9, resolution_due_at),
                                 escalation_due_at = COALESCE($10, escalation_due_at),
                                 update_due_at = COALESCE($11, update_due_at),
                                 status_since = CASE WHEN $2 IS NULL THEN status_since ELSE $1 END,
                                 reminder_due_at = CASE WHEN $12 THEN $13 ELSE reminder_due_at END,
                                 close_pending_due_at = CASE WHEN $12 THEN $14 ELSE close_pending_due_at END,
                                 auto_close_due_at = CASE WHEN $12 THEN $15 ELSE auto_close_due_at END,
                                 last_public_out_at = CASE WHEN $16 THEN $1 ELSE last_public_out_at END,
                                 escalated = escalated OR $17,
                                 escalated_at = CASE WHEN $17 THEN COALESCE(escalated_at, $1) ELSE escalated_at END,
                                 response_breach_at = CASE WHEN $18 THEN COALESCE(response_breach_at, $1) ELSE response_breach_at END,
                                 resolution_breach_at = CASE WHEN $19 THEN COALESCE(resolution_breach_at, $1) ELSE resolution_breach_at END,
                                 paused_minutes = COALESCE($20, paused_minutes)
                             WHERE id = $4",
                        )
                        .bind(at)
                        .bind(status)
                        .bind(d.requester_bounced)
                        .bind(n)
                        .bind(d.update.assignee.as_deref())
                        .bind(d.update.severity.map(|s| i64::from(s.number())))
                        .bind(d.update.first_response)
                        .bind(due.map(|d| d.response))
                        .bind(due.map(|d| d.resolution))
                        .bind(due.map(|d| d.escalation))
                        .bind(next_update)
                        .bind(timers.is_some())
                        .bind(timers.and_then(|t| t.reminder))
                        .bind(timers.and_then(|t| t.close_pending))
                        .bind(timers.and_then(|t| t.auto_close))
                        .bind(d.sends_public())
                        .bind(d.update.escalated)
                        .bind(d.update.response_breach)
                        .bind(d.update.resolution_breach)
                        .bind(
                            d.sla
                                .as_ref()
                                .and_then(|p| p.paused_total)
                                .map(|p| p.num_minutes()),
                        )
                        .execute(&mut *conn)
                        .await?;
                    }
                }

                let message_id = inbound.mail.map(|m| m.message_id.as_str());
                if let (Some(stored), Some(mail)) = (&d.message, inbound.mail) {
                    insert_message(conn, number, inbound.raw, mail, inbound.source, stored, at)
                        .await?;
                }
                let events: Vec<Event> = d
                    .events
                    .iter()
                    .map(|e| Event {
                        at,
                        actor: e.actor.clone(),
                        kind: e.kind.clone(),
                        from: e.from.clone(),
                        to: e.to.clone(),
                        reason: e.reason.clone(),
                        related_ticket: resolve(e.related),
                    })
                    .collect();
                let mut rows: Vec<EventRow<'_>> = d
                    .events
                    .iter()
                    .zip(&events)
                    .map(|(p, e)| (resolve(p.on), e, e.related_ticket, message_id))
                    .collect();

                // The planned mails, rendered now that the ticket has its number; their events go
                // in the same statement as the decision's (one round trip for all history).
                let rendered = match number {
                    Some(n) if !d.outbound.is_empty() => render(n),
                    _ => Vec::new(),
                };
                for r in &rendered {
                    if let Some(m) = &r.mail {
                        insert_outbox(conn, m, at).await?;
                    }
                }
                rows.extend(rendered.iter().map(|r| {
                    (number, &r.event, None, r.mail.as_ref().map(|m| m.message_id.as_str()))
                }));
                insert_events(conn, &rows).await?;
                Ok(number)
            }

            async fn due_tickets(
                &mut self,
                now: DateTime<Utc>,
                after: i64,
                limit: i64,
                paused: bool,
            ) -> Result<Vec<TicketState>, StoreError> {
                let conn: &mut Conn = &mut self.0;
                // One indexed probe per rule (the partial indexes of migration 0003), tickets
                // after `after` in id order (a cursor: every sweep makes progress); rows another
                // sweep holds are skipped, not waited for (PostgreSQL), and stay locked until the
                // transaction ends. While the clock is paused for the customer, a customer-pending
                // ticket neither escalates nor breaches.
                let sql = format!(
                    "SELECT id FROM tickets WHERE id > $3 AND id IN (
                        SELECT id FROM tickets WHERE update_due_at <= $1 AND status IN ('in_triage', 'engineer_pending')
                        UNION SELECT id FROM tickets WHERE reminder_due_at <= $1 AND status = 'customer_pending'
                        UNION SELECT id FROM tickets WHERE close_pending_due_at <= $1 AND status = 'customer_pending'
                        UNION SELECT id FROM tickets WHERE auto_close_due_at <= $1 AND status = 'close_pending'
                        UNION SELECT id FROM tickets WHERE escalation_due_at <= $1 AND escalated_at IS NULL
                              AND status NOT IN ('close_pending', 'closed') AND NOT ($4 AND status = 'customer_pending')
                        UNION SELECT id FROM tickets WHERE response_due_at <= $1 AND first_response_at IS NULL
                              AND response_breach_at IS NULL AND status NOT IN ('close_pending', 'closed')
                              AND NOT ($4 AND status = 'customer_pending')
                        UNION SELECT id FROM tickets WHERE resolution_due_at <= $1 AND resolved_at IS NULL
                              AND resolution_breach_at IS NULL AND status NOT IN ('close_pending', 'closed')
                              AND NOT ($4 AND status = 'customer_pending')
                     ) ORDER BY id LIMIT $2{}",
                    $skip_locked
                );
                let ids: Vec<i64> = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(now)
                    .bind(limit)
                    .bind(after)
                    .bind(paused)
                    .fetch_all(&mut *conn)
                    .await?
                    .iter()
                    .map(|r| r.try_get(0))
                    .collect::<Result<_, _>>()?;
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                load_tickets(conn, ids, true).await
            }

            async fn queue(&mut self, m: &QueuedMail, at: DateTime<Utc>) -> Result<bool, StoreError> {
                let conn: &mut Conn = &mut self.0;
                if !insert_outbox(conn, m, at).await? {
                    return Ok(false);
                }
                let e = Event {
                    at,
                    actor: "postdesk".into(),
                    kind: "outbound".into(),
                    from: None,
                    to: Some(m.to.to_ascii_lowercase()),
                    reason: format!("{} queued", m.template),
                    related_ticket: None,
                };
                insert_event(conn, m.ticket, &e, Some(&m.message_id)).await?;
                Ok(true)
            }

            async fn fail_outbox(
                &mut self,
                owner: &str,
                id: i64,
                error: &str,
                now: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                let conn: &mut Conn = &mut self.0;
                let row = sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $1, failed_at = $2,
                            lease_owner = NULL, lease_until = NULL
                     WHERE id = $3 AND lease_owner = $4 AND sent_at IS NULL
                     RETURNING ticket_id, template, to_addr, message_id",
                )
                .bind(error)
                .bind(now)
                .bind(id)
                .bind(owner)
                .fetch_optional(&mut *conn)
                .await?;
                let Some(r) = row else {
                    return Err(StoreError::NotFound);
                };
                let ticket: Option<i64> = r.try_get(0)?;
                let template: String = r.try_get(1)?;
                let to: String = r.try_get(2)?;
                let message_id: String = r.try_get(3)?;
                let e = Event {
                    at: now,
                    actor: "postdesk".into(),
                    kind: "delivery_failed".into(),
                    from: None,
                    to: Some(to),
                    reason: format!("{template} could not be delivered: {error}"),
                    related_ticket: None,
                };
                insert_event(conn, ticket, &e, Some(&message_id)).await
            }

            async fn commit(self) -> Result<(), StoreError> {
                let $tx(tx, turn) = self;
                tx.commit().await?;
                drop(turn);
                Ok(())
            }
        }
    };
}
