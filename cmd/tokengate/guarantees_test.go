package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestGuaranteesLinkToTests: every promise in README's "Guarantees and
// limits" links to tests, and every link names a test that exists in the
// file it points at: a Go test function, or a case of the storage
// conformance suite.
func TestGuaranteesLinkToTests(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Guarantees and limits\n")
	if !ok {
		t.Fatal("README has no Guarantees and limits section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	link := regexp.MustCompile("\\[`(\\w+)`\\]\\(([\\w/.-]+_test\\.go|storage/storagetest/storagetest\\.go)\\)")
	row := regexp.MustCompile(`^\| \d+ \|`)
	promises := 0
	for _, line := range strings.Split(section, "\n") {
		if !row.MatchString(line) {
			continue
		}
		promises++
		links := link.FindAllStringSubmatch(line, -1)
		if len(links) == 0 {
			t.Errorf("a promise links to no test: %s", line)
		}
		if all := strings.Count(line, "]("); all != len(links) {
			t.Errorf("a promise has %d links, %d of them to a test as [`Name`](file_test.go): %s", all, len(links), line)
		}
		for _, l := range links {
			name, file := l[1], l[2]
			src, err := os.ReadFile(filepath.Join("../..", file))
			if err != nil {
				t.Errorf("%s links to %s: %v", name, file, err)
				continue
			}
			want := "\nfunc " + name + "(t *testing.T)"
			if !strings.HasPrefix(name, "Test") {
				want = "\t\"" + name + "\":" // a case in the conformance suite's table
			}
			if !strings.Contains(string(src), want) {
				t.Errorf("README links %s to %s, which does not define it", name, file)
			}
		}
	}
	if promises < 5 {
		t.Errorf("found %d promises in the section, want the table", promises)
	}
}
