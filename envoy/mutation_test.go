package envoy_test

import (
	"bytes"
	"maps"
	"slices"
	"strings"
	"testing"
)

// mutation is one edit of one shipped file that a check must catch: every
// occurrence of old (at least one) becomes new, and a problem names want.
type mutation struct{ file, old, new, want string }

// catchMistakes applies each mutation to a copy of the good files and
// requires check to report it: the checks are tests that can fail.
func catchMistakes(t *testing.T, good map[string][]byte, cases map[string]mutation, check func(files map[string][]byte) []string) {
	t.Helper()
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if !bytes.Contains(good[tc.file], []byte(tc.old)) {
				t.Fatalf("%s does not contain %q: update this case", tc.file, tc.old)
			}
			files := maps.Clone(good)
			files[tc.file] = bytes.ReplaceAll(good[tc.file], []byte(tc.old), []byte(tc.new))
			problems := check(files)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("no problem mentions %q; got %q", tc.want, problems)
			}
		})
	}
}
