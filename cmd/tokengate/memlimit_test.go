package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// fakeRoot writes files (path → content) under a new directory standing for "/".
func fakeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestCgroupMemoryLimit(t *testing.T) {
	for name, tc := range map[string]struct {
		files     map[string]string
		want      int64
		wantFile  string
		wantError bool
	}{
		"v2 container": {
			files:    map[string]string{"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/memory.max": "268435456\n"},
			want:     256 << 20,
			wantFile: "sys/fs/cgroup/memory.max",
		},
		"v2 no limit": {
			files:    map[string]string{"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/memory.max": "max\n"},
			wantFile: "sys/fs/cgroup/memory.max",
		},
		"v2 own cgroup (systemd MemoryMax)": {
			files: map[string]string{
				"proc/self/cgroup": "0::/system.slice/tokengate.service\n",
				"sys/fs/cgroup/system.slice/tokengate.service/memory.max": "1073741824\n",
			},
			want:     1 << 30,
			wantFile: "sys/fs/cgroup/system.slice/tokengate.service/memory.max",
		},
		"v2 host path not mounted in the container": {
			files: map[string]string{
				"proc/self/cgroup":         "0::/kubepods/burstable/pod1/c1\n",
				"sys/fs/cgroup/memory.max": "536870912\n",
			},
			want:     512 << 20,
			wantFile: "sys/fs/cgroup/memory.max",
		},
		"v1": {
			files: map[string]string{
				"proc/self/cgroup":                           "12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n",
				"sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912\n",
			},
			want:     512 << 20,
			wantFile: "sys/fs/cgroup/memory/memory.limit_in_bytes",
		},
		"v1 own cgroup": {
			files: map[string]string{
				"proc/self/cgroup":                                     "11:memory:/tokengate\n",
				"sys/fs/cgroup/memory/memory.limit_in_bytes":           "9223372036854771712\n",
				"sys/fs/cgroup/memory/tokengate/memory.limit_in_bytes": "402653184\n",
			},
			want:     384 << 20,
			wantFile: "sys/fs/cgroup/memory/tokengate/memory.limit_in_bytes",
		},
		"v1 no limit": {
			files:    map[string]string{"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"},
			wantFile: "sys/fs/cgroup/memory/memory.limit_in_bytes",
		},
		"no cgroups": {files: map[string]string{}},
		"garbage": {
			files:     map[string]string{"sys/fs/cgroup/memory.max": "lots\n"},
			wantFile:  "sys/fs/cgroup/memory.max",
			wantError: true,
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, file, err := cgroupMemoryLimit(os.DirFS(fakeRoot(t, tc.files)))
			if (err != nil) != tc.wantError {
				t.Fatalf("error %v, want error: %v", err, tc.wantError)
			}
			if got != tc.want || file != tc.wantFile {
				t.Errorf("got %d from %q, want %d from %q", got, file, tc.want, tc.wantFile)
			}
		})
	}
}

// TestTuneMemory sets the process's soft memory limit, so it does not run
// in parallel, and puts the limit back.
func TestTuneMemory(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	root := fakeRoot(t, map[string]string{"sys/fs/cgroup/memory.max": "268435456\n"})
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}

	var logs bytes.Buffer
	tuneMemory(env(map[string]string{"GOMEMLIMIT": "100MiB"}), root, slog.New(slog.NewTextHandler(&logs, nil)))
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Errorf("with GOMEMLIMIT set, the limit changed to %d", got)
	}

	logs.Reset()
	tuneMemory(env(nil), root, slog.New(slog.NewTextHandler(&logs, nil)))
	if got, want := debug.SetMemoryLimit(-1), int64(256<<20)/100*90; got != want {
		t.Errorf("soft limit %d, want %d (90%% of the cgroup's)", got, want)
	}
	if !strings.Contains(logs.String(), "cgroup_limit_bytes=268435456") {
		t.Errorf("log does not say the cgroup's limit: %s", logs.String())
	}

	// The downward API's limit wins over the cgroup's; garbage falls back.
	tuneMemory(env(map[string]string{"TOKENGATE_MEMORY_LIMIT": "536870912"}), root, slog.New(slog.DiscardHandler))
	if got, want := debug.SetMemoryLimit(-1), int64(512<<20)/100*90; got != want {
		t.Errorf("soft limit %d, want %d (90%% of TOKENGATE_MEMORY_LIMIT)", got, want)
	}
	tuneMemory(env(map[string]string{"TOKENGATE_MEMORY_LIMIT": "512Mi"}), root, slog.New(slog.DiscardHandler))
	if got, want := debug.SetMemoryLimit(-1), int64(256<<20)/100*90; got != want {
		t.Errorf("with a malformed TOKENGATE_MEMORY_LIMIT: soft limit %d, want %d (the cgroup's)", got, want)
	}
}
