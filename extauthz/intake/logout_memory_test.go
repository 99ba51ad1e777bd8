package intake_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokengate/tokengate/extauthz/intake"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

// countingStore counts the writes that reach the store.
type countingStore struct {
	storage.Store
	applies int
}

func (c *countingStore) Apply(ctx context.Context, w storage.Write) (storage.Result, error) {
	c.applies++
	return c.Store.Apply(ctx, w)
}

// TestRevokedLogoutSurvivesAnAdminUnrevoke: a token an operator revoked,
// then logged out on a logout route, stays revoked when the operator takes
// the admin revocation back (?source=admin): the logout adds its own
// logout-route contribution the first time this replica sees it, although
// the index already holds the entry. Later replays write nothing.
func TestRevokedLogoutSurvivesAnAdminUnrevoke(t *testing.T) {
	b, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s := &countingStore{Store: b}
	x := storage.NewIndex()
	iss := intake.Issuer{Name: "idp", Issuer: "https://idp.example", MaxTokenLifetime: time.Hour, Leeway: 30 * time.Second}
	r := newRevoker(t, s, newFollower(t, b, x, storage.FollowerOptions{}), []intake.Issuer{iss}, nil)
	now := time.Now()
	id := &token.Identity{Issuer: iss.Issuer, Subject: "alice", TokenID: "j-1", IssuedAt: now.Add(-time.Minute),
		ExpiresAt: now.Add(10 * time.Minute)}
	if _, err := r.Revoke(t.Context(), storage.Write{Revocations: []storage.Revocation{{Kind: storage.KindToken,
		Issuer: iss.Issuer, Key: "j-1", ExpiresAt: now.Add(2 * time.Hour), Source: "admin", Reason: "operator"}}}); err != nil {
		t.Fatal(err)
	}
	keys := x.Keys(id.Issuer, id.TokenID, "", id.Subject, nil)
	if !x.Revoked(keys, id.IssuedAt, now) {
		t.Fatal("the admin revocation is not in the index")
	}
	applies := s.applies
	for range 3 {
		if err := r.RevokeLogout(t.Context(), id, false, false, true); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.applies - applies; n != 1 {
		t.Errorf("%d store writes from 3 logouts of a revoked token, want 1 (the first)", n)
	}
	var entry int64
	if _, err := b.Snapshot(t.Context(), time.Now(), func(rev storage.Revocation) error {
		if rev.Kind == storage.KindToken && rev.Key == "j-1" {
			entry = rev.ID
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Unrevoke(t.Context(), entry, "admin"); err != nil {
		t.Fatal(err)
	}
	if !x.Revoked(keys, id.IssuedAt, time.Now()) {
		t.Error("the admin unrevoke undid the user's logout")
	}
}
