package pgcluster

import (
	"slices"
	"testing"
)

func TestExternalRejects(t *testing.T) {
	for name, s := range map[string]string{
		"keyword/value": "host=localhost dbname=postgres",
		"scheme":        "mysql://localhost/x",
	} {
		if _, err := External(s); err == nil {
			t.Errorf("%s: External(%q) succeeded, want an error", name, s)
		}
	}
}

func TestSortByVersion(t *testing.T) {
	got := []string{"/p/15/bin", "/p/9.6/bin", "/p/x/bin", "/p/16/bin", "/p/10/bin"}
	sortByVersion(got)
	want := []string{"/p/x/bin", "/p/9.6/bin", "/p/10/bin", "/p/15/bin", "/p/16/bin"}
	if !slices.Equal(got, want) {
		t.Errorf("sortByVersion = %v, want %v", got, want)
	}
}
