package pgcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// watchdogScript waits for its standard input, a pipe whose only writer is
// this process, to close, then stops the server if it runs and removes the
// cluster's directory. The pipe closes when Cluster.Close releases the
// watchdog or when this process exits, however it exits; a deferred stop
// alone would miss a panicking test, which ends the process from the test's
// goroutine, and a test binary killed on timeout.
const watchdogScript = `dir=$1; shift
read -r _ || :
if [ -f "$dir/data/postmaster.pid" ]; then "$@" >/dev/null 2>&1; fi
rm -rf "$dir"`

type watchdog struct {
	cmd  *exec.Cmd
	pipe *os.File // the write end
}

func startWatchdog(c *Cluster) (*watchdog, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, "pgcluster-watchdog", c.dir,
		c.bin.pgctl, "stop", "-m", "immediate", "-w", "-t", strconv.Itoa(pgctlWait), "-D", filepath.Join(c.dir, "data"))
	cmd.Stdin = r
	cmd.Dir = "/"
	cmd.Env = serverEnv()
	c.proc.setSession(cmd)
	// Stdout and stderr stay /dev/null: holding this process's would make
	// `go test` wait for the watchdog.
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	return &watchdog{cmd: cmd, pipe: w}, nil
}

// release lets the watchdog run its cleanup and waits for it to exit.
func (w *watchdog) release(timeout time.Duration) error {
	w.pipe.Close()
	done := make(chan error, 1)
	go func() { done <- w.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("watchdog: %w", err)
		}
		return nil
	case <-time.After(timeout):
		w.cmd.Process.Kill()
		return errors.New("watchdog: still running after " + timeout.String())
	}
}
