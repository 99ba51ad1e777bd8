package intake_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/extauthz/intake"
	"github.com/tokengate/tokengate/storage"
)

// syncBuffer is a log sink the handler writes to while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFusionAuthClockAhead: FusionAuth's createInstant is read on
// FusionAuth's clock, the clock its tokens' iat come from. An event from a
// FusionAuth clock ahead of ours is applied as dated (a 400 would fail
// FusionAuth's own delete or deactivate under "all must succeed"), up to
// the maximum skew; beyond it, the cutoff is clamped to now + the maximum
// skew and a warning is logged, rather than refused.
func TestFusionAuthClockAhead(t *testing.T) {
	now := time.Now().Add(-time.Hour).Truncate(time.Millisecond) // the receiver's clock
	const maxSkew = 5 * time.Minute
	cases := map[string]struct {
		ahead, want time.Duration // createInstant and the expected revoked_before, from now
		warn        bool
	}{
		"3 minutes ahead: as dated":          {3 * time.Minute, 3 * time.Minute, false},
		"at the maximum skew: as dated":      {maxSkew, maxSkew, false},
		"an hour ahead: clamped to the skew": {time.Hour, maxSkew, true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var logs syncBuffer
			e := newFAEnv(t, func(o *intake.FusionAuthOptions) {
				o.Now = func() time.Time { return now }
				o.MaxClockSkew = maxSkew
				o.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
			})
			code, body := e.send(t, delivery{body: event("user.deactivate", "e-ahead", now.Add(tc.ahead).UnixMilli(), userJSON())})
			if code != 200 || !strings.Contains(body, "applied") {
				t.Fatalf("event %v ahead: %d %s, want 200 applied", tc.ahead, code, body)
			}
			list, err := e.store.List(t.Context(), storage.ListOptions{Kind: storage.KindSubject, Key: userID})
			if err != nil || len(list) != 1 {
				t.Fatalf("List: %v, %v; want one subject entry", list, err)
			}
			if got := list[0].RevokedBefore.Sub(now); got != tc.want {
				t.Errorf("revoked_before = now%+v, want now%+v", got, tc.want)
			}
			if warned := strings.Contains(logs.String(), `"level":"WARN"`) && strings.Contains(logs.String(), "e-ahead"); warned != tc.warn {
				t.Errorf("warned %v, want %v; logs:\n%s", warned, tc.warn, logs.String())
			}
		})
	}
}
