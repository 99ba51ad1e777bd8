package bolt_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
	"github.com/tokengate/tokengate/storage/storagetest"
)

func TestConformance(t *testing.T) { storagetest.Run(t, newStore) }

// TestConformanceGroupCommit: the contract holds through a GroupCommit,
// which is how tokengate writes.
func TestConformanceGroupCommit(t *testing.T) {
	storagetest.Run(t, storagetest.GroupCommitted(newStore))
}

// newStore opens the suite's stores: one file per test, reopened as is.
func newStore(t *testing.T, opts storagetest.Options) storagetest.Opener {
	path := filepath.Join(t.TempDir(), "tokengate.db")
	return func(t *testing.T) storage.Store {
		s, err := bolt.Open(path, bolt.Options{Timeout: time.Second, Now: opts.Now})
		if err != nil {
			t.Fatal(err)
		}
		bolt.SetBeforeCommit(s, opts.BeforeCommit)
		bolt.SetAfterCommit(s, opts.AfterCommit)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
		return s
	}
}

// TestSecondProcessIsRefused: the file supports one tokengate process; a
// second Open fails after its timeout instead of corrupting anything.
func TestSecondProcessIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokengate.db")
	s, err := bolt.Open(path, bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	if s2, err := bolt.Open(path, bolt.Options{Timeout: 100 * time.Millisecond}); err == nil {
		t.Errorf("a second Open of the same file succeeded")
		if err := s2.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
}
