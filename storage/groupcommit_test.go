package storage_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

// gatedStore is a real store whose batches are counted, and whose first
// batch waits at the gate until the test opens it.
type gatedStore struct {
	storage.Store
	entered chan struct{} // closed when the first batch arrives
	gate    chan struct{} // the first batch proceeds once closed

	mu    sync.Mutex
	sizes []int
}

func (s *gatedStore) ApplyBatch(ctx context.Context, ws []storage.Write) []storage.Applied {
	s.mu.Lock()
	s.sizes = append(s.sizes, len(ws))
	first := len(s.sizes) == 1
	s.mu.Unlock()
	if first {
		close(s.entered)
		<-s.gate
	}
	return s.Store.ApplyBatch(ctx, ws)
}

func tokenWrite(base time.Time, jti, event string) storage.Write {
	return storage.Write{
		Revocations:    []storage.Revocation{{Kind: storage.KindToken, Issuer: "iss", Key: jti, ExpiresAt: base.Add(time.Hour), Source: "test"}},
		EventID:        event,
		EventExpiresAt: base.Add(time.Hour),
	}
}

// TestGroupCommitCoalesces: the writes that arrive while a batch commits
// make up the next batch, one ApplyBatch; each caller gets its own write's
// result (of two deliveries of one event, one is the duplicate); a caller
// that gives up before its batch is taken returns at once, and its write is
// never made.
func TestGroupCommitCoalesces(t *testing.T) {
	b, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gated := &gatedStore{Store: b, entered: make(chan struct{}), gate: make(chan struct{})}
	reg := prometheus.NewRegistry()
	g, err := storage.NewGroupCommit(gated, storage.GroupCommitOptions{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	base := time.Now()

	type answer struct {
		res storage.Result
		err error
	}
	first := make(chan answer, 1)
	go func() {
		res, err := g.Apply(t.Context(), tokenWrite(base, "first", "ev-first"))
		first <- answer{res, err}
	}()
	<-gated.entered

	const n = 8
	answers := make([]chan answer, n)
	for i := range n {
		answers[i] = make(chan answer, 1)
		event := fmt.Sprintf("ev-%d", i)
		if i == n-1 {
			event = "ev-0" // a second delivery of write 0's event
		}
		go func() {
			res, err := g.Apply(t.Context(), tokenWrite(base, fmt.Sprintf("jti-%d", i), event))
			answers[i] <- answer{res, err}
		}()
	}
	waitQueued(t, g, n)
	ctx, cancel := context.WithCancel(t.Context())
	gone := make(chan error, 1)
	go func() {
		_, err := g.Apply(ctx, tokenWrite(base, "gone", "ev-gone"))
		gone <- err
	}()
	waitQueued(t, g, n+1)
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Errorf("Apply whose caller gave up: %v, want context.Canceled", err)
	}
	close(gated.gate)

	if a := <-first; a.err != nil || a.res.Seq == 0 {
		t.Fatalf("first write: %+v, %v", a.res, a.err)
	}
	duplicates := 0
	for i, ch := range answers {
		a := <-ch
		if a.err != nil {
			t.Fatalf("write %d: %v", i, a.err)
		}
		if a.res.Duplicate {
			duplicates++
			continue
		}
		if len(a.res.Revocations) != 1 || a.res.Revocations[0].Key != fmt.Sprintf("jti-%d", i) || a.res.Seq == 0 {
			t.Errorf("write %d answered %+v, want its own revocation jti-%d applied", i, a.res, i)
		}
	}
	if duplicates != 1 {
		t.Errorf("%d of two deliveries of one event were duplicates, want 1", duplicates)
	}
	gated.mu.Lock()
	sizes := gated.sizes
	gated.mu.Unlock()
	if d := cmp.Diff([]int{1, n}, sizes); d != "" {
		t.Errorf("batch sizes (-want +got):\n%s", d)
	}
	if got := series(t, reg)["tokengate_store_write_batch_size"]; got != 2 {
		t.Errorf("tokengate_store_write_batch_size counted %v batches, want 2", got)
	}
	list, err := g.List(t.Context(), storage.ListOptions{Key: "gone"})
	if err != nil || len(list) != 0 {
		t.Errorf("the abandoned write: List = %v, %v; want it never made", list, err)
	}
}

// TestGroupCommitMaxBatch: a batch carries at most MaxBatch writes; the
// rest go in the next.
func TestGroupCommitMaxBatch(t *testing.T) {
	b, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gated := &gatedStore{Store: b, entered: make(chan struct{}), gate: make(chan struct{})}
	g, err := storage.NewGroupCommit(gated, storage.GroupCommitOptions{MaxBatch: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	base := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := g.Apply(t.Context(), tokenWrite(base, "first", "")); err != nil {
			t.Errorf("first: %v", err)
		}
	})
	<-gated.entered
	for i := range 7 {
		wg.Go(func() {
			if _, err := g.Apply(t.Context(), tokenWrite(base, fmt.Sprintf("jti-%d", i), "")); err != nil {
				t.Errorf("write %d: %v", i, err)
			}
		})
	}
	waitQueued(t, g, 7)
	close(gated.gate)
	wg.Wait()
	if d := cmp.Diff([]int{1, 3, 3, 1}, gated.sizes); d != "" {
		t.Errorf("batch sizes (-want +got):\n%s", d)
	}
}

// waitQueued polls until n writes wait for g's next batch.
func waitQueued(t *testing.T, g *storage.GroupCommit, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for storage.Queued(g) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued, want %d", storage.Queued(g), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestGroupCommitApplyAfterClose: a write after Close is refused as the
// store being unavailable (the sender retries elsewhere), never queued
// for a flush against a closed store.
func TestGroupCommitApplyAfterClose(t *testing.T) {
	b, err := bolt.Open(filepath.Join(t.TempDir(), "tokengate.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gc, err := storage.NewGroupCommit(b, storage.GroupCommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := gc.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = gc.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{{Kind: storage.KindToken,
		Issuer: "iss", Key: "jti", ExpiresAt: time.Now().Add(time.Hour)}}})
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Apply after Close = %v, want ErrUnavailable", err)
	}
}
