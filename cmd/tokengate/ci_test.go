package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTrackedFilesCheck runs .ci/tracked-files-check, which CI runs on every
// clone, against a scratch repository: source passes; an executable, a file
// with NUL bytes and a file over 1 MB are each refused by name.
func TestTrackedFilesCheck(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("git is not installed, and CI never skips")
		}
		t.Skip("git is not installed")
	}
	// The scratch repository must not be the caller's: a git hook running
	// the tests exports GIT_DIR, GIT_INDEX_FILE and the like.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			env = append(env, kv)
		}
	}
	script, err := filepath.Abs("../../.ci/tracked-files-check")
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable() // this test binary: an ELF (or Mach-O) executable
	if err != nil {
		t.Fatal(err)
	}
	elf, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		name    string
		content []byte
		refused string // "" when the check must pass
	}{
		"source":        {"main.go", []byte("package main\n"), ""},
		"executable":    {"tool", elf, "executable"},
		"binary data":   {"data.db", []byte("abc\x00def"), "binary file"},
		"over 1 MB":     {"big.txt", bytes.Repeat([]byte("a\n"), 600*1024), "over the 1 MB limit"},
		"exactly 1 MiB": {"edge.txt", bytes.Repeat([]byte("a"), 1024*1024), ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			repo := t.TempDir()
			if err := os.MkdirAll(filepath.Join(repo, ".ci"), 0o755); err != nil {
				t.Fatal(err)
			}
			src, err := os.ReadFile(script)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(repo, ".ci", "tracked-files-check"), src, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(repo, tc.name), tc.content, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{{"init", "-q"}, {"add", "."}} {
				cmd := exec.Command("git", append([]string{"-C", repo}, args...)...)
				cmd.Env = env
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("git %v: %v\n%s", args, err, out)
				}
			}
			check := exec.Command(filepath.Join(repo, ".ci", "tracked-files-check"))
			check.Env = env
			out, err := check.CombinedOutput()
			switch {
			case tc.refused == "" && err != nil:
				t.Errorf("the check refused %s: %v\n%s", tc.name, err, out)
			case tc.refused != "" && err == nil:
				t.Errorf("the check passed %s, want it refused\n%s", tc.name, out)
			case tc.refused != "" && !(strings.Contains(string(out), tc.name) && strings.Contains(string(out), tc.refused)):
				t.Errorf("the check's message %q does not name %s as %q", out, tc.name, tc.refused)
			}
		})
	}
}
