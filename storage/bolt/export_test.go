package bolt

// SetBeforeCommit makes every Apply of s call fn inside its transaction,
// after the entries, changes and event id are written and before the
// commit; an error from fn aborts the write. The conformance suite uses it
// to prove that Apply is atomic.
func SetBeforeCommit(s *Store, fn func() error) { s.beforeCommit = fn }
