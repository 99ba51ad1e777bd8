package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokengate/tokengate/policy"
)

// policyV1 and policyV2 are two valid policy files: /a is public in v1,
// denied in v2.
const (
	policyV1 = "policies:\n  default:\n    - {name: a-public, match: {path: /a}, access: public}\n"
	policyV2 = "policies:\n  default:\n    - {name: a-denied, match: {path: /a}, access: deny}\n"
	// policyBad has two problems, on lines 3 and 4.
	policyBad = "policies:\n  default:\n    - {name: a, match: {path: /a}, access: open}\n    - {name: b, match: {path_regex: '(['}}\n"
)

// reloadRig is a policy watcher of a temp file, its results on a channel.
type reloadRig struct {
	file    string
	holder  *policyHolder
	w       *policyWatcher
	results chan string
	logs    *syncBuffer
}

// newReloadRig loads a configuration whose policy.file is path (written
// with policyV1 unless it exists) and builds its watcher; configure sets it
// up before it runs (if run).
func newReloadRig(t *testing.T, path string, run bool, configure func(*policyWatcher)) *reloadRig {
	t.Helper()
	if _, err := os.Lstat(path); err != nil {
		writeFile(t, path, policyV1)
	}
	s, _, err := loadPolicyConfig(t, fmt.Sprintf("policy: {file: %q}\n", path))
	if err != nil {
		t.Fatal(err)
	}
	r := &reloadRig{file: path, holder: &policyHolder{}, results: make(chan string, 16), logs: &syncBuffer{}}
	r.holder.Store(s.policy.set)
	log := slog.New(slog.NewTextHandler(r.logs, nil))
	r.w, err = newPolicyWatcher(s.policy, time.Hour, r.holder, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r.w.reloaded = func(result string) { r.results <- result }
	r.w.ready = make(chan struct{})
	if configure != nil {
		configure(r.w)
	}
	if run {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); r.w.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		select {
		case <-r.w.ready:
		case <-time.After(time.Minute):
			t.Fatal("the watcher is not ready after a minute")
		}
	}
	return r
}

// rule is the name of the rule deciding GET /a now ("" for none).
func (r *reloadRig) rule() string {
	rt := r.holder.Load().Route("", &policy.Request{Path: "/a", Method: "GET"})
	if rule := rt.Rule(); rule != nil {
		return rule.Name()
	}
	return ""
}

// next waits for the next reload's result.
func (r *reloadRig) next(t *testing.T) string {
	t.Helper()
	select {
	case res := <-r.results:
		return res
	case <-time.After(time.Minute):
		t.Fatalf("no reload within a minute; logs:\n%s", r.logs)
		return ""
	}
}

func (r *reloadRig) count(result string) float64 { return testutil.ToFloat64(r.w.reloads[result]) }

// until waits for a reload with result want, passing others: a file
// written in place may be read half-written (empty) once first.
func (r *reloadRig) until(t *testing.T, want string) {
	t.Helper()
	for r.next(t) != want {
	}
}

// replaceFile replaces path atomically (a temp file renamed over it), so
// that no reload can read it half-written.
func replaceFile(t *testing.T, path, body string) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, body)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestPolicyReloadValidChange: a valid change of the file takes effect
// (file-system events) and counts a success.
func TestPolicyReloadValidChange(t *testing.T) {
	r := newReloadRig(t, filepath.Join(t.TempDir(), "policy.yaml"), true, nil)
	if got := r.rule(); got != "a-public" {
		t.Fatalf("at start: rule %q", got)
	}
	writeFile(t, r.file, policyV2) // in place, as most editors write
	r.until(t, "success")
	if got := r.rule(); got != "a-denied" {
		t.Errorf("after the change: rule %q, want a-denied", got)
	}
	if r.count("success") != 1 {
		t.Errorf("reloads: success %v", r.count("success"))
	}
	if !strings.Contains(r.logs.String(), `msg="policy reloaded"`) || !strings.Contains(r.logs.String(), "rules=1") {
		t.Errorf("no info line for the reload:\n%s", r.logs)
	}
}

// TestPolicyReloadInvalidKeepsOld: an invalid file keeps the rules in force,
// logs every problem with file and line at error level, and counts a
// failure; a valid one after it is applied.
func TestPolicyReloadInvalidKeepsOld(t *testing.T) {
	r := newReloadRig(t, filepath.Join(t.TempDir(), "policy.yaml"), true, nil)
	replaceFile(t, r.file, policyBad)
	if res := r.next(t); res != "failure" {
		t.Fatalf("reload: %s", res)
	}
	if got := r.rule(); got != "a-public" {
		t.Errorf("after an invalid change: rule %q, want the old a-public", got)
	}
	if r.count("failure") != 1 || r.count("success") != 0 {
		t.Errorf("reloads: success %v, failure %v", r.count("success"), r.count("failure"))
	}
	logs := r.logs.String()
	for _, want := range []string{r.file + ":3: policies.default[0].access", r.file + ":4: policies.default[1].match.path_regex", "level=ERROR"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	replaceFile(t, r.file, policyV2)
	if res := r.next(t); res != "success" {
		t.Fatalf("reload: %s; logs:\n%s", res, r.logs)
	}
	if got := r.rule(); got != "a-denied" {
		t.Errorf("after a valid change: rule %q", got)
	}
}

// TestPolicyReloadUnchangedNotApplied: content already seen, valid or not,
// is not applied (nor counted) again.
func TestPolicyReloadUnchangedNotApplied(t *testing.T) {
	r := newReloadRig(t, filepath.Join(t.TempDir(), "policy.yaml"), false, nil)
	before := r.holder.Load()
	writeFile(t, r.file, policyV1) // rewritten, same content
	r.w.reload("poll")
	if r.holder.Load() != before || r.count("success") != 0 || len(r.results) != 0 {
		t.Errorf("the unchanged file was applied again")
	}
	writeFile(t, r.file, policyBad)
	r.w.reload("poll")
	r.w.reload("poll")
	if r.count("failure") != 1 {
		t.Errorf("an invalid file seen twice: %v failures, want 1", r.count("failure"))
	}
	if r.holder.Load() != before {
		t.Errorf("an invalid file replaced the policy")
	}
}

// TestPolicyReloadRenameReplace: an editor's or a deploy tool's atomic
// replace (write a temp file, rename it over the policy) is picked up.
func TestPolicyReloadRenameReplace(t *testing.T) {
	dir := t.TempDir()
	r := newReloadRig(t, filepath.Join(dir, "policy.yaml"), true, nil)
	tmp := filepath.Join(dir, ".policy.yaml.tmp")
	writeFile(t, tmp, policyV2)
	if err := os.Rename(tmp, r.file); err != nil {
		t.Fatal(err)
	}
	if res := r.next(t); res != "success" {
		t.Fatalf("reload: %s", res)
	}
	if got := r.rule(); got != "a-denied" {
		t.Errorf("after the rename: rule %q", got)
	}
}

// TestPolicyReloadConfigMapSwap: a Kubernetes ConfigMap volume swaps its
// ..data symlink; the file's own name never changes.
func TestPolicyReloadConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	for v, body := range map[string]string{"..v1": policyV1, "..v2": policyV2} {
		if err := os.Mkdir(filepath.Join(dir, v), 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, v, "policy.yaml"), body)
	}
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/policy.yaml", filepath.Join(dir, "policy.yaml")); err != nil {
		t.Fatal(err)
	}
	r := newReloadRig(t, filepath.Join(dir, "policy.yaml"), true, nil)
	if got := r.rule(); got != "a-public" {
		t.Fatalf("at start: rule %q", got)
	}
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if res := r.next(t); res != "success" {
		t.Fatalf("reload: %s", res)
	}
	if got := r.rule(); got != "a-denied" {
		t.Errorf("after the swap: rule %q", got)
	}
}

// TestPolicyReloadPollFallback: without file-system events, the poll picks
// the change up.
func TestPolicyReloadPollFallback(t *testing.T) {
	r := newReloadRig(t, filepath.Join(t.TempDir(), "policy.yaml"), true, func(w *policyWatcher) {
		w.noEvents = true
		w.poll = 10 * time.Millisecond
	})
	replaceFile(t, r.file, policyV2)
	if res := r.next(t); res != "success" {
		t.Fatalf("reload: %s", res)
	}
	if got := r.rule(); got != "a-denied" {
		t.Errorf("after the change: rule %q", got)
	}
}

// TestPolicyReloadSIGHUP: SIGHUP reads the file again, with neither events
// nor a poll to do it. The watcher listens before the signal is sent, so
// the signal cannot end the test process.
func TestPolicyReloadSIGHUP(t *testing.T) {
	r := newReloadRig(t, filepath.Join(t.TempDir(), "policy.yaml"), true, func(w *policyWatcher) {
		w.noEvents = true
		w.listenSIGHUP()
		t.Cleanup(w.stopSIGHUP)
	})
	replaceFile(t, r.file, policyV2)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if res := r.next(t); res != "success" {
		t.Fatalf("reload: %s", res)
	}
	if got := r.rule(); got != "a-denied" {
		t.Errorf("after SIGHUP: rule %q", got)
	}
	if !strings.Contains(r.logs.String(), "trigger=sighup") {
		t.Errorf("the reload does not say SIGHUP caused it:\n%s", r.logs)
	}
}

// TestServePolicyFileReload: through run, as main starts tokengate: the
// reload counter is exported from the start with both results at zero, a
// valid change is counted as a success and an invalid one as a failure,
// with its problems logged by file and line, without a restart.
func TestServePolicyFileReload(t *testing.T) {
	file := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, file, policyV1)
	cfg := writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers: [{name: a, issuer: https://a.example, audiences: [x], hmac_secret: 0123456789abcdef0123456789abcdef}]
policy: {file: %q, poll_interval: 100ms}
`, file))
	in := start(t, []string{"serve", "--config", cfg}, nil)
	metrics := func() string {
		_, body := httpGet(t, "http://"+in.httpAddr+"/metrics")
		return body
	}
	waitFor := func(series string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for !strings.Contains(metrics(), series) {
			if time.Now().After(deadline) {
				t.Fatalf("/metrics lacks %q after a minute; logs:\n%s", series, in.logs)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor(`tokengate_policy_reloads_total{result="success"} 0`)
	waitFor(`tokengate_policy_reloads_total{result="failure"} 0`)
	if !strings.Contains(in.logs.String(), `"msg":"route policy"`) {
		t.Errorf("no log line says which policy is in force:\n%s", in.logs)
	}
	replaceFile(t, file, policyV2)
	waitFor(`tokengate_policy_reloads_total{result="success"} 1`)
	replaceFile(t, file, policyBad)
	waitFor(`tokengate_policy_reloads_total{result="failure"} 1`)
	if want := file + ":4: policies.default[1].match.path_regex"; !strings.Contains(in.logs.String(), want) {
		t.Errorf("logs lack %q:\n%s", want, in.logs)
	}
}

// TestServeInvalidPolicyFileFails: at start, an invalid policy file is an
// error listing every problem with its file and line.
func TestServeInvalidPolicyFileFails(t *testing.T) {
	file := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, file, policyBad)
	cfg := writeConfig(t, fmt.Sprintf(`
issuers: [{name: a, issuer: https://a.example, audiences: [x], hmac_secret: 0123456789abcdef0123456789abcdef}]
policy: {file: %q}
`, file))
	err := run(t.Context(), []string{"serve", "--config", cfg}, noEnv, io.Discard, io.Discard)
	for _, want := range []string{file + ":3: policies.default[0].access", file + ":4: policies.default[1].match.path_regex"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	}
}

// TestReloadChecksTokenSources: a reloaded policy is held to what the start
// holds it to: a rule header that is a token source (which tokengate would
// then overwrite or remove on every route) is refused, and the policy in
// force is kept.
func TestReloadChecksTokenSources(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, policyV1)
	s, _, err := loadPolicyConfig(t, fmt.Sprintf("tokens: {sources: [{header: authorization}, {header: x-access-token}]}\npolicy: {file: %q}\n", path))
	if err != nil {
		t.Fatal(err)
	}
	holder := &policyHolder{}
	holder.Store(s.policy.set)
	logs := &syncBuffer{}
	w, err := newPolicyWatcher(s.policy, time.Hour, holder, slog.New(slog.NewTextHandler(logs, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "policies:\n  default:\n    - {name: a-public, match: {path: /a}, access: public, headers: {x-access-token: email}}\n")
	w.reload("poll")
	if got := testutil.ToFloat64(w.reloads["failure"]); got != 1 {
		t.Errorf("failures %v, want 1; logs:\n%s", got, logs)
	}
	if !strings.Contains(logs.String(), "x-access-token") {
		t.Errorf("the problem is not logged:\n%s", logs)
	}
	if holder.Load() != s.policy.set {
		t.Error("the refused policy is in force")
	}
}
