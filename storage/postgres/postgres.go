// Package postgres is the shared revocation store for many tokengate
// replicas (pgx v5). Writers take the row lock of tokengate_feed to number
// their changes and hold it until commit, so changes commit in sequence order
// without gaps. Every change is notified with the change as its payload (a
// trigger, migration 0004): a replica applies it from the notification when
// it continues its position, and otherwise reads the feed after its last
// applied sequence. A replica may read the feed from a hot standby instead
// (Options.FollowURL), by polling.
package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgxlisten"

	"github.com/tokengate/tokengate/storage"
)

// channel is the NOTIFY channel writers notify (empty payload) on commit,
// for replicas of earlier versions.
const channel = "tokengate_changes"

// feedChannel is the channel replicas listen on: migration 0004's trigger
// notifies every change on it, the change as the payload.
const feedChannel = "tokengate_feed"

// maxPushed bounds the changes notifications carry that no follower took
// yet; past it they are dropped, and the follower reads the feed instead.
const maxPushed = 4096

// sweepLock is the advisory lock that lets one replica sweep at a time.
const sweepLock = 0x746f6b656e737770 // "tokenswp"

// SweepMargin is how far behind the database server's clock a sweep
// deletes: an entry, event id or change goes only once it expired (or
// passed its retention) at least this long ago by the server's clock. A
// replica whose clock lags the server's by less than this never reads an
// entry as live that a sweep has deleted.
const SweepMargin = time.Minute

// Options configure Open.
type Options struct {
	// MaxConns bounds the pool (default 10): every read and write, but not
	// the LISTEN connection. A replica that only reads needs one: its
	// follower reads the feed one read at a time.
	MaxConns int32
	// FollowURL, when set, is where the feed is read from: a hot standby of
	// the primary at Open's url. NOTIFY does not reach a standby (it
	// replays WAL; LISTEN is refused there), so the store opens no LISTEN
	// connection, Notify never fires, and readers learn of changes by
	// polling; the feed is read over one connection of its own. Writes,
	// sweeps, migrations and Get and List still go to the primary, whose
	// pool then closes connections idle for a minute, so that a replica
	// that only reads holds none there once it has started.
	FollowURL string
	// ListenReconnectDelay is the wait before the LISTEN connection is made
	// again after it is lost (default 1s). Readers poll meanwhile.
	ListenReconnectDelay time.Duration
	Logger               *slog.Logger
	// Now, when set, is the store's clock; see storage.Store. It stamps
	// entries and changes and decides whether an event id is still
	// remembered. Leave it nil in production: the database server's clock
	// is then used, one clock for every replica, so that a replica whose
	// clock lags cannot make fresh changes look old to the feed's pruning.
	Now func() time.Time
}

// Store is the PostgreSQL backend.
type Store struct {
	pool *pgxpool.Pool // the primary: writes, sweeps, migrations, Get, List
	// feed reads the change feed (Changes, Snapshot): the pool itself, or
	// a pool of one connection to Options.FollowURL.
	feed   *pgxpool.Pool
	notify chan struct{}
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
	now    func() time.Time // nil: the database server's clock
	push   pushed
	// beforeCommit, set only by tests (export_test.go), is called inside
	// Apply's transaction once everything is written, with each write's
	// result; an error aborts it. afterCommit is called once a batch has
	// committed; an error is every write's answer, as if it were lost.
	beforeCommit func(storage.Result) error
	afterCommit  func() error
}

var _ storage.Store = (*Store)(nil)

// Open parses the URL and prepares a pool; it does not wait for the server,
// so that a replica can start (not ready) while the database is down. The
// LISTEN connection runs until Close, reconnecting on its own; with
// Options.FollowURL there is none (see there).
func Open(url string, opts Options) (*Store, error) {
	cfg, err := poolConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres url: %w", err)
	}
	if err := primaryOnly(&cfg.ConnConfig.Config); err != nil {
		return nil, fmt.Errorf("postgres url: %w", err)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ListenReconnectDelay <= 0 {
		opts.ListenReconnectDelay = time.Second
	}
	var followCfg *pgxpool.Config
	if opts.FollowURL != "" {
		if followCfg, err = poolConfig(opts.FollowURL); err != nil {
			return nil, fmt.Errorf("postgres follow url: %w", err)
		}
		// The follower reads one batch at a time.
		followCfg.MaxConns = 1
		followCfg.ConnConfig.RuntimeParams["application_name"] += "-follow"
		cfg.MaxConnIdleTime = time.Minute
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", redact(err))
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{pool: pool, feed: pool, notify: make(chan struct{}, 1), log: opts.Logger, cancel: cancel, done: make(chan struct{}), now: opts.Now}
	if followCfg != nil {
		if s.feed, err = pgxpool.NewWithConfig(context.Background(), followCfg); err != nil {
			cancel()
			pool.Close()
			return nil, fmt.Errorf("postgres follow: %w", redact(err))
		}
		close(s.done) // no listener
		return s, nil
	}

	listenCfg := cfg.ConnConfig.Copy()
	listenCfg.RuntimeParams["application_name"] += "-listen"
	l := &pgxlisten.Listener{
		Connect:        func(ctx context.Context) (*pgx.Conn, error) { return pgx.ConnectConfig(ctx, listenCfg) },
		LogError:       func(ctx context.Context, err error) { s.logListenError(ctx, err) },
		ReconnectDelay: opts.ListenReconnectDelay,
	}
	l.Handle(feedChannel, wakeHandler{s})
	go func() {
		defer close(s.done)
		l.Listen(ctx)
	}()
	return s, nil
}

// poolConfig parses url with tokengate's connection defaults: the
// application_name tokengate unless the URL names one (a replica's own
// name, to tell replicas apart in pg_stat_activity), and a 5s connect
// timeout unless the URL sets one.
func poolConfig(url string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, redact(err)
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "tokengate"
	}
	if cfg.ConnConfig.ConnectTimeout == 0 { // the URL's connect_timeout wins
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	return cfg, nil
}

// primaryOnly refuses a connection string of several servers that does
// not ask for the primary: a connection could then land on a standby,
// where writes fail and the feed lags this replica's own writes (and a
// write acknowledged from what its transaction committed would put the
// index ahead of the feed it reads). One name that resolves to several
// servers cannot be told from one server here (localhost is two
// addresses): the README says so.
func primaryOnly(cfg *pgconn.Config) error {
	server := func(host string, port uint16) string {
		return net.JoinHostPort(strings.ToLower(host), strconv.Itoa(int(port)))
	}
	servers := map[string]bool{server(cfg.Host, cfg.Port): true}
	for _, f := range cfg.Fallbacks { // also TLS-then-plain fallbacks of one server
		servers[server(f.Host, f.Port)] = true
	}
	if len(servers) < 2 || cfg.ValidateConnect != nil && (sameFunc(cfg.ValidateConnect, pgconn.ValidateConnectTargetSessionAttrsReadWrite) ||
		sameFunc(cfg.ValidateConnect, pgconn.ValidateConnectTargetSessionAttrsPrimary)) {
		return nil
	}
	return fmt.Errorf("%d servers, and a connection may land on a standby: add target_session_attrs=read-write (or primary); "+
		"to read the feed from a standby, use storage.follow_url", len(servers))
}

// sameFunc reports whether a and b are the same function.
func sameFunc(a, b pgconn.ValidateConnectFunc) bool {
	return reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer()
}

// Close stops the listener and closes the pool.
func (s *Store) Close() error {
	s.cancel()
	<-s.done
	if s.feed != s.pool {
		s.feed.Close()
	}
	s.pool.Close()
	return nil
}

// Notify wakes readers when a NOTIFY arrives, and after the LISTEN
// connection (re)connects, since notifications may have been missed. With
// Options.FollowURL it never fires: readers poll.
func (s *Store) Notify() <-chan struct{} { return s.notify }

func (s *Store) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

type wakeHandler struct{ s *Store }

func (h wakeHandler) HandleNotification(ctx context.Context, n *pgconn.Notification, conn *pgx.Conn) error {
	h.s.push.notified(ctx, n.Payload, conn)
	h.s.wake()
	return nil
}

// HandleBacklog runs on every (re)connection of the LISTEN connection:
// notifications may have been missed, so the feed must be read.
func (h wakeHandler) HandleBacklog(ctx context.Context, _ string, conn *pgx.Conn) error {
	h.s.push.reconnected(ctx, conn)
	h.s.wake()
	return nil
}

// Pushed takes the changes notified since the last call; see
// storage.Pusher.
func (s *Store) Pushed() storage.Push {
	return s.push.take()
}

// ForgetPushed drops what was notified, and the numbers seen; see
// storage.Pusher.
func (s *Store) ForgetPushed() {
	s.push.mu.Lock()
	defer s.push.mu.Unlock()
	s.push.changes, s.push.complete, s.push.movedBack, s.push.last = nil, false, false, 0
}

// pushed keeps the changes the LISTEN connection's notifications carried
// (migration 0004) until a follower takes them, with the identity of the
// feed they belong to: the one of the server the LISTEN connection is on.
type pushed struct {
	mu       sync.Mutex
	feed     string // the feed's identity; "" until known
	feedID   string // the feed id part of it, which payloads name
	changes  []storage.Change
	complete bool // every notification since the last take carried its change
	// last is the highest sequence number notified on this connection (0
	// after a reconnection); movedBack, that one at or below it came since
	// the last take.
	last      uint64
	movedBack bool
}

// notification is a payload of migration 0004's trigger, decoded in one
// pass: the change's entry straight into a Revocation.
type notification struct {
	Feed       string              `json:"feed"`
	Seq        uint64              `json:"seq"`
	Op         storage.Op          `json:"op"`
	At         time.Time           `json:"at"`
	Revocation *storage.Revocation `json:"revocation"`
}

func (p *pushed) notified(ctx context.Context, payload string, conn *pgx.Conn) {
	var n notification
	err := json.Unmarshal([]byte(payload), &n)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.feed == "" { // the schema was migrated after the LISTEN connection was made
		p.feed, p.feedID = feedIdentity(ctx, conn)
	}
	// Another feed id than the connection's: the feed was re-created under
	// it. Only a read tells what became of this replica's position.
	if err == nil && n.Feed == p.feedID && n.Seq != 0 {
		// One connection gets the notifications in commit order, which is
		// sequence order (the feed lock): a number at or below one seen
		// means the feed moved back under the same feed id.
		if n.Seq <= p.last {
			p.movedBack = true
		}
		p.last = n.Seq
	}
	if err != nil || n.Revocation == nil || n.Feed != p.feedID || p.feed == "" || len(p.changes) >= maxPushed {
		p.changes, p.complete = nil, false
		return
	}
	c := storage.Change{Seq: n.Seq, Op: n.Op, At: n.At.UTC(), Revocation: *n.Revocation}
	c.Revocation.Seq = c.Seq
	p.changes = append(p.changes, c)
}

func (p *pushed) reconnected(ctx context.Context, conn *pgx.Conn) {
	feed, feedID := feedIdentity(ctx, conn)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.feed, p.feedID, p.changes, p.complete, p.last = feed, feedID, nil, false, 0
}

func (p *pushed) take() storage.Push {
	p.mu.Lock()
	defer p.mu.Unlock()
	push := storage.Push{Feed: p.feed, Changes: p.changes, Complete: p.complete, MovedBack: p.movedBack}
	p.changes, p.complete, p.movedBack = nil, true, false
	return push
}

// feedIdentity is the identity and the feed id of the feed on conn's
// server, or "" when they cannot be read (not migrated yet, or the
// connection failed).
func feedIdentity(ctx context.Context, conn *pgx.Conn) (feed, feedID string) {
	if err := conn.QueryRow(ctx, "SELECT tokengate_feed_identity(feed_id), feed_id FROM tokengate_feed").Scan(&feed, &feedID); err != nil {
		return "", ""
	}
	return feed, feedID
}

func (s *Store) logListenError(ctx context.Context, err error) {
	if ctx.Err() == nil {
		s.log.Warn("postgres LISTEN connection lost; reconnecting (the poll covers the gap)", "err", redact(err))
	}
}

// clock is the time to stamp a write with: nil when the database server's
// clock applies (no Options.Now), so that the SQL's coalesce picks now().
func (s *Store) clock() *time.Time {
	if s.now == nil {
		return nil
	}
	t := s.now().UTC().Truncate(time.Microsecond)
	return &t
}

func (s *Store) runBeforeCommit(res storage.Result) error {
	if s.beforeCommit == nil {
		return nil
	}
	return s.beforeCommit(res)
}

// update writes an entry's value and contributions back to its row, and its
// seq when withSeq.
func update(ctx context.Context, tx pgx.Tx, r storage.Revocation, withSeq bool) error {
	var before *time.Time
	if !r.RevokedBefore.IsZero() {
		before = &r.RevokedBefore
	}
	contributions, err := contributionsOf(r)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `UPDATE tokengate_revocations SET revoked_before = $2, expires_at = $3, source = $4, reason = $5,
		contributions = $6, seq = CASE WHEN $7 THEN $8 ELSE seq END WHERE id = $1`,
		r.ID, before, r.ExpiresAt, r.Source, r.Reason, contributions, withSeq, int64(r.Seq))
	return err
}

// contributionsOf is the contributions column's value for r.
func contributionsOf(r storage.Revocation) (string, error) {
	b, err := json.Marshal(storage.Contributions(r))
	return string(b), err
}

const revocationColumns = `id, seq, kind, issuer, key, audience, revoked_before, expires_at, source, reason, created_at, contributions`

const selectRevocation = `SELECT ` + revocationColumns + ` FROM tokengate_revocations`

// scanRevocation reads the revocationColumns of one row into r.
func scanRevocation(row pgx.Row, r *storage.Revocation) error {
	var before *time.Time
	var seq int64
	var contributions []byte
	if err := row.Scan(&r.ID, &seq, &r.Kind, &r.Issuer, &r.Key, &r.Audience, &before, &r.ExpiresAt,
		&r.Source, &r.Reason, &r.CreatedAt, &contributions); err != nil {
		return err
	}
	r.Seq = uint64(seq)
	r.RevokedBefore = time.Time{}
	if before != nil {
		r.RevokedBefore = before.UTC()
	}
	r.ExpiresAt, r.CreatedAt = r.ExpiresAt.UTC(), r.CreatedAt.UTC()
	r.Contributions = nil
	if err := json.Unmarshal(contributions, &r.Contributions); err != nil {
		return fmt.Errorf("revocation %d: contributions: %w", r.ID, err)
	}
	return nil
}

// Unrevoke removes one source class's contributions from an entry (or all
// of them), and records the result in the feed: the entry as it remains,
// or its deletion.
func (s *Store) Unrevoke(ctx context.Context, id int64, source string) (storage.Unrevoked, error) {
	var u storage.Unrevoked
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var r storage.Revocation
		err := scanRevocation(tx.QueryRow(ctx, selectRevocation+" WHERE id = $1 FOR UPDATE", id), &r)
		if errors.Is(err, pgx.ErrNoRows) {
			return storage.ErrNotFound
		}
		if err != nil {
			return err
		}
		remaining, left, removed, err := storage.Remove(r, source)
		if err != nil {
			return err
		}
		var seq uint64
		var feed string
		if err := tx.QueryRow(ctx, "UPDATE tokengate_feed SET last_seq = last_seq + 1 RETURNING last_seq, tokengate_feed_identity(feed_id)").Scan(&seq, &feed); err != nil {
			return err
		}
		u = storage.Unrevoked{Removed: removed, Change: storage.Change{Seq: seq, Op: storage.OpDelete, Revocation: r},
			Position: storage.Position{Feed: feed, Seq: seq}}
		u.Change.Revocation.Seq = seq
		if left {
			u.Change.Op, u.Change.Revocation = storage.OpPut, remaining
			u.Change.Revocation.Seq = seq
			if err := update(ctx, tx, u.Change.Revocation, true); err != nil {
				return err
			}
		} else if _, err := tx.Exec(ctx, "DELETE FROM tokengate_revocations WHERE id = $1", id); err != nil {
			return err
		}
		doc, err := json.Marshal(u.Change.Revocation)
		if err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, "INSERT INTO tokengate_changes (seq, op, revocation, committed_at) VALUES ($1, $2, $3, coalesce($4::timestamptz, clock_timestamp())) RETURNING committed_at",
			seq, u.Change.Op, doc, s.clock()).Scan(&u.Change.At); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "SELECT pg_notify($1, $2)", channel, fmt.Sprint(seq))
		return err
	})
	if err != nil {
		return storage.Unrevoked{}, classify(fmt.Sprintf("unrevoke %d", id), err)
	}
	u.Change.At = u.Change.At.UTC()
	return u, nil
}

// Get returns one entry by id.
func (s *Store) Get(ctx context.Context, id int64) (storage.Revocation, error) {
	var r storage.Revocation
	err := scanRevocation(s.pool.QueryRow(ctx, selectRevocation+" WHERE id = $1", id), &r)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, storage.ErrNotFound
	}
	if err != nil {
		return r, classify("get", err)
	}
	return r, nil
}

// List returns entries in id order, filtered.
func (s *Store) List(ctx context.Context, opts storage.ListOptions) ([]storage.Revocation, error) {
	limit := opts.Limit
	if limit <= 0 || limit > 1000 {
		limit = min(max(limit, 100), 1000)
	}
	rows, err := s.pool.Query(ctx, selectRevocation+`
		WHERE id > $1 AND ($2 = '' OR issuer = $2) AND ($3 = 0 OR kind = $3) AND ($4 = '' OR key = $4)
		ORDER BY id LIMIT $5`, opts.AfterID, opts.Issuer, int(opts.Kind), opts.Key, limit)
	if err != nil {
		return nil, classify("list", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (storage.Revocation, error) {
		var r storage.Revocation
		return r, scanRevocation(row, &r)
	})
	if err != nil {
		return nil, classify("list", err)
	}
	return out, nil
}

// feedQuery reads the feed's row: its identity (tokengate_feed_identity,
// migration 0002), the last change and how far it was pruned.
const feedQuery = "SELECT tokengate_feed_identity(feed_id), last_seq, pruned_seq FROM tokengate_feed"

// Snapshot reads every live entry and the position from one REPEATABLE READ
// transaction: the entries are exactly those of changes ≤ the sequence.
func (s *Store) Snapshot(ctx context.Context, now time.Time, fn func(storage.Revocation) error) (storage.Position, error) {
	var pos storage.Position
	err := pgx.BeginTxFunc(ctx, s.feed, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var last, pruned int64
		if err := tx.QueryRow(ctx, feedQuery).Scan(&pos.Feed, &last, &pruned); err != nil {
			return err
		}
		pos.Seq = uint64(last)
		rows, err := tx.Query(ctx, selectRevocation+" WHERE expires_at > $1", now)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r storage.Revocation
			if err := scanRevocation(rows, &r); err != nil {
				return err
			}
			if err := fn(r); err != nil {
				return err
			}
		}
		return rows.Err()
	})
	if err != nil {
		return storage.Position{}, classify("snapshot", err)
	}
	return pos, nil
}

// changesQuery reads the feed's row and the changes after $1, at most $2.
// The identity is computed once, in a subquery kept apart (OFFSET 0): in
// the select list of the join it would be computed again for every change
// returned, tens of microseconds each.
const changesQuery = `
	SELECT f.identity, f.last_seq, f.pruned_seq, c.seq, c.op, c.revocation, c.committed_at
	FROM (SELECT tokengate_feed_identity(feed_id) AS identity, last_seq, pruned_seq FROM tokengate_feed OFFSET 0) f
	LEFT JOIN LATERAL (
		SELECT seq, op, revocation, committed_at FROM tokengate_changes
		WHERE seq > $1 ORDER BY seq LIMIT $2) c ON true`

// Changes returns changes after `after`, in order, in one query that also
// tells whether the feed is still after.Feed, at or past after.Seq, and not
// pruned past it.
func (s *Store) Changes(ctx context.Context, after storage.Position, limit int) ([]storage.Change, error) {
	rows, err := s.feed.Query(ctx, changesQuery, int64(after.Seq), limit)
	if err != nil {
		return nil, classify("changes", err)
	}
	defer rows.Close()
	var out []storage.Change
	for rows.Next() {
		var (
			feed         string
			last, pruned int64
			seq          *int64
			op           *storage.Op
			doc          []byte
			at           *time.Time
		)
		if err := rows.Scan(&feed, &last, &pruned, &seq, &op, &doc, &at); err != nil {
			return nil, classify("changes", err)
		}
		if feed != after.Feed || after.Seq > uint64(last) {
			return nil, storage.ErrFeedReset
		}
		if after.Seq < uint64(pruned) {
			return nil, storage.ErrTruncated
		}
		if seq == nil {
			continue // no changes: the one row says only how far the feed was pruned
		}
		c := storage.Change{Seq: uint64(*seq), Op: *op, At: *at}
		if err := json.Unmarshal(doc, &c.Revocation); err != nil {
			return nil, fmt.Errorf("change %d: %w", c.Seq, err)
		}
		c.Revocation.Seq = c.Seq
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, classify("changes", err)
	}
	return out, nil
}

// Sweep deletes expired entries and event ids, and changes older than
// keepChanges. Only one replica sweeps at a time; the others return 0.
//
// Time is the database server's: without an injected clock (Options.Now)
// the sweep ignores the caller's now and deletes what expired before the
// server's now() minus SweepMargin, so that a replica whose clock runs
// ahead cannot delete revocations that every other replica still holds
// live (a sweep makes no change in the feed: a replica loading a snapshot
// later would never see them). With an injected clock, now is used as
// given, for tests that move time.
func (s *Store) Sweep(ctx context.Context, now time.Time, keepChanges time.Duration) (int, error) {
	var n int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var locked bool
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", int64(sweepLock)).Scan(&locked); err != nil || !locked {
			return err
		}
		if s.now == nil {
			if err := tx.QueryRow(ctx, "SELECT now() - $1::interval", SweepMargin).Scan(&now); err != nil {
				return err
			}
		}
		tag, err := tx.Exec(ctx, "DELETE FROM tokengate_revocations WHERE expires_at <= $1", now)
		if err != nil {
			return err
		}
		n = int(tag.RowsAffected())
		if _, err := tx.Exec(ctx, "DELETE FROM tokengate_events WHERE expires_at <= $1", now); err != nil {
			return err
		}
		// Prune a prefix of the feed: everything up to the newest change
		// older than the retention.
		_, err = tx.Exec(ctx, `
			WITH cut AS (SELECT max(seq) AS seq FROM tokengate_changes WHERE committed_at < $1),
			gone AS (DELETE FROM tokengate_changes WHERE seq <= (SELECT seq FROM cut))
			UPDATE tokengate_feed SET pruned_seq = GREATEST(pruned_seq, coalesce((SELECT seq FROM cut), 0))`,
			now.Add(-keepChanges))
		return err
	})
	if err != nil {
		return 0, classify("sweep", err)
	}
	return n, nil
}

func lessKey(a, b storage.Revocation) bool {
	if a.Kind != b.Kind {
		return a.Kind < b.Kind
	}
	if a.Issuer != b.Issuer {
		return a.Issuer < b.Issuer
	}
	if a.Key != b.Key {
		return a.Key < b.Key
	}
	return a.Audience < b.Audience
}

// classify maps driver errors onto storage's sentinels: sentinels pass
// through, a cancelled context stays itself, and everything that means the
// server could not be reached becomes ErrUnavailable.
func classify(op string, err error) error {
	switch {
	case errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrTruncated), errors.Is(err, storage.ErrInvalid),
		errors.Is(err, storage.ErrNoContribution), errors.Is(err, storage.ErrFeedReset):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", op, err)
	}
	return unavailable(op, err)
}

func unavailable(op string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && aboutTheRequest(pgErr.Code) {
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w: %w", op, storage.ErrUnavailable, redact(err))
}

// aboutTheRequest reports whether a SQLSTATE says the server refused what
// was asked, which asking again cannot change: a value it cannot hold (22,
// data exception), a constraint (23), or a function or trigger's refusal
// (P0). Every other error is the server's state, which can clear: a lost
// connection, a rolled-back transaction, a lock or statement timeout, too
// many connections, a full disk or NOTIFY queue, a server that takes no
// writes, a missing schema, an internal error. Those fail the request as
// unavailable (a 503 its sender retries), and a batch at once, not write
// by write.
func aboutTheRequest(code string) bool {
	for _, class := range []string{"22", "23", "P0"} {
		if strings.HasPrefix(code, class) {
			return true
		}
	}
	return false
}

// redact keeps passwords out of errors that quote a connection string.
func redact(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if i := strings.Index(msg, "password="); i >= 0 {
		end := strings.IndexAny(msg[i:], " &")
		if end < 0 {
			end = len(msg) - i
		}
		return errors.New(msg[:i] + "password=REDACTED" + msg[i+end:])
	}
	return err
}
