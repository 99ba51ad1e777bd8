package main

import (
	"os"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and parentheses: fields count from the
	// last ")".
	line := []byte("4242 (post (gres) x) S 77 4242 4242 0 -1 4194560 1300 0 0 0 250 31 7 3 20 0 1 0 123 0 0\n")
	st, err := parseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != 77 || st.cpu != 2810*time.Millisecond || st.reaped != 100*time.Millisecond {
		t.Errorf("parsed %+v, want ppid 77, 2.81s (281 ticks) and 0.1s reaped (10)", st)
	}
	for _, bad := range []string{"", "4242 no name S 1", "1 (x) S 1 2 3", "1 (x) S p 1 1 0 -1 0 0 0 0 0 1 1 1 1",
		"1 (x) S 1 1 1 0 -1 0 0 0 0 0 u 1 1 1"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q) accepted", bad)
		}
	}
	if _, err := readProcStat(os.Getpid()); err != nil {
		t.Errorf("this process's stat: %v", err)
	}
}

// TestTreeCPUCountsThePostmastersChildren: PostgreSQL's CPU is its
// backends' more than the postmaster's own; a backend that ended is still
// counted, through the postmaster.
func TestTreeCPUCountsThePostmastersChildren(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	cluster := pgtest.NewCluster(t, pgtest.Options{})
	url, err := cluster.CreateDatabase(t.Context(), "cpu")
	if err != nil {
		t.Fatal(err)
	}
	pid, err := cluster.PID()
	if err != nil {
		t.Fatal(err)
	}
	before, err := treeCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	// A backend busy for a while, then gone.
	conn := pgtest.Connect(t, url)
	var backend int
	if err := conn.QueryRow(t.Context(), "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), "SELECT count(*) FROM generate_series(1, 3000000)"); err != nil {
		t.Fatal(err)
	}
	busy, err := processCPU(backend)
	if err != nil {
		t.Fatal(err)
	}
	if busy == 0 {
		t.Fatal("the backend used no CPU the kernel counted")
	}
	if err := conn.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		after, err := treeCPU(pid)
		if err != nil {
			t.Fatal(err)
		}
		// Reaped once the postmaster has waited for it: then its CPU moves
		// to the postmaster's children's count. Half of it is enough to
		// tell (not counting reaped children moves the sum back, by the
		// gone backend's CPU): a process reaped while a sample is read
		// (the connection that created the database, say) is counted
		// twice in it, which can shrink the difference by that much.
		if _, err := readProcStat(backend); err != nil && after-before >= busy/2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("treeCPU moved %s; the backend, gone, had used %s", after-before, busy)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPerEvent(t *testing.T) {
	before := cpuSample{replica: time.Second, postgres: 2 * time.Second, bench: 0}
	after := cpuSample{replica: 2 * time.Second, postgres: 4 * time.Second, bench: 500 * time.Millisecond}
	c := perEvent(before, after, 1000, 2)
	if c.Replica != 1 || c.Postgres != 2 || c.Bench != 0.5 || c.Total != 3.5 || c.Cores != 2 || int(c.Ceiling) != 571 {
		t.Errorf("perEvent = %+v; want 1, 2 and 0.5 ms, 3.5 in all, 571 events/s on 2 cores", c)
	}
	if c := perEvent(before, after, 0, 2); c.Total != 0 || c.Ceiling != 0 {
		t.Errorf("no events: %+v, want nothing measured", c)
	}
}

func TestCoresUnder(t *testing.T) {
	for line, want := range map[string]int{
		"max 100000\n":     8,
		"200000 100000\n":  2,
		"150000 100000\n":  2, // 1.5 cores: rounded up
		"1600000 100000\n": 8, // more than the machine has
		"garbage":          8,
		"0 100000":         8,
	} {
		if got := coresUnder(line, 8); got != want {
			t.Errorf("coresUnder(%q, 8) = %d, want %d", line, got, want)
		}
	}
}
