//! The SQL both backends share. SQLite and PostgreSQL accept the same statements here (`$N`
//! placeholders, `RETURNING`, `ON CONFLICT DO NOTHING`); the macro stamps out one `Store` and one
//! `StoreTx` implementation per backend so that the statements exist once.

/// Implements `Store` for `$store` (with a `pool` field and a `begin_write` method) and defines
/// the transaction type `$tx` over the sqlx database `$db`.
macro_rules! sql_store {
    ($store:ty, $tx:ident, $db:ty) => {
        use chrono::{DateTime, Utc};
        use sqlx::Row;

        use crate::desk::{Decision, MailContext, NewTicket, Status};
        use crate::mail::{InboundMail, QuarantineReason};
        use crate::store::{
            Counts, Event, InboundRecord, MessageSummary, OutboxBacklog, OutboxItem, OutboxSummary,
            Participant,
            QueuedMail, SourceState, Store, StoreError, StoreTx, TicketDetail, TicketSummary,
            WriterTurn,
        };

        /// A write transaction on this backend, with the in-process writer turn it holds.
        pub struct $tx(sqlx::Transaction<'static, $db>, #[allow(dead_code)] WriterTurn);

        type Conn = <$db as sqlx::Database>::Connection;
        type DbRow = <$db as sqlx::Database>::Row;

        async fn context_on(
            conn: &mut Conn,
            mail: &InboundMail,
            since: DateTime<Utc>,
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
            Ok(MailContext {
                known_message,
                auto_replies_to_sender_last_hour: u32::try_from(replies).unwrap_or(u32::MAX),
            })
        }

        async fn insert_message(
            conn: &mut Conn,
            ticket: Option<i64>,
            record: InboundRecord<'_>,
            kind: &str,
            at: DateTime<Utc>,
        ) -> Result<(), StoreError> {
            let mail = record.mail;
            sqlx::query(
                "INSERT INTO messages (ticket_id, message_id, direction, visibility, kind, from_addr, subject, in_reply_to, refs, body_text, source, received_at, raw)
                 VALUES ($1, $2, 'inbound', 'public', $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(ticket)
            .bind(&mail.message_id)
            .bind(kind)
            .bind(mail.from.key())
            .bind(crate::mail::parse::one_line(&mail.subject))
            .bind(mail.in_reply_to.first())
            .bind(mail.references.join(" "))
            .bind(&mail.text)
            .bind(record.source)
            .bind(at)
            .bind(record.raw)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        async fn insert_event(
            conn: &mut Conn,
            ticket: Option<i64>,
            e: &Event,
            message_id: Option<&str>,
        ) -> Result<(), StoreError> {
            insert_events(conn, ticket, &[e], message_id).await
        }

        /// Several events of one ticket in one statement (one round trip).
        async fn insert_events(
            conn: &mut Conn,
            ticket: Option<i64>,
            events: &[&Event],
            message_id: Option<&str>,
        ) -> Result<(), StoreError> {
            if events.is_empty() {
                return Ok(());
            }
            let mut sql = String::from(
                "INSERT INTO events (ticket_id, at, actor, kind, from_value, to_value, reason, message_id) VALUES ",
            );
            for i in 0..events.len() {
                let b = i * 6;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "($1, ${}, ${}, ${}, ${}, ${}, ${}, $2)",
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8
                ));
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(ticket).bind(message_id);
            for e in events {
                q = q
                    .bind(e.at)
                    .bind(&e.actor)
                    .bind(&e.kind)
                    .bind(&e.from)
                    .bind(&e.to)
                    .bind(&e.reason);
            }
            q.execute(&mut *conn).await?;
            Ok(())
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
                severity_given: r.try_get("severity_given")?,
                downgraded: r.try_get("downgraded")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        }

        const TICKET_COLUMNS: &str = "id, subject, requester, requester_name, status, requested_severity, assigned_severity, severity_given, downgraded, created_at, updated_at";

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
                since: DateTime<Utc>,
            ) -> Result<MailContext, StoreError> {
                let mut conn = self.pool.acquire().await?;
                context_on(&mut conn, mail, since).await
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
                let messages = sqlx::query(
                    "SELECT message_id, direction, visibility, kind, from_addr, subject, received_at,
                            CAST(LENGTH(raw) AS BIGINT) AS size, body_text
                     FROM messages WHERE ticket_id = $1 ORDER BY id",
                )
                .bind(number)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| {
                    Ok(MessageSummary {
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
                    "SELECT at, actor, kind, from_value, to_value, reason FROM events
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

            async fn due_outbox(
                &self,
                now: DateTime<Utc>,
                limit: i64,
            ) -> Result<Vec<OutboxItem>, StoreError> {
                sqlx::query(
                    "SELECT id, ticket_id, message_id, to_addr, rendered, attempts, template FROM outbox
                     WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1
                     ORDER BY id LIMIT $2",
                )
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
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
                .collect()
            }

            async fn mark_sent(&self, ids: &[i64], now: DateTime<Utc>) -> Result<(), StoreError> {
                if ids.is_empty() {
                    return Ok(());
                }
                let (mut tx, _turn) = self.begin_write().await?;
                // A few hundred ids per statement (one round trip each). A row the server
                // refused for good stays failed, even if a stale journal line names it.
                for chunk in ids.chunks(500) {
                    let list: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
                    let sql = format!(
                        "UPDATE outbox SET sent_at = $1, attempts = attempts + 1, last_error = NULL WHERE failed_at IS NULL AND id IN ({})",
                        list.join(", ")
                    );
                    // Not kept as a prepared statement: every length would be another one.
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false).bind(now);
                    for id in chunk {
                        q = q.bind(id);
                    }
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn mark_attempt_failed(
                &self,
                id: i64,
                error: &str,
                now: DateTime<Utc>,
                retry_at: Option<DateTime<Utc>>,
            ) -> Result<(), StoreError> {
                let (mut tx, _turn) = self.begin_write().await?;
                sqlx::query(
                    // A row marked sent at hand-over (SMTP: before the final dot) that the
                    // server then refused is due again; that attempt was already counted.
                    "UPDATE outbox SET attempts = attempts + CASE WHEN sent_at IS NULL THEN 1 ELSE 0 END,
                            sent_at = NULL, last_error = $1,
                            next_attempt_at = COALESCE($2, next_attempt_at),
                            failed_at = CASE WHEN $2 IS NULL THEN $3 ELSE NULL END
                     WHERE id = $4",
                )
                .bind(error)
                .bind(retry_at)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
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
        }

        impl StoreTx for $tx {
            async fn context(
                &mut self,
                mail: &InboundMail,
                since: DateTime<Utc>,
            ) -> Result<MailContext, StoreError> {
                context_on(&mut self.0, mail, since).await
            }

            async fn open_ticket(
                &mut self,
                t: &NewTicket,
                record: InboundRecord<'_>,
                decision: &Decision,
            ) -> Result<i64, StoreError> {
                let at = decision.at;
                let conn: &mut Conn = &mut self.0;
                let number: i64 = sqlx::query(
                    "INSERT INTO tickets (subject, requester, requester_name, status, requested_severity,
                         assigned_severity, severity_given, downgraded, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id",
                )
                .bind(&t.subject)
                .bind(t.requester.key())
                .bind(&t.requester.name)
                .bind(t.status.as_str())
                .bind(t.severity.requested.map(|s| i64::from(s.number())))
                .bind(i64::from(t.severity.assigned.number()))
                .bind(t.severity.given)
                .bind(t.severity.downgraded)
                .bind(at)
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?;

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
                let kind = if decision.acknowledge { "customer" } else { "automatic" };
                insert_message(conn, Some(number), record, kind, at).await?;

                let actor = t.requester.key();
                let mid = Some(record.mail.message_id.as_str());
                let created = Event {
                    at,
                    actor: actor.clone(),
                    kind: "created".into(),
                    from: None,
                    to: Some(t.status.as_str().into()),
                    reason: decision.reason.clone(),
                };
                let s = &t.severity;
                let severity_reason = match s.requested {
                    None => "severity not given in the subject: default applied".to_string(),
                    Some(r) if s.downgraded => {
                        format!("{r} requested by email; email cannot open {r}, downgraded to {}", s.assigned)
                    }
                    Some(r) => format!("{r} requested in the subject"),
                };
                let severity = Event {
                    at,
                    actor: "postdesk".into(),
                    kind: "severity".into(),
                    from: s.requested.map(|r| r.number().to_string()),
                    to: Some(s.assigned.number().to_string()),
                    reason: severity_reason,
                };
                insert_events(conn, Some(number), &[&created, &severity], mid).await?;
                Ok(number)
            }

            async fn store_unattached(
                &mut self,
                record: InboundRecord<'_>,
                kind: &str,
                decision: &Decision,
            ) -> Result<(), StoreError> {
                let conn: &mut Conn = &mut self.0;
                insert_message(conn, None, record, kind, decision.at).await?;
                let e = Event {
                    at: decision.at,
                    actor: record.mail.from.key(),
                    kind: kind.into(),
                    from: None,
                    to: None,
                    reason: decision.reason.clone(),
                };
                insert_event(conn, None, &e, Some(&record.mail.message_id)).await
            }

            async fn quarantine(
                &mut self,
                raw: &[u8],
                reason: &QuarantineReason,
                source: &str,
                at: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO quarantine (sha256, reason, detail, source, received_at, size, raw)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(crate::mail::parse::content_hash(raw))
                .bind(reason.code())
                .bind(reason.to_string())
                .bind(source)
                .bind(at)
                .bind(raw.len() as i64)
                .bind(raw)
                .execute(&mut *self.0)
                .await?;
                Ok(())
            }

            async fn queue(&mut self, m: &QueuedMail, at: DateTime<Utc>) -> Result<(), StoreError> {
                let conn: &mut Conn = &mut self.0;
                sqlx::query(
                    "INSERT INTO outbox (ticket_id, message_id, template, to_addr, automatic, rendered, created_at, next_attempt_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
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
                let e = Event {
                    at,
                    actor: "postdesk".into(),
                    kind: "outbound".into(),
                    from: None,
                    to: Some(m.to.to_ascii_lowercase()),
                    reason: format!("{} queued", m.template),
                };
                insert_event(conn, m.ticket, &e, Some(&m.message_id)).await
            }

            async fn record_event(&mut self, ticket: Option<i64>, e: &Event) -> Result<(), StoreError> {
                insert_event(&mut self.0, ticket, e, None).await
            }

            async fn fail_outbox(
                &mut self,
                id: i64,
                error: &str,
                now: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                let conn: &mut Conn = &mut self.0;
                let row = sqlx::query(
                    "UPDATE outbox SET attempts = attempts + CASE WHEN sent_at IS NULL THEN 1 ELSE 0 END,
                            sent_at = NULL, last_error = $1, failed_at = $2
                     WHERE id = $3 RETURNING ticket_id, template, to_addr, message_id",
                )
                .bind(error)
                .bind(now)
                .bind(id)
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
