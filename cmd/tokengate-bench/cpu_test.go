package main

import (
	"os"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and parentheses: fields count from the
	// last ")".
	line := []byte("4242 (post (gres) x) S 77 4242 4242 0 -1 4194560 1300 0 0 0 250 31 0 0 20 0 1 0 123 0 0\n")
	st, err := parseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != 77 || st.cpu != 2810*time.Millisecond {
		t.Errorf("parsed %+v, want ppid 77 and 2.81s (281 ticks)", st)
	}
	for _, bad := range []string{"", "4242 no name S 1", "1 (x) S 1 2 3", "1 (x) S p 1 1 0 -1 0 0 0 0 0 u s"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q) accepted", bad)
		}
	}
	// This process: it has used some CPU, and it is its own parent's child.
	if _, err := readProcStat(os.Getpid()); err != nil {
		t.Errorf("this process's stat: %v", err)
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
