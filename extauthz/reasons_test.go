package extauthz

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
)

// documentedReason is one row of the README's "Answers and reasons" table.
type documentedReason struct {
	GRPC      string
	HTTP      int
	ErrorCode string
}

// TestREADMEReasons: the README's reason table lists exactly the reasons of
// the Go table, each with its gRPC code, HTTP status and RFC 6750 error.
func TestREADMEReasons(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := markdownTable(t, string(readme), "## Answers and reasons")
	got := map[string]documentedReason{}
	name := regexp.MustCompile("^`([a-z_]+)`$")
	for _, row := range rows {
		if len(row) != 5 {
			t.Fatalf("reason row %q has %d cells, want 5 (reason, gRPC, HTTP, error, meaning)", row, len(row))
		}
		m := name.FindStringSubmatch(row[0])
		if m == nil {
			t.Errorf("reason cell %q is not one `reason`", row[0])
			continue
		}
		if _, dup := got[m[1]]; dup {
			t.Errorf("reason %s listed twice", m[1])
		}
		status, err := strconv.Atoi(row[2])
		if err != nil {
			t.Errorf("reason %s: HTTP cell %q is not a status", m[1], row[2])
		}
		got[m[1]] = documentedReason{
			GRPC:      strings.Trim(row[1], "`"),
			HTTP:      status,
			ErrorCode: strings.Trim(strings.TrimSpace(strings.ReplaceAll(row[3], "—", "")), "`"),
		}
	}
	want := map[string]documentedReason{}
	for _, r := range Reasons() {
		info := reasons[r]
		want[info.name] = documentedReason{GRPC: grpcName(info.grpc), HTTP: info.http, ErrorCode: info.errorCode}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("README reason table differs from extauthz/reasons.go (-go +readme):\n%s", diff)
	}
}

// grpcName is a code as the README (and the gRPC spec) spells it:
// Unauthenticated is UNAUTHENTICATED, NotFound is NOT_FOUND.
func grpcName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && r >= 'A' && r <= 'Z' && c != codes.OK {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// markdownTable returns the cells of the first table after heading, header
// and separator rows left out.
func markdownTable(t *testing.T, doc, heading string) [][]string {
	t.Helper()
	_, section, ok := strings.Cut(doc, "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README has no %q section", heading)
	}
	var rows [][]string
	inTable := false
	for line := range strings.Lines(section) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "## ") {
			break
		}
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		inTable = true
		var cells []string
		for _, c := range strings.Split(strings.Trim(line, "|"), "|") {
			cells = append(cells, strings.TrimSpace(c))
		}
		rows = append(rows, cells)
	}
	if len(rows) < 2 {
		t.Fatalf("no table under %q", heading)
	}
	return rows[2:] // header, separator
}
