package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// binaries are the paths of the server programs; pg_ctl finds postgres
// next to itself.
type binaries struct {
	initdb, pgctl string
}

// basebackup finds pg_basebackup: beside pg_ctl (following a symbolic
// link, as PATH often holds only links to initdb and pg_ctl), else on PATH.
func (b binaries) basebackup() (string, error) {
	pgctl := b.pgctl
	if real, err := filepath.EvalSymlinks(pgctl); err == nil {
		pgctl = real
	}
	if p := filepath.Join(filepath.Dir(pgctl), "pg_basebackup"); isExecutable(p) {
		return p, nil
	}
	if p, err := exec.LookPath("pg_basebackup"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%w: pg_basebackup is neither beside %s nor on PATH", ErrUnavailable, pgctl)
}

// binGlob is where Debian and Ubuntu install the server binaries, one
// directory per major version.
const binGlob = "/usr/lib/postgresql/*/bin"

// findBinaries looks for initdb and pg_ctl on PATH, then in the highest
// version under binGlob.
func findBinaries() (binaries, error) {
	if initdb, err := exec.LookPath("initdb"); err == nil {
		if pgctl := filepath.Join(filepath.Dir(initdb), "pg_ctl"); isExecutable(pgctl) {
			return binaries{initdb: initdb, pgctl: pgctl}, nil
		}
		if pgctl, err := exec.LookPath("pg_ctl"); err == nil {
			return binaries{initdb: initdb, pgctl: pgctl}, nil
		}
	}
	dirs, _ := filepath.Glob(binGlob) // the pattern is valid
	sortByVersion(dirs)
	for _, dir := range slices.Backward(dirs) {
		b := binaries{initdb: filepath.Join(dir, "initdb"), pgctl: filepath.Join(dir, "pg_ctl")}
		if isExecutable(b.initdb) && isExecutable(b.pgctl) {
			return b, nil
		}
	}
	return binaries{}, fmt.Errorf("%w: initdb and pg_ctl are neither on PATH nor in %s", ErrUnavailable, binGlob)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// sortByVersion sorts directories …/VERSION/bin by VERSION, numerically
// ("9.6" < "15"); unparsable versions sort first.
func sortByVersion(dirs []string) {
	version := func(dir string) []int {
		var v []int
		for f := range strings.SplitSeq(filepath.Base(filepath.Dir(dir)), ".") {
			n, err := strconv.Atoi(f)
			if err != nil {
				return nil
			}
			v = append(v, n)
		}
		return v
	}
	slices.SortStableFunc(dirs, func(a, b string) int {
		return slices.Compare(version(a), version(b))
	})
}

func (c *Cluster) initdb(ctx context.Context) error {
	err := c.run(ctx, initdbTimeout, c.bin.initdb,
		"-D", c.dataDir(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale",
		"--no-sync") // nothing to protect against a crash of the OS
	if err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	return nil
}

// pgctl runs pg_ctl action ("start", "stop", "restart" or "promote"),
// waiting for it to complete. Its error quotes the new lines of the server
// log.
func (c *Cluster) pgctl(ctx context.Context, action string) error {
	args := []string{action, "-w", "-t", strconv.Itoa(pgctlWait), "-D", c.dataDir()}
	switch action {
	case "start", "restart":
		args = append(args, "-l", c.logPath(), "-o", c.serverOptions())
	}
	if action == "stop" || action == "restart" {
		args = append(args, "-m", "fast")
	}
	var logOffset int64
	if fi, err := os.Stat(c.logPath()); err == nil {
		logOffset = fi.Size()
	}
	err := c.run(ctx, pgctlTimeout, c.bin.pgctl, args...)
	if err == nil {
		return nil
	}
	tail := logTail(c.logPath(), logOffset, 20)
	if strings.Contains(tail, "Address already in use") {
		err = fmt.Errorf("%w: %w", errPortInUse, err)
	}
	if tail != "" {
		tail = "; server log:\n" + tail + "\n"
	}
	return fmt.Errorf("pg_ctl %s, port %d (log %s)%s: %w", action, c.port, c.logPath(), tail, err)
}

// status returns whether the server is running, according to pg_ctl
// status; when that cannot tell, it assumes it is.
func (c *Cluster) status(ctx context.Context) state {
	err := c.run(ctx, pgctlTimeout, c.bin.pgctl, "status", "-D", c.dataDir())
	if exit := (*exec.ExitError)(nil); errors.As(err, &exit) && exit.ExitCode() == 3 {
		return stopped // "no server running"
	}
	return running
}

// run runs a program as the server's user in c.dir, killing it and its
// children after timeout. The error includes the program's stderr.
func (c *Cluster) run(ctx context.Context, timeout time.Duration, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.dir
	cmd.Env = serverEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	c.proc.setGroup(cmd)
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w after %s (%v)", ctx.Err(), timeout, err)
	}
	if out := strings.TrimSpace(stderr.String()); out != "" {
		return fmt.Errorf("%s: %s: %w", strings.Join(cmd.Args, " "), out, err)
	}
	return fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
}

// serverEnv is this process's environment without the PG* variables, which
// would otherwise change what initdb and pg_ctl do.
func serverEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "PG")
	})
}

// logTail returns at most n lines of the log written after offset.
func logTail(path string, offset int64, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, offset, 1<<20))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
