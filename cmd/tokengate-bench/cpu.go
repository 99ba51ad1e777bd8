package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// CPU accounting from /proc, for the ingest report: how much CPU each side
// of the benchmark spent per event, so that the throughput can be read
// against the machine's cores.

// userHZ is the unit of /proc/<pid>/stat's CPU times: USER_HZ, 100 on
// every Linux architecture Go supports.
const userHZ = 100

// procStat is the part of /proc/<pid>/stat the report reads.
type procStat struct {
	ppid int
	cpu  time.Duration // utime + stime, every thread of the process
	// reaped is cutime + cstime: the CPU of its children that exited and
	// that it waited for.
	reaped time.Duration
}

// parseProcStat reads /proc/<pid>/stat's text. The command name, in
// parentheses, may hold spaces and parentheses itself: the fields are
// counted from the last ")".
func parseProcStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("proc stat: no command name in %q", b)
	}
	// After the name: state (field 3), ppid (4), …, utime (14), stime
	// (15), cutime (16), cstime (17).
	f := bytes.Fields(b[i+1:])
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("proc stat: %d fields after the name, want at least 15", len(f))
	}
	ppid, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return procStat{}, fmt.Errorf("proc stat: ppid %q", f[1])
	}
	var ticks [4]int64 // utime, stime, cutime, cstime
	for k := range ticks {
		if ticks[k], err = strconv.ParseInt(string(f[11+k]), 10, 64); err != nil {
			return procStat{}, fmt.Errorf("proc stat: field %d: %q", 14+k, f[11+k])
		}
	}
	tick := func(n int64) time.Duration { return time.Duration(n) * time.Second / userHZ }
	return procStat{ppid: ppid, cpu: tick(ticks[0] + ticks[1]), reaped: tick(ticks[2] + ticks[3])}, nil
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(b)
}

// processCPU is the CPU time pid has used so far.
func processCPU(pid int) (time.Duration, error) {
	st, err := readProcStat(pid)
	return st.cpu, err
}

// treeCPU is the CPU time pid and its children have used so far: the
// postmaster, its live children (backends, the WAL writer, autovacuum
// workers) and those it reaped (a backend or a worker that ended between
// two samples moves from the one to the other).
func treeCPU(pid int) (time.Duration, error) {
	// The children first: one reaped meanwhile is then counted twice (a
	// few ticks at most), never missed.
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, err
	}
	var total time.Duration
	for _, d := range dirs {
		child, err := strconv.Atoi(filepath.Base(d))
		if err != nil || child == pid {
			continue
		}
		st, err := readProcStat(child)
		if err != nil || st.ppid != pid {
			continue // gone meanwhile, or another's
		}
		total += st.cpu
	}
	st, err := readProcStat(pid)
	if err != nil {
		return 0, err
	}
	return total + st.cpu + st.reaped, nil
}

// machineCores is how many CPUs the benchmark's processes share: the
// machine's, or fewer under a cgroup CPU limit (cgroup v2's cpu.max,
// rounded up).
func machineCores() int {
	n := runtime.NumCPU()
	b, err := os.ReadFile("/sys/fs/cgroup/cpu.max")
	if err != nil {
		return n
	}
	return coresUnder(string(b), n)
}

// coresUnder is n, bounded by a cpu.max line: "max 100000" (no limit) or
// "<quota> <period>".
func coresUnder(cpuMax string, n int) int {
	f := strings.Fields(cpuMax)
	if len(f) != 2 || f[0] == "max" {
		return n
	}
	quota, err1 := strconv.ParseInt(f[0], 10, 64)
	period, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || quota <= 0 || period <= 0 {
		return n
	}
	return min(n, int((quota+period-1)/period))
}

// cpuMeter reads the CPU used by the replica, PostgreSQL (a local cluster
// only: 0 is "not measured") and this process, the load generator.
type cpuMeter struct {
	replica, postmaster int
}

type cpuSample struct {
	replica, postgres, bench time.Duration
}

func (m cpuMeter) sample() (cpuSample, error) {
	var s cpuSample
	var err error
	if s.replica, err = processCPU(m.replica); err != nil {
		return s, fmt.Errorf("replica CPU: %w", err)
	}
	if m.postmaster != 0 {
		if s.postgres, err = treeCPU(m.postmaster); err != nil {
			return s, fmt.Errorf("PostgreSQL CPU: %w", err)
		}
	}
	if s.bench, err = processCPU(os.Getpid()); err != nil {
		return s, fmt.Errorf("load generator CPU: %w", err)
	}
	return s, nil
}

// cpuPerEvent is the CPU each side spent per event between two samples,
// in milliseconds; Postgres is 0 when it was not measured (an existing
// server, -postgres-url).
type cpuPerEvent struct {
	Replica  float64 `json:"replica_ms"`
	Postgres float64 `json:"postgres_ms,omitempty"`
	Bench    float64 `json:"load_generator_ms"`
	Total    float64 `json:"total_ms"`
	// Cores is the machine's; Ceiling is the events/s those cores could
	// carry at this cost, each fully busy with nothing else.
	Cores   int     `json:"cores"`
	Ceiling float64 `json:"ceiling_events_per_second"`
}

func perEvent(before, after cpuSample, events uint64, cores int) cpuPerEvent {
	if events == 0 {
		return cpuPerEvent{Cores: cores}
	}
	ms := func(d time.Duration) float64 { return d.Seconds() * 1000 / float64(events) }
	c := cpuPerEvent{
		Replica:  ms(after.replica - before.replica),
		Postgres: ms(after.postgres - before.postgres),
		Bench:    ms(after.bench - before.bench),
		Cores:    cores,
	}
	c.Total = c.Replica + c.Postgres + c.Bench
	if c.Total > 0 {
		c.Ceiling = float64(cores) * 1000 / c.Total
	}
	return c
}
