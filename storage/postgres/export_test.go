package postgres

import "github.com/tokengate/tokengate/storage"

// SetBeforeCommit makes every Apply of s call fn inside its transaction,
// after the entries, the feed, the changes and the event id are written and
// before the commit; fn sees the result the write is about to commit; an error from it aborts the write. The conformance
// suite uses it to prove that Apply is atomic.
func SetBeforeCommit(s *Store, fn func(storage.Result) error) { s.beforeCommit = fn }

// SetAfterCommit makes every batch of s call fn once its transaction has
// committed; an error from it becomes every write's answer, as when the
// answer is lost between the commit and the caller. The conformance suite
// uses it to prove that a retried write is a no-op.
func SetAfterCommit(s *Store, fn func() error) { s.afterCommit = fn }
