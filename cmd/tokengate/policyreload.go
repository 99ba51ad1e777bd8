package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/policy"
)

// policyHolder holds the route policy in force. A reload swaps it whole:
// a request reads it once (Load) and is decided by that set, old or new,
// never by a mix.
type policyHolder struct{ atomic.Pointer[policy.Set] }

// policyDebounce is how long the watcher waits after a file-system event
// for the others of the same change: an editor's write-and-rename, or a
// ConfigMap's symlink swap, is several events.
const policyDebounce = 100 * time.Millisecond

// policyWatcher reloads the policy file when it changes (file-system events
// on its directory, a poll as the fallback) and on SIGHUP. A valid file
// replaces the policy in force; an invalid one keeps it, and every problem
// is logged. Content already seen is not applied again.
type policyWatcher struct {
	file    string
	base    policy.Options
	check   func(*policy.Set) []error // what the rest of the configuration demands of a set
	holder  *policyHolder
	log     *slog.Logger
	poll    time.Duration
	reloads map[string]prometheus.Counter // by result: success, failure

	// noEvents turns the file-system events off (tests of the poll).
	noEvents bool
	// hup gets SIGHUP once listenSIGHUP was called.
	hup chan os.Signal
	// ready, when set, is closed once the watch is in place.
	ready chan struct{}
	// reloaded, when set, is told each result ("success", "failure") once
	// it is in force and counted.
	reloaded func(result string)

	// seen is the SHA-256 of the content last read, valid or not (or of the
	// read error), so that it is judged once.
	seen [sha256.Size]byte
}

// newPolicyWatcher returns the watcher of ps.file, whose content at load is
// the set in holder. Its metric, tokengate_policy_reloads_total{result},
// is registered with reg, both results at zero.
func newPolicyWatcher(ps *policySettings, poll time.Duration, holder *policyHolder, log *slog.Logger,
	reg prometheus.Registerer) (*policyWatcher, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokengate_policy_reloads_total",
		Help: "Reloads of policy.file by result: success (in force) or failure (the previous policy kept).",
	}, []string{"result"})
	if reg != nil {
		if err := reg.Register(vec); err != nil {
			return nil, fmt.Errorf("register policy metrics: %w", err)
		}
	}
	w := &policyWatcher{file: ps.file, base: ps.base, check: ps.check, holder: holder, log: log, poll: poll, seen: ps.sum,
		reloads: map[string]prometheus.Counter{}}
	for _, r := range []string{"success", "failure"} {
		w.reloads[r] = vec.WithLabelValues(r)
	}
	return w, nil
}

// listenSIGHUP makes SIGHUP a reload, until stopSIGHUP: from before the
// server serves, so that no SIGHUP meant for a reload finds the default
// action, which ends the process.
func (w *policyWatcher) listenSIGHUP() {
	w.hup = make(chan os.Signal, 1)
	signal.Notify(w.hup, syscall.SIGHUP)
}

func (w *policyWatcher) stopSIGHUP() {
	if w.hup != nil {
		signal.Stop(w.hup)
	}
}

// Run watches until ctx ends.
func (w *policyWatcher) Run(ctx context.Context) {
	var events <-chan fsnotify.Event
	var watchErrs <-chan error
	if !w.noEvents {
		// The directory, not the file: editors replace a file by renaming
		// another over it, and a Kubernetes ConfigMap swaps its ..data
		// symlink; a watch on the file itself would see neither.
		fw, err := fsnotify.NewWatcher()
		if err == nil {
			if err = fw.Add(filepath.Dir(w.file)); err != nil {
				fw.Close()
			}
		}
		if err != nil {
			w.log.Warn("policy file: no file-system events, polling only", "file", w.file, "poll_interval", w.poll, "err", err)
		} else {
			defer fw.Close()
			events, watchErrs = fw.Events, fw.Errors
		}
	}
	if w.ready != nil {
		close(w.ready)
	}
	poll := time.NewTicker(w.poll)
	defer poll.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-events:
			// Any event in the directory: the file's own, or a symlink swap
			// that changes what the file's name leads to. Content that did
			// not change is not applied again.
			debounce.Reset(policyDebounce)
		case err := <-watchErrs:
			w.log.Warn("policy file: file-system events", "file", w.file, "err", err)
		case <-debounce.C:
			w.reload("change")
		case <-poll.C:
			// The content itself, not its size and mtime: a policy file is
			// small, and an mtime's granularity (or a copy that keeps it)
			// could hide a change.
			w.reload("poll")
		case <-w.hup:
			w.log.Info("policy file: SIGHUP, reading it again", "file", w.file)
			w.reload("sighup")
		}
	}
}

// reload reads the file and, when its content is new, compiles it and puts
// it in force, or keeps the policy in force and logs every problem.
func (w *policyWatcher) reload(why string) {
	data, err := readPolicyFile(w.file)
	var sum [sha256.Size]byte
	if err != nil {
		sum = sha256.Sum256([]byte("error: " + err.Error()))
	} else {
		sum = sha256.Sum256(data)
	}
	if sum == w.seen {
		if why == "sighup" {
			w.log.Info("policy file unchanged", "file", w.file)
		}
		return
	}
	w.seen = sum
	if err != nil {
		w.fail(why, []error{err})
		return
	}
	set, names, rules, errs := loadPolicyFile(w.base, w.file, data)
	if len(errs) == 0 && w.check != nil {
		errs = w.check(set)
	}
	if len(errs) > 0 {
		w.fail(why, errs)
		return
	}
	w.holder.Store(set)
	w.reloads["success"].Inc()
	w.log.Info("policy reloaded", "file", w.file, "trigger", why, "policies", names, "rules", rules)
	if w.reloaded != nil {
		w.reloaded("success")
	}
}

// fail logs every problem of a reload that keeps the policy in force.
func (w *policyWatcher) fail(why string, errs []error) {
	for _, e := range errs {
		w.log.Error("policy file invalid", "file", w.file, "problem", e.Error())
	}
	w.reloads["failure"].Inc()
	w.log.Error("policy reload failed: the policy in force is kept", "file", w.file, "trigger", why,
		"problems", len(errs))
	if w.reloaded != nil {
		w.reloaded("failure")
	}
}
