package intake_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/extauthz/intake"
	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

// gatedFollower is a real follower whose WaitFor calls are counted, and
// whose first waits at the gate until the test opens it.
type gatedFollower struct {
	*storage.Follower
	entered chan struct{} // closed when the first WaitFor arrives
	gate    chan struct{}

	mu    sync.Mutex
	calls []storage.Position
}

func (f *gatedFollower) WaitFor(ctx context.Context, pos storage.Position) error {
	f.mu.Lock()
	f.calls = append(f.calls, pos)
	first := len(f.calls) == 1
	f.mu.Unlock()
	if first {
		close(f.entered)
		<-f.gate
	}
	return f.Follower.WaitFor(ctx, pos)
}

// TestConcurrentWritesShareWaits: writes that commit while this replica is
// reading the feed for another wait for one read more, which serves them
// all (one WaitFor up to the highest position), not one read each; each is
// answered only once its own entry is in the index.
func TestConcurrentWritesShareWaits(t *testing.T) {
	s, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	x := storage.NewIndex()
	f := &gatedFollower{Follower: newFollower(t, s, x, storage.FollowerOptions{}), entered: make(chan struct{}), gate: make(chan struct{})}
	const iss = "https://idp.example.com"
	r := newRevoker(t, s, f, []intake.Issuer{{Issuer: iss, MaxTokenLifetime: time.Hour}}, nil)
	now := time.Now()
	write := func(jti string) storage.Write {
		return storage.Write{Revocations: []storage.Revocation{{Kind: storage.KindToken, Issuer: iss, Key: jti,
			ExpiresAt: now.Add(time.Hour), Source: "admin"}}}
	}

	errs := make(chan error, 1)
	go func() {
		_, err := r.Revoke(t.Context(), write("first"))
		errs <- err
	}()
	<-f.entered
	const n = 6
	var wg sync.WaitGroup
	results := make([]storage.Result, n)
	for i := range n {
		wg.Go(func() {
			res, err := r.Revoke(t.Context(), write(fmt.Sprintf("jti-%d", i)))
			if err != nil {
				t.Errorf("write %d: %v", i, err)
				return
			}
			// Answered: its entry is in this replica's index.
			if _, _, ok := x.Entry(storage.KindToken, iss, fmt.Sprintf("jti-%d", i), "", now); !ok {
				t.Errorf("write %d answered before this replica's index had it", i)
			}
			results[i] = res
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for intake.WaitsQueued(r) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes wait, want %d", intake.WaitsQueued(r), n)
		}
		time.Sleep(time.Millisecond)
	}
	close(f.gate)
	if err := <-errs; err != nil {
		t.Fatalf("first write: %v", err)
	}
	wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) != 2 {
		t.Fatalf("the follower was asked to wait %d times (%v), want 2: the first write's, then one for the %d writes behind it", len(f.calls), f.calls, n)
	}
	var highest uint64
	for _, res := range results {
		highest = max(highest, res.Position.Seq)
	}
	if f.calls[1].Seq != highest {
		t.Errorf("the shared wait was up to %d, want the highest position queued, %d", f.calls[1].Seq, highest)
	}
}
