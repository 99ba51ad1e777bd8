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
// protos, and policy and storage import nothing of tokengate's.
func TestLayering(t *testing.T) {
	const mod = "github.com/tokengate/tokengate"
	out, err := exec.Command("go", "list", "-json", mod+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
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
