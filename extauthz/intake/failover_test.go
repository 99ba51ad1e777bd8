package intake_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/extauthz/intake"
	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

// failoverStore is a real store that fails over right after the next write
// commits: its later calls go to the promoted standby, which never had that
// write and is already past its sequence number.
type failoverStore struct {
	storage.Store
	mu       sync.Mutex
	standby  storage.Store
	promoted bool
}

func (s *failoverStore) cur() storage.Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.promoted {
		return s.standby
	}
	return s.Store
}

func (s *failoverStore) Apply(ctx context.Context, w storage.Write) (storage.Result, error) {
	res, err := s.cur().Apply(ctx, w)
	s.mu.Lock()
	s.promoted = true
	s.mu.Unlock()
	return res, err
}

func (s *failoverStore) Snapshot(ctx context.Context, now time.Time, fn func(storage.Revocation) error) (storage.Position, error) {
	return s.cur().Snapshot(ctx, now, fn)
}

func (s *failoverStore) Changes(ctx context.Context, after storage.Position, limit int) ([]storage.Change, error) {
	return s.cur().Changes(ctx, after, limit)
}

func (s *failoverStore) List(ctx context.Context, opts storage.ListOptions) ([]storage.Revocation, error) {
	return s.cur().List(ctx, opts)
}

// TestRevocationOfAReplacedFeedIsA503: a revocation committed to a primary
// that fails over before this replica applies it is answered 503 (the
// sender retries), never 2xx, although the promoted standby's feed is past
// the write's sequence number.
func TestRevocationOfAReplacedFeedIsA503(t *testing.T) {
	open := func(name string) *bolt.Store {
		s, err := bolt.Open(filepath.Join(t.TempDir(), name), bolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	primary, standby := open("primary.db"), open("standby.db")
	iss := intake.Issuer{Issuer: "https://a.example", MaxTokenLifetime: time.Hour}
	for i := range 3 {
		if _, err := standby.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{{Kind: storage.KindToken,
			Issuer: iss.Issuer, Key: fmt.Sprintf("other-%d", i), ExpiresAt: time.Now().Add(time.Hour), Source: "test"}}}); err != nil {
			t.Fatal(err)
		}
	}
	s := &failoverStore{Store: primary, standby: standby}
	x := storage.NewIndex()
	f := newFollower(t, s, x, storage.FollowerOptions{})
	if err := f.CatchUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	intake.NewAdmin(intake.AdminOptions{Token: adminToken, Revoker: newRevoker(t, s, f, []intake.Issuer{iss}, nil), Store: s}).Mount(mux)
	exp := time.Now().Add(20 * time.Minute).UTC().Format(time.RFC3339)
	req := httptest.NewRequest("POST", "/v1/revocations",
		strings.NewReader(fmt.Sprintf(`{"kind":"token","issuer":%q,"jti":"victim","expires_at":%q}`, iss.Issuer, exp)))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("a revocation lost with its feed: %d %s, want 503", rec.Code, rec.Body)
	}
	if x.Revoked(x.Keys(iss.Issuer, "victim", "", "", nil), time.Now().Add(-time.Minute), time.Now()) {
		t.Error("the victim is in the index: the test shows nothing")
	}
}
