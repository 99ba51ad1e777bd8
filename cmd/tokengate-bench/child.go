package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	startTimeout = 30 * time.Second // to the "serving" line, then again to /readyz 200
	stopTimeout  = 5 * time.Second  // from SIGTERM to SIGKILL
	tailLines    = 20               // child log lines kept for error messages
)

// child is a target server running as a child process. Its stdout is
// discarded (tokengate dev prints a banner with a token there); its stderr is
// scanned for the "serving" log line, and its last lines are kept to explain
// a failure.
type child struct {
	name   string
	cmd    *exec.Cmd
	cancel context.CancelFunc
	log    *logTail
	exited chan struct{} // closed once Wait returned; err is set then
	err    error
}

// startChild starts path with args. The child is stopped (SIGTERM, then
// SIGKILL after stopTimeout) by stop, or when ctx ends.
func startChild(ctx context.Context, name, path string, args ...string) (*child, error) {
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, path, args...)
	c := &child{name: name, cmd: cmd, cancel: cancel, log: newLogTail(), exited: make(chan struct{})}
	cmd.Stderr = c.log
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = stopTimeout
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// stop ends the child and waits for it to exit.
func (c *child) stop() {
	c.cancel()
	<-c.exited
}

// serving waits for the child's "serving" log line and returns the addresses
// it names, which must be loopback ones.
func (c *child) serving(ctx context.Context) (servingAddrs, error) {
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case a := <-c.log.serving:
		for _, addr := range []string{a.GRPC, a.HTTP, a.AuthzHTTP} {
			if addr == "" {
				continue
			}
			if err := checkLoopback(addr); err != nil {
				return a, fmt.Errorf("%s serves on %w", c.name, err)
			}
		}
		return a, nil
	case <-c.exited:
		return servingAddrs{}, c.explain(errors.New("exited before serving"))
	case <-timer.C:
		return servingAddrs{}, c.explain(fmt.Errorf("no serving log line within %s", startTimeout))
	case <-ctx.Done():
		return servingAddrs{}, ctx.Err()
	}
}

// explain adds, to an error about the child, its exit status if it exited
// and its last log lines.
func (c *child) explain(err error) error {
	msg := c.name
	select {
	case <-c.exited:
		msg += fmt.Sprintf(" (exited: %v)", c.err)
	default:
	}
	if tail := c.log.tail(); tail != "" {
		return fmt.Errorf("%s: %w; its last log lines:\n%s", msg, err, tail)
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// waitReady polls GET /readyz until it answers 200.
func (c *child) waitReady(ctx context.Context, httpAddr string) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := errors.New("not asked yet")
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err != nil {
			last = err
		} else {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("/readyz answers %s", resp.Status)
		}
		select {
		case <-tick.C:
		case <-c.exited:
			return c.explain(fmt.Errorf("exited before ready: %w", last))
		case <-ctx.Done():
			return c.explain(fmt.Errorf("not ready within %s: %w", startTimeout, last))
		}
	}
}

// mintToken asks tokengate dev for an RS256 token valid one hour.
func mintToken(ctx context.Context, httpAddr string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+httpAddr+"/dev/token",
		strings.NewReader(`{"sub":"bench","ttl":"1h"}`))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Token string `json:"token"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", fmt.Errorf("mint token: %s: %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK || body.Token == "" {
		return "", fmt.Errorf("mint token: %s %s", resp.Status, body.Error)
	}
	return body.Token, nil
}

// servingAddrs are the addresses in a "serving" log line.
type servingAddrs struct {
	GRPC      string `json:"grpc_addr"`
	HTTP      string `json:"http_addr"`
	AuthzHTTP string `json:"authz_http_addr"`
}

// logTail is a child's stderr: it keeps the last lines and reports the first
// JSON log line whose msg is "serving".
type logTail struct {
	serving chan servingAddrs // receives once

	mu      sync.Mutex
	partial []byte
	lines   []string
	found   bool
}

func newLogTail() *logTail {
	return &logTail{serving: make(chan servingAddrs, 1)}
}

func (t *logTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partial = append(t.partial, p...)
	for {
		i := bytes.IndexByte(t.partial, '\n')
		if i < 0 {
			break
		}
		t.line(t.partial[:i])
		t.partial = t.partial[i+1:]
	}
	if len(t.partial) > 64<<10 { // a line that long is not ours to read
		t.line(t.partial)
		t.partial = nil
	}
	return len(p), nil
}

func (t *logTail) line(b []byte) {
	t.lines = append(t.lines, string(b))
	if len(t.lines) > tailLines {
		t.lines = t.lines[len(t.lines)-tailLines:]
	}
	if t.found {
		return
	}
	var l struct {
		Msg string `json:"msg"`
		servingAddrs
	}
	if json.Unmarshal(b, &l) == nil && l.Msg == "serving" && l.GRPC != "" {
		t.found = true
		t.serving <- l.servingAddrs
	}
}

func (t *logTail) tail() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}
