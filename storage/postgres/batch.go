package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tokengate/tokengate/storage"
)

// Apply merges a write in one transaction; see storage.Store.
func (s *Store) Apply(ctx context.Context, w storage.Write) (storage.Result, error) {
	a := s.ApplyBatch(ctx, []storage.Write{w})[0]
	return a.Result, a.Err
}

// ApplyBatch merges writes in one transaction, each as if applied alone in
// turn; see storage.Store. Invalid writes are refused before the
// transaction. One that fails it (the hook of a test, a value that cannot
// be encoded) is answered with its error, and the others are committed
// without it. When the database refuses the transaction otherwise, but not
// for want of a connection, one write may still be the cause (a value the
// database cannot hold, say): each is then applied alone, so that it fails
// alone.
func (s *Store) ApplyBatch(ctx context.Context, ws []storage.Write) []storage.Applied {
	valid, out := storage.PrepareBatch(ws)
	s.applyAll(ctx, valid, out)
	return out
}

// applyAll commits ws in one transaction, or as many as it takes to fail
// each write alone, and answers each in out.
func (s *Store) applyAll(ctx context.Context, ws []storage.Prepared, out []storage.Applied) {
	if len(ws) == 0 {
		return
	}
	res, err := s.applyBatch(ctx, ws)
	var wf *writeFault
	for try := 1; err != nil && !errors.As(err, &wf) && rolledBack(err) && try < batchTries && ctx.Err() == nil; try++ {
		// Aborted to break a deadlock, or for a serialization failure:
		// nothing of it was the writes' fault, and the same batch again
		// normally goes through.
		res, err = s.applyBatch(ctx, ws)
	}
	switch {
	case err == nil:
		for k, w := range ws {
			out[w.Index].Result = res[k]
		}
	case len(ws) > 1 && errors.As(err, &wf):
		out[ws[wf.k].Index].Err = classify("apply", wf.err)
		s.applyAll(ctx, slices.Delete(slices.Clone(ws), wf.k, wf.k+1), out)
	case len(ws) > 1 && refused(err) && ctx.Err() == nil:
		for _, w := range ws {
			s.applyAll(ctx, []storage.Prepared{w}, out)
		}
	default:
		if errors.As(err, &wf) {
			err = wf.err
		}
		for _, w := range ws {
			out[w.Index].Err = classify("apply", err)
		}
	}
}

// batchTries bounds the transactions one batch takes when the database
// keeps aborting it for a deadlock or a serialization failure.
const batchTries = 3

// refused reports whether the server refused a statement of a batch for
// what it was asked (aboutTheRequest), so that one of the batch's writes
// may be the cause; not for its own state.
func refused(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && aboutTheRequest(pgErr.Code)
}

// rolledBack reports whether the server rolled the transaction back for a
// deadlock or a serialization failure, which the same transaction again
// normally does not meet.
func rolledBack(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}

// writeFault is an error that one write of a batch, ws[k], caused.
type writeFault struct {
	k   int
	err error
}

func (e *writeFault) Error() string { return e.err.Error() }
func (e *writeFault) Unwrap() error { return e.err }

// applyBatch commits ws in one transaction. Its BEGIN rides in the
// batch's first round trip (see txn), which saves one.
func (s *Store) applyBatch(ctx context.Context, ws []storage.Prepared) ([]storage.Result, error) {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	// A connection left inside a transaction (a failure the rollback
	// could not undo) is closed on release, never reused.
	defer c.Release()
	tx := &txn{conn: c.Conn()}
	out, err := s.applyIn(ctx, tx, ws)
	if err == nil {
		err = tx.commit(ctx)
	}
	if err != nil {
		tx.rollback(ctx)
		return nil, err
	}
	if s.afterCommit != nil {
		if err := s.afterCommit(); err != nil {
			return nil, fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
		}
	}
	return out, nil
}

// txn is a transaction whose BEGIN is sent with its first statements, in
// one round trip.
type txn struct {
	conn  *pgx.Conn
	began bool
	ended bool // committed by a COMMIT sent with the last statements
}

// send sends b in one round trip, if it holds anything: the transaction's
// BEGIN first, the first time.
func (tx *txn) send(ctx context.Context, b *pgx.Batch) error {
	if b.Len() == 0 {
		return nil
	}
	if !tx.began {
		begin := &pgx.Batch{}
		begin.Queue("BEGIN")
		b.QueuedQueries = append(begin.QueuedQueries, b.QueuedQueries...)
		tx.began = true
	}
	return tx.conn.SendBatch(ctx, b).Close()
}

// queueCommit queues the COMMIT at the end of b, to be sent with the
// transaction's last statements: it fails unless the server committed.
func (tx *txn) queueCommit(b *pgx.Batch) {
	b.Queue("COMMIT").Exec(func(tag pgconn.CommandTag) error {
		if tag.String() != "COMMIT" {
			return pgx.ErrTxCommitRollback
		}
		tx.ended = true
		return nil
	})
}

// commit commits, and fails unless the server did: a COMMIT of a failed
// transaction rolls it back without an error.
func (tx *txn) commit(ctx context.Context) error {
	if !tx.began || tx.ended {
		return nil
	}
	tag, err := tx.conn.Exec(ctx, "COMMIT")
	if err != nil {
		return err
	}
	if tag.String() != "COMMIT" {
		return pgx.ErrTxCommitRollback
	}
	return nil
}

// rollback ends a transaction that failed, if the connection still has
// one, so that it can be reused: on its own deadline, since ctx may be
// what ended it.
func (tx *txn) rollback(ctx context.Context) {
	if tx.conn.IsClosed() || tx.conn.PgConn().TxStatus() == 'I' {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	tx.conn.Exec(ctx, "ROLLBACK") // on failure, the connection is closed on release
}

// entry is one natural key a batch writes: the row as it stands at each
// point of the batch, and whether the batch must write it back.
type entry struct {
	first storage.Revocation // the batch's first revocation of the key
	row   storage.Revocation // as stored, then as merged so far
	// fresh: the batch inserted the row with first, whose use is still to
	// be counted; existing: the row was there, locked.
	fresh, existing bool
	dirty           bool // the row's value or contributions changed
	change          int  // the last change the batch made to it, -1: none
}

// change is one change a batch appends to the feed, in feed order.
type change struct {
	k     int // the write that made it
	value storage.Revocation
}

// use is one revocation of one write, as the write left the entry.
type use struct {
	value  storage.Revocation
	change int  // the change that wrote value (-1: the stored row's seq)
	moved  bool // this write made that change
}

// queueCustom queues a statement that finds rows of tokengate_revocations
// by key, planned for its own arguments and the table as it is (a custom
// plan). pgx prepares a connection's statements once, and PostgreSQL then
// settles on one plan for good (a generic plan): one made while the table
// was nearly empty (a new deployment, or a burst into it) scans the whole
// table at every batch, and keeps doing so as the table grows, until an
// ANALYZE happens to replace it. Only these statements: the trigger and
// the feed's identity, which run in the same transaction, keep their
// generic plans, which planning at every call would double.
func queueCustom(b *pgx.Batch, sql string, args ...any) *pgx.QueuedQuery {
	b.Queue("SET LOCAL plan_cache_mode = force_custom_plan")
	q := b.Queue(sql, args...)
	b.Queue("SET LOCAL plan_cache_mode TO DEFAULT")
	return q
}

// insertEvents records event ids, sorted and each once, in one statement
// and returns those that were new (or forgotten: remembered no longer);
// the others are duplicates.
const insertEvents = `INSERT INTO tokengate_events (event_id, expires_at, received_at)
	SELECT e.id, e.expires_at, coalesce($3::timestamptz, now()) FROM unnest($1::text[], $2::timestamptz[]) AS e(id, expires_at)
	ON CONFLICT (event_id) DO UPDATE SET expires_at = EXCLUDED.expires_at, received_at = EXCLUDED.received_at
	WHERE tokengate_events.expires_at <= EXCLUDED.received_at
	RETURNING event_id`

// insertEvent records an event id met again in the same batch, after the
// first: it is applied as if it came later.
const insertEvent = `INSERT INTO tokengate_events (event_id, expires_at, received_at)
	VALUES ($1, $2, coalesce($3::timestamptz, now()))
	ON CONFLICT (event_id) DO UPDATE SET expires_at = EXCLUDED.expires_at, received_at = EXCLUDED.received_at
	WHERE tokengate_events.expires_at <= EXCLUDED.received_at`

// insertRevocations inserts the entries that are not there, in the order
// given (lessKey), and returns them.
const insertRevocations = `INSERT INTO tokengate_revocations
	(seq, kind, issuer, key, audience, revoked_before, expires_at, source, reason, created_at, contributions)
	SELECT 0, r.kind, r.issuer, r.key, r.audience, r.revoked_before, r.expires_at, r.source, r.reason,
		coalesce(r.created_at, $11::timestamptz, now()), r.contributions
	FROM unnest($1::smallint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::text[],
		$8::text[], $9::timestamptz[], $10::jsonb[])
		AS r(kind, issuer, key, audience, revoked_before, expires_at, source, reason, created_at, contributions)
	ON CONFLICT (kind, issuer, key, audience) DO NOTHING
	RETURNING ` + revocationColumns

// lockRevocations locks the entries with the given natural keys, in
// lessKey's order (bytewise: COLLATE "C").
const lockRevocations = selectRevocation + ` JOIN unnest($1::smallint[], $2::text[], $3::text[], $4::text[])
		AS k(kind, issuer, key, audience) USING (kind, issuer, key, audience)
	ORDER BY kind, issuer COLLATE "C", key COLLATE "C", audience COLLATE "C" FOR UPDATE OF tokengate_revocations`

// updateRevocations writes entries back: their values and contributions,
// and the seq of the change that last wrote each (back: its distance from
// the feed's last number; -1: none).
const updateRevocations = `UPDATE tokengate_revocations r SET revoked_before = u.revoked_before, expires_at = u.expires_at,
		source = u.source, reason = u.reason, contributions = u.contributions,
		seq = CASE WHEN u.back >= 0 THEN f.last_seq - u.back ELSE r.seq END
	FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[], $6::jsonb[], $7::bigint[])
		AS u(id, revoked_before, expires_at, source, reason, contributions, back), tokengate_feed f
	WHERE r.id = u.id`

// insertChanges appends changes to the feed, each back from its last
// number, in sequence order (what a trigger on the table sees too).
const insertChanges = `INSERT INTO tokengate_changes (seq, op, revocation, committed_at)
	SELECT f.last_seq - c.back, $2, c.revocation, coalesce($3::timestamptz, clock_timestamp())
	FROM unnest($1::bigint[], $4::jsonb[]) AS c(back, revocation), tokengate_feed f
	ORDER BY c.back DESC`

// applyIn does a batch's work in tx, in a few round trips and a few
// statements whatever its size: the event ids; the new entries; the
// existing ones, locked; then the merged values, the feed's numbers and
// the changes, under the feed's row lock until commit. Entries are
// inserted and locked in one order (lessKey), so that concurrent batches
// cannot deadlock.
func (s *Store) applyIn(ctx context.Context, tx *txn, ws []storage.Prepared) ([]storage.Result, error) {
	now := s.clock()
	out := make([]storage.Result, len(ws))

	// Event ids: each new one once, in one statement; one met again in the
	// batch after, as if it came later.
	dup := make([]bool, len(ws))
	firstOf := map[string]int{}
	var ids []string
	for k, w := range ws {
		if id := w.Write.EventID; id != "" {
			if _, seen := firstOf[id]; !seen {
				firstOf[id] = k
				ids = append(ids, id)
			}
		}
	}
	b := &pgx.Batch{}
	if len(ids) > 0 {
		slices.Sort(ids)
		expires := make([]time.Time, len(ids))
		for i, id := range ids {
			expires[i] = ws[firstOf[id]].Write.EventRetention()
		}
		fresh := map[string]bool{}
		b.Queue(insertEvents, ids, expires, now).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return err
				}
				fresh[id] = true
			}
			for id, k := range firstOf {
				dup[k] = !fresh[id]
			}
			return rows.Err()
		})
		for k, w := range ws {
			if id := w.Write.EventID; id != "" && firstOf[id] != k {
				b.Queue(insertEvent, id, w.Write.EventRetention(), now).Exec(func(tag pgconn.CommandTag) error {
					dup[k] = tag.RowsAffected() == 0
					return nil
				})
			}
		}
	}
	if err := tx.send(ctx, b); err != nil {
		return nil, err
	}

	// The entries the batch writes, one per natural key, in lock order;
	// and each write's revocations in that order too (the order a write's
	// own changes take).
	byKey := map[string]*entry{}
	var entries []*entry
	orders := make([][]int, len(ws))
	for k, w := range ws {
		if dup[k] {
			continue
		}
		orders[k] = keyOrder(w.Revocations)
		for _, r := range w.Revocations {
			nk := naturalKey(r)
			if byKey[nk] == nil {
				e := &entry{first: r, change: -1}
				byKey[nk] = e
				entries = append(entries, e)
			}
		}
	}
	sort.SliceStable(entries, func(a, b int) bool { return lessKey(entries[a].first, entries[b].first) })

	// New entries are inserted; a duplicate's position is read from the
	// stored entries the batch does not write (those it does are known
	// below).
	b = &pgx.Batch{}
	if len(entries) > 0 {
		if err := queueInsert(b, entries, byKey, now); err != nil {
			return nil, err
		}
	}
	dupSeq := make([]int64, len(ws))
	for k, w := range ws {
		if !dup[k] {
			continue
		}
		var untouched []storage.Revocation
		for _, r := range w.Revocations {
			if byKey[naturalKey(r)] == nil {
				untouched = append(untouched, r)
			}
		}
		if len(untouched) > 0 {
			queueStoredSeq(b, untouched, &dupSeq[k])
		}
	}
	if err := tx.send(ctx, b); err != nil {
		return nil, err
	}
	// Those already there are locked, in the same order. One deleted
	// between the insert that found it and the lock (an unrevoke, a sweep)
	// is inserted again.
	for range 3 {
		var missing []*entry
		for _, e := range entries {
			if !e.fresh && !e.existing {
				missing = append(missing, e)
			}
		}
		if len(missing) == 0 {
			break
		}
		b = &pgx.Batch{}
		queueLock(b, missing, byKey)
		if err := tx.send(ctx, b); err != nil {
			return nil, err
		}
		missing = slices.DeleteFunc(missing, func(e *entry) bool { return e.existing })
		if len(missing) == 0 {
			break
		}
		b = &pgx.Batch{}
		if err := queueInsert(b, missing, byKey, now); err != nil {
			return nil, err
		}
		if err := tx.send(ctx, b); err != nil {
			return nil, err
		}
	}
	for _, e := range entries {
		if !e.fresh && !e.existing {
			return nil, fmt.Errorf("revocation %s %q of %q: the entry keeps being deleted under this write", e.first.Kind, e.first.Key, e.first.Issuer)
		}
	}

	// Merge each write in turn, as if alone.
	var changes []change
	uses := make([][]use, len(ws))
	for k, w := range ws {
		if dup[k] {
			// As stored at this point of the batch: an entry a later
			// write inserts is not there yet.
			for _, r := range w.Revocations {
				if e := byKey[naturalKey(r)]; e != nil && !e.fresh {
					uses[k] = append(uses[k], use{value: e.row, change: e.change})
				}
			}
			continue
		}
		uses[k] = make([]use, len(w.Revocations))
		for _, j := range orders[k] {
			e := byKey[naturalKey(w.Revocations[j])]
			moved := false
			if e.fresh {
				e.fresh, moved = false, true
			} else {
				merged, m, recorded := storage.Merge(e.row, w.Revocations[j])
				if recorded {
					e.row, e.dirty = merged, true
				}
				moved = m
			}
			if moved {
				changes = append(changes, change{k: k, value: e.row})
				e.change, e.dirty = len(changes)-1, true
			}
			uses[k][j] = use{value: e.row, change: e.change, moved: moved}
		}
	}

	// From here until commit this transaction holds the feed row: the
	// numbers it takes commit in order, after every smaller one. One
	// round trip takes the numbers, writes the entries back, appends the
	// changes and notifies, so that the lock is held briefly.
	m := len(changes)
	var last uint64
	var feed string
	b = &pgx.Batch{}
	if m > 0 {
		b.Queue("UPDATE tokengate_feed SET last_seq = last_seq + $1 RETURNING last_seq, tokengate_feed_identity(feed_id)", m).QueryRow(func(row pgx.Row) error {
			return row.Scan(&last, &feed)
		})
	} else {
		b.Queue("SELECT tokengate_feed_identity(feed_id) FROM tokengate_feed").QueryRow(func(row pgx.Row) error {
			return row.Scan(&feed)
		})
	}
	var u struct {
		ids                   []int64
		befores, expires      []*time.Time
		sources, reasons, cbs []string
		backs                 []int64
	}
	for _, e := range entries {
		if !e.dirty {
			continue
		}
		contributions, err := contributionsOf(e.row)
		if err != nil {
			return nil, err
		}
		back := int64(-1)
		if e.change >= 0 {
			back = int64(m - 1 - e.change)
		}
		u.ids, u.befores, u.expires = append(u.ids, e.row.ID), append(u.befores, timeOrNull(e.row.RevokedBefore)), append(u.expires, &e.row.ExpiresAt)
		u.sources, u.reasons, u.cbs, u.backs = append(u.sources, e.row.Source), append(u.reasons, e.row.Reason), append(u.cbs, contributions), append(u.backs, back)
	}
	if len(u.ids) > 0 {
		queueCustom(b, updateRevocations, u.ids, u.befores, u.expires, u.sources, u.reasons, u.cbs, u.backs)
	}
	if m > 0 {
		backs, docs := make([]int64, m), make([]string, m)
		for c, ch := range changes {
			doc, err := json.Marshal(ch.value)
			if err != nil {
				return nil, &writeFault{k: ch.k, err: err}
			}
			backs[c], docs[c] = int64(m-1-c), string(doc)
		}
		b.Queue(insertChanges, backs, storage.OpPut, now, docs)
		b.Queue("SELECT pg_notify($1, '')", channel)
	}
	if s.beforeCommit == nil {
		// Nothing is left to decide before the commit (a test's hook
		// would be): it rides with the last statements, one round trip
		// fewer. A statement the server refuses skips it, and the
		// transaction is rolled back. The callbacks of these statements
		// run only once the server has answered them all, COMMIT
		// included: none of them may refuse what the server did (an
		// error there is answered 503 for a committed batch, which a
		// retry merges again harmlessly, but needlessly).
		tx.queueCommit(b)
	}
	if err := tx.send(ctx, b); err != nil {
		return nil, err
	}

	seqOf := func(change int, stored uint64) uint64 {
		if change < 0 {
			return stored
		}
		return last - uint64(m-1-change)
	}
	// The changes as the feed now holds them, for the writers' follower to
	// apply without reading them back, when it follows this server: one
	// that reads a standby (Options.FollowURL) must not get ahead of it.
	// At is when they were made here: the feed's own time, taken in the
	// transaction, is not read back.
	var committed []storage.Change
	if m > 0 && s.feed == s.pool {
		at := time.Now().UTC()
		if now != nil {
			at = now.UTC()
		}
		committed = make([]storage.Change, m)
		for c, ch := range changes {
			r := ch.value
			r.Seq = seqOf(c, 0)
			committed[c] = storage.Change{Seq: r.Seq, Op: storage.OpPut, Revocation: r, At: at}
		}
	}
	for k, w := range ws {
		res := storage.Result{Position: storage.Position{Feed: feed}, Committed: committed}
		if dup[k] {
			res.Duplicate = true
			res.Position.Seq = uint64(dupSeq[k])
			for _, u := range uses[k] {
				res.Position.Seq = max(res.Position.Seq, seqOf(u.change, u.value.Seq))
			}
		} else {
			res.Revocations = make([]storage.Revocation, len(w.Revocations))
			for j, u := range uses[k] {
				r := u.value
				r.Seq = seqOf(u.change, u.value.Seq)
				res.Revocations[j] = r
				res.Position.Seq = max(res.Position.Seq, r.Seq)
				if u.moved {
					res.Seq = max(res.Seq, r.Seq)
				}
			}
		}
		if err := s.runBeforeCommit(res); err != nil {
			return nil, &writeFault{k: k, err: err}
		}
		out[k] = res
	}
	return out, nil
}

// timeOrNull is t, or NULL when zero.
func timeOrNull(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// queueInsert queues the insert of each entry's first revocation, in one
// statement. Each entry inserted is fresh; one that was there stays
// neither fresh nor existing, to be locked.
func queueInsert(b *pgx.Batch, entries []*entry, byKey map[string]*entry, now *time.Time) error {
	n := len(entries)
	kinds := make([]int16, n)
	issuers, keys, audiences := make([]string, n), make([]string, n), make([]string, n)
	befores, expires, created := make([]*time.Time, n), make([]time.Time, n), make([]*time.Time, n)
	sources, reasons, contributions := make([]string, n), make([]string, n), make([]string, n)
	for i, e := range entries {
		r := e.first
		c, err := contributionsOf(r)
		if err != nil {
			return err
		}
		kinds[i], issuers[i], keys[i], audiences[i] = int16(r.Kind), r.Issuer, r.Key, r.Audience
		befores[i], expires[i], created[i] = timeOrNull(r.RevokedBefore), r.ExpiresAt, timeOrNull(r.CreatedAt)
		sources[i], reasons[i], contributions[i] = r.Source, r.Reason, c
	}
	b.Queue(insertRevocations, kinds, issuers, keys, audiences, befores, expires, sources, reasons, created, contributions, now).
		Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var r storage.Revocation
				if err := scanRevocation(rows, &r); err != nil {
					return err
				}
				e := byKey[naturalKey(r)]
				if e == nil {
					return fmt.Errorf("revocation %s %q of %q: inserted, but not asked for", r.Kind, r.Key, r.Issuer)
				}
				e.row, e.fresh = r, true
			}
			return rows.Err()
		})
	return nil
}

// queueLock queues the lock of the entries' rows, in one statement. Each
// one found is existing; one deleted meanwhile stays neither.
func queueLock(b *pgx.Batch, entries []*entry, byKey map[string]*entry) {
	n := len(entries)
	kinds := make([]int16, n)
	issuers, keys, audiences := make([]string, n), make([]string, n), make([]string, n)
	for i, e := range entries {
		kinds[i], issuers[i], keys[i], audiences[i] = int16(e.first.Kind), e.first.Issuer, e.first.Key, e.first.Audience
	}
	queueCustom(b, lockRevocations, kinds, issuers, keys, audiences).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var r storage.Revocation
			if err := scanRevocation(rows, &r); err != nil {
				return err
			}
			if e := byKey[naturalKey(r)]; e != nil {
				e.row, e.existing = r, true
			}
		}
		return rows.Err()
	})
}

// queueStoredSeq queues the read of the latest change that wrote any
// stored entry with the natural key of one of revs, into seq (0 when none
// is stored: unrevoked since, nothing to wait for).
func queueStoredSeq(b *pgx.Batch, revs []storage.Revocation, seq *int64) {
	kinds := make([]int16, len(revs))
	issuers, keys, audiences := make([]string, len(revs)), make([]string, len(revs)), make([]string, len(revs))
	for i, r := range revs {
		kinds[i], issuers[i], keys[i], audiences[i] = int16(r.Kind), r.Issuer, r.Key, r.Audience
	}
	queueCustom(b, `SELECT coalesce(max(r.seq), 0) FROM tokengate_revocations r
		JOIN unnest($1::smallint[], $2::text[], $3::text[], $4::text[]) AS k(kind, issuer, key, audience)
		USING (kind, issuer, key, audience)`, kinds, issuers, keys, audiences).QueryRow(func(row pgx.Row) error {
		return row.Scan(seq)
	})
}

// keyOrder is the order in which a write's revocations are merged: by
// natural key (lessKey), as their rows are locked.
func keyOrder(revs []storage.Revocation) []int {
	order := make([]int, len(revs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return lessKey(revs[order[a]], revs[order[b]]) })
	return order
}

// naturalKey encodes (kind, issuer, key, audience) unambiguously, as a map
// key.
func naturalKey(r storage.Revocation) string {
	return fmt.Sprintf("%d|%d:%s|%d:%s|%s", r.Kind, len(r.Issuer), r.Issuer, len(r.Key), r.Key, r.Audience)
}
