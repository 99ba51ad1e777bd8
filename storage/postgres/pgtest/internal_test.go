package pgtest

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
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
// the test; like them, it ends the goroutine that calls them, which is why
// the code under test runs in [recorder.run].
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Skip(args ...any) {
	r.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatal(args ...any) {
	r.failed = fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls f(r) in a goroutine of its own, as testing runs a test, and
// waits for it to return or to end in Skip or Fatal.
func (r *recorder) run(f func(testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
}

// outcome says how a recorded test ended.
func (r *recorder) outcome() string {
	switch {
	case r.skipped != "" && r.failed != "":
		return "skipped and failed"
	case r.skipped != "":
		return "skip"
	case r.failed != "":
		return "fail"
	}
	return "neither skipped nor failed"
}

func TestNoServer(t *testing.T) {
	unavailable := fmt.Errorf("%w: initdb and pg_ctl are nowhere", ErrUnavailable)
	broken := errors.New("initdb: exit status 1")
	for name, tc := range map[string]struct {
		ci   string
		err  error
		want string
	}{
		// Only a machine that cannot run a cluster at all excuses a test.
		"unavailable":          {ci: "", err: unavailable, want: "skip"},
		"unavailable, CI=0":    {ci: "0", err: unavailable, want: "skip"},
		"unavailable, CI=true": {ci: "true", err: unavailable, want: "fail"},
		// A cluster that could have started but did not is a fault.
		"start failed":          {ci: "", err: broken, want: "fail"},
		"start failed, CI=true": {ci: "true", err: broken, want: "fail"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			r := &recorder{TB: t}
			r.run(func(tb testing.TB) { noServer(tb, tc.err) })
			if got := r.outcome(); got != tc.want {
				t.Fatalf("noServer(%v) with CI=%q: %s (skipped %q, failed %q), want a %s",
					tc.err, tc.ci, got, r.skipped, r.failed, tc.want)
			}
			msg := r.skipped + r.failed
			if !strings.Contains(msg, tc.err.Error()) {
				t.Errorf("message %q does not say why: %v", msg, tc.err)
			}
			if errors.Is(tc.err, ErrUnavailable) && (!strings.Contains(msg, "postgres") || !strings.Contains(msg, EnvURL)) {
				t.Errorf("message %q should mention postgres and %s", msg, EnvURL)
			}
		})
	}
}

// TestNewClusterFailsWhenStartFails starts a cluster where the binaries are
// present but its directory cannot be made: the test must fail, not skip.
func TestNewClusterFailsWhenStartFails(t *testing.T) {
	Shared(t) // this machine can run a cluster (or the test skips or fails here, by the same rule)
	t.Setenv("CI", "")
	missing := filepath.Join(t.TempDir(), "missing")
	t.Setenv("TMPDIR", missing)
	r := &recorder{TB: t}
	r.run(func(tb testing.TB) { NewCluster(tb, Options{}) })
	if got := r.outcome(); got != "fail" {
		t.Fatalf("NewCluster with TMPDIR=%s: %s (skipped %q, failed %q), want a fail", missing, got, r.skipped, r.failed)
	}
	if !strings.Contains(r.failed, missing) {
		t.Errorf("failure %q does not name the directory it could not use, %s", r.failed, missing)
	}
}
