package postgres_test

import (
	"strings"
	"testing"

	"github.com/tokengate/tokengate/storage/postgres"
)

// TestOpenRefusesSeveralHostsWithoutReadWrite: with several hosts, a
// connection may land on a standby unless the URL asks for the primary
// (target_session_attrs=read-write or primary): writes there fail, and a
// feed read there lags the replica's own writes. Such a URL is refused at
// start, with the fix in the error.
func TestOpenRefusesSeveralHostsWithoutReadWrite(t *testing.T) {
	// pgx reads these when the URL does not say: keep the machine's out.
	t.Setenv("PGTARGETSESSIONATTRS", "")
	t.Setenv("PGSERVICE", "")
	for url, ok := range map[string]bool{
		"postgres://u@db-1:5432,db-2:5432/tokengate":                                     false,
		"postgres://u@db-1:5432,db-2:5432/tokengate?target_session_attrs=any":            false,
		"postgres://u@db-1:5432,db-2:5432/tokengate?target_session_attrs=prefer-standby": false,
		"host=db-1,db-2 dbname=tokengate user=u":                                         false,
		"postgres://u@db-1:5432,db-2:5432/tokengate?target_session_attrs=read-write":     true,
		"postgres://u@db-1:5432,db-2:5432/tokengate?target_session_attrs=primary":        true,
		"postgres://u@db-1:5432/tokengate":                                               true,
		"postgres://u@db-1:5432/tokengate?sslmode=prefer":                                true, // TLS, then plain: one host
		"postgres://u@db-1:5432,db-1:5432/tokengate":                                     true, // one host twice
		"postgres://u@db-1:5432,DB-1:5432/tokengate":                                     true, // names are case-insensitive
		"postgres://u@db-1:5432/tokengate?sslmode=allow":                                 true,
		"host=/var/run/postgresql dbname=tokengate":                                      true,
	} {
		s, err := postgres.Open(url, postgres.Options{})
		if err == nil {
			s.Close()
		}
		switch {
		case ok && err != nil:
			t.Errorf("Open(%q): %v, want it accepted", url, err)
		case !ok && (err == nil || !strings.Contains(err.Error(), "target_session_attrs=read-write")):
			t.Errorf("Open(%q): %v, want it refused, naming target_session_attrs=read-write", url, err)
		}
	}
}
