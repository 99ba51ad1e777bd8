package postgres

import "github.com/tokengate/tokengate/storage"

// SetBeforeCommit makes every Apply of s call fn inside its transaction,
// after the entries, the feed, the changes and the event id are written and
// before the commit; fn sees the result the write is about to commit; an error from it aborts the write. The conformance
// suite uses it to prove that Apply is atomic.
func SetBeforeCommit(s *Store, fn func(storage.Result) error) { s.beforeCommit = fn }
