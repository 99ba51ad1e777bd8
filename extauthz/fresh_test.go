package extauthz

import (
	"testing"
	"time"
)

// TestFresh: the revocations are fresh enough to decide from when they have
// loaded and were read within MaxStaleness (the boundary included).
func TestFresh(t *testing.T) {
	cases := map[string]struct {
		loaded bool
		stale  time.Duration
		want   bool
	}{
		"loaded, just read":      {loaded: true, stale: 0, want: true},
		"loaded, at the limit":   {loaded: true, stale: 30 * time.Second, want: true},
		"loaded, past the limit": {loaded: true, stale: 30*time.Second + 1, want: false},
		"not loaded":             {loaded: false, stale: 0, want: false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s, err := NewServer(Options{Loaded: func() bool { return tc.loaded },
				Staleness: func() time.Duration { return tc.stale }, MaxStaleness: 30 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Fresh(); got != tc.want {
				t.Errorf("Fresh() = %v, want %v", got, tc.want)
			}
		})
	}
}
