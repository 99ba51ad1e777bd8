// Package migrations holds tokengate's PostgreSQL schema as numbered SQL
// files (NNNN_name.sql), embedded into the binary and applied in order by
// `tokengate migrate` or at start.
package migrations

import "embed"

// FS holds the *.sql files.
//
//go:embed *.sql
var FS embed.FS
