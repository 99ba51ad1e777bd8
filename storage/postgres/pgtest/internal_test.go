package pgtest

import (
	"fmt"
	"strings"
	"testing"
)

func TestDBName(t *testing.T) {
	t.Run("Sub test/With Spaces-and-Ünicode_"+strings.Repeat("x", 80), func(t *testing.T) {
		a, b := dbName(t), dbName(t)
		if a == b {
			t.Errorf("dbName returned %s twice", a)
		}
		if len(a) > 63 {
			t.Errorf("dbName = %s, %d bytes, want at most 63", a, len(a))
		}
		if strings.Trim(a, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			t.Errorf("dbName = %s, want only [a-z0-9_]", a)
		}
		if !strings.HasPrefix(a, "pgtest_testdbname_sub_test_with_") {
			t.Errorf("dbName = %s, want it to start with the test's name", a)
		}
	})
}

// recorder is a testing.TB that records Skip and Fatal instead of ending
// the test.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()           {}
func (r *recorder) Skip(args ...any)  { r.skipped = fmt.Sprint(args...) }
func (r *recorder) Fatal(args ...any) { r.failed = fmt.Sprint(args...) }

func TestNoServer(t *testing.T) {
	for name, tc := range map[string]struct {
		ci       string
		wantFail bool
	}{
		"local": {ci: "", wantFail: false},
		"ci":    {ci: "true", wantFail: true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			r := &recorder{}
			noServer(r, ErrUnavailable)
			msg, other := r.skipped, r.failed
			if tc.wantFail {
				msg, other = r.failed, r.skipped
			}
			if msg == "" || other != "" {
				t.Fatalf("CI=%q: skipped %q, failed %q; want only a %s", tc.ci, r.skipped, r.failed, map[bool]string{true: "failure", false: "skip"}[tc.wantFail])
			}
			if !strings.Contains(msg, "postgres") || !strings.Contains(msg, EnvURL) {
				t.Errorf("message %q should mention postgres and %s", msg, EnvURL)
			}
		})
	}
}
