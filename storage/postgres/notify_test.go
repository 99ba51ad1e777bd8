package postgres_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/postgres"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

// TestNotificationsCarryChanges: a replica that never polls applies the
// changes another one writes from the notifications alone, without reading
// the feed; a change too large for a payload (8000 bytes) is read.
func TestNotificationsCarryChanges(t *testing.T) {
	url := pgtest.URL(t)
	a := startReplica(t, url, postgres.Options{}, time.Hour)
	b := startReplica(t, url, postgres.Options{}, time.Hour)
	// B's first wake, on its LISTEN connection's connect, reads: what was
	// notified before then was missed. Then, one change at a time…
	revokeJTI(t, a, "warm-up")
	waitFor(t, "B denies warm-up", func() bool { return b.revoked("warm-up") })
	readBefore := b.applied(t, "read")
	for _, jti := range []string{"one", "two", "three", "four", "five"} {
		revokeJTI(t, a, jti)
		waitFor(t, "B denies "+jti, func() bool { return b.revoked(jti) })
	}
	// …each applied from its notification: none was read.
	if got := b.applied(t, "read"); got != readBefore {
		t.Errorf("B read %v changes from the feed, want none: the notifications carried them", got-readBefore)
	}
	if got := b.applied(t, "notification"); got < 5 {
		t.Errorf("B applied %v changes from notifications, want at least 5", got)
	}

	// Too large for a payload (no write through the API makes one yet: its
	// fields are bounded, so it is written here as a writer would): the
	// notification carries only the sequence number, and B reads the change.
	large, err := json.Marshal(storage.Revocation{Kind: storage.KindToken, Issuer: "iss", Key: "large",
		ExpiresAt: time.Now().Add(time.Hour), Source: "test", Reason: strings.Repeat("r", 9000)})
	if err != nil {
		t.Fatal(err)
	}
	conn := pgtest.Connect(t, url)
	if _, err := conn.Exec(t.Context(), `WITH f AS (UPDATE tokengate_feed SET last_seq = last_seq + 1 RETURNING last_seq)
		INSERT INTO tokengate_changes (seq, op, revocation) SELECT last_seq, 1, $1 FROM f`, large); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B denies large", func() bool { return b.revoked("large") })
	if got := b.applied(t, "read"); got != readBefore+1 {
		t.Errorf("B read %v changes from the feed, want 1: the large one", got-readBefore)
	}
}

// applied is the replica's count of changes applied via how.
func (r *replica) applied(t *testing.T, via string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tokengate_revocation_changes_applied_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == via {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
