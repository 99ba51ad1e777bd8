// Package bolt is the embedded revocation store: one file on local disk
// (bbolt), for a single tokengate process. It is the default when no
// PostgreSQL URL is configured, so tokengate runs with nothing else
// installed. Every batch of writes (ApplyBatch; Apply is a batch of one) is
// one fsync'd bbolt transaction.
package bolt

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/tokengate/tokengate/storage"
)

var (
	bucketMeta    = []byte("meta")    // seq, pruned, feed
	bucketRevs    = []byte("revs")    // id → Revocation (JSON)
	bucketKeys    = []byte("keys")    // natural key → id
	bucketExpiry  = []byte("expiry")  // expires_at (Unix s) ‖ id → nil, for sweeps
	bucketChanges = []byte("changes") // seq → Change (JSON)
	bucketEvents  = []byte("events")  // event id → expires_at (Unix s)

	keySeq    = []byte("seq")    // last change
	keyPruned = []byte("pruned") // changes ≤ pruned are gone
	keyFeed   = []byte("feed")   // the feed's identity, random, made with the file
)

// Store is the embedded backend.
type Store struct {
	db     *bbolt.DB
	notify chan struct{}
	now    func() time.Time
	// beforeCommit, set only by tests (export_test.go), is called inside
	// Apply's transaction once everything is written, with each write's
	// result; an error aborts it. afterCommit is called once a batch has
	// committed; an error is every write's answer, as if it were lost.
	beforeCommit func(storage.Result) error
	afterCommit  func() error
}

var _ storage.Store = (*Store)(nil)

// Options configure Open.
type Options struct {
	// Timeout is how long Open waits for the file lock that another process
	// holds (default 1s).
	Timeout time.Duration
	// Now is the store's clock (default time.Now); see storage.Store.
	Now func() time.Time
}

// Open opens (creating if needed) the store at path. Only one process may
// have it open: a second Open waits up to opts.Timeout for the file lock.
func Open(path string, opts Options) (*Store, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: opts.Timeout})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketRevs, bucketKeys, bucketExpiry, bucketChanges, bucketEvents} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if meta.Get(keyFeed) != nil {
			return nil
		}
		id := make([]byte, 16)
		rand.Read(id) // never fails
		return meta.Put(keyFeed, []byte(hex.EncodeToString(id)))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &Store{db: db, notify: make(chan struct{}, 1), now: opts.Now}, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Notify wakes readers after a write that changed something.
func (s *Store) Notify() <-chan struct{} { return s.notify }

func (s *Store) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Apply merges a write in one transaction.
func (s *Store) Apply(ctx context.Context, w storage.Write) (storage.Result, error) {
	a := s.ApplyBatch(ctx, []storage.Write{w})[0]
	return a.Result, a.Err
}

// ApplyBatch merges writes in one fsync'd transaction, each as if applied
// alone in turn; see storage.Store. Invalid writes are refused before it.
// When it fails (a value the file cannot hold, say), each write is applied
// in a transaction of its own, so that it fails alone.
func (s *Store) ApplyBatch(ctx context.Context, ws []storage.Write) []storage.Applied {
	valid, out := storage.PrepareBatch(ws)
	if len(valid) == 0 {
		return out
	}
	res, err := s.applyBatch(ctx, valid)
	if err != nil && len(valid) > 1 && ctx.Err() == nil {
		for _, b := range valid {
			res, err := s.applyBatch(ctx, []storage.Prepared{b})
			if err != nil {
				out[b.Index].Err = err
				continue
			}
			out[b.Index].Result = res[0]
		}
		return out
	}
	for k, b := range valid {
		if err != nil {
			out[b.Index].Err = err
			continue
		}
		out[b.Index].Result = res[k]
	}
	return out
}

// applyBatch commits ws in one transaction, each in turn.
func (s *Store) applyBatch(ctx context.Context, ws []storage.Prepared) ([]storage.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	var out []storage.Result
	changed := false
	err := s.db.Update(func(tx *bbolt.Tx) error {
		out, changed = make([]storage.Result, len(ws)), false
		now := s.now().UTC()
		for k, w := range ws {
			res, err := s.applyIn(tx, w.Write, w.Revocations, now)
			if err != nil {
				return err
			}
			if s.beforeCommit != nil {
				if err := s.beforeCommit(res); err != nil {
					return err
				}
			}
			out[k], changed = res, changed || res.Seq != 0
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	if changed {
		s.wake()
	}
	if s.afterCommit != nil {
		if err := s.afterCommit(); err != nil {
			return nil, fmt.Errorf("apply: %w", err)
		}
	}
	return out, nil
}

// applyIn merges one write in tx.
func (s *Store) applyIn(tx *bbolt.Tx, w storage.Write, prepared []storage.Revocation, now time.Time) (storage.Result, error) {
	res := storage.Result{Position: storage.Position{Feed: string(tx.Bucket(bucketMeta).Get(keyFeed))}}
	if w.EventID != "" {
		events := tx.Bucket(bucketEvents)
		if v := events.Get([]byte(w.EventID)); v != nil && int64(u64(v)) > now.Unix() {
			res.Duplicate = true
			for _, r := range prepared {
				idb := tx.Bucket(bucketKeys).Get(naturalKey(r))
				if idb == nil {
					continue // unrevoked since: nothing to wait for
				}
				stored, err := getRev(tx, int64(u64(idb)))
				if err != nil {
					return res, err
				}
				res.Position.Seq = max(res.Position.Seq, stored.Seq)
			}
			return res, nil
		}
		if err := events.Put([]byte(w.EventID), be(uint64(w.EventRetention().Unix()))); err != nil {
			return res, err
		}
	}
	for _, r := range prepared {
		stored, changed, recorded, err := s.put(tx, r, now)
		if err != nil {
			return res, err
		}
		if changed {
			seq, err := appendChange(tx, storage.OpPut, stored, now)
			if err != nil {
				return res, err
			}
			stored.Seq = seq
			res.Seq = seq
		}
		if recorded {
			if err := putRev(tx, stored); err != nil {
				return res, err
			}
		}
		res.Revocations = append(res.Revocations, stored)
		res.Position.Seq = max(res.Position.Seq, stored.Seq)
	}
	return res, nil
}

// put merges r into its entry, creating it if absent. changed: the entry's
// value moved (a change for the feed); recorded: the entry must be written.
func (s *Store) put(tx *bbolt.Tx, r storage.Revocation, now time.Time) (merged storage.Revocation, changed, recorded bool, err error) {
	nk := naturalKey(r)
	keys := tx.Bucket(bucketKeys)
	if idb := keys.Get(nk); idb != nil {
		stored, err := getRev(tx, int64(u64(idb)))
		if err != nil {
			return r, false, false, err
		}
		merged, changed, recorded := storage.Merge(stored, r)
		if err := moveExpiry(tx, stored, merged); err != nil {
			return r, false, false, err
		}
		return merged, changed, recorded, nil
	}
	id, err := tx.Bucket(bucketRevs).NextSequence()
	if err != nil {
		return r, false, false, err
	}
	r.ID = int64(id)
	if r.CreatedAt.IsZero() {
		r.CreatedAt = now.Truncate(time.Microsecond)
	}
	if err := keys.Put(nk, be(id)); err != nil {
		return r, false, false, err
	}
	if err := tx.Bucket(bucketExpiry).Put(expiryKey(r), nil); err != nil {
		return r, false, false, err
	}
	return r, true, true, nil
}

// moveExpiry keeps the expiry index in step when an entry's expires_at
// moves from old's to now's.
func moveExpiry(tx *bbolt.Tx, old, now storage.Revocation) error {
	if old.ExpiresAt.Equal(now.ExpiresAt) {
		return nil
	}
	exp := tx.Bucket(bucketExpiry)
	if err := exp.Delete(expiryKey(old)); err != nil {
		return err
	}
	return exp.Put(expiryKey(now), nil)
}

func appendChange(tx *bbolt.Tx, op storage.Op, r storage.Revocation, now time.Time) (uint64, error) {
	meta := tx.Bucket(bucketMeta)
	seq := u64(meta.Get(keySeq)) + 1
	if err := meta.Put(keySeq, be(seq)); err != nil {
		return 0, err
	}
	r.Seq = seq
	b, err := json.Marshal(storage.Change{Seq: seq, Op: op, Revocation: r, At: now})
	if err != nil {
		return 0, err
	}
	return seq, tx.Bucket(bucketChanges).Put(be(seq), b)
}

// Unrevoke removes one source class's contributions from an entry (or all
// of them), and records the result in the feed: the entry as it remains,
// or its deletion.
func (s *Store) Unrevoke(ctx context.Context, id int64, source string) (storage.Unrevoked, error) {
	if err := ctx.Err(); err != nil {
		return storage.Unrevoked{}, err
	}
	var u storage.Unrevoked
	err := s.db.Update(func(tx *bbolt.Tx) error {
		r, err := getRev(tx, id)
		if err != nil {
			return err
		}
		remaining, left, removed, err := storage.Remove(r, source)
		if err != nil {
			return err
		}
		now := s.now().UTC()
		u = storage.Unrevoked{Removed: removed, Change: storage.Change{Op: storage.OpDelete, Revocation: r, At: now}}
		if left {
			u.Change.Op, u.Change.Revocation = storage.OpPut, remaining
			if err := moveExpiry(tx, r, remaining); err != nil {
				return err
			}
		} else {
			if err := tx.Bucket(bucketRevs).Delete(be(uint64(id))); err != nil {
				return err
			}
			if err := tx.Bucket(bucketKeys).Delete(naturalKey(r)); err != nil {
				return err
			}
			if err := tx.Bucket(bucketExpiry).Delete(expiryKey(r)); err != nil {
				return err
			}
		}
		seq, err := appendChange(tx, u.Change.Op, u.Change.Revocation, now)
		if err != nil {
			return err
		}
		u.Change.Seq, u.Change.Revocation.Seq = seq, seq
		u.Position = storage.Position{Feed: string(tx.Bucket(bucketMeta).Get(keyFeed)), Seq: seq}
		if left {
			return putRev(tx, u.Change.Revocation)
		}
		return nil
	})
	if err != nil {
		return storage.Unrevoked{}, fmt.Errorf("unrevoke %d: %w", id, err)
	}
	s.wake()
	return u, nil
}

// Get returns one entry by id.
func (s *Store) Get(ctx context.Context, id int64) (storage.Revocation, error) {
	if err := ctx.Err(); err != nil {
		return storage.Revocation{}, err
	}
	var r storage.Revocation
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		r, err = getRev(tx, id)
		return err
	})
	return r, err
}

// List returns entries in id order, filtered.
func (s *Store) List(ctx context.Context, opts storage.ListOptions) ([]storage.Revocation, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	limit := opts.Limit
	if limit <= 0 || limit > 1000 {
		limit = min(max(limit, 100), 1000)
	}
	var out []storage.Revocation
	err := s.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketRevs).Cursor()
		for k, v := c.Seek(be(uint64(opts.AfterID + 1))); k != nil && len(out) < limit; k, v = c.Next() {
			var r storage.Revocation
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if (opts.Issuer == "" || r.Issuer == opts.Issuer) && (opts.Kind == 0 || r.Kind == opts.Kind) &&
				(opts.Key == "" || r.Key == opts.Key) {
				out = append(out, r)
			}
		}
		return nil
	})
	return out, err
}

// Snapshot reads every live entry and the position, in one read transaction.
func (s *Store) Snapshot(ctx context.Context, now time.Time, fn func(storage.Revocation) error) (storage.Position, error) {
	if err := ctx.Err(); err != nil {
		return storage.Position{}, err
	}
	var pos storage.Position
	err := s.db.View(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		pos = storage.Position{Feed: string(meta.Get(keyFeed)), Seq: u64(meta.Get(keySeq))}
		return tx.Bucket(bucketRevs).ForEach(func(_, v []byte) error {
			var r storage.Revocation
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if !r.ExpiresAt.After(now) {
				return nil
			}
			return fn(r)
		})
	})
	return pos, err
}

// Changes returns changes after `after`, in order.
func (s *Store) Changes(ctx context.Context, after storage.Position, limit int) ([]storage.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []storage.Change
	err := s.db.View(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if after.Feed != string(meta.Get(keyFeed)) || after.Seq > u64(meta.Get(keySeq)) {
			return storage.ErrFeedReset
		}
		if after.Seq < u64(meta.Get(keyPruned)) {
			return storage.ErrTruncated
		}
		c := tx.Bucket(bucketChanges).Cursor()
		for k, v := c.Seek(be(after.Seq + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			var ch storage.Change
			if err := json.Unmarshal(v, &ch); err != nil {
				return err
			}
			out = append(out, ch)
		}
		return nil
	})
	return out, err
}

// Sweep deletes expired entries and event ids, and changes older than
// keepChanges.
func (s *Store) Sweep(ctx context.Context, now time.Time, keepChanges time.Duration) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n := 0
	err := s.db.Update(func(tx *bbolt.Tx) error {
		n = 0
		exp := tx.Bucket(bucketExpiry).Cursor()
		limit := be(uint64(now.Unix()) + 1)
		var expired [][]byte
		for k, _ := exp.First(); k != nil && bytes.Compare(k[:8], limit) < 0; k, _ = exp.Next() {
			expired = append(expired, bytes.Clone(k))
		}
		for _, k := range expired {
			id := int64(u64(k[8:]))
			r, err := getRev(tx, id)
			if err == nil {
				if r.ExpiresAt.After(now) {
					continue
				}
				tx.Bucket(bucketRevs).Delete(k[8:])
				tx.Bucket(bucketKeys).Delete(naturalKey(r))
				n++
			}
			if err := tx.Bucket(bucketExpiry).Delete(k); err != nil {
				return err
			}
		}
		events := tx.Bucket(bucketEvents)
		var gone [][]byte
		events.ForEach(func(k, v []byte) error {
			if int64(u64(v)) <= now.Unix() {
				gone = append(gone, bytes.Clone(k))
			}
			return nil
		})
		for _, k := range gone {
			events.Delete(k)
		}
		meta := tx.Bucket(bucketMeta)
		pruned := u64(meta.Get(keyPruned))
		ch := tx.Bucket(bucketChanges).Cursor()
		var old [][]byte
		for k, v := ch.First(); k != nil; k, v = ch.Next() {
			var c storage.Change
			if err := json.Unmarshal(v, &c); err != nil {
				return err
			}
			if !c.At.Before(now.Add(-keepChanges)) {
				break
			}
			old = append(old, bytes.Clone(k))
			pruned = c.Seq
		}
		for _, k := range old {
			tx.Bucket(bucketChanges).Delete(k)
		}
		return meta.Put(keyPruned, be(pruned))
	})
	return n, err
}

func getRev(tx *bbolt.Tx, id int64) (storage.Revocation, error) {
	v := tx.Bucket(bucketRevs).Get(be(uint64(id)))
	if v == nil {
		return storage.Revocation{}, storage.ErrNotFound
	}
	var r storage.Revocation
	if err := json.Unmarshal(v, &r); err != nil {
		return r, fmt.Errorf("revocation %d: %w", id, err)
	}
	return r, nil
}

func putRev(tx *bbolt.Tx, r storage.Revocation) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketRevs).Put(be(uint64(r.ID)), b)
}

// naturalKey encodes (kind, issuer, key, audience) unambiguously.
func naturalKey(r storage.Revocation) []byte {
	var b []byte
	b = append(b, byte(r.Kind))
	for _, s := range []string{r.Issuer, r.Key, r.Audience} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

func expiryKey(r storage.Revocation) []byte {
	return append(be(uint64(r.ExpiresAt.Unix())), be(uint64(r.ID))...)
}

func be(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func u64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
