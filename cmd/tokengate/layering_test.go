package main

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// TestLayering keeps dependencies pointing down the data flow (STYLE.md):
// only cmd picks a storage backend, only extauthz/token speaks JWT, only the
// postgres backend speaks pgx, only extauthz (and the commands) import Envoy's
// protos, policy and storage import nothing of tokengate's, and only tests
// import the test helpers.
func TestLayering(t *testing.T) {
	const mod = "github.com/tokengate/tokengate"
	out, err := exec.Command("go", "list", "-json", mod+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	helpers := []string{mod + "/extauthz/token/tokentest", mod + "/storage/postgres/pgtest", mod + "/storage/storagetest"}
	rules := []struct {
		imported string   // import path prefix
		allowed  []string // package path prefixes that may import it
	}{
		{"github.com/golang-jwt/jwt", []string{mod + "/extauthz/token", mod + "/cmd/"}},
		{"github.com/MicahParks/", []string{mod + "/extauthz/token"}},
		{"github.com/jackc/", []string{mod + "/storage/postgres"}},
		{"go.etcd.io/bbolt", []string{mod + "/storage/bolt"}},
		{"github.com/envoyproxy/go-control-plane", []string{mod + "/extauthz", mod + "/cmd/", mod + "/envoy"}},
		{mod + "/storage/bolt", []string{mod + "/cmd/"}},
		{mod + "/storage/postgres", []string{mod + "/storage/postgres", mod + "/cmd/"}},
		// Test code builds only on test code: the helpers that wrap testing
		// are imported by tests alone (go list's Imports leaves tests out).
		{"testing", helpers},
		{"net/http/httptest", helpers},
		{mod + "/extauthz/token/tokentest", nil},
		{mod + "/storage/postgres/pgtest", nil},
		{mod + "/storage/storagetest", nil},
		{mod + "/policy/policytest", nil},
		// Prometheus's own PromQL parser checks the alerts and the
		// dashboard (envoy's tests); no package may import it.
		{"github.com/prometheus/prometheus", nil},
	}
	ownFree := []string{mod + "/policy", mod + "/storage"} // import nothing of ours
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		for _, imp := range p.Imports {
			for _, r := range rules {
				if !strings.HasPrefix(imp, r.imported) {
					continue
				}
				ok := false
				for _, a := range r.allowed {
					ok = ok || strings.HasPrefix(p.ImportPath, a)
				}
				if !ok {
					t.Errorf("%s imports %s; only %v may", p.ImportPath, imp, r.allowed)
				}
			}
			for _, free := range ownFree {
				if p.ImportPath == free && strings.HasPrefix(imp, mod+"/") {
					t.Errorf("%s imports %s; it must import nothing of tokengate's", p.ImportPath, imp)
				}
			}
		}
	}
}

// TestNoTestCodeInBinaries keeps test code out of what ships: neither
// command's production dependencies include the testing packages or the
// test helpers (tokentest, pgtest, storagetest), which build on testing.
// The commands use the plain packages those helpers wrap (devissuer,
// pgcluster) instead.
func TestNoTestCodeInBinaries(t *testing.T) {
	const mod = "github.com/tokengate/tokengate"
	forbidden := []string{
		"testing",
		"net/http/httptest",
		mod + "/extauthz/token/tokentest",
		mod + "/storage/postgres/pgtest",
		mod + "/storage/storagetest",
		mod + "/policy/policytest",
		"github.com/prometheus/prometheus/promql/parser",
	}
	for _, cmd := range []string{"./cmd/tokengate", "./cmd/tokengate-bench"} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}: {{join .Imports \" \"}}", mod+strings.TrimPrefix(cmd, ".")).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", cmd, err)
		}
		importers := map[string][]string{} // dependency → the packages importing it
		for line := range strings.Lines(string(out)) {
			pkg, imports, _ := strings.Cut(strings.TrimSpace(line), ": ")
			importers[pkg] = importers[pkg] // every dependency, imported or not
			for imp := range strings.FieldsSeq(imports) {
				importers[imp] = append(importers[imp], pkg)
			}
		}
		for _, f := range forbidden {
			if by, ok := importers[f]; ok {
				t.Errorf("%s depends on %s (imported by %v); test code must stay out of the binary", cmd, f, by)
			}
		}
	}
}
